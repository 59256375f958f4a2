-- id: tls.certificate_expired
-- title: The backend's TLS certificate is outside its validity (alert certificate_expired, or the certificate seen in clear)
-- cause: tls.certificate_expired
-- channel: backend
-- severity: high
-- status: test
-- params: min_events = 1
-- fix: Renew the backend (CSMS) server certificate and deploy the full chain; if the certificate is valid, set the charger's clock (NTP) - a charger clock far off makes valid certificates look expired.
-- falsepositives: A charger whose clock is wrong by years (the alert is real, the fix is NTP); a certificate rotation window at the backend.
-- references: RFC 5246 7.2.2 (certificate_expired); OCPP 1.6 Security Whitepaper, security profile 2
-- Evidence: the charger's fatal alert certificate_expired, and/or a server Certificate
-- whose validity does not cover the capture time (only visible with TLS <= 1.2).
WITH ev AS (
  SELECT charger_id, ts, event_id, kind
  FROM events
  WHERE charger_id IS NOT NULL
    AND ((kind = 'tls.alert' AND code = 'certificate_expired')
         OR kind IN ('tls.cert_expired', 'tls.cert_not_yet_valid'))
)
SELECT charger_id,
       min(ts) AS ts_start,
       max(ts) AS ts_end,
       CASE WHEN bool_or(kind = 'tls.alert') AND bool_or(kind <> 'tls.alert') THEN 0.95
            WHEN bool_or(kind = 'tls.alert') THEN 0.9
            ELSE 0.85 END AS score,
       'TLS handshake refused over the backend certificate: '
         || count(*) FILTER (WHERE kind = 'tls.alert') || ' certificate_expired alert(s), '
         || count(*) FILTER (WHERE kind <> 'tls.alert')
         || ' server certificate(s) outside their validity at capture time' AS summary,
       list(event_id ORDER BY ts)[1:6] AS evidence
FROM ev
GROUP BY charger_id
HAVING count(*) >= $min_events
ORDER BY charger_id;
