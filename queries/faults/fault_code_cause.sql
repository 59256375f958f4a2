-- id: fault.code_names_cause
-- title: The charger's own fault log names a cause (mapped fault codes)
-- cause: any
-- channel: any
-- severity: medium
-- status: test
-- params: min_count = 1
-- fix: Follow the fix of the cause the fault code maps to; confirm it with the layer's own data (capture, CAN log, sessions).
-- falsepositives: A vendor code table that maps a symptom to the wrong cause; codes raised as a consequence of another failure.
-- The fault log is the charger's own diagnosis: good for the channel, moderate for the
-- cause. The score grows with repetition and stays below what cross-layer evidence gives.
SELECT charger_id, min(ts) AS ts_start, max(ts) AS ts_end,
       least(0.8, 0.5 + 0.05 * count(*)) AS score,
       count(*) || ' fault(s) ' || string_agg(DISTINCT code, '/' ORDER BY code) || ' ('
         || coalesce(any_value(detail->>'title'), 'no title') || ') in the charger''s fault log'
         AS summary,
       list(event_id ORDER BY ts)[1:6] AS evidence,
       detail->>'cause' AS cause
FROM events
WHERE layer = 'fault_log' AND detail->>'cause' IS NOT NULL AND charger_id IS NOT NULL
GROUP BY charger_id, detail->>'cause'
HAVING count(*) >= $min_count
ORDER BY charger_id, cause;
