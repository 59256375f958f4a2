-- id: network.retransmission_rate
-- title: A charger's backend connections lose packets: retransmission rate far above the fleet's and above an absolute floor
-- cause: network.wifi_loss
-- channel: backend
-- severity: medium
-- status: test
-- params: min_rate = 0.03, min_packets = 100, fleet_factor = 3
-- fix: Improve the charger's uplink for its connectivity: Wi-Fi - access point closer or a repeater, avoid walls/metal, 2.4 GHz for range; cellular - antenna placement, external antenna, check the SIM (throttled/expired); Ethernet - cable, connectors, switch port errors.
-- falsepositives: A congested backend or capture host (then every charger in the capture retransmits: the fleet comparison keeps the score low).
-- The cause follows the inventory's connectivity (wifi -> network.wifi_loss, cellular ->
-- network.cellular_signal, ethernet -> network.ethernet_link); a signal below -100 dBm
-- raises the cellular score. RTT spread is the stddev of the handshake round trips.
WITH per AS (
  SELECT charger_id,
         sum(retrans_c2s + retrans_s2c) AS retr,
         sum(packets_c2s + packets_s2c) AS pkts,
         min(ts_start) AS t0, max(ts_end) AS t1,
         stddev_samp(handshake_rtt_ms) AS rtt_sd, median(handshake_rtt_ms) AS rtt_med
  FROM tcp_flows WHERE charger_id IS NOT NULL
  GROUP BY charger_id
),
rated AS (
  -- the rest of the fleet in this case, without the charger itself
  SELECT *, retr / pkts AS rate,
         (sum(retr) OVER () - retr) / nullif(sum(pkts) OVER () - pkts, 0) AS fleet_rate,
         count(*) OVER () AS fleet_n
  FROM per WHERE pkts >= $min_packets
),
ev AS (
  SELECT charger_id, list(event_id ORDER BY (detail->>'retransmissions')::INTEGER DESC, ts)[1:6] AS ids
  FROM events WHERE kind = 'tcp.retransmissions' AND charger_id IS NOT NULL
  GROUP BY charger_id
)
SELECT r.charger_id, r.t0 AS ts_start, r.t1 AS ts_end,
       least(0.9, 0.5 + 2 * r.rate
                  + CASE WHEN c.connectivity = 'cellular' AND c.signal_dbm < -100 THEN 0.2 ELSE 0 END
                  - CASE WHEN r.fleet_n > 1 AND r.rate < $fleet_factor * r.fleet_rate THEN 0.3 ELSE 0 END
                  - CASE WHEN c.connectivity IS NULL THEN 0.15 ELSE 0 END) AS score,
       round(100 * r.rate, 1) || '% of ' || r.pkts || ' packets retransmitted'
         || CASE WHEN r.fleet_n > 1 THEN ' (rest of the fleet ' || round(100 * r.fleet_rate, 1) || '%)' ELSE '' END
         || coalesce(', handshake RTT median ' || round(r.rtt_med, 1) || ' ms, spread ' || round(r.rtt_sd, 1) || ' ms', '')
         || coalesce(' on ' || c.connectivity, '')
         || coalesce(' at ' || c.signal_dbm || ' dBm', '') AS summary,
       e.ids AS evidence,
       CASE c.connectivity WHEN 'cellular' THEN 'network.cellular_signal'
                           WHEN 'ethernet' THEN 'network.ethernet_link'
                           ELSE 'network.wifi_loss' END AS cause
FROM rated r
JOIN ev e USING (charger_id)
LEFT JOIN chargers c ON c.charger_id = r.charger_id AND NOT c.inferred
WHERE r.rate >= $min_rate
ORDER BY r.charger_id;
