"""Vendor fault logs, declared in TOML format files instead of Python (lnav-style).

Each file in parsers/formats/ (and any folder in FORENSICS_FORMATS, colon-separated)
declares one text style: a regex with named groups (`ts` and `code` required; `level`,
`charger`, `text` optional), a level -> severity table, and a code table mapping each
fault code to a channel, an event kind, an optional catalogue cause and a title. Samples
in the file are parsed when it loads; a format that fails its own samples, or names a
cause not in the catalogue, is refused with the file and the reason. Each format becomes
a registered parser named after it. Lines that do not match are rejects with their line.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import ClassVar

import pyarrow as pa

from forensics.errors import FormatError
from forensics.parsers._text import line_batches, utc_sql
from forensics.parsers.base import FirstLines, Parser, Sink, Source, register, registered

BUILTIN = Path(__file__).resolve().parent / "formats"
SEVERITIES = ("info", "warning", "error", "critical")
CHANNELS = ("backend", "vehicle", "internal")


def format_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("FORENSICS_FORMATS", "").split(":") if p]
    return [BUILTIN, *extra]


def load_format(path: Path) -> dict:
    """Reads and checks one format file; FormatError names the file and the problem."""
    from forensics import catalogue

    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
        fmt = doc["format"]
        rx = re.compile(fmt["regex"])
    except (tomllib.TOMLDecodeError, KeyError, re.error, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: {type(exc).__name__}: {exc}") from exc
    missing = {"ts", "code"} - set(rx.groupindex)
    if missing:
        raise FormatError(f"{path}: regex lacks named group(s) {', '.join(sorted(missing))}")
    codes = doc.get("codes", {})
    for code, entry in codes.items():
        if entry.get("channel", fmt.get("default_channel", "internal")) not in CHANNELS:
            raise FormatError(f"{path}: code {code}: channel {entry.get('channel')!r}")
        if entry.get("cause") and entry["cause"] not in catalogue.causes():
            raise FormatError(f"{path}: code {code}: cause {entry['cause']!r} not in catalogue")
    levels = {k.upper(): v for k, v in doc.get("levels", {}).items()}
    if any(v not in SEVERITIES for v in levels.values()):
        raise FormatError(f"{path}: levels map to {', '.join(SEVERITIES)} only")
    samples = doc.get("samples", [])
    if not samples:
        raise FormatError(f"{path}: no [[samples]]", hint="a format proves itself on samples")
    for n, s in enumerate(samples, 1):
        m = rx.match(s["line"])
        if not m:
            raise FormatError(f"{path}: sample {n} does not match the regex: {s['line']!r}")
        for key, want in s.items():
            if key != "line" and m.groupdict().get(key) != want:
                raise FormatError(f"{path}: sample {n}: {key} = {m.group(key)!r}, not {want!r}")
    return {
        "name": fmt["name"],
        "title": fmt.get("title", fmt["name"]),
        "kind": fmt.get("kind", "fault_log"),
        "regex": fmt["regex"],
        "default_channel": fmt.get("default_channel", "internal"),
        "levels": levels,
        "codes": codes,
        "path": path,
    }


def _codes_table(fmt: dict) -> pa.Table:
    rows = fmt["codes"]
    return pa.table(
        {
            "code": list(rows),
            "channel": [r.get("channel", fmt["default_channel"]) for r in rows.values()],
            "kind": [r.get("kind", "fault.code") for r in rows.values()],
            "cause": [r.get("cause") for r in rows.values()],
            "title": [r.get("title") for r in rows.values()],
        },
        schema=pa.schema([(c, pa.string()) for c in ("code", "channel", "kind", "cause", "title")]),
    )


def _levels_table(fmt: dict) -> pa.Table:
    return pa.table(
        {"level": list(fmt["levels"]), "severity": list(fmt["levels"].values())},
        schema=pa.schema([("level", pa.string()), ("severity", pa.string())]),
    )


class DeclaredFaultLog(Parser):
    """Base of the parsers made from format files; `fmt` is the loaded format."""

    fmt: ClassVar[dict] = {}
    version = "1"

    def parse(self, src: Source, sink: Sink) -> None:
        con = sink.con
        fmt = self.fmt
        groups = re.compile(fmt["regex"]).groupindex
        params = {"rx": fmt["regex"], "cp": src.context.charger_id, "tz": src.context.timezone}

        def group(name: str) -> str:
            return f"nullif(m['{name}'], '')" if name in groups else "NULL"

        with (
            registered(con, "_fcodes", _codes_table(fmt)),
            registered(con, "_flevels", _levels_table(fmt)),
        ):
            for batch in line_batches(src):
                with registered(con, "_lines", batch):
                    con.execute(
                        f"""CREATE OR REPLACE TEMP TABLE _fault AS
                            SELECT line, text, m, {utc_sql(group("ts"))} AS ts,
                                   {group("code")} AS code, upper({group("level")}) AS level,
                                   coalesce({group("charger")}, $cp) AS charger_id,
                                   {group("text")} AS message
                            FROM (SELECT line, text,
                                         regexp_extract(text, $rx, {list(groups)}) AS m,
                                         regexp_full_match(text, $rx) AS ok
                                  FROM _lines WHERE trim(text) <> '')
                            WHERE ok""".replace("{list(groups)}", _names(groups)),
                        params,
                    )
                    bad = con.execute(
                        """SELECT 'line ' || l.line, 'fault_log.unmatched', left(l.text, 80), ''
                           FROM _lines l ANTI JOIN _fault f USING (line)
                           WHERE trim(l.text) <> ''
                           UNION ALL
                           SELECT 'line ' || line, 'fault_log.bad_timestamp', left(text, 80), ''
                           FROM _fault WHERE ts IS NULL
                           ORDER BY 1"""
                    ).fetchall()
                n = con.execute(
                    """INSERT INTO events BY NAME
                       SELECT f.ts, f.charger_id, coalesce(c.channel, $chan) AS channel,
                              'fault_log' AS layer, coalesce(c.kind, 'fault.code') AS kind,
                              coalesce(lv.severity, 'warning') AS severity, f.code,
                              json_object('text', f.message, 'level', f.level, 'cause', c.cause,
                                          'title', c.title) AS detail,
                              $fid AS file_id, 'line ' || f.line AS locator
                       FROM _fault f LEFT JOIN _fcodes c USING (code)
                       LEFT JOIN _flevels lv ON lv.level = f.level
                       WHERE f.ts IS NOT NULL""",
                    {"chan": fmt["default_channel"], "fid": sink.file_id},
                ).fetchall()[0][0]
                sink.count("events", n)
                src.accepted(n)
                src.reject_bulk(bad)
            con.execute("DROP TABLE IF EXISTS _fault")


def _names(groups) -> str:
    return "[" + ", ".join(f"'{g}'" for g in groups) + "]"


def _make_parser(fmt: dict) -> type[Parser]:
    sample_rx = fmt["regex"]
    return type(
        f"FaultLog_{fmt['name']}",
        (DeclaredFaultLog,),
        {
            "name": fmt["name"],
            "kind": fmt["kind"],
            "description": f"{fmt['title']} ({fmt['path'].name})",
            "signature": FirstLines(sample_rx, min_hits=2, certainty=75),
            "fmt": fmt,
        },
    )


def _register_all() -> None:
    for folder in format_dirs():
        for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
            register(_make_parser(load_format(path)))


_register_all()
