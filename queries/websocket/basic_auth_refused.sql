-- id: ocpp.basic_auth_refused
-- title: The backend refuses the charger's HTTP Basic credentials (security profile 1/2)
-- cause: tls.security_profile_mismatch
-- channel: backend
-- severity: high
-- status: test
-- params: min_events = 1
-- fix: Set the charger's AuthorizationKey to the password the backend holds for this charge point (security profile 1/2), or move both sides to the same profile.
-- falsepositives: A charge point id unknown to the backend that also answers 401 (the user name is the charge point id: compare with the inventory).
-- references: OCPP 1.6 Security Whitepaper, security profile 1 and 2 (HTTP Basic authentication)
SELECT charger_id,
       min(ts) AS ts_start,
       max(ts) AS ts_end,
       least(0.9, 0.8 + 0.02 * (count(*) - 1)) AS score,
       count(*) || ' upgrade(s) with Basic credentials for user '''
         || any_value(detail->>'auth_user') || ''' answered ' || any_value(code) AS summary,
       list(event_id ORDER BY ts)[1:6] AS evidence
FROM events
WHERE kind = 'ws.upgrade_rejected' AND code IN ('401', '403')
  AND lower(detail->>'auth_scheme') = 'basic' AND charger_id IS NOT NULL
GROUP BY charger_id
HAVING count(*) >= $min_events
ORDER BY charger_id;
