"""DBC files (CAN databases) and what they let us decode in the logs of the same bundle.

The DBC parser runs first (priority 5) and stores the database in `dbc_files` plus its
messages and signals; each CAN log then decodes its frames with cantools and keeps, per
(channel, message, signal), the first value and every change (`can_signals`): enough for
rules on module status or versions without tens of millions of rows. Messages with version
signals (names with version / firmware / fw / sw) give `firmware_versions` rows and one
`firmware.version` event per component and version.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict

import pyarrow as pa

from forensics.parsers.base import AllOf, FirstLines, NameHint, Parser, Sink, Source, register
from forensics.parsers.can.health import Context
from forensics.parsers.can.schema import TABLES

VERSION_SIGNAL = re.compile(r"version|firmware|(^|_)(fw|sw)", re.IGNORECASE)
_BO_LINE = re.compile(r"^BO_\s+(\d+)\s", re.MULTILINE)
_LINE_IN_ERROR = re.compile(r"line (\d+)")


def _load(text: str):
    import cantools

    return cantools.database.load_string(text, database_format="dbc", strict=False)


@register
class DbcParser(Parser):
    name = "can_dbc"
    version = "1"
    kind = "dbc"
    description = "CAN database (.dbc): messages, signals, senders, cycle times"
    signature = AllOf(
        FirstLines(r'^(VERSION\s+"|NS_\s*:|BS_\s*:|BU_\s*:|BO_\s+\d+\s)', min_hits=2),
        (NameHint(r"\.dbc$", bonus=15),),
    )
    priority = 5
    tables = TABLES

    def parse(self, src: Source, sink: Sink) -> None:
        """Stores the DBC; one record per message (BO_), a DBC that will not load is one reject."""
        with src.open() as fh:
            raw = fh.read()
        text = (
            raw.decode("utf-8", errors="replace")
            if raw[:3] != b"\xef\xbb\xbf"
            else raw[3:].decode("utf-8", errors="replace")
        )
        if "\ufffd" in text:
            text = raw.decode("cp1252", errors="replace")  # Vector tools write Windows-1252
            src.notes.append("DBC read as Windows-1252")
        try:
            db = _load(text)
        except Exception as exc:  # cantools raises its own ParseError and also ValueError
            m = _LINE_IN_ERROR.search(str(exc))
            line = int(m.group(1)) if m else 1
            excerpt = text.splitlines()[line - 1] if len(text.splitlines()) >= line else ""
            src.reject(f"line {line}", "dbc.unreadable", excerpt, f"{type(exc).__name__}: {exc}")
            return
        bo_lines = {
            int(m.group(1)): text.count("\n", 0, m.start()) + 1 for m in _BO_LINE.finditer(text)
        }
        msgs, sigs = defaultdict(list), defaultdict(list)
        for msg in db.messages:
            raw_id = msg.frame_id | (0x80000000 if msg.is_extended_frame else 0)
            loc = f"line {bo_lines.get(raw_id, bo_lines.get(msg.frame_id, 1))}"
            msgs["frame_id"].append(msg.frame_id)
            msgs["is_extended"].append(bool(msg.is_extended_frame))
            msgs["name"].append(msg.name)
            msgs["length"].append(msg.length)
            msgs["senders"].append(list(msg.senders or []))
            msgs["cycle_time_ms"].append(msg.cycle_time)
            msgs["comment"].append(msg.comment if isinstance(msg.comment, str) else None)
            msgs["locator"].append(loc)
            for sig in msg.signals:
                sigs["frame_id"].append(msg.frame_id)
                sigs["message"].append(msg.name)
                sigs["signal"].append(sig.name)
                sigs["start_bit"].append(sig.start)
                sigs["length"].append(sig.length)
                sigs["byte_order"].append(sig.byte_order)
                sigs["is_signed"].append(bool(sig.is_signed))
                sigs["scale"].append(float(sig.scale))
                sigs["offset"].append(float(sig.offset))
                sigs["unit"].append(sig.unit)
                choices = {str(k): str(v) for k, v in (sig.choices or {}).items()}
                sigs["choices"].append(json.dumps(choices) if choices else None)
                sigs["locator"].append(loc)
        if msgs:
            sink.append("dbc_messages", pa.table(dict(msgs)))
        if sigs:
            sink.append("dbc_signals", pa.table(dict(sigs)))
        sink.append(
            "dbc_files",
            pa.table(
                {
                    "name": [src.display],
                    "messages": [len(db.messages)],
                    "signals": [len(sigs["signal"])],
                    "text": [text],
                }
            ),
        )
        src.accepted(max(len(db.messages), 1))


def _fmt(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def decode_log(ctx: Context) -> int:
    """Decodes this file's frames with every DBC in the case; returns can_signals rows."""
    texts = [
        r[0] for r in ctx.con.execute("SELECT text FROM dbc_files ORDER BY file_id").fetchall()
    ]
    if not texts:
        return 0
    by_id = {}
    for text in texts:
        try:
            db = _load(text)
        except Exception:  # stored only when it loaded once; cannot fail here
            continue
        for msg in db.messages:
            by_id.setdefault((msg.frame_id, bool(msg.is_extended_frame)), msg)
    if not by_id:
        return 0
    ids = pa.table(
        {
            "can_id": pa.array([k[0] for k in by_id], pa.uint32()),
            "ext": [k[1] for k in by_id],
            "is_version": [
                any(VERSION_SIGNAL.search(s.name) for s in m.signals) for m in by_id.values()
            ],
        }
    )
    ctx.con.register("_can_dbcids", ids)
    try:
        n = _decode_changes(ctx, by_id)
        _versions(ctx, by_id)
    finally:
        ctx.con.unregister("_can_dbcids")
    return n


def _decode_changes(ctx: Context, by_id: dict) -> int:
    """Frames whose payload changed (per channel and id), decoded; value changes kept."""
    cur = ctx.con.execute(
        """WITH f AS (
               SELECT f.loc, f.ts, f.channel, f.arbitration_id, f.flags & 1 <> 0 AS ext, f.data,
                      lag(f.data) OVER (PARTITION BY f.channel, f.arbitration_id, f.flags & 1
                                        ORDER BY f.ts, f.loc) AS prev
               FROM can_frames f JOIN _can_dbcids d
                 ON f.arbitration_id = d.can_id AND (f.flags & 1 <> 0) = d.ext
               WHERE f.file_id = ? AND f.flags & 6 = 0)
           SELECT loc, ts, channel, arbitration_id, ext, data FROM f
           WHERE prev IS NULL OR prev <> data ORDER BY ts, loc""",
        [ctx.file_id],
    )
    last: dict[tuple, object] = {}
    cache: dict[tuple, dict] = {}
    out = defaultdict(list)
    total = 0
    while rows := cur.fetchmany(50_000):
        for loc, ts, channel, can_id, ext, data in rows:
            msg = by_id[(can_id, ext)]
            key = (can_id, ext, data)
            values = cache.get(key)
            if values is None:
                try:
                    values = msg.decode(data, decode_choices=True, scaling=True,
                                        allow_truncated=True, allow_excess=True)  # fmt: skip
                except Exception:  # payload the DBC does not describe: nothing to decode
                    values = {}
                if len(cache) < 200_000:
                    cache[key] = values
            for sig, val in values.items():
                skey = (channel, msg.name, sig)
                if last.get(skey, _MISSING) == val:
                    continue
                last[skey] = val
                out["loc"].append(loc)
                out["ts"].append(ts)
                out["channel"].append(channel)
                out["arbitration_id"].append(can_id)
                out["message"].append(msg.name)
                out["signal"].append(sig)
                is_text = not isinstance(val, int | float)
                out["value"].append(
                    float(val.value)
                    if is_text and hasattr(val, "value")
                    else (None if is_text else float(val))
                )
                out["text"].append(str(val) if is_text else None)
        if len(out["loc"]) >= 50_000:
            total += _flush_signals(ctx, out)
            out = defaultdict(list)
    return total + _flush_signals(ctx, out)


_MISSING = object()


def _flush_signals(ctx: Context, out: dict) -> int:
    if not out.get("loc"):
        return 0
    tbl = pa.table(dict(out))
    tbl = tbl.append_column(
        "locator", pa.array([f"{ctx.loc_unit} {x}" for x in out["loc"]], pa.string())
    )
    ctx.sink.append("can_signals", tbl)
    return tbl.num_rows


def _versions(ctx: Context, by_id: dict) -> None:
    """firmware_versions rows and firmware.version events from version-carrying messages."""
    rows = ctx.con.execute(
        """SELECT f.loc, f.ts, f.arbitration_id, f.flags & 1 <> 0, f.data
           FROM can_frames f JOIN _can_dbcids d
             ON f.arbitration_id = d.can_id AND (f.flags & 1 <> 0) = d.ext AND d.is_version
           WHERE f.file_id = ? AND f.flags & 6 = 0 ORDER BY f.ts, f.loc""",
        [ctx.file_id],
    ).fetchall()
    seen: dict[tuple[str, str], list] = {}
    for loc, ts, can_id, ext, data in rows:
        msg = by_id[(can_id, ext)]
        try:
            values = msg.decode(data, decode_choices=False, allow_truncated=True, allow_excess=True)
        except Exception:  # undecodable payload: not a version
            continue
        parts = [_fmt(values[s.name]) for s in sorted(msg.signals, key=lambda s: s.start)
                 if VERSION_SIGNAL.search(s.name) and s.name in values]  # fmt: skip
        if not parts:
            continue
        component = msg.senders[0] if msg.senders and msg.senders[0] != "Vector__XXX" else msg.name
        key = (component, ".".join(parts))
        if key not in seen:
            seen[key] = [ts, ts, 0, f"{ctx.loc_unit} {loc}", msg.name]
        seen[key][1] = ts
        seen[key][2] += 1
    if not seen:
        return
    items = list(seen.items())
    tbl = pa.table(
        {
            "charger_id": [ctx.charger_id] * len(items),
            "component": [k[0] for k, _ in items],
            "version": [k[1] for k, _ in items],
            "source": ["can_dbc"] * len(items),
            "ts_first": pa.array([v[0] for _, v in items], pa.timestamp("us")),
            "ts_last": pa.array([v[1] for _, v in items], pa.timestamp("us")),
            "frames": [v[2] for _, v in items],
            "locator": [v[3] for _, v in items],
        }
    )
    ctx.sink.append("firmware_versions", tbl)
    ev = pa.table(
        {
            "ts": pa.array([v[0] for _, v in items], pa.timestamp("us")),
            "charger_id": [ctx.charger_id] * len(items),
            "channel": ["internal"] * len(items),
            "layer": ["module"] * len(items),
            "kind": ["firmware.version"] * len(items),
            "severity": ["info"] * len(items),
            "code": [k[1] for k, _ in items],
            "detail": [
                json.dumps({"component": k[0], "version": k[1], "message": v[4], "frames": v[2]})
                for k, v in items
            ],
            "locator": [v[3] for _, v in items],
        }
    )
    ctx.sink.append("events", ev)
