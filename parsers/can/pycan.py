"""Formats read through python-can's own readers: python-can CSV (its `CSVWriter` layout:
`timestamp,arbitration_id,extended,remote,error,dlc,data`, data base64) and ASAM MDF4
(`.mf4`, needs asammdf). Locators: `line N` for CSV, `frame N` (1-based) for MF4.
"""

from __future__ import annotations

import binascii

from forensics.parsers.base import FirstLines, Magic, Parser, Sink, Source, register
from forensics.parsers.can import timebase
from forensics.parsers.can.errorclass import ErrorInfo, decode_linux
from forensics.parsers.can.frames import BRS, ERR, ESI, EXT, FD, RTR, TX, CanWriter
from forensics.parsers.can.schema import TABLES

CSV_HEADER = "timestamp,arbitration_id,extended,remote,error,dlc,data"


def _error_info(can_id: int, data: bytes) -> ErrorInfo:
    # SocketCAN error frames keep their class bits in the id and details in 8 data bytes
    return decode_linux(can_id, data) if len(data) == 8 and can_id else ErrorInfo()


@register
class PythonCanCsv(Parser):
    name = "can_csv"
    version = "1"
    kind = "can_log"
    description = "python-can CSV log (timestamp,arbitration_id,extended,remote,error,dlc,data)"
    signature = FirstLines(
        r"^timestamp,arbitration_id,extended,remote,error,dlc,data\s*$", min_hits=1, certainty=95
    )
    tables = TABLES

    def parse(self, src: Source, sink: Sink) -> None:
        """Fills can_frames/can_errors (ts UTC us) and the derived bus and module events."""
        with CanWriter(src, sink, "csv", "line") as w:
            based = False
            for first, lines in src.lines():
                for i, line in enumerate(lines):
                    n = first + i
                    s = line.strip()
                    if not s or s == CSV_HEADER:
                        continue
                    try:
                        ts_s, id_s, ext, rtr, err, dlc_s, data_s = s.split(",")
                        ts = timebase.parse_seconds_us(ts_s)
                        can_id = int(id_s, 16)
                        data = binascii.a2b_base64(data_s, strict_mode=True) if data_s else b""
                        dlc = int(dlc_s)
                        flags = (
                            (EXT if ext == "1" else 0)
                            | (RTR if rtr == "1" else 0)
                            | (ERR if err == "1" else 0)
                        )
                        if len(data) > 8 or dlc > 8:
                            flags |= FD
                        if (
                            can_id > 0x1FFFFFFF
                            or dlc > 64
                            or any(v not in ("0", "1") for v in (ext, rtr, err))
                        ):
                            raise ValueError("field out of range")
                    except (ValueError, binascii.Error) as exc:
                        src.reject(
                            f"line {n}", "can.bad_line", line, f"{type(exc).__name__}: {exc}"
                        )
                        continue
                    if not based:
                        based = True
                        w.set_relative() if timebase.looks_relative(ts) else w.set_absolute()
                    w.add(n, ts, "0", can_id, flags, dlc, data)
                    if flags & ERR:
                        w.error(n, ts, "0", "error_frame", _error_info(can_id, data))
                    src.accepted()
            w.finish()


@register
class Mf4Log(Parser):
    name = "can_mf4"
    version = "1"
    kind = "can_log"
    description = "ASAM MDF4 bus logging (.mf4) through python-can's MF4Reader (asammdf)"
    signature = Magic((b"MDF     ", b"UnFinMF "))
    tables = TABLES

    def parse(self, src: Source, sink: Sink) -> None:
        """Reads every CAN frame python-can's MF4Reader yields; a file it cannot open is one
        reject at offset 0 (e.g. asammdf missing, or an MDF without CAN bus logging)."""
        with CanWriter(src, sink, "mf4", "frame") as w:
            try:
                from can.io.mf4 import MF4Reader

                reader = MF4Reader(str(src.path))
            except Exception as exc:  # asammdf raises many types; the file is the reject
                src.reject("offset 0", "can.mf4_unreadable", b"", f"{type(exc).__name__}: {exc}")
                w.finish()
                return
            w.set_absolute()
            n = 0
            try:
                for msg in reader:
                    n += 1
                    ts = round(msg.timestamp * 1_000_000)
                    if n == 1 and timebase.looks_relative(ts):
                        w.set_relative()
                    flags = (EXT if msg.is_extended_id else 0) | (RTR if msg.is_remote_frame else 0)
                    flags |= (ERR if msg.is_error_frame else 0) | (FD if msg.is_fd else 0)
                    flags |= (BRS if msg.bitrate_switch else 0) | (
                        ESI if msg.error_state_indicator else 0
                    )
                    flags |= 0 if msg.is_rx else TX
                    ch = str(msg.channel if msg.channel is not None else 0)
                    data = bytes(msg.data or b"")
                    w.add(n, ts, ch, msg.arbitration_id, flags, msg.dlc, data)
                    if msg.is_error_frame:
                        w.error(n, ts, ch, "error_frame", _error_info(msg.arbitration_id, data))
                    src.accepted()
            except Exception as exc:  # a damaged block ends the readable part; keep what came
                src.reject(
                    f"frame {n + 1}", "can.mf4_bad_block", b"", f"{type(exc).__name__}: {exc}"
                )
            finally:
                reader.stop()
            w.finish()
