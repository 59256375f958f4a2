-- id: can.termination_persistent_errors
-- title: Error frames on the CAN bus from the start of the log with no clean period
-- cause: can.termination
-- channel: internal
-- severity: high
-- status: test
-- params: min_error_share = 0.5, start_window_s = 30, min_errors = 20
-- fix: Measure the resistance between CAN-H and CAN-L with the charger off: 60 ohm means both 120 ohm terminations are in place, 120 ohm means one is missing, 40 ohm or less means one too many. Fit or remove the terminating resistor at the bus ends (control board and last power module).
-- falsepositives: A wrong bit rate on the logging interface also floods error frames from the start; check the logger's bit rate against the bus before replacing parts.
-- references: ISO 11898-2 (bus termination); linux include/uapi/linux/can/error.h
WITH logs AS (
  SELECT l.file_id, l.charger_id, l.ts_first, l.ts_last,
         greatest(1, epoch(l.ts_last) - epoch(l.ts_first)) AS span_s
  FROM can_logs l
  WHERE l.charger_id IS NOT NULL AND l.ts_first IS NOT NULL
),
secs AS (
  SELECT s.file_id,
         count(DISTINCT s.second) FILTER (WHERE s.error_frames > 0 OR s.err_bus_off > 0) AS err_secs,
         sum(s.error_frames) AS errors,
         min(s.second) FILTER (WHERE s.error_frames > 0) AS first_err
  FROM can_bus_stats s GROUP BY s.file_id
),
states AS (
  SELECT e.file_id, count(*) FILTER (WHERE e.kind = 'can.error_passive') AS passive,
         count(*) FILTER (WHERE e.kind = 'can.bus_off') AS bus_off
  FROM events e WHERE e.layer = 'can' GROUP BY e.file_id
),
per_file AS (
  SELECT l.*, s.err_secs, s.errors, s.first_err,
         least(1.0, s.err_secs / l.span_s) AS share,
         coalesce(st.passive, 0) AS passive, coalesce(st.bus_off, 0) AS bus_off
  FROM logs l JOIN secs s USING (file_id) LEFT JOIN states st USING (file_id)
  WHERE s.errors >= $min_errors
    AND epoch(s.first_err) - epoch(l.ts_first) <= $start_window_s
    AND s.err_secs / l.span_s >= $min_error_share
),
evidence AS (
  SELECT p.charger_id, list(e.event_id ORDER BY e.ts, e.event_id)[1:10] AS ids
  FROM per_file p JOIN events e ON e.file_id = p.file_id
   AND e.kind IN ('can.error_frame', 'can.error_passive', 'can.bus_off', 'can.error_warning')
  GROUP BY p.charger_id
)
SELECT p.charger_id, min(p.ts_first) AS ts_start, max(p.ts_last) AS ts_end,
       least(0.95, 0.55 + 0.15 * max(p.share)
                  + CASE WHEN sum(p.passive) + sum(p.bus_off) > 0 THEN 0.25 ELSE 0 END) AS score,
       'error frames in ' || round(100 * max(p.share)) || '% of the seconds of the CAN log from '
         || min(p.first_err)::VARCHAR || ' on (' || sum(p.errors) || ' error frames, '
         || sum(p.passive) || ' error-passive, ' || sum(p.bus_off) || ' bus-off): no clean period'
         AS summary,
       any_value(ev.ids) AS evidence
FROM per_file p JOIN evidence ev USING (charger_id)
GROUP BY p.charger_id
ORDER BY p.charger_id;
