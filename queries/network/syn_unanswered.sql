-- id: network.syn_unanswered
-- title: The charger's connection attempts to the backend go unanswered (SYN without SYN-ACK)
-- cause: network.cellular_signal
-- channel: backend
-- severity: medium
-- status: test
-- params: min_attempts = 2
-- fix: Check the path from the charger to the backend: uplink (signal, SIM, Wi-Fi association, cable), site firewall rules for the backend's address and port, and that the backend host resolves to the right address.
-- falsepositives: The backend host itself down (then chargers across sites fail together: backend.outage); a firewall dropping the port on purpose (wrong port: ocpp.wrong_url).
-- The cause follows the inventory's connectivity; without it the score stays low.
WITH s AS (
  SELECT e.charger_id, e.ts, e.event_id FROM events e
  WHERE e.kind = 'tcp.syn_unanswered' AND e.charger_id IS NOT NULL
)
SELECT s.charger_id, min(s.ts) AS ts_start, max(s.ts) AS ts_end,
       CASE WHEN any_value(c.connectivity) IS NULL THEN 0.4
            WHEN any_value(c.connectivity) = 'cellular' AND any_value(c.signal_dbm) < -100 THEN 0.8
            ELSE 0.6 END AS score,
       count(*) || ' connection attempt(s) never answered by the backend'
         || coalesce(' over ' || any_value(c.connectivity), '') AS summary,
       list(s.event_id ORDER BY s.ts)[1:6] AS evidence,
       CASE any_value(c.connectivity) WHEN 'wifi' THEN 'network.wifi_loss'
                                      WHEN 'ethernet' THEN 'network.ethernet_link'
                                      ELSE 'network.cellular_signal' END AS cause
FROM s
LEFT JOIN chargers c ON c.charger_id = s.charger_id AND NOT c.inferred
GROUP BY s.charger_id
HAVING count(*) >= $min_attempts
ORDER BY s.charger_id;
