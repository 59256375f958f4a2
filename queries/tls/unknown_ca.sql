-- id: tls.untrusted_backend_certificate
-- title: The charger does not trust the backend's certificate chain (alert unknown_ca / bad_certificate)
-- cause: tls.unknown_ca
-- channel: backend
-- severity: high
-- status: test
-- params: min_events = 1
-- fix: Install the backend's root CA on the charger (InstallCertificate, CentralSystemRootCertificate), or have the backend serve a chain that ends at a root the charger has; make sure intermediates are sent.
-- falsepositives: certificate_unknown / bad_certificate are also sent for expired certificates by some stacks (then tls.certificate_expired scores higher); a TLS-intercepting proxy on site.
-- references: RFC 5246 7.2.2 (unknown_ca, bad_certificate); OCPP 1.6 Security Whitepaper 1.3.2
WITH ev AS (
  SELECT a.charger_id, a.ts, a.event_id, a.code,
         EXISTS (SELECT 1 FROM events x WHERE x.charger_id = a.charger_id
                 AND x.kind IN ('tls.cert_expired', 'tls.cert_not_yet_valid')) AS expired_seen
  FROM events a
  WHERE a.kind = 'tls.alert' AND a.charger_id IS NOT NULL
    AND a.code IN ('unknown_ca', 'bad_certificate', 'certificate_unknown', 'unsupported_certificate')
)
SELECT charger_id,
       min(ts) AS ts_start,
       max(ts) AS ts_end,
       CASE WHEN bool_or(code = 'unknown_ca') THEN 0.9
            WHEN bool_or(expired_seen) THEN 0.4
            ELSE 0.7 END AS score,
       'TLS handshake refused: ' || count(*) || ' alert(s) ' || string_agg(DISTINCT code, '/')
         || ' - the charger rejects the backend certificate chain' AS summary,
       list(event_id ORDER BY ts)[1:6] AS evidence
FROM ev
GROUP BY charger_id
HAVING count(*) >= $min_events
ORDER BY charger_id;
