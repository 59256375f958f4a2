-- id: tls.alert_before_close
-- title: A fatal TLS alert shortly before the TCP or WebSocket connection of the same charger closes
-- cause: tls.unknown_ca
-- channel: backend
-- severity: medium
-- status: test
-- params: window_ms = 2000
-- fix: Read the alert: certificate_expired -> renew the backend certificate or fix the charger clock; unknown_ca / bad_certificate -> install the backend root CA on the charger; handshake_failure after a CertificateRequest -> align the security profile.
-- falsepositives: An alert sent while the connection closes for another reason (backend maintenance).
-- The correlation that ties a TLS failure to the dropped connection; the cause follows the
-- alert's description.
WITH pairs AS (
  SELECT a.charger_id, a.ts, a.code, a.event_id AS alert_id,
         (SELECT min(c.event_id) FROM events c
           WHERE c.file_id = a.file_id AND c.charger_id = a.charger_id
             AND c.kind IN ('tcp.rst', 'tcp.fin', 'ws.close', 'ws.disconnect')
             AND c.ts BETWEEN a.ts AND a.ts + to_milliseconds($window_ms)) AS close_id
  FROM events a
  WHERE a.kind = 'tls.alert' AND a.severity = 'error' AND a.charger_id IS NOT NULL
)
SELECT charger_id,
       min(ts) AS ts_start,
       max(ts) AS ts_end,
       0.6 AS score,
       count(*) || ' fatal TLS alert(s) (' || string_agg(DISTINCT code, '/')
         || ') each followed by the connection closing within ' || $window_ms || ' ms' AS summary,
       list(alert_id ORDER BY ts)[1:3] || list(close_id ORDER BY ts)[1:3] AS evidence,
       CASE WHEN bool_or(code IN ('certificate_expired')) THEN 'tls.certificate_expired'
            WHEN bool_or(code IN ('handshake_failure', 'certificate_required', 'access_denied'))
                 THEN 'tls.security_profile_mismatch'
            ELSE 'tls.unknown_ca' END AS cause
FROM pairs
WHERE close_id IS NOT NULL
GROUP BY charger_id
ORDER BY charger_id;
