-- id: ocpp.boot_accepted_later
-- title: The backend accepts the same charger's BootNotification after rejecting it
-- cause: ocpp.identity_mismatch
-- channel: backend
-- severity: low
-- status: test
-- fix: If the charger is accepted now, the id was corrected or registered meanwhile; check what changed.
-- falsepositives: An id mismatch fixed during the window of the bundle (then the cause was real, and is over).
-- Evidence against: a charger whose boot was rejected and later accepted is known to the
-- backend now, so a standing identity mismatch is less likely.
WITH rejected AS (
  SELECT charger_id, max(ts) AS last_reject FROM events
  WHERE kind = 'ocpp.boot_rejected' GROUP BY charger_id
)
SELECT a.charger_id, min(a.ts) AS ts_start, max(a.ts) AS ts_end, 0.6 AS score,
       'BootNotification accepted ' || count(*) || ' time(s) after the last rejection'
         AS summary,
       list(a.event_id ORDER BY a.ts)[1:3] AS evidence,
       true AS against
FROM events a JOIN rejected r ON r.charger_id = a.charger_id AND a.ts > r.last_reject
WHERE a.kind = 'ocpp.boot_accepted'
GROUP BY a.charger_id
ORDER BY a.charger_id;
