-- id: ocpp.identity_rejected
-- title: The backend refuses the charge point id on the WebSocket upgrade (401/403/404 on the id path)
-- cause: ocpp.identity_mismatch
-- channel: backend
-- severity: high
-- status: test
-- params: min_events = 1
-- fix: Configure the charge point id exactly as registered at the backend (ids are case-sensitive), or register this id.
-- falsepositives: Basic-auth password refused (401 with an Authorization header: tls.security_profile_mismatch); a wrong URL path (ocpp.wrong_url).
-- references: OCPP-J 1.6 section 3.1.1; OCPP 2.0.1 part 4, 3.1 (charging station identity in the URL)
-- Scored highest when the id in the path equals an inventory id except for case or
-- whitespace; high when the path prefix matches the inventory's backend_url.
WITH inv AS (
  SELECT charger_id, ip,
         regexp_extract(backend_url, '^[A-Za-z]+://[^/]+(/.*)?$', 1) AS url_path
  FROM chargers WHERE NOT inferred
),
ev AS (
  SELECT e.charger_id, e.ts, e.event_id, e.code,
         e.detail->>'charge_point_id' AS cp_id,
         regexp_replace(e.detail->>'path', '[^/]*$', '') AS prefix,
         e.detail->>'auth_scheme' AS auth,
         regexp_extract(e.detail->>'client', '^(.*):[0-9]+$', 1) AS client_ip
  FROM events e
  WHERE e.kind = 'ws.upgrade_rejected' AND e.code IN ('401', '403', '404')
),
scored AS (
  SELECT coalesce(byid.charger_id, byip.charger_id, ev.charger_id) AS charger_id,
         ev.ts, ev.event_id, ev.cp_id,
         CASE
           WHEN byid.charger_id IS NOT NULL AND byid.charger_id <> ev.cp_id THEN 0.92
           WHEN coalesce(byid.url_path, byip.url_path) IS NOT NULL
                AND rtrim(coalesce(byid.url_path, byip.url_path), '/') || '/' = ev.prefix
                AND ev.code IN ('401', '403') THEN 0.85
           WHEN coalesce(byid.url_path, byip.url_path) IS NOT NULL
                AND rtrim(coalesce(byid.url_path, byip.url_path), '/') || '/' = ev.prefix THEN 0.75
           WHEN coalesce(byid.url_path, byip.url_path) IS NULL AND ev.code IN ('401', '403') THEN 0.6
           ELSE 0.3 END AS s
  FROM ev
  LEFT JOIN inv byid ON lower(trim(byid.charger_id)) = lower(trim(ev.cp_id))
  LEFT JOIN inv byip ON byip.ip = ev.client_ip AND byid.charger_id IS NULL
  WHERE ev.auth IS NULL OR lower(ev.auth) <> 'basic'
)
SELECT charger_id,
       min(ts) AS ts_start,
       max(ts) AS ts_end,
       least(0.95, max(s) + 0.01 * (count(*) - 1)) AS score,
       count(*) || ' upgrade(s) refused for charge point id ''' || any_value(cp_id)
         || ''' (the inventory has ''' || charger_id || ''')' AS summary,
       list(event_id ORDER BY ts)[1:6] AS evidence,
       [charger_id] AS chargers
FROM scored
GROUP BY charger_id
HAVING count(*) >= $min_events AND max(s) >= 0.5
ORDER BY charger_id;
