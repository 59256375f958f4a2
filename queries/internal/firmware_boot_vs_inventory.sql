-- id: firmware.boot_vs_inventory
-- title: Firmware reported in BootNotification differs from the inventory
-- cause: firmware.mismatch
-- channel: internal
-- severity: medium
-- status: test
-- fix: Finish the interrupted update: bring the charger to the firmware the inventory (and the backend's compatibility matrix) expects, all modules in sequence.
-- falsepositives: An inventory not updated after a planned upgrade.
WITH boots AS (
  SELECT m.charger_id, m.ts, m.file_id, m.locator,
         coalesce(m.payload->>'firmwareVersion',
                  m.payload->'chargingStation'->>'firmwareVersion') AS reported
  FROM ocpp_messages m
  WHERE m.message_type = 2 AND m.action = 'BootNotification'
),
diff AS (
  SELECT b.*, c.firmware AS expected
  FROM boots b JOIN chargers c ON c.charger_id = b.charger_id AND NOT c.inferred
  WHERE c.firmware IS NOT NULL AND b.reported IS NOT NULL
    AND lower(trim(b.reported)) <> lower(trim(c.firmware))
)
SELECT d.charger_id, min(d.ts) AS ts_start, max(d.ts) AS ts_end, 0.65 AS score,
       'charger reports firmware ' || any_value(d.reported) || ', inventory expects '
         || any_value(d.expected) AS summary,
       list(e.event_id ORDER BY e.ts)[1:3] AS evidence
FROM diff d
JOIN events e ON e.file_id = d.file_id AND e.locator = d.locator AND e.kind = 'ocpp.boot'
GROUP BY d.charger_id
ORDER BY d.charger_id;
