-- id: fleet.simultaneous_drop
-- title: Chargers across sites drop within the same minutes
-- cause: backend.outage
-- channel: backend
-- severity: critical
-- status: test
-- params: window_s = 120, min_chargers = 3, min_fraction = 0.5
-- fix: The chargers are not at fault: check CSMS availability, load balancer, DNS and certificates for that window.
-- falsepositives: A shared upstream network (one ISP serving all sites) failing; a planned backend restart.
-- Each drop anchors a window; windows where enough of the fleet drops are merged into one
-- incident. Several sites in it point at the backend; without site data the score is low.
WITH drops AS (
  SELECT e.charger_id, e.ts, e.event_id, c.site
  FROM events e LEFT JOIN chargers c USING (charger_id)
  WHERE e.kind IN ('ws.disconnect', 'csms.marked_offline')
     OR (e.kind = 'ws.close' AND e.code = '1001')  -- 1001 going away: the server shut down
),
fleet AS (
  SELECT count(DISTINCT charger_id) AS n, count(DISTINCT site) AS n_sites FROM chargers
),
anchors AS (
  SELECT a.ts, count(DISTINCT b.charger_id) AS n
  FROM drops a JOIN drops b ON b.ts BETWEEN a.ts AND a.ts + to_seconds($window_s)
  GROUP BY a.event_id, a.ts
),
qualifying AS (
  SELECT a.ts FROM anchors a, fleet
  WHERE a.n >= $min_chargers AND a.n >= $min_fraction * fleet.n
),
incidents AS (
  SELECT ts, sum(new) OVER (ORDER BY ts) AS incident
  FROM (SELECT ts, CASE WHEN ts - lag(ts) OVER (ORDER BY ts) <= to_seconds($window_s)
                        THEN 0 ELSE 1 END AS new FROM qualifying)
),
spans AS (
  SELECT incident, min(ts) AS t0, max(ts) + to_seconds($window_s) AS t1
  FROM incidents GROUP BY incident
),
members AS (
  SELECT s.incident, d.*,
         row_number() OVER (PARTITION BY s.incident, d.charger_id ORDER BY d.ts) AS nth
  FROM spans s JOIN drops d ON d.ts BETWEEN s.t0 AND s.t1
),
agg AS (
  SELECT incident, min(ts) AS ts_start, max(ts) AS ts_end,
         count(DISTINCT charger_id) AS n_chargers, count(DISTINCT site) AS n_sites,
         list(DISTINCT charger_id ORDER BY charger_id) AS chargers,
         list(event_id ORDER BY ts) FILTER (WHERE nth = 1)[1:10] AS evidence
  FROM members GROUP BY incident
)
SELECT NULL AS charger_id, ts_start, ts_end,
       CASE WHEN agg.n_sites >= 2 THEN least(0.95, 0.8 + 0.15 * agg.n_chargers / fleet.n)
            ELSE 0.55 END AS score,
       agg.n_chargers || ' of ' || fleet.n || ' chargers'
         || CASE WHEN agg.n_sites >= 2 THEN ' across ' || agg.n_sites || ' sites' ELSE '' END
         || ' dropped within ' || date_diff('second', ts_start, ts_end) || ' s' AS summary,
       evidence, 'fleet' AS scope, 'fleet' AS subject, chargers
FROM agg, fleet
WHERE agg.n_sites >= 2 OR fleet.n_sites = 0
ORDER BY ts_start;
