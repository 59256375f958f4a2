-- id: ocpp.heartbeat_offline_flapping
-- title: Backend marks the charger offline between heartbeats while the link stays up
-- cause: ocpp.heartbeat_interval
-- channel: backend
-- severity: medium
-- status: test
-- params: min_flaps = 3, rtt_fraction = 0.8
-- fix: Set HeartbeatInterval below the backend's offline timeout minus the link round trip (e.g. 60 s for a 90 s timeout); on cellular allow for latency spikes.
-- falsepositives: A backend that drops idle WebSockets on purpose.
-- Two signatures: (1) the backend marks the charger offline and a heartbeat arrives
-- before any disconnect, again and again; (2) the heartbeat round trip reaches the interval.
WITH flaps AS (
  SELECT o.charger_id, o.ts, o.event_id,
         (SELECT min(h.event_id) FROM events h
           WHERE h.charger_id = o.charger_id AND h.kind = 'ocpp.call' AND h.code = 'Heartbeat'
             AND h.ts > o.ts AND h.ts <= o.ts + INTERVAL 10 MINUTE) AS next_hb,
         (SELECT count(*) FROM events d
           WHERE d.charger_id = o.charger_id AND d.kind = 'ws.disconnect'
             AND d.ts BETWEEN o.ts - INTERVAL 5 MINUTE AND o.ts + INTERVAL 10 MINUTE) AS drops
  FROM events o WHERE o.kind = 'csms.marked_offline'
),
flap_findings AS (
  SELECT charger_id, min(ts) AS ts_start, max(ts) AS ts_end,
         least(0.9, 0.6 + 0.05 * count(*)) AS score,
         'backend marked the charger offline ' || count(*)
           || ' times while its heartbeats kept arriving on the same connection' AS summary,
         (list(event_id ORDER BY ts)[1:3] || list(next_hb ORDER BY ts)[1:3]) AS evidence
  FROM flaps WHERE next_hb IS NOT NULL AND drops = 0
  GROUP BY charger_id HAVING count(*) >= $min_flaps
),
intervals AS (
  SELECT m.charger_id, TRY_CAST(m.payload->>'interval' AS DOUBLE) AS interval_s, m.ts
  FROM ocpp_messages m
  WHERE m.message_type = 3 AND m.action = 'BootNotification'
  QUALIFY row_number() OVER (PARTITION BY m.charger_id ORDER BY m.ts DESC) = 1
),
slow AS (
  SELECT e.charger_id, e.ts, e.event_id, TRY_CAST(e.detail->>'response_ms' AS DOUBLE) AS rtt_ms,
         i.interval_s
  FROM events e JOIN intervals i USING (charger_id)
  WHERE e.kind = 'ocpp.call' AND e.code = 'Heartbeat' AND i.interval_s > 0
    AND TRY_CAST(e.detail->>'response_ms' AS DOUBLE) >= $rtt_fraction * i.interval_s * 1000
),
rtt_findings AS (
  SELECT charger_id, min(ts), max(ts), 0.8,
         count(*) || ' heartbeat(s) took ' || round(max(rtt_ms) / 1000, 1)
           || ' s to answer, against an interval of ' || any_value(interval_s) || ' s',
         list(event_id ORDER BY rtt_ms DESC)[1:5]
  FROM slow GROUP BY charger_id
)
SELECT * FROM flap_findings
UNION ALL
SELECT * FROM rtt_findings
ORDER BY charger_id, ts_start;
