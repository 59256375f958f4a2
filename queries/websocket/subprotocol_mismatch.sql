-- id: ocpp.subprotocol_mismatch
-- title: Charger and backend share no OCPP version in Sec-WebSocket-Protocol
-- cause: ocpp.version_mismatch
-- channel: backend
-- severity: high
-- status: test
-- params: min_events = 1
-- fix: Configure the charger and the backend for a common OCPP version (ocpp1.6 or ocpp2.0.1), or enable the charger's version on the backend.
-- falsepositives: A charger that offers no subprotocol at all against a lenient backend (then no event is raised).
-- references: RFC 6455 4.2.2 (Sec-WebSocket-Protocol); OCPP-J 1.6 section 3.1.2
SELECT charger_id,
       min(ts) AS ts_start,
       max(ts) AS ts_end,
       least(0.95, 0.88 + 0.02 * (count(*) - 1)) AS score,
       count(*) || ' upgrade(s) where the charger offered '
         || string_agg(DISTINCT code, ', ') || ' and the backend accepted none' AS summary,
       list(event_id ORDER BY ts)[1:6] AS evidence
FROM events
WHERE kind = 'ws.subprotocol_mismatch' AND charger_id IS NOT NULL
GROUP BY charger_id
HAVING count(*) >= $min_events
ORDER BY charger_id;
