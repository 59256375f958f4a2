-- id: vehicle.charger_fails_every_vehicle
-- title: One charger fails sessions with many vehicle models while the others charge them
-- cause: any
-- channel: vehicle
-- severity: high
-- status: test
-- params: alpha = 0.01, min_failures = 5, min_models = 3
-- fix: The charger side of the vehicle link is at fault: inspect the connector (CP pin), the cable and the PLC modem; the session error codes and the fault log say which.
-- falsepositives: A charger used mostly by one fleet of unusual vehicles.
-- "Try a different vehicle": failures spread over several models on one charger, at a rate
-- far above the rest of the fleet (one-sided Fisher test), point at the charger. The session
-- error codes pick the cause; without them the vehicle-channel causes come back at low
-- scores and the verdict asks for the fault log.
WITH s AS (
  SELECT charger_id, result = 'failed' AS failed, vehicle_make || ' ' || vehicle_model AS model,
         upper(coalesce(error_code, '')) AS err
  FROM sessions WHERE result IN ('ok', 'failed')
),
per AS (
  SELECT charger_id, count(*) FILTER (WHERE failed) AS f, count(*) AS n,
         count(DISTINCT model) FILTER (WHERE failed) AS models,
         mode(err) FILTER (WHERE failed) AS err
  FROM s GROUP BY charger_id
),
tot AS (SELECT count(*) FILTER (WHERE failed) AS f, count(*) AS n FROM s),
hits AS (
  SELECT p.*, fisher_greater(p.f, p.n, t.f - p.f, t.n - p.n) AS p_value
  FROM per p, tot t
  WHERE t.n > p.n AND p.f >= $min_failures AND p.models >= $min_models
    AND fisher_greater(p.f, p.n, t.f - p.f, t.n - p.n) < $alpha
),
typed AS (
  SELECT *, CASE WHEN err LIKE '%SLAC%' THEN 'vehicle.slac_failure'
                 WHEN err LIKE '%PLC%' OR err LIKE '%ATTENUAT%' THEN 'vehicle.plc_attenuation'
                 WHEN err LIKE '%V2G%' OR err LIKE '%15118%' OR err LIKE '%DIN%'
                   THEN 'vehicle.iso15118_incompatible'
                 WHEN err LIKE '%CP%' OR err LIKE '%PILOT%' THEN 'vehicle.cp_signal' END AS known
  FROM hits
),
ev AS (
  SELECT e.charger_id, min(e.ts) AS t0, max(e.ts) AS t1, list(e.event_id ORDER BY e.ts)[1:6] AS ids
  FROM events e JOIN hits USING (charger_id) WHERE e.kind = 'session.failed'
  GROUP BY e.charger_id
),
rows AS (
  SELECT t.charger_id, ev.t0, ev.t1,
         t.f || ' of ' || t.n || ' sessions failed across ' || t.models
           || ' vehicle models (Fisher p = ' || printf('%.2g', t.p_value) || ' against the fleet)'
           || CASE WHEN t.err <> '' THEN ', mostly ' || t.err ELSE '' END AS summary,
         ev.ids, t.known
  FROM typed t JOIN ev USING (charger_id)
)
SELECT charger_id, t0 AS ts_start, t1 AS ts_end, 0.7 AS score, summary, ids AS evidence,
       known AS cause
FROM rows WHERE known IS NOT NULL
UNION ALL
SELECT charger_id, t0, t1, 0.3, summary || '; no error code names the cause', ids, c.cause
FROM rows, (VALUES ('vehicle.cp_signal'), ('vehicle.slac_failure'),
                   ('vehicle.plc_attenuation')) AS c(cause)
WHERE known IS NULL
ORDER BY charger_id, cause;
