"""Plain-text OCPP logs as charger and CSMS stacks print them: a timestamp, free text, then
an OCPP-J array, e.g.

    2026-06-01 12:00:00.123 INFO [CP-7] SEND [2,"17","Heartbeat",{}]
    2026-06-01T12:00:00Z DEBUG WebSocketLogger - [chargeBoxId=CP-7] Received: [3,"17",{...}]

The charge point id comes from `chargeBoxId=`-style keys, an `/ocpp/.../<id>` path, a
bracketed id with a digit, or the manifest default. Direction words (send/received, >>/<<)
are relative to whoever wrote the log; the log's side is inferred from which way the
charger-initiated CALLs go (or set with `side = "charger" | "csms"` in the manifest).
Connection open/close lines become ws.connect / ws.disconnect events.
"""

from __future__ import annotations

from forensics.parsers._ocpp_schemas import CP_INITIATED
from forensics.parsers._text import line_batches, utc_sql
from forensics.parsers.base import FirstLines, Parser, Sink, Source, register, registered
from forensics.parsers.ocpp_frames import store_frames_sql

TS_RE = r"^\[?(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?)"
FRAME_RE = r'(\[\s*[2-4]\s*,\s*".*\])'
# A frame cut short (no closing bracket) is still a frame: it becomes a reject, not noise.
FRAME_CUT_RE = r'(\[\s*[2-4]\s*,\s*".*)$'
ID_KEY_RE = (
    r"(?i)(?:chargeBoxId|chargePointId|charge_point_id|charger_id|chargerId|cpid|identity)"
    r"""["']?\s*[=:]\s*["']?([A-Za-z0-9][\w.\-:]*[\w])"""
)
ID_PATH_RE = r"/ocpp[\w./-]*/([\w.\-]+)"
ID_BRACKET_RE = r"\[([A-Za-z]+[-_]?\d[\w.\-]*)\]"
OUT_RE = r"(?i)(\bsend|\bsending\b|\bsent\b|\btx\b|>>|-->|->|→|\bout(going)?\b)"
IN_RE = r"(?i)(\brecv|\breceiv|\brx\b|<<|<--|<-|←|\bin(coming)?\b)"
CLOSE_RE = (
    r"(?i)(disconnect|connection (was )?(closed|lost|dropped)|websocket closed|closed connection"
    r"|on_?close|close code)"
)
OPEN_RE = (
    r"(?i)(new connection|\bconnected\b|connection (opened|established|accepted)|websocket open)"
)
CODE_RE = r"(?i)code[=:\s]+(\d{4})"

# Bound as query parameters: the patterns hold quotes.
PATTERNS = {
    name.lower(): value
    for name, value in dict(globals()).items()
    if name.endswith("_RE") and isinstance(value, str)
}

_SPLIT_SQL = f"""
CREATE OR REPLACE TEMP TABLE _txt AS
WITH a AS (
  SELECT line, text,
    nullif(regexp_extract(text, $ts_re, 1), '') AS ts_s,
    coalesce(nullif(regexp_extract(text, $frame_re, 1), ''),
             nullif(regexp_extract(text, $frame_cut_re, 1), '')) AS frame
  FROM _lines WHERE trim(text) <> ''
), b AS (
  SELECT *, CASE WHEN frame IS NOT NULL THEN left(text, strpos(text, frame) - 1) ELSE text END
           AS prefix
  FROM a
)
SELECT line, text, ts_s, frame, {utc_sql("ts_s")} AS ts,
  coalesce(nullif(regexp_extract(prefix, $id_key_re, 1), ''),
           nullif(regexp_extract(prefix, $id_path_re, 1), ''),
           nullif(regexp_extract(prefix, $id_bracket_re, 1), ''), $cp) AS charger_id,
  CASE WHEN regexp_matches(prefix, $out_re) THEN 'out'
       WHEN regexp_matches(prefix, $in_re) THEN 'in' END AS kw,
  CASE WHEN frame IS NOT NULL THEN NULL
       WHEN regexp_matches(text, $close_re) THEN 'ws.disconnect'
       WHEN regexp_matches(text, $open_re) THEN 'ws.connect' END AS life,
  nullif(regexp_extract(text, $code_re, 1), '') AS code
FROM b
"""


@register
class OcppText(Parser):
    name = "ocpp_text"
    version = "1"
    kind = "ocpp_log"
    description = "text logs of charger/CSMS stacks: timestamp ... OCPP-J array per line"
    signature = FirstLines(TS_RE + r".*" + FRAME_RE.replace("(", "(?:", 1), min_hits=2)

    def parse(self, src: Source, sink: Sink) -> None:
        con = sink.con
        params = {"cp": src.context.charger_id, "tz": src.context.timezone} | PATTERNS
        side = (src.context.extra.get("side") or "").lower() or None
        other = 0
        for batch in line_batches(src):
            with registered(con, "_lines", batch):
                con.execute(_SPLIT_SQL, params)
            side = side or self._side(con)
            out_dir, in_dir = (
                ("cp_to_csms", "csms_to_cp") if side != "csms" else ("csms_to_cp", "cp_to_csms")
            )
            store_frames_sql(
                sink,
                """SELECT ts, charger_id,
                          CASE kw WHEN 'out' THEN $o WHEN 'in' THEN $i END AS direction,
                          frame, 'line ' || line AS locator, line
                   FROM _txt WHERE frame IS NOT NULL""",
                {"o": out_dir, "i": in_dir},
            )
            n = con.execute(
                """INSERT INTO events BY NAME
                   SELECT ts, charger_id, 'backend' AS channel, 'websocket' AS layer,
                          CASE WHEN life = 'ws.disconnect' AND code IN ('1000', '1001')
                               THEN 'ws.close' ELSE life END AS kind,
                          CASE WHEN life = 'ws.disconnect' AND code NOT IN ('1000', '1001')
                               THEN 'warning'
                               WHEN life = 'ws.disconnect' AND code IS NULL THEN 'warning'
                               ELSE 'info' END AS severity,
                          code, json_object('text', left(text, 200)) AS detail,
                          $fid AS file_id, 'line ' || line AS locator
                   FROM _txt WHERE life IS NOT NULL AND ts IS NOT NULL
                     AND charger_id IS NOT NULL
                   ORDER BY line""",
                {"fid": sink.file_id},
            ).fetchall()[0][0]
            sink.count("events", n)
            src.accepted(n)
            other += con.execute(
                "SELECT count(*) FROM _txt WHERE frame IS NULL AND life IS NULL"
            ).fetchall()[0][0]
        con.execute("DROP TABLE IF EXISTS _txt")
        if other:
            src.notes.append(f"{other} line(s) carry no OCPP frame or connection event")
        if side:
            src.notes.append(f"log written on the {side} side")

    @staticmethod
    def _side(con) -> str | None:
        """'charger' when charger-initiated CALLs are marked outgoing, 'csms' when incoming."""
        rows = con.execute(
            f"""SELECT kw, count(*) FROM _txt
                WHERE frame IS NOT NULL AND kw IS NOT NULL AND json_valid(frame)
                  AND regexp_matches(frame, '^\\[\\s*2\\s*,')
                  AND json_extract_string(frame, '$[2]') IN
                      ({", ".join(f"'{a}'" for a in sorted(CP_INITIATED - {"DataTransfer"}))})
                GROUP BY kw"""
        ).fetchall()
        counts = dict(rows)
        if not counts:
            return None
        return "charger" if counts.get("out", 0) >= counts.get("in", 0) else "csms"
