-- id: vehicle.model_failure_cluster
-- title: Charging failures cluster on one vehicle model far above the fleet rate
-- cause: vehicle.model_specific
-- channel: vehicle
-- severity: medium
-- status: test
-- params: alpha = 0.01, min_failures = 5, min_ratio = 2.0
-- fix: Escalate with the vehicle model and charger firmware to the charger vendor: a compatibility gap; look for vehicle or charger updates.
-- falsepositives: One vehicle of that model with a defect (check the EVCCIDs); a model used mostly at one faulty charger.
-- One-sided Fisher exact test of the model's failure rate against all other sessions;
-- small samples cannot reach alpha, so they stay silent.
WITH s AS (
  SELECT coalesce(vehicle_make, '?') || ' ' || coalesce(vehicle_model, '?') AS model,
         result = 'failed' AS failed
  FROM sessions WHERE result IN ('ok', 'failed') AND vehicle_model IS NOT NULL
),
per_model AS (
  SELECT model, count(*) FILTER (WHERE failed) AS f, count(*) AS n FROM s GROUP BY model
),
total AS (SELECT count(*) FILTER (WHERE failed) AS f, count(*) AS n FROM s),
tested AS (
  SELECT p.model, p.f, p.n, t.f - p.f AS f_rest, t.n - p.n AS n_rest,
         fisher_greater(p.f, p.n, t.f - p.f, t.n - p.n) AS p_value
  FROM per_model p, total t WHERE t.n > p.n
),
hits AS (
  SELECT * FROM tested
  WHERE f >= $min_failures AND p_value < $alpha
    AND f / n >= $min_ratio * greatest(f_rest / n_rest, 1e-9)
),
ev AS (
  SELECT h.model, e.event_id, e.ts, e.charger_id
  FROM hits h JOIN events e
    ON e.kind = 'session.failed'
   AND coalesce(e.detail->>'vehicle_make', '?') || ' ' || coalesce(e.detail->>'vehicle_model', '?') = h.model
)
SELECT NULL AS charger_id, min(ev.ts) AS ts_start, max(ev.ts) AS ts_end,
       CASE WHEN any_value(h.p_value) < 0.001 THEN 0.9 ELSE 0.75 END AS score,
       h.model || ': ' || any_value(h.f) || ' of ' || any_value(h.n) || ' sessions failed ('
         || round(100.0 * any_value(h.f) / any_value(h.n)) || '%) vs '
         || round(100.0 * any_value(h.f_rest) / any_value(h.n_rest), 1)
         || '% for other vehicles, Fisher p = ' || printf('%.2g', any_value(h.p_value)) AS summary,
       list(ev.event_id ORDER BY ev.ts)[1:8] AS evidence,
       'fleet' AS scope, 'fleet' AS subject,
       list(DISTINCT ev.charger_id ORDER BY ev.charger_id) AS chargers
FROM hits h JOIN ev USING (model)
GROUP BY h.model
ORDER BY h.model;
