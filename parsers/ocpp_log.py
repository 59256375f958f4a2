"""OCPP message logs: the bundle convention's JSON Lines, one OCPP-J frame per line.

    {"ts": "2026-06-01T12:00:00.123Z", "charger_id": "CP-1", "direction": "cp_to_csms",
     "frame": [2, "uid", "Heartbeat", {}]}

CSMS logs also record the connection life cycle; a line may carry `"event"` instead of
`"frame"`: connected | disconnected (optional `"code"`: WebSocket close code, `"reason"`) |
marked_offline | marked_online (the backend's own view of the charger). Parsing runs in
DuckDB over Arrow batches of lines; frames go through parsers.ocpp_frames.
"""

from __future__ import annotations

from forensics.parsers._text import line_batches, utc_sql
from forensics.parsers.base import (
    FirstLines,
    Parser,
    Reject,
    Sink,
    Source,
    register,
    registered,
)
from forensics.parsers.ocpp_frames import store_frames_sql

LIFECYCLE = {
    "connected": ("ws.connect", "websocket", "info"),
    "disconnected": ("ws.disconnect", "websocket", "warning"),
    "marked_offline": ("csms.marked_offline", "ocpp", "warning"),
    "marked_online": ("csms.marked_online", "ocpp", "info"),
}


# A normal closure (1000) or going away (1001) is an orderly end, not a failed exchange.
CLEAN = "ev = 'disconnected' AND code IN ('1000', '1001')"


def _case(index: int) -> str:
    return (
        "CASE ev "
        + " ".join(f"WHEN '{k}' THEN '{v[index]}'" for k, v in LIFECYCLE.items())
        + " END"
    )


# One JSON parse per line: try() turns malformed JSON into NULL, and the multi-path
# extraction reads every field in the same pass.
_SPLIT_SQL = f"""
CREATE OR REPLACE TEMP TABLE _jsonl AS
WITH x AS (
  SELECT line, text,
    try(json_extract_string(text, ['$.ts', '$.charger_id', '$.chargeBoxId', '$.direction',
                                   '$.frame', '$.event', '$.code', '$.reason'])) AS f
  FROM _lines WHERE trim(text) <> ''
), f AS (
  SELECT line, text, f IS NOT NULL AS ok, f[1] AS ts_s, coalesce(f[2], f[3], $cp) AS charger_id,
         f[4] AS direction, f[5] AS frame, lower(f[6]) AS ev, f[7] AS code, f[8] AS reason
  FROM x
)
SELECT *, {utc_sql("ts_s")} AS ts,
  CASE WHEN NOT ok THEN 'jsonl.not_json'
       WHEN frame IS NULL AND ev IS NULL THEN 'jsonl.no_frame'
       WHEN frame IS NULL AND ev NOT IN ({", ".join(f"'{k}'" for k in LIFECYCLE)})
         THEN 'jsonl.unknown_event'
  END AS reject
FROM f
"""


@register
class OcppJsonl(Parser):
    name = "ocpp_jsonl"
    version = "1"
    kind = "ocpp_log"
    description = 'OCPP-J JSON Lines: {"ts", "charger_id", "direction", "frame"} per line'
    signature = FirstLines(r'^\s*\{.*"(frame|event)"\s*:', min_hits=2, certainty=90)

    def parse(self, src: Source, sink: Sink) -> None:
        con = sink.con
        params = {"cp": src.context.charger_id, "tz": src.context.timezone}
        for batch in line_batches(src):
            with registered(con, "_lines", batch):
                con.execute(_SPLIT_SQL, params)
            bad = con.execute(
                """SELECT 'line ' || line, reject, left(text, 80),
                          CASE reject WHEN 'jsonl.no_frame' THEN 'neither "frame" nor "event"'
                                      WHEN 'jsonl.unknown_event' THEN 'event ' || ev END
                   FROM _jsonl WHERE reject IS NOT NULL ORDER BY line"""
            ).fetchall()
            store_frames_sql(
                sink,
                """SELECT ts, charger_id,
                          CASE WHEN direction IN ('cp_to_csms', 'csms_to_cp') THEN direction END
                            AS direction,
                          frame, 'line ' || line AS locator, line
                   FROM _jsonl WHERE reject IS NULL AND frame IS NOT NULL""",
            )
            src.accepted(self._lifecycle(src, sink))
            _extend(src, bad)
        con.execute("DROP TABLE IF EXISTS _jsonl")

    @staticmethod
    def _lifecycle(src: Source, sink: Sink) -> int:
        con = sink.con
        bad_ts = con.execute(
            """SELECT 'line ' || line, 'jsonl.bad_timestamp', left(text, 80), ts_s FROM _jsonl
               WHERE reject IS NULL AND frame IS NULL AND (ts IS NULL OR charger_id IS NULL)
               ORDER BY line"""
        ).fetchall()
        _extend(src, bad_ts)
        n = con.execute(
            f"""INSERT INTO events BY NAME
                SELECT ts, charger_id, 'backend' AS channel, {_case(1)} AS layer,
                       CASE WHEN {CLEAN} THEN 'ws.close' ELSE {_case(0)} END AS kind,
                       CASE WHEN {CLEAN} THEN 'info' ELSE {_case(2)} END AS severity, code,
                       json_object('reason', reason) AS detail,
                       $fid AS file_id, 'line ' || line AS locator
                FROM _jsonl WHERE reject IS NULL AND frame IS NULL
                  AND ts IS NOT NULL AND charger_id IS NOT NULL
                ORDER BY line""",
            {"fid": sink.file_id},
        ).fetchone()[0]
        sink.count("events", n)
        return n


def _extend(src: Source, rows) -> None:
    """Adds rejects without the give-up check; close_frames decides on giving up once the
    whole file is known."""
    src.rejects.extend(Reject(loc, reason, ex or "", det or "") for loc, reason, ex, det in rows)
