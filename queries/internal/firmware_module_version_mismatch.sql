-- id: firmware.module_version_mismatch
-- title: Modules of the same kind report different firmware versions
-- cause: firmware.mismatch
-- channel: internal
-- severity: medium
-- status: test
-- params: min_components = 2
-- fix: Finish the interrupted update: flash every module of the same kind to the version the charger's release expects (the majority version is usually the target), then verify the versions on the bus again.
-- falsepositives: Mixed hardware revisions that legitimately run different firmware lines.
WITH v AS (
  SELECT e.charger_id, e.event_id, e.ts, e.detail->>'component' AS component,
         e.detail->>'version' AS version,
         regexp_replace(e.detail->>'component', '[_ -]?[0-9]+$', '') AS family
  FROM events e WHERE e.kind = 'firmware.version' AND e.charger_id IS NOT NULL
),
fam AS (
  SELECT charger_id, family, count(DISTINCT component) AS components,
         count(DISTINCT version) AS versions, mode(version) AS majority
  FROM v GROUP BY ALL
  HAVING count(DISTINCT component) >= $min_components AND count(DISTINCT version) > 1
)
SELECT v.charger_id, min(v.ts) AS ts_start, max(v.ts) AS ts_end,
       least(0.9, 0.6 + 0.1 * (max(f.versions) - 1)) AS score,
       string_agg(DISTINCT f.family || ': ' || f.versions || ' versions', '; ')
         || ' (' || string_agg(v.component || '=' || v.version, ', ' ORDER BY v.component) || ')'
         AS summary,
       list(v.event_id ORDER BY v.ts, v.event_id) AS evidence
FROM v JOIN fam f USING (charger_id, family)
GROUP BY v.charger_id
ORDER BY v.charger_id;
