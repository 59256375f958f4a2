-- id: can.wiring_intermittent_bursts
-- title: Intermittent bursts of CAN error frames between clean periods
-- cause: can.wiring
-- channel: internal
-- severity: high
-- status: test
-- params: min_bursts = 2, max_error_share = 0.5, window_s = 10, min_good_sessions = 5
-- fix: Inspect and reseat the CAN connectors and harness between control board and power modules (corrosion, loose crimp, chafed cable near vibrating parts such as fans and contactors); replace the connector if pins are discoloured.
-- falsepositives: Deliberate bus tests during maintenance; a module rebooted by hand produces one burst and one drop.
WITH logs AS (
  SELECT l.file_id, l.charger_id, l.ts_first, l.ts_last,
         greatest(1, epoch(l.ts_last) - epoch(l.ts_first)) AS span_s
  FROM can_logs l WHERE l.charger_id IS NOT NULL
),
share AS (
  SELECT l.charger_id,
         sum(s.n) / sum(l.span_s) AS err_share
  FROM logs l JOIN (
    SELECT file_id, count(DISTINCT second) FILTER (WHERE error_frames > 0) AS n
    FROM can_bus_stats GROUP BY file_id) s USING (file_id)
  GROUP BY l.charger_id
),
bursts AS (
  SELECT e.charger_id, e.event_id, e.ts,
         e.ts + to_milliseconds((e.detail->>'duration_ms')::BIGINT) AS ts_end
  FROM events e WHERE e.kind = 'can.error_frame' AND e.charger_id IS NOT NULL
),
drops AS (
  SELECT b.charger_id, b.event_id AS burst_id, m.event_id AS drop_id
  FROM bursts b JOIN events m
    ON m.charger_id = b.charger_id AND m.kind = 'module.offline'
   AND m.ts BETWEEN b.ts - to_seconds($window_s) AND b.ts_end + to_seconds($window_s)
),
context AS (
  SELECT b.charger_id, f.event_id
  FROM bursts b JOIN events f
    ON f.charger_id = b.charger_id AND f.layer = 'fault_log'
   AND f.ts BETWEEN b.ts - to_seconds(60 * $window_s) AND b.ts_end + to_seconds(60 * $window_s)
   AND regexp_matches(lower(coalesce(f.code, '') || ' ' || coalesce(f.detail::VARCHAR, '')),
                      'vibrat|temperat|overtemp|shock|humid')
),
good AS (
  SELECT b.charger_id, count(DISTINCT s.session_id) AS ok_sessions
  FROM (SELECT charger_id, min(ts) AS t0 FROM bursts GROUP BY ALL) b
  JOIN sessions s ON s.charger_id = b.charger_id AND s.result = 'ok' AND s.stop <= b.t0
  GROUP BY ALL
),
per AS (
  SELECT b.charger_id, count(*) AS n_bursts, min(b.ts) AS t0, max(b.ts_end) AS t1,
         list(b.event_id ORDER BY b.ts) AS burst_ids
  FROM bursts b GROUP BY b.charger_id
)
SELECT p.charger_id, p.t0 AS ts_start, p.t1 AS ts_end,
       least(0.95, 0.5
         + CASE WHEN (SELECT count(*) FROM drops d WHERE d.charger_id = p.charger_id) > 0 THEN 0.2 ELSE 0 END
         + CASE WHEN coalesce(g.ok_sessions, 0) >= $min_good_sessions THEN 0.1 ELSE 0 END
         + CASE WHEN (SELECT count(*) FROM context c WHERE c.charger_id = p.charger_id) > 0 THEN 0.1 ELSE 0 END
         + 0.05 * least(p.n_bursts - 1, 3)) AS score,
       p.n_bursts || ' burst(s) of error frames separated by clean periods (errors in '
         || round(100 * s.err_share) || '% of the seconds)'
         || CASE WHEN (SELECT count(*) FROM drops d WHERE d.charger_id = p.charger_id) > 0
                 THEN ', a module dropped off the bus during a burst' ELSE '' END
         || CASE WHEN coalesce(g.ok_sessions, 0) > 0
                 THEN ', after ' || g.ok_sessions || ' good session(s)' ELSE '' END AS summary,
       (p.burst_ids[1:8]
         || coalesce((SELECT list(d.drop_id ORDER BY d.drop_id) FROM drops d WHERE d.charger_id = p.charger_id), [])
         || coalesce((SELECT list(c.event_id ORDER BY c.event_id)[1:3] FROM context c WHERE c.charger_id = p.charger_id), [])
       ) AS evidence
FROM per p JOIN share s USING (charger_id) LEFT JOIN good g USING (charger_id)
WHERE s.err_share <= $max_error_share
  AND (p.n_bursts >= $min_bursts
       OR (SELECT count(*) FROM drops d WHERE d.charger_id = p.charger_id) > 0)
ORDER BY p.charger_id;
