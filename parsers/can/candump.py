"""can-utils candump: the `-L` log format and the console output (`candump can0`,
`-t a|A|d|z`, `-x`, `-e`), as can-utils lib.c writes them.

Log lines: `(1700000000.123456) can0 123#DEADBEEF`, remote `123#R` / `123#R4`, FD
`123##1DEADBEEF` (the digit after `##` is the FD flags: 1 BRS, 2 ESI), an optional `_<dlc>`
for classic frames with len8_dlc, and python-can's trailing ` R` / ` T` direction. An id of
8 hex digits is extended unless it carries CAN_ERR_FLAG (0x20000000): then it is an error
frame whose class bits are the id and whose details are the 8 data bytes (error.h).
python-can's own reader drops those details and reads error frames without the BUSERROR
bit as data frames; we follow can-utils here.
"""

from __future__ import annotations

import re
from datetime import datetime

from forensics.parsers.base import AllOf, FirstLines, NameHint, Parser, Sink, Source, register
from forensics.parsers.can import timebase
from forensics.parsers.can.errorclass import CAN_ERR_FLAG, CAN_ERR_MASK, decode_linux
from forensics.parsers.can.frames import BRS, ERR, ESI, EXT, FD, RTR, TX, CanWriter
from forensics.parsers.can.schema import TABLES

LOG_LINE = r"^\s*\(\d+\.\d+\)\s+\S+\s+[0-9A-Fa-f]{3,8}##?"
_HEX = re.compile(r"^[0-9A-Fa-f]*$")


class BadRecord(ValueError):
    """A line that is not a frame of this format; `reason` is the dotted reject reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def parse_log_frame(frame: str) -> tuple[int, int, int, bytes]:
    """'123#DEADBEEF' -> (can_id, flags, dlc, data); BadRecord when malformed."""
    can_id_s, sep, rest = frame.partition("#")
    if not sep or len(can_id_s) not in (3, 8) or not _HEX.match(can_id_s):
        raise BadRecord("can.bad_id", f"bad CAN id {can_id_s!r}")
    raw = int(can_id_s, 16)
    flags = 0
    if len(can_id_s) == 8:
        if raw & CAN_ERR_FLAG:
            flags |= ERR
            raw &= CAN_ERR_MASK
        else:
            flags |= EXT
            if raw > 0x1FFFFFFF:
                raise BadRecord("can.bad_id", f"extended id out of range {can_id_s!r}")
    elif raw > 0x7FF:
        raise BadRecord("can.bad_id", f"standard id out of range {can_id_s!r}")
    if rest.startswith("#"):  # CAN FD: '##<flags><data>'
        if len(rest) < 2 or not _HEX.match(rest[1]):
            raise BadRecord("can.bad_data", "CAN FD frame without flags digit")
        fd_flags = int(rest[1], 16)
        flags |= FD | (BRS if fd_flags & 1 else 0) | (ESI if fd_flags & 2 else 0)
        data = _hex_data(rest[2:], 64)
        if len(data) not in (0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64):
            raise BadRecord("can.bad_data", f"CAN FD length {len(data)} is not a valid FD length")
        return raw, flags, len(data), data
    if rest[:1] in ("R", "r"):
        dlc_s = rest[1:].split("_", 1)[0]
        if dlc_s and (not dlc_s.isdigit() or int(dlc_s) > 8):
            raise BadRecord("can.bad_data", f"bad remote length {dlc_s!r}")
        return raw, flags | RTR, int(dlc_s or 0), b""
    body = rest.split("_", 1)[0]
    data = _hex_data(body, 8)
    return raw, flags, len(data), data


def _hex_data(text: str, limit: int) -> bytes:
    text = text.replace(".", "")
    if len(text) % 2 or not _HEX.match(text):
        raise BadRecord("can.bad_data", f"data is not whole hex bytes: {text[:40]!r}")
    data = bytes.fromhex(text)
    if len(data) > limit:
        raise BadRecord("can.bad_data", f"{len(data)} data bytes, at most {limit}")
    return data


def parse_log_line(line: str) -> tuple[int, str, int, int, int, bytes]:
    """One `candump -L` line -> (ts_us, channel, can_id, flags, dlc, data)."""
    parts = line.split()
    if len(parts) == 4 and parts[3] in ("R", "T", "r", "t"):
        tx = parts[3] in ("T", "t")
        parts = parts[:3]
    else:
        tx = False
    if len(parts) != 3:
        raise BadRecord("can.bad_line", f"{len(parts)} fields, expected (time) iface frame")
    ts_s, channel, frame = parts
    if not (ts_s.startswith("(") and ts_s.endswith(")")):
        raise BadRecord("can.bad_timestamp", f"timestamp {ts_s!r} not in parentheses")
    try:
        ts_us = timebase.parse_seconds_us(ts_s[1:-1])
    except ValueError:
        raise BadRecord("can.bad_timestamp", f"timestamp {ts_s!r} is not a number") from None
    can_id, flags, dlc, data = parse_log_frame(frame)
    return ts_us, channel, can_id, flags | (TX if tx else 0), dlc, data


def add_frame(w: CanWriter, line_no: int, rec: tuple) -> None:
    """Adds a parsed frame; error frames also get their decoded error record."""
    ts_us, channel, can_id, flags, dlc, data = rec
    w.add(line_no, ts_us, channel, can_id, flags, dlc, data)
    if flags & ERR:
        w.error(line_no, ts_us, channel, "error_frame", decode_linux(can_id, data))


def reject(src: Source, line_no: int, line: str, exc: BadRecord) -> None:
    src.reject(f"line {line_no}", exc.reason, line, str(exc))


@register
class CandumpLog(Parser):
    name = "can_candump"
    version = "1"
    kind = "can_log"
    description = "can-utils candump -L log: (time) iface id#data"
    signature = AllOf(FirstLines(LOG_LINE, min_hits=3), (NameHint(r"\.(log|candump)$"),))
    tables = TABLES

    def parse(self, src: Source, sink: Sink) -> None:
        """Fills can_frames/can_errors (ts UTC us) and the derived bus and module events."""
        with CanWriter(src, sink, "candump", "line") as w:
            if (src.context.extra or {}).get("can_fast", True):
                from forensics.parsers.can import fastpath

                fastpath.parse_candump(src, w)
            else:
                parse_candump_reference(src, w)
            w.finish()


def parse_candump_reference(src: Source, w: CanWriter) -> None:
    """The line-by-line path: every line parsed in Python (the vectorised path's referee)."""
    based = False
    for first, lines in src.lines():
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            line_no = first + i
            try:
                rec = parse_log_line(line)
            except BadRecord as exc:
                reject(src, line_no, line, exc)
                continue
            if not based:
                based = True
                w.set_relative() if timebase.looks_relative(rec[0]) else w.set_absolute()
            add_frame(w, line_no, rec)
            src.accepted()


# ---------------------------------------------------------------- console output

_CONSOLE = re.compile(
    r"^\s*(?:\((?P<ts>[^)]*)\)\s+)?(?P<ch>\S+)\s+"
    r"(?:(?P<dir>RX|TX)\s+(?P<brs>[-B])\s+(?P<esi>[-E])\s+)?"
    r"(?P<id>[0-9A-Fa-f]{3}|[0-9A-Fa-f]{8})\s+\[(?P<len>\d{1,2})\]\s*(?P<rest>.*)$"
)
CONSOLE_LINE = r"^\s*(\([^)]*\)\s+)?\S+\s+((RX|TX)\s+\S\s+\S\s+)?[0-9A-Fa-f]{3,8}\s+\[\d{1,2}\]"
_DATE_TS = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d+)?$")


def parse_console_line(line: str) -> tuple[str | None, str, int, int, int, bytes]:
    """One console line -> (raw timestamp text or None, channel, can_id, flags, dlc, data)."""
    m = _CONSOLE.match(line)
    if not m:
        raise BadRecord("can.bad_line", "not a candump console line")
    id_s, n = m["id"], int(m["len"])
    raw = int(id_s, 16)
    flags = TX if m["dir"] == "TX" else 0
    if len(id_s) == 8:
        if raw & CAN_ERR_FLAG:
            flags |= ERR
            raw &= CAN_ERR_MASK
        elif raw > 0x1FFFFFFF:
            raise BadRecord("can.bad_id", f"extended id out of range {id_s!r}")
        else:
            flags |= EXT
    elif raw > 0x7FF:
        raise BadRecord("can.bad_id", f"standard id out of range {id_s!r}")
    if len(m["len"]) == 2:  # can-utils prints FD lengths as [%02d]
        flags |= FD
    if m["brs"] == "B":
        flags |= BRS | FD
    if m["esi"] == "E":
        flags |= ESI | FD
    rest = m["rest"]
    if rest.startswith("remote request"):
        return m["ts"], m["ch"], raw, flags | RTR, n, b""
    tokens = rest.split()[:n]
    if len(tokens) != n or not all(len(t) == 2 and _HEX.match(t) for t in tokens):
        raise BadRecord("can.bad_data", f"expected {n} hex bytes")
    return m["ts"], m["ch"], raw, flags, n, bytes.fromhex("".join(tokens))


@register
class CandumpConsole(Parser):
    name = "can_candump_console"
    version = "1"
    kind = "can_log"
    description = "can-utils candump console output: iface id [len] bytes"
    signature = AllOf(FirstLines(CONSOLE_LINE, min_hits=3), (NameHint(r"\.(txt|log)$"),))
    tables = TABLES

    def parse(self, src: Source, sink: Sink) -> None:
        """Console output; `(date time)` stamps are local time (manifest timezone), `-t d`
        deltas are summed, `-t z` offsets and missing stamps are anchored like relative logs."""
        with CanWriter(src, sink, "candump_console", "line") as w:
            mode = (src.context.extra or {}).get("candump_time")  # absolute | delta | zero
            based, prev_us = False, 0
            tz = src.context.timezone
            for first, lines in src.lines():
                for i, line in enumerate(lines):
                    if not line.strip() or line.startswith("\t"):
                        continue  # blank, or the decoded text under an ERRORFRAME line
                    line_no = first + i
                    try:
                        ts_txt, ch, can_id, flags, dlc, data = parse_console_line(line)
                        ts_us = _console_ts(ts_txt, tz)
                    except BadRecord as exc:
                        reject(src, line_no, line, exc)
                        continue
                    if not based:
                        based = True
                        if ts_txt and _DATE_TS.match(ts_txt):
                            w.set_absolute(0, "header_date")
                            w.header_time_note("candump -t A date")
                        elif ts_txt and not timebase.looks_relative(ts_us):
                            w.set_absolute()
                        else:
                            mode = mode or "zero"  # -t d and -t z look alike; the manifest says
                            w.set_relative()
                            if ts_txt is None:
                                w.notes.append(
                                    "console output without timestamps: all at the anchor"
                                )
                    if mode == "delta":
                        prev_us += ts_us
                        ts_us = prev_us
                    add_frame(w, line_no, (ts_us, ch, can_id, flags, dlc, data))
                    src.accepted()
            w.finish()


def _console_ts(text: str | None, tz: str | None) -> int:
    if text is None:
        return 0
    if _DATE_TS.match(text):
        return timebase.local_to_us(datetime.fromisoformat(text), tz)
    try:
        return timebase.parse_seconds_us(text)
    except ValueError:
        raise BadRecord("can.bad_timestamp", f"timestamp {text!r}") from None
