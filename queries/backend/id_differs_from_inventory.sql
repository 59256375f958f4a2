-- id: ocpp.id_case_mismatch
-- title: Charge point id in the logs differs from the inventory only by case or whitespace
-- cause: ocpp.identity_mismatch
-- channel: backend
-- severity: high
-- status: test
-- fix: Configure the charge point id exactly as registered (ids are case-sensitive in most backends).
-- falsepositives: Two distinct chargers whose ids differ only by case (bad practice, but possible).
WITH inv AS (SELECT charger_id FROM chargers WHERE NOT inferred),
seen AS (
  SELECT charger_id, min(ts) AS first_ts, max(ts) AS last_ts,
         list(event_id ORDER BY ts)[1:3] AS ev
  FROM events
  WHERE charger_id IS NOT NULL AND charger_id NOT IN (SELECT charger_id FROM inv)
  GROUP BY charger_id
)
SELECT inv.charger_id, s.first_ts AS ts_start, s.last_ts AS ts_end, 0.8 AS score,
       'the charger identifies as ''' || s.charger_id || ''' but the inventory has '''
         || inv.charger_id || '''' AS summary,
       s.ev AS evidence,
       [inv.charger_id] AS chargers
FROM seen s
JOIN inv ON lower(trim(inv.charger_id)) = lower(trim(s.charger_id))
ORDER BY inv.charger_id;
