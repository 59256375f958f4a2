-- id: ocpp.wrong_endpoint
-- title: The charger's backend URL is wrong: upgrade answered 404 off the backend's path, or the connection refused
-- cause: ocpp.wrong_url
-- channel: backend
-- severity: high
-- status: test
-- params: min_events = 1
-- fix: Set the charger's central system URL to the backend's endpoint exactly (scheme ws/wss, host, port, path; the charge point id appended once), as in the inventory's backend_url.
-- falsepositives: A backend that answers 404 for unknown charge point ids (then the path prefix matches backend_url and ocpp.identity_mismatch is the better cause); a backend down on purpose (refused connections from every charger: see backend.outage).
-- references: OCPP-J 1.6 section 3.1.1 (connection URL)
-- 404 on an upgrade whose path (minus the charge point id) differs from the inventory's
-- backend_url path scores high; refused connections (RST to SYN) to a port other than the
-- inventory's score high too; without an inventory both score lower.
WITH inv AS (
  SELECT charger_id, backend_url,
         regexp_extract(backend_url, '^[A-Za-z]+://[^/]+(/.*)?$', 1) AS url_path,
         try_cast(nullif(regexp_extract(backend_url, '^[A-Za-z]+://[^/:]+:([0-9]+)', 1), '') AS INTEGER)
           AS url_port
  FROM chargers WHERE NOT inferred AND backend_url IS NOT NULL
),
ev AS (
  SELECT e.charger_id, e.ts, e.event_id, e.kind,
         regexp_replace(e.detail->>'path', '[^/]*$', '') AS prefix,
         try_cast(regexp_extract(e.detail->>'server', ':([0-9]+)$', 1) AS INTEGER) AS port
  FROM events e
  WHERE e.charger_id IS NOT NULL
    AND ((e.kind = 'ws.upgrade_rejected' AND e.code = '404') OR e.kind = 'tcp.refused')
),
scored AS (
  SELECT coalesce(i.charger_id, ev.charger_id) AS charger_id, ev.ts, ev.event_id, ev.kind,
         CASE
           WHEN ev.kind = 'ws.upgrade_rejected' AND i.url_path IS NOT NULL
                AND NOT starts_with(rtrim(i.url_path, '/') || '/', ev.prefix)
                AND NOT starts_with(ev.prefix, rtrim(i.url_path, '/') || '/') THEN 0.9
           WHEN ev.kind = 'ws.upgrade_rejected' AND i.url_path IS NOT NULL THEN 0.2
           WHEN ev.kind = 'ws.upgrade_rejected' THEN 0.55
           WHEN ev.kind = 'tcp.refused' AND i.url_port IS NOT NULL AND ev.port <> i.url_port THEN 0.85
           WHEN ev.kind = 'tcp.refused' AND i.url_port IS NOT NULL THEN 0.5
           ELSE 0.5 END AS s
  FROM ev
  LEFT JOIN inv i ON lower(i.charger_id) = lower(ev.charger_id)
)
SELECT charger_id,
       min(ts) AS ts_start,
       max(ts) AS ts_end,
       least(0.95, max(s) + 0.02 * (count(*) - 1)) AS score,
       count(*) FILTER (WHERE kind = 'ws.upgrade_rejected') || ' upgrade(s) answered 404 and '
         || count(*) FILTER (WHERE kind = 'tcp.refused')
         || ' connection(s) refused: the charger is not pointed at the backend''s endpoint' AS summary,
       list(event_id ORDER BY s DESC, ts)[1:6] AS evidence
FROM scored
GROUP BY charger_id
HAVING count(*) >= $min_events AND max(s) >= 0.5
ORDER BY charger_id;
