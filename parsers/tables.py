"""The bundle's tables: `chargers.csv` (inventory) and `sessions.csv` (charging sessions).

Both are small and read with the csv module; delimiter `,`, `;` or tab is sniffed from the
header. Inventory columns beyond the known ones are kept in `extra`, never dropped. A row
without its key (charger_id, session_id) is a reject with its line; a bad optional value is
kept empty and noted.
"""

from __future__ import annotations

import csv
import io
import json

import pyarrow as pa

from forensics.errors import FormatError
from forensics.parsers._text import parse_ts
from forensics.parsers.base import (
    AllOf,
    FileHead,
    NameHint,
    Parser,
    Predicate,
    Sink,
    Source,
    register,
)

INVENTORY_COLUMNS = [
    "charger_id",
    "site",
    "vendor",
    "model",
    "firmware",
    "connectivity",
    "signal_dbm",
    "ip",
    "backend_url",
    "ocpp_version",
    "security_profile",
]
SESSION_COLUMNS = [
    "session_id",
    "charger_id",
    "connector_id",
    "start",
    "stop",
    "vehicle_make",
    "vehicle_model",
    "evccid",
    "result",
    "error_code",
]
RESULT_WORDS = {
    "ok": "ok", "success": "ok", "succeeded": "ok", "completed": "ok", "finished": "ok",
    "failed": "failed", "fail": "failed", "error": "failed", "aborted": "failed",
}  # fmt: skip


def _header(fh: FileHead) -> list[str]:
    lines = fh.text_lines(1)
    if not lines:
        return []
    line = lines[0]
    delim = max(",;\t", key=line.count)
    return [c.strip().strip('"').lower() for c in line.split(delim)]


def _looks_like(required: set[str], some_of: set[str], need: int):
    def score(fh: FileHead) -> int:
        cols = set(_header(fh))
        return 90 if required <= cols and len(cols & some_of) >= need else 0

    return score


def _rows(src: Source):
    """(line, dict) per data row, header names lower-cased; FormatError without a header."""
    with src.open() as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
        first = text.readline()
        if not first.strip():
            raise FormatError(f"{src.display}: empty table, no header row")
        delim = max(",;\t", key=first.count)
        header = [c.strip().lower() for c in next(csv.reader([first], delimiter=delim))]
        reader = csv.reader(text, delimiter=delim)
        for row in reader:
            line = reader.line_num + 1
            if not any(c.strip() for c in row):
                continue
            if len(row) != len(header):
                src.reject(
                    f"line {line}",
                    "csv.wrong_field_count",
                    delim.join(row),
                    f"{len(row)} fields, header has {len(header)}",
                )
                continue
            yield line, dict(zip(header, (c.strip() for c in row), strict=True))


def _number(value: str, src: Source, line: int, column: str) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        src.notes.append(f"line {line}: {column} {value!r} is not a number (kept empty)")
        return None


@register
class Inventory(Parser):
    name = "inventory_csv"
    version = "1"
    kind = "inventory"
    description = "chargers.csv: charger_id, site, vendor, model, firmware, connectivity, ..."
    signature = AllOf(
        Predicate(_looks_like({"charger_id"}, set(INVENTORY_COLUMNS) - {"charger_id"}, 1)),
        (NameHint(r"charger|inventory|fleet"),),
    )
    priority = 10  # before logs and captures, which attribute by inventory

    def parse(self, src: Source, sink: Sink) -> None:
        cols: dict[str, list] = {c: [] for c in [*INVENTORY_COLUMNS, "extra", "locator"]}
        for line, row in _rows(src):
            cid = row.get("charger_id", "")
            if not cid:
                src.reject(f"line {line}", "inventory.no_charger_id", ",".join(row.values()))
                continue
            for c in INVENTORY_COLUMNS:
                value = row.get(c, "") or None
                if c == "signal_dbm":
                    value = _number(row.get(c, ""), src, line, c)
                elif c == "connectivity" and value:
                    value = value.lower()
                cols[c].append(value)
            extra = {k: v for k, v in row.items() if k not in INVENTORY_COLUMNS}
            cols["extra"].append(json.dumps(extra) if extra else None)
            cols["locator"].append(f"line {line}")
            src.accepted()
        types = {c: pa.string() for c in cols} | {"signal_dbm": pa.float64()}
        sink.append("chargers", pa.table({c: pa.array(v, types[c]) for c, v in cols.items()}))


@register
class Sessions(Parser):
    name = "sessions_csv"
    version = "1"
    kind = "sessions"
    description = "sessions.csv: session_id, charger_id, start, stop, vehicle, result, ..."
    signature = AllOf(
        Predicate(_looks_like({"session_id", "charger_id"}, {"start", "stop", "result"}, 2)),
        (NameHint(r"session|transaction"),),
    )
    priority = 9

    def parse(self, src: Source, sink: Sink) -> None:
        tz = src.context.timezone
        out: dict[str, list] = {c: [] for c in [*SESSION_COLUMNS, "locator"]}
        for line, row in _rows(src):
            sid, cid = row.get("session_id", ""), row.get("charger_id", "")
            start = parse_ts(row.get("start"), tz)
            if not sid or not cid or start is None:
                what = "no session_id" if not sid else "no charger_id" if not cid else "bad start"
                src.reject(f"line {line}", "sessions.bad_row", ",".join(row.values()), what)
                continue
            result = RESULT_WORDS.get(row.get("result", "").lower())
            if row.get("result") and result is None:
                src.notes.append(f"line {line}: result {row['result']!r} is neither ok nor failed")
            connector = _number(row.get("connector_id", ""), src, line, "connector_id")
            out["session_id"].append(sid)
            out["charger_id"].append(cid)
            out["connector_id"].append(int(connector) if connector is not None else None)
            out["start"].append(start)
            out["stop"].append(parse_ts(row.get("stop"), tz))
            for c in ("vehicle_make", "vehicle_model", "evccid", "error_code"):
                out[c].append(row.get(c) or None)
            out["result"].append(result)
            out["locator"].append(f"line {line}")
            src.accepted()
        types = {c: pa.string() for c in out} | {
            "connector_id": pa.int32(),
            "start": pa.timestamp("us"),
            "stop": pa.timestamp("us"),
        }
        table = pa.table({c: pa.array(v, types[c]) for c, v in out.items()})
        sink.append("sessions", table)
        # Failed sessions join the timeline (vehicle channel) so rules can cite them; one
        # failed session is ordinary (severity warning), a cluster is what rules look for.
        n = sink.con.execute(
            """INSERT INTO events BY NAME
               SELECT coalesce(stop, start) AS ts, charger_id, connector_id,
                      'vehicle' AS channel, 'session' AS layer, 'session.failed' AS kind,
                      'warning' AS severity, error_code AS code,
                      json_object('session_id', session_id, 'vehicle_make', vehicle_make,
                                  'vehicle_model', vehicle_model, 'evccid', evccid) AS detail,
                      file_id, locator
               FROM sessions WHERE file_id = $fid AND result = 'failed' ORDER BY start""",
            {"fid": sink.file_id},
        ).fetchall()[0][0]
        sink.count("events", n)
