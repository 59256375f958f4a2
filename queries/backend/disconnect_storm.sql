-- id: network.disconnect_storm
-- title: One charger drops its backend connection again and again
-- cause: network.wifi_loss
-- channel: backend
-- severity: medium
-- status: test
-- params: min_disconnects = 5, window_min = 60
-- fix: Check the charger's uplink for its connectivity type: antenna and signal for cellular, range and interference for Wi-Fi, cable and switch port for Ethernet.
-- falsepositives: A backend restarting repeatedly (then other chargers drop at the same times).
-- The cause follows the inventory's connectivity; without it the three link causes are
-- returned at low scores, so the verdict asks for the inventory.
-- A backend closing the socket after rejecting the charger is not a link problem: drops
-- within a minute after a rejected BootNotification or a CALLERROR do not count.
WITH drops AS (
  SELECT e.charger_id, e.ts, e.event_id FROM events e
  WHERE e.kind IN ('ws.disconnect', 'csms.marked_offline')
    AND NOT EXISTS (SELECT 1 FROM events r
                    WHERE r.charger_id = e.charger_id
                      AND r.kind IN ('ocpp.boot_rejected', 'ocpp.callerror')
                      AND r.ts BETWEEN e.ts - INTERVAL 60 SECOND AND e.ts)
),
d AS (
  SELECT charger_id, ts, event_id,
         count(*) OVER (PARTITION BY charger_id ORDER BY ts
                        RANGE BETWEEN CURRENT ROW AND to_minutes($window_min) FOLLOWING) AS n
  FROM drops
),
storm AS (
  SELECT charger_id, min(ts) AS ts_start, max(ts) AS ts_end, max(n) AS peak, count(*) AS total,
         list(event_id ORDER BY ts)[1:6] AS evidence
  FROM d GROUP BY charger_id HAVING max(n) >= $min_disconnects
),
link AS (
  SELECT s.*, c.connectivity, c.signal_dbm
  FROM storm s LEFT JOIN chargers c ON c.charger_id = s.charger_id
),
typed AS (
  SELECT *, CASE connectivity WHEN 'cellular' THEN 'network.cellular_signal'
                              WHEN 'wifi' THEN 'network.wifi_loss'
                              WHEN 'ethernet' THEN 'network.ethernet_link' END AS known_cause
  FROM link
)
SELECT charger_id, ts_start, ts_end,
       CASE WHEN known_cause = 'network.cellular_signal' AND signal_dbm < -100 THEN 0.85
            ELSE 0.7 END AS score,
       total || ' disconnects (' || peak || ' within ' || $window_min || ' min) on a '
         || connectivity || ' link'
         || CASE WHEN signal_dbm IS NOT NULL THEN ', signal ' || signal_dbm || ' dBm' ELSE '' END
         AS summary,
       evidence, known_cause AS cause
FROM typed WHERE known_cause IS NOT NULL
UNION ALL
SELECT charger_id, ts_start, ts_end, 0.3,
       total || ' disconnects (' || peak || ' within ' || $window_min
         || ' min); link type unknown', evidence, c.cause
FROM typed, (VALUES ('network.cellular_signal'), ('network.wifi_loss'),
                    ('network.ethernet_link')) AS c(cause)
WHERE known_cause IS NULL
ORDER BY charger_id, cause;
