"""PEAK TRC (PCAN-View / PCAN-Explorer trace), versions 1.0, 1.1, 1.2, 1.3, 2.0 and 2.1 as
PEAK's "PEAK CAN TRC File Format" describes them.

Times are milliseconds from `$STARTTIME` (days since 1899-12-30, local time of the PC);
version 1.0 has no start time and is anchored like any relative log. Errors come as
`Error` / `ER` lines (type bits 1 bit, 2 form, 4 stuff, 8 other; then direction, SJA1000 bit
position, RX and TX error counters), `Warng` / `ST` status words (PCAN BUSLIGHT, BUSHEAVY,
BUSPASSIVE, BUSOFF) and `EC` counter changes (RX, TX). python-can's TRC writer drops error,
remote and FD frames, so fixtures with those are written by hand from PEAK's document.
"""

from __future__ import annotations

from forensics.parsers.base import AllOf, FirstLines, NameHint, Parser, Sink, Source, register
from forensics.parsers.can import timebase
from forensics.parsers.can.candump import BadRecord
from forensics.parsers.can.errorclass import (
    ErrorInfo,
    decode_peak_error,
    decode_peak_status,
    state_from_counters,
)
from forensics.parsers.can.frames import BRS, ERR, ESI, EXT, FD, RTR, TX, CanWriter, parse_line_log
from forensics.parsers.can.schema import TABLES

FD_TYPES = {"FD": FD, "FB": FD | BRS, "FE": FD | ESI, "BI": FD | BRS | ESI}
FD_LENGTHS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64)
V1_LAYOUT = {  # version -> index of (type, bus) columns after number and time; None = absent
    "1.0": (None, None),
    "1.1": (2, None),
    "1.2": (3, 2),
    "1.3": (3, 2),
}


def ms_to_us(text: str) -> int:
    """'1059.900' (milliseconds) -> 1059900 microseconds, exactly."""
    whole, _, frac = text.partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise BadRecord("can.bad_timestamp", f"time offset {text!r}")
    return int(whole) * 1000 + int((frac + "000")[:3])


class TrcState:
    """Header state and the per-line parser (reference path)."""

    def __init__(self, src: Source, w: CanWriter):
        self.src, self.w = src, w
        self.version = "1.0"
        self.columns: list[str] = []
        self.based = False
        self.start: float | None = None

    def header(self, line: str) -> None:
        s = line.strip()
        key, _, value = s[2:].partition("=")
        if key == "FILEVERSION":
            self.version = value.strip()
        elif key == "STARTTIME":
            try:
                self.start = float(value.strip().rstrip(";"))
            except ValueError:
                self.w.notes.append(f"unreadable $STARTTIME {value!r}")
        elif key == "COLUMNS":
            self.columns = [c.strip() for c in value.split(",")]

    def _base(self) -> None:
        self.based = True
        if self.start is not None:
            naive = timebase.ole_days_to_naive(self.start)
            self.w.set_absolute(
                timebase.local_to_us(naive, self.src.context.timezone), "header_date"
            )
            self.w.header_time_note("TRC $STARTTIME")
        else:
            self.w.set_relative()

    def feed(self, line_no: int, line: str) -> None:
        s = line.strip()
        if not s:
            return
        if s.startswith(";$"):
            self.header(s)
            return
        if s.startswith(";"):
            return
        if not self.based:
            self._base()
        try:
            if self.version.startswith("2"):
                self._v2(line_no, s.split())
            else:
                self._v1(line_no, s.split())
        except BadRecord as exc:
            self.src.reject(f"line {line_no}", exc.reason, line, str(exc))
        except (ValueError, IndexError) as exc:
            self.src.reject(f"line {line_no}", "can.bad_line", line, f"{type(exc).__name__}: {exc}")

    # -- version 1.x: 'N)' time [bus] [type] id dlc data|RTR|ERROR ...

    def _v1(self, line_no: int, tok: list[str]) -> None:
        if not tok[0].endswith(")"):
            raise BadRecord("can.bad_line", "message number without ')'")
        ts = ms_to_us(tok[1])
        t_idx, b_idx = V1_LAYOUT.get(self.version, V1_LAYOUT["1.1"])
        typ = tok[t_idx] if t_idx else "Rx"
        ch = tok[b_idx] if b_idx else "1"
        i = max(filter(None, (t_idx, b_idx)), default=1) + 1
        id_s = tok[i]
        i += 1
        if self.version == "1.3":
            i += 1  # reserved column '-'
        dlc = int(tok[i])
        data = tok[i + 1 :]
        if typ == "Warng" or id_s == "FFFFFFFF":
            value = int("".join(data[:4]), 16)
            self._error(
                line_no, ts, ch, "status", decode_peak_status(value), " ".join(data[4:]) or None
            )
            return
        if data[:1] == ["ERROR"]:
            typ, data = "Error", data[1:]
        if typ == "Error":
            vals = [int(x, 16) for x in data[:4]]
            info = decode_peak_error(int(id_s, 16), vals[1], vals[2], vals[3])
            self._error_frame(line_no, ts, ch, info)
            return
        if typ not in ("Rx", "Tx"):
            raise BadRecord("can.bad_line", f"message type {typ!r}")
        self._frame(line_no, ts, ch, id_s, typ, dlc, dlc, data, 0)

    # -- version 2.x: columns from $COLUMNS

    def _v2(self, line_no: int, tok: list[str]) -> None:
        cols = self.columns or ["N", "O", "T", "I", "d", "l", "D"]
        pos = {c: k for k, c in enumerate(cols)}
        typ = tok[pos["T"]]
        ts = ms_to_us(tok[pos["O"]])
        ch = tok[pos["B"]] if "B" in pos else "1"
        if typ in ("ER", "ST", "EC"):
            d_at = next(k for k, t in enumerate(tok) if t in ("Rx", "Tx") and k > pos["T"])
            rest = tok[d_at + 1 :]
            if self.version != "2.0":  # 2.1 keeps the reserved and length columns
                rest = rest[1:] if "R" in pos and rest[:1] == ["-"] else rest
                rest = rest[1:]
            vals = [int(x, 16) for x in rest]
            if typ == "ER":
                info = decode_peak_error(vals[0], vals[2], vals[3], vals[4])
                self._error_frame(line_no, ts, ch, info)
            elif typ == "ST":
                info = decode_peak_status(int.from_bytes(bytes(vals[:4]), "big"))
                self._error(line_no, ts, ch, "status", info, None)
            else:
                info = ErrorInfo(classes=["counters"], rx_errors=vals[0], tx_errors=vals[1])
                info.state = state_from_counters(vals[1], vals[0])
                self._error(line_no, ts, ch, "counters", info, None)
            return
        if typ == "EV":
            return  # user-defined event text, not a CAN record
        if typ not in ("DT", "RR") and typ not in FD_TYPES:
            raise BadRecord("can.bad_line", f"message type {typ!r}")
        id_s, d = tok[pos["I"]], tok[pos["d"]]
        if "l" in pos:
            length = int(tok[pos["l"]])
            dlc_code = FD_LENGTHS.index(length) if length in FD_LENGTHS else -1
        else:
            dlc_code = int(tok[pos["L"]])
            length = FD_LENGTHS[dlc_code] if typ in FD_TYPES else min(dlc_code, 8)
        data = tok[pos["D"] :] if "D" in pos else []
        flags = FD_TYPES.get(typ, 0) | (RTR if typ == "RR" else 0)
        self._frame(line_no, ts, ch, id_s, d, length, dlc_code, data, flags)

    def _frame(self, line_no, ts, ch, id_s, direction, length, dlc_code, data, flags) -> None:
        can_id = int(id_s, 16)
        if len(id_s) > 4:
            flags |= EXT
        if can_id > (0x1FFFFFFF if flags & EXT else 0x7FF):
            raise BadRecord("can.bad_id", f"CAN id out of range {id_s!r}")
        if direction == "Tx":
            flags |= TX
        if flags & RTR or data[:1] == ["RTR"]:
            self.w.add(line_no, ts, ch, can_id, flags | RTR, length, b"")
        else:
            if len(data) < length or dlc_code < 0:
                raise BadRecord("can.bad_data", f"expected {length} data bytes, got {len(data)}")
            raw = bytes(int(x, 16) for x in data[:length])
            self.w.add(line_no, ts, ch, can_id, flags, length, raw)
        self.src.accepted()

    def _error_frame(self, line_no: int, ts: int, ch: str, info: ErrorInfo) -> None:
        self.w.add(line_no, ts, ch, 0, ERR, 0, b"")
        self.w.error(line_no, ts, ch, "error_frame", info)
        self.src.accepted()

    def _error(self, line_no: int, ts: int, ch: str, source: str, info, text) -> None:
        self.w.error(line_no, ts, ch, source, info, text)
        self.src.accepted()


@register
class TrcLog(Parser):
    name = "can_trc"
    version = "1"
    kind = "can_log"
    description = "PEAK TRC trace (PCAN-View / PCAN-Explorer), versions 1.0 to 2.1"
    signature = AllOf(
        FirstLines(
            r"^;(\$FILEVERSION=|\$STARTTIME=|\$COLUMNS=|.*(PCAN|Start time|Message Number))",
            min_hits=2,
        ),
        (NameHint(r"\.trc$", bonus=15),),
    )
    tables = TABLES

    def parse(self, src: Source, sink: Sink) -> None:
        """Fills can_frames/can_errors (ts UTC us) and the derived bus and module events."""
        parse_line_log(src, sink, "trc", TrcState, _fastpath_trc)


def _fastpath_trc(src: Source, st: TrcState) -> None:
    from forensics.parsers.can import fastpath_trc

    fastpath_trc.parse_trc(src, st)
