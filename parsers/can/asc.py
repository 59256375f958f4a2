"""Vector ASC (CANoe / CANalyzer ASCII logging), as Vector's "CAN Log & Trigger ASC Format"
describes it: header (`date`, `base hex|dec  timestamps absolute|relative`, internal
events), `Begin Triggerblock <date>` blocks, classic frames `<t> <ch> <id>[x] Rx|Tx d <dlc>
<bytes>` (trailing `Length = ... BitCount = ...` allowed), remote `r`, `ErrorFrame` (with an
optional `ECC: <bits>`), CAN FD lines `<t> CANFD <ch> <dir> <id> [name] <brs> <esi> <dlc>
<len> <bytes> ...`, and chip status lines `<t> CAN <ch> Status:<text> [TxErr: n RxErr: n]`.

Times: `timestamps absolute` are seconds since the block start; `relative` are deltas to the
previous event (summed here; python-can reads them as absolute). The block's date is local
time. python-can <= 4.6 writes `.5` for 5 ms in that date (no zero padding): we read the
fraction as the decimal it is, and note files whose fraction is not 3 digits.
"""

from __future__ import annotations

import re

from forensics.parsers.base import AllOf, FirstLines, NameHint, Parser, Sink, Source, register
from forensics.parsers.can import timebase
from forensics.parsers.can.candump import BadRecord
from forensics.parsers.can.errorclass import ErrorInfo, decode_sja1000_ecc, decode_status_text
from forensics.parsers.can.frames import BRS, ERR, ESI, EXT, FD, RTR, TX, CanWriter, parse_line_log
from forensics.parsers.can.schema import TABLES

_SKIP_WORDS = ("date ", "base ", "internal events", "no internal events", "//", "end triggerblock")
_EVENT_SKIP = re.compile(
    r"^(Start of measurement|Statistic:|SV:|J1939TP|Log trigger event|Stop of measurement|"
    r"TFS:|Begin of|End of|\d+\s+Statistic:)",
    re.IGNORECASE,
)
_ERR_COUNTS = re.compile(r"TxErr:?\s*(\d+).*?RxErr:?\s*(\d+)", re.IGNORECASE)
_ECC = re.compile(r"ECC:\s*([01]{8})")
_TIME = re.compile(r"^\d+\.\d+$")


class AscState:
    """Line-by-line ASC reader state; `feed` handles one line (the reference path)."""

    def __init__(self, src: Source, w: CanWriter):
        self.src, self.w = src, w
        self.base = 16
        self.relative = False
        self.prev_us = 0
        self.header_date: int | None = None
        self.anchored = False
        self.events = 0

    def feed(self, line_no: int, line: str) -> None:
        """Parses one line: a frame/error/status is accepted, a broken record rejected."""
        s = line.strip()
        if not s:
            return
        low = s.lower()
        if low.startswith(_SKIP_WORDS):
            self._header(s, low)
            return
        if low.startswith("begin triggerblock"):
            self._trigger(s)
            return
        head, _, rest = s.replace("\t", " ").partition(" ")  # blanks are spaces or tabs
        if not _TIME.match(head):
            if head.startswith(("***", ";")):
                return  # CANoe comment / marker lines
            self.src.reject(f"line {line_no}", "can.bad_line", line, "not an ASC event line")
            return
        rest = rest.strip()
        if _EVENT_SKIP.match(rest):
            return
        if not self.anchored:
            self._anchor()
        try:
            ts_us = timebase.parse_seconds_us(head)
            if self.relative:
                self.prev_us += ts_us
                ts_us = self.prev_us
            self._event(line_no, ts_us, rest)
        except BadRecord as exc:
            self.src.reject(f"line {line_no}", exc.reason, line, str(exc))
        except (ValueError, IndexError) as exc:
            self.src.reject(f"line {line_no}", "can.bad_line", line, f"{type(exc).__name__}: {exc}")

    def _header(self, s: str, low: str) -> None:
        if low.startswith("base "):
            parts = low.split()
            self.base = 10 if "dec" in parts[1:2] else 16
            self.relative = "relative" in parts
            if self.relative:
                self.w.notes.append("ASC timestamps relative: deltas summed")
        elif low.startswith("date "):
            d = timebase.parse_vector_date(s[5:])
            if d:
                self.header_date = timebase.local_to_us(d.naive, self.src.context.timezone)

    def _trigger(self, s: str) -> None:
        d = timebase.parse_vector_date(s[len("begin triggerblock") :])
        if d is None:
            self.w.notes.append(f"Begin Triggerblock without a readable date: {s[:60]!r}")
            return
        if d.frac_digits not in (0, 3):
            self.w.notes.append(
                f"Begin Triggerblock fraction has {d.frac_digits} digit(s), not 3; python-can "
                "<= 4.6 drops leading zeros of the milliseconds, so the anchor may be off"
            )
        self.w.set_absolute(timebase.local_to_us(d.naive, self.src.context.timezone), "header_date")
        self.w.header_time_note("ASC Begin Triggerblock date")
        self.anchored, self.prev_us = True, 0

    def _anchor(self) -> None:
        self.anchored = True
        if self.header_date is not None:
            self.w.set_absolute(self.header_date, "header_date")
            self.w.header_time_note("ASC date header")
        else:
            self.w.set_relative()

    def _event(self, line_no: int, ts_us: int, rest: str) -> None:
        w = self.w
        tok = rest.split()
        if tok[0] == "CANFD":
            self._fd(line_no, ts_us, tok)
        elif tok[0] == "CAN" and len(tok) > 2 and tok[2].lower().startswith("status"):
            text = rest.split(None, 2)[2]
            m = _ERR_COUNTS.search(text)
            tx, rx = (int(m[1]), int(m[2])) if m else (None, None)
            w.error(line_no, ts_us, tok[1], "status", decode_status_text(text, tx, rx), text)
            self.src.accepted()
        elif tok[0].isdigit():
            self._classic(line_no, ts_us, tok, rest)
        else:
            raise BadRecord("can.unsupported_event", f"event {tok[0]!r} is not a CAN event")

    def _classic(self, line_no: int, ts_us: int, tok: list[str], rest: str) -> None:
        ch = tok[0]
        if len(tok) > 1 and tok[1].lower() == "errorframe":
            m = _ECC.search(rest)
            info = decode_sja1000_ecc(int(m[1], 2)) if m else ErrorInfo()
            self.w.add(line_no, ts_us, ch, 0, ERR, 0, b"")
            self.w.error(line_no, ts_us, ch, "error_frame", info, rest[len(ch) :].strip())
            self.src.accepted()
            return
        if len(tok) < 4:
            raise BadRecord("can.bad_line", "too few fields for a CAN frame")
        id_s, direction, dtype = tok[1], tok[2], tok[3].lower()
        can_id, flags = self._id(id_s)
        if direction not in ("Rx", "Tx", "TxRq"):
            raise BadRecord("can.bad_line", f"direction {direction!r}")
        if direction != "Rx":
            flags |= TX
        if dtype == "r":
            dlc = int(tok[4], self.base) if len(tok) > 4 and _isnum(tok[4], self.base) else 0
            self.w.add(line_no, ts_us, ch, can_id, flags | RTR, dlc, b"")
        elif dtype == "d":
            dlc = int(tok[4], self.base)
            n = min(dlc, 8)
            data = self._bytes(tok[5 : 5 + n], n)
            self.w.add(line_no, ts_us, ch, can_id, flags, dlc if dlc <= 8 else 8, data)
        else:
            raise BadRecord("can.bad_line", f"frame type {dtype!r}, expected d or r")
        self.src.accepted()

    def _fd(self, line_no: int, ts_us: int, tok: list[str]) -> None:
        ch, direction = tok[1], tok[2]
        flags = FD | (TX if direction != "Rx" else 0)
        if tok[3].lower() == "errorframe":
            self.w.add(line_no, ts_us, ch, 0, flags | ERR, 0, b"")
            self.w.error(line_no, ts_us, ch, "error_frame", ErrorInfo(), " ".join(tok[3:])[:200])
            self.src.accepted()
            return
        can_id, idf = self._id(tok[3])
        i = 4 if tok[4].isdigit() else 5  # an optional symbolic name sits before BRS
        brs, esi, dlc_s, len_s = tok[i : i + 4]
        n = int(len_s)
        flags |= idf | (BRS if brs == "1" else 0) | (ESI if esi == "1" else 0)
        int(dlc_s, 16)
        if n == 0:
            self.w.add(line_no, ts_us, ch, can_id, flags | RTR, int(dlc_s, 16), b"")
        else:
            data = self._bytes(tok[i + 4 : i + 4 + n], n)
            self.w.add(line_no, ts_us, ch, can_id, flags, n, data)
        self.src.accepted()

    def _id(self, id_s: str) -> tuple[int, int]:
        ext = id_s[-1:] in ("x", "X")
        body = id_s[:-1] if ext else id_s
        if not _isnum(body, self.base):
            raise BadRecord("can.bad_id", f"bad CAN id {id_s!r}")
        can_id = int(body, self.base)
        if can_id > (0x1FFFFFFF if ext else 0x7FF):
            raise BadRecord("can.bad_id", f"CAN id out of range {id_s!r}")
        return can_id, EXT if ext else 0

    def _bytes(self, toks: list[str], n: int) -> bytes:
        if len(toks) != n or not all(_isnum(t, self.base) for t in toks):
            raise BadRecord("can.bad_data", f"expected {n} data bytes")
        vals = [int(t, self.base) for t in toks]
        if any(v > 255 for v in vals):
            raise BadRecord("can.bad_data", "data byte above 255")
        return bytes(vals)


def _isnum(text: str, base: int) -> bool:
    try:
        int(text, base)
    except ValueError:
        return False
    return True


@register
class AscLog(Parser):
    name = "can_asc"
    version = "1"
    kind = "can_log"
    description = "Vector ASC (CANoe/CANalyzer ASCII log)"
    signature = AllOf(
        FirstLines(
            r"^(date\s+\w+|base\s+(hex|dec)|(no\s+)?internal events logged|Begin Triggerblock"
            r"|\s*\d+\.\d+\s+(\d+\s+[0-9A-Fa-f]+x?\s+(Rx|Tx)|CANFD\s|\d+\s+ErrorFrame))",
            min_hits=3,
            flags=re.IGNORECASE,
        ),
        (NameHint(r"\.asc$"),),
    )
    tables = TABLES

    def parse(self, src: Source, sink: Sink) -> None:
        """Fills can_frames/can_errors (ts UTC us) and the derived bus and module events."""
        parse_line_log(src, sink, "asc", AscState, _fastpath_asc)


def _fastpath_asc(src: Source, st: AscState) -> None:
    from forensics.parsers.can import fastpath_asc

    fastpath_asc.parse_asc(src, st)
