-- id: module.offline_heartbeat_lost
-- title: A module stops sending its periodic frames while the bus itself is healthy
-- cause: module.offline
-- channel: internal
-- severity: high
-- status: test
-- params: window_s = 10
-- fix: Check the silent module: its supply (fuse, 24 V auxiliary), its status LEDs and its own fault log; power-cycle it and replace it if it stays silent. The bus is healthy, so wiring and termination are not the cause.
-- falsepositives: A module switched off on purpose (power sharing, night mode) stops its heartbeat too.
WITH drops AS (
  SELECT m.* FROM events m
  WHERE m.kind = 'module.offline' AND m.charger_id IS NOT NULL
    AND NOT EXISTS (
      SELECT 1 FROM events e
      WHERE e.charger_id = m.charger_id AND e.layer = 'can'
        AND e.kind IN ('can.error_frame', 'can.error_passive', 'can.bus_off', 'can.error_warning')
        AND e.ts BETWEEN m.ts - to_seconds($window_s)
                     AND m.ts + to_milliseconds(coalesce((m.detail->>'gap_ms')::DOUBLE, 0)::BIGINT)
                              + to_seconds($window_s))
),
back AS (
  SELECT d.event_id AS drop_id, o.event_id AS online_id
  FROM drops d JOIN events o
    ON o.charger_id = d.charger_id AND o.kind = 'module.online' AND o.code = d.code
   AND o.file_id = d.file_id
   AND o.ts = TRY_CAST(d.detail->>'first_after' AS TIMESTAMP)
)
SELECT d.charger_id, min(d.ts) AS ts_start,
       max(d.ts + to_milliseconds(coalesce((d.detail->>'gap_ms')::DOUBLE, 0)::BIGINT)) AS ts_end,
       CASE WHEN bool_or(NOT (d.detail->>'returned')::BOOLEAN) THEN 0.8 ELSE 0.7 END AS score,
       'module(s) ' || string_agg(DISTINCT d.code, ', ' ORDER BY d.code) || ' went silent ('
         || count(*) || ' gap(s), longest ' || round(max((d.detail->>'gap_ms')::DOUBLE) / 1000, 1)
         || ' s) with no bus errors around: the module, not the bus' AS summary,
       list(d.event_id ORDER BY d.ts)[1:8]
         || coalesce(list(b.online_id ORDER BY b.online_id) FILTER (WHERE b.online_id IS NOT NULL), [])[1:8]
         AS evidence
FROM drops d LEFT JOIN back b ON b.drop_id = d.event_id
GROUP BY d.charger_id
ORDER BY d.charger_id;
