-- id: tls.client_certificate_missing
-- title: The backend asks for a client certificate (security profile 3) and the charger sends none
-- cause: tls.security_profile_mismatch
-- channel: backend
-- severity: high
-- status: test
-- params: window_ms = 5000
-- fix: Align the security profile: install a charger (client) certificate signed by the backend's CA and switch the charger to profile 3, or configure the backend for profile 2 (basic auth over TLS) for this charger.
-- falsepositives: A backend that requests a certificate optionally and still accepts the connection (then no handshake failure follows).
-- references: OCPP 1.6 Security Whitepaper, security profiles 2 and 3; RFC 5246 7.4.4 (CertificateRequest), 7.4.6
-- A handshake where the server sent CertificateRequest and the client's Certificate was
-- empty (or absent), failing within window_ms (a fatal alert or a failed handshake).
WITH miss AS (
  SELECT m.charger_id, m.ts, m.event_id, m.file_id,
         (SELECT min(f.event_id) FROM events f
           WHERE f.file_id = m.file_id AND f.charger_id = m.charger_id
             AND f.kind IN ('tls.alert', 'tls.handshake_failed', 'tls.encrypted_alert')
             AND f.severity IN ('error', 'warning')
             AND f.ts BETWEEN m.ts AND m.ts + to_milliseconds($window_ms)) AS failure
  FROM events m
  WHERE m.kind = 'tls.client_cert_missing' AND m.charger_id IS NOT NULL
)
SELECT charger_id,
       min(ts) AS ts_start,
       max(ts) AS ts_end,
       CASE WHEN count(failure) > 0 THEN 0.92 ELSE 0.6 END AS score,
       'backend requested a client certificate and the charger sent none, '
         || count(*) || ' handshake(s); ' || count(failure) || ' failed right after' AS summary,
       (list(event_id ORDER BY ts)[1:4] || list(failure ORDER BY ts) FILTER (WHERE failure IS NOT NULL)[1:3])
         AS evidence
FROM miss
GROUP BY charger_id
ORDER BY charger_id;
