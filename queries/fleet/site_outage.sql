-- id: fleet.site_drop
-- title: Every charger of one site drops at once while other sites stay up
-- cause: network.site_outage
-- channel: backend
-- severity: high
-- status: test
-- params: window_s = 120, max_other_fraction = 0.25
-- fix: Check the site's router, switch and uplink (power, ISP, DHCP, firewall change) for that window.
-- falsepositives: A site with a single charger (not considered), a planned site power cut.
WITH drops AS (
  SELECT e.charger_id, e.ts, e.event_id, c.site
  FROM events e LEFT JOIN chargers c USING (charger_id)
  WHERE e.kind IN ('ws.disconnect', 'csms.marked_offline')
     OR (e.kind = 'ws.close' AND e.code = '1001')  -- 1001 going away: the server shut down
),
sites AS (
  SELECT site, count(*) AS n FROM chargers WHERE site IS NOT NULL GROUP BY site
  HAVING count(*) >= 2
),
fleet AS (SELECT count(DISTINCT charger_id) AS n, count(DISTINCT site) AS n_sites FROM chargers),
anchors AS (
  SELECT a.site, a.ts,
         count(DISTINCT b.charger_id) FILTER (WHERE b.site = a.site
                                              AND b.ts >= a.ts) AS n_site,
         count(DISTINCT b.charger_id) FILTER (WHERE b.site IS DISTINCT FROM a.site) AS n_other
  -- other sites are looked at on both sides of the anchor: a fleet-wide drop is not a site's
  FROM drops a JOIN drops b ON b.ts BETWEEN a.ts - to_seconds($window_s)
                                        AND a.ts + to_seconds($window_s)
  WHERE a.site IS NOT NULL
  GROUP BY a.site, a.event_id, a.ts
),
qualifying AS (
  SELECT a.site, a.ts FROM anchors a JOIN sites s USING (site), fleet
  WHERE a.n_site = s.n
    AND a.n_other <= $max_other_fraction * greatest(fleet.n - s.n, 0)
),
incidents AS (
  SELECT site, ts, sum(new) OVER (PARTITION BY site ORDER BY ts) AS incident
  FROM (SELECT site, ts, CASE WHEN ts - lag(ts) OVER (PARTITION BY site ORDER BY ts)
                                   <= to_seconds($window_s) THEN 0 ELSE 1 END AS new
        FROM qualifying)
),
spans AS (
  SELECT site, incident, min(ts) AS t0, max(ts) + to_seconds($window_s) AS t1
  FROM incidents GROUP BY site, incident
),
members AS (
  SELECT s.site, s.incident, d.charger_id, d.ts, d.event_id,
         row_number() OVER (PARTITION BY s.site, s.incident, d.charger_id ORDER BY d.ts) AS nth
  FROM spans s JOIN drops d ON d.site = s.site AND d.ts BETWEEN s.t0 AND s.t1
)
SELECT NULL AS charger_id, min(ts) AS ts_start, max(ts) AS ts_end,
       CASE WHEN any_value(fleet.n_sites) >= 2 THEN 0.85 ELSE 0.6 END AS score,
       'all ' || count(DISTINCT charger_id) || ' chargers of site ' || site
         || ' dropped within ' || date_diff('second', min(ts), max(ts)) || ' s'
         || CASE WHEN any_value(fleet.n_sites) >= 2 THEN ' while other sites stayed up'
                 ELSE ' (no other site in the bundle to compare)' END AS summary,
       list(event_id ORDER BY ts) FILTER (WHERE nth = 1)[1:10] AS evidence,
       'site' AS scope, site AS subject,
       list(DISTINCT charger_id ORDER BY charger_id) AS chargers
FROM members, fleet
GROUP BY site, incident
ORDER BY ts_start, subject;
