-- id: ocpp.boot_rejected
-- title: Backend rejects the charger's BootNotification (or answers it with a CALLERROR)
-- cause: ocpp.identity_mismatch
-- channel: backend
-- severity: high
-- status: test
-- params: min_rejections = 1
-- fix: Make the charge point id on the charger match the backend's registration exactly (case, whitespace), or register it.
-- falsepositives: A backend that rejects on purpose (decommissioned charger, unpaid contract).
-- references: OCPP 1.6 section 4.2 BootNotification; OCPP 2.0.1 B01
WITH answers AS (
  SELECT r.charger_id, r.ts, r.event_id, r.kind, r.code, c.event_id AS call_event
  FROM events r
  LEFT JOIN events c
    ON c.file_id = r.file_id AND c.charger_id = r.charger_id AND c.kind = 'ocpp.boot'
   AND c.detail->>'unique_id' = r.detail->>'unique_id' AND c.ts <= r.ts
  WHERE r.kind = 'ocpp.boot_rejected'
     OR (r.kind = 'ocpp.callerror' AND r.detail->>'action' = 'BootNotification')
)
SELECT charger_id,
       min(ts) AS ts_start,
       max(ts) AS ts_end,
       least(0.95, 0.75 + 0.05 * count(*)) AS score,
       'BootNotification answered ' || string_agg(DISTINCT coalesce(code, kind), '/')
         || ' ' || count(*) || ' time(s): the backend does not accept this charge point id'
         AS summary,
       list(event_id ORDER BY ts)[1:5] || list(call_event ORDER BY ts)
         FILTER (WHERE call_event IS NOT NULL)[1:2] AS evidence
FROM answers
GROUP BY charger_id
HAVING count(*) >= $min_rejections
ORDER BY charger_id;
