"""Vector BLF (binary logging format): a 'LOGG' file header, then 'LOBJ' objects; log
containers (type 10) hold the real objects, zlib-compressed or raw, and an object may span
two containers. Read here: CAN_MESSAGE(1)/CAN_MESSAGE2(86), CAN_ERROR(2), CAN_ERROR_EXT(73,
with the SJA1000 error code), CAN_FD_MESSAGE(100), CAN_FD_MESSAGE_64(101), and the driver's
error counters CAN_DRIVER_ERROR(31) / _EXT(74). Other object types are counted in a note.

Locators: `frame N` is the N-th inner object (1-based, all types counted); a damaged
container or object is a reject at `offset X` (the container's byte offset in the file) and
reading resumes at the next object signature. The header's start time is local time of the
logging PC (python-can writes UTC): the manifest timezone decides.
"""

from __future__ import annotations

import struct
import zlib
from collections import Counter

import numpy as np

from forensics.parsers.base import Magic, Parser, Sink, Source, register
from forensics.parsers.can import blf_fast, timebase
from forensics.parsers.can.errorclass import ErrorInfo, decode_sja1000_ecc, state_from_counters
from forensics.parsers.can.frames import BRS, ERR, ESI, EXT, FD, RTR, TX, CanWriter
from forensics.parsers.can.schema import TABLES

FILE_HEADER = struct.Struct("<4sL")
SYSTEMTIME = struct.Struct("<8H")
OBJ_BASE = struct.Struct("<4sHHLL")  # signature, header size, header version, size, type
OBJ_V1 = struct.Struct("<LHHQ")  # flags, client index, object version, timestamp
OBJ_V2 = struct.Struct("<LBxHQ")  # flags, timestamp status, object version, timestamp
CONTAINER = struct.Struct("<H6xL4x")  # compression method, uncompressed size
CAN_MSG = struct.Struct("<HBBL8s")
CAN_ERROR = struct.Struct("<HH")
CAN_ERROR_EXT = struct.Struct("<HHLBBBxLLH2x8s")
CAN_FD_MSG = struct.Struct("<HBBLLBBB5x64s")
CAN_FD_MSG_64 = struct.Struct("<BBBBLLLLLLLHBBL")
CAN_DRIVER_ERROR = struct.Struct("<HBBL")
FD_LENGTHS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64)
LOG_CONTAINER = 10
NAMES = {1: "can_message", 86: "can_message2", 2: "can_error", 73: "can_error_ext",
         100: "can_fd_message", 101: "can_fd_message_64", 31: "can_driver_error",
         74: "can_driver_error_ext"}  # fmt: skip


BATCH_BYTES = 4 << 20  # decompressed container bytes decoded at once


class BlfReader:
    """Walks containers and objects of one BLF file into a CanWriter."""

    def __init__(self, src: Source, w: CanWriter):
        self.src, self.w = src, w
        self.obj_no = 0
        self.obj_no_override: int | None = None  # set by the vectorised path
        self.fast = bool((src.context.extra or {}).get("can_fast", True))
        self.skipped: Counter[int] = Counter()

    def run(self) -> None:
        with self.src.open() as fh:
            head = fh.read(144)
            sig, hsize = FILE_HEADER.unpack_from(head) if len(head) >= 8 else (b"", 0)
            if sig != b"LOGG" or len(head) < 72:
                self.src.reject("offset 0", "can.blf_bad_header", head[:16], "no LOGG header")
                return
            self._start(SYSTEMTIME.unpack_from(head, 40))
            fh.read(max(hsize - 144, 0))
            self._outer(fh, hsize)
        if self.skipped:
            kinds = ", ".join(f"type {t} x{n}" for t, n in sorted(self.skipped.items()))
            self.w.notes.append(f"BLF objects not about CAN frames skipped: {kinds}")

    def _start(self, st: tuple) -> None:
        from datetime import datetime

        try:
            naive = datetime(st[0], st[1], st[3], st[4], st[5], st[6], st[7] * 1000)
        except ValueError:
            self.w.set_relative()
            return
        self.w.set_absolute(timebase.local_to_us(naive, self.src.context.timezone), "header_date")
        self.w.header_time_note("BLF header start time")

    def _outer(self, fh, offset: int) -> None:
        self.tail = b""
        # Containers are decoded in batches (numpy's per-call costs are paid per batch); a
        # batch is decoded before anything else is reported, so object numbers and rejects
        # keep file order.
        self.batch: list[tuple[bytes, int]] = []
        while True:
            base = fh.read(OBJ_BASE.size)
            if not base:
                break
            if len(base) < OBJ_BASE.size:
                self._decode_batch()
                self.src.reject(
                    f"offset {offset}",
                    "can.blf_truncated",
                    base,
                    "file ends inside an object header",
                )
                break
            sig, _, _, size, otype = OBJ_BASE.unpack(base)
            if sig != b"LOBJ" or size < OBJ_BASE.size:
                self._decode_batch()
                skipped = self._resync(fh, base)
                self.src.reject(
                    f"offset {offset}",
                    "can.blf_bad_object",
                    base,
                    f"no object signature; skipped {skipped} bytes",
                )
                offset += skipped
                continue
            body = fh.read(size - OBJ_BASE.size)
            pad = fh.read(size % 4)
            here, offset = offset, offset + size + len(pad)
            if len(body) < size - OBJ_BASE.size:
                self._decode_batch()
                self.src.reject(
                    f"offset {here}",
                    "can.blf_truncated",
                    base,
                    f"object of {size} bytes cut at end of file",
                )
                break
            if otype != LOG_CONTAINER:
                self._decode_batch()
                self.tail = self._inner(self.tail + base + body, here)  # outside containers
                continue
            method, _ = CONTAINER.unpack_from(body)
            payload = body[CONTAINER.size :]
            if method == 2:
                try:
                    payload = zlib.decompress(payload)
                except zlib.error as exc:
                    self._decode_batch()
                    self.src.reject(
                        f"offset {here}", "can.blf_bad_container", body[:16], f"zlib: {exc}"
                    )
                    self.tail = b""
                    continue
            elif method != 0:
                self._decode_batch()
                self.src.reject(
                    f"offset {here}", "can.blf_bad_container", body[:16], f"compression {method}"
                )
                self.tail = b""
                continue
            self.batch.append((payload, here))
            if not self.fast or sum(len(p) for p, _ in self.batch) >= BATCH_BYTES:
                self._decode_batch()
        self._decode_batch()
        if self.tail.strip(b"\x00"):
            self.src.reject(
                f"offset {offset}",
                "can.blf_truncated",
                self.tail[:16],
                f"{len(self.tail)} bytes of an object never completed",
            )

    def _decode_batch(self) -> None:
        """Decodes the batched containers (with the tail the last one left), vectorised
        where they chain cleanly, else container by container as the reference does."""
        batch, self.batch = self.batch, []
        if not batch:
            return
        if self.fast and len(batch) > 1:
            data = self.tail + b"".join(p for p, _ in batch)
            ends = np.cumsum([len(p) for p, _ in batch]) + len(self.tail)
            rest = blf_fast.decode(self, data, ends.tolist(), [off for _, off in batch])
            if rest is not None:
                self.tail = rest
                return
        for payload, here in batch:
            data = self.tail + payload
            rest = blf_fast.decode(self, data, [len(data)], [here]) if self.fast else None
            self.tail = self._inner(data, here) if rest is None else rest

    def _resync(self, fh, base: bytes) -> int:
        """Reads forward to the next 'LOBJ'; returns bytes skipped (stream left at it)."""
        buf, skipped = base, 0
        while True:
            k = buf.find(b"LOBJ", 1)
            if k >= 0:
                fh.seek(k - len(buf), 1)
                return skipped + k
            more = fh.read(1 << 16)
            if not more:
                return skipped + len(buf)
            skipped += len(buf) - 3
            buf = buf[-3:] + more

    def _inner(self, data: bytes, container_off: int) -> bytes:
        """Parses whole objects in `data`; returns the incomplete rest for the next container."""
        pos, end = 0, len(data)
        while pos + OBJ_BASE.size <= end:
            if data[pos : pos + 4] != b"LOBJ":
                nxt = data.find(b"LOBJ", pos + 1)
                if 0 <= nxt - pos < 4 and not data[pos:nxt].strip(b"\x00"):
                    pos = nxt  # padding between objects
                    continue
                self.obj_no += 1
                self.src.reject(f"offset {container_off}", "can.blf_bad_object", data[pos : pos + 16],
                                f"object {self.obj_no}: no signature at +{pos}; resynced")  # fmt: skip
                if nxt < 0:
                    return b""
                pos = nxt
                continue
            _, hsize, hver, size, otype = OBJ_BASE.unpack_from(data, pos)
            if size < hsize or hsize < OBJ_BASE.size:
                self.obj_no += 1
                self.src.reject(
                    f"offset {container_off}",
                    "can.blf_bad_object",
                    data[pos : pos + 16],
                    f"object {self.obj_no}: size {size}",
                )
                pos += 4
                continue
            if pos + size > end:
                return data[pos:]
            self.obj_no += 1
            self._object(data, pos, hsize, hver, size, otype, container_off)
            pos += size
        return data[pos:]

    def _object(self, data, pos, hsize, hver, size, otype, container_off) -> None:
        if otype not in NAMES:
            self.skipped[otype] += 1
            return
        if hver == 1:
            flags, _, _, stamp = OBJ_V1.unpack_from(data, pos + OBJ_BASE.size)
        elif hver == 2:
            flags, _, _, stamp = OBJ_V2.unpack_from(data, pos + OBJ_BASE.size)
        else:
            self.src.reject(
                f"offset {container_off}",
                "can.blf_bad_object",
                data[pos : pos + 16],
                f"object {self.obj_no}: header version {hver}",
            )
            return
        ts = stamp * 10 if flags == 1 else (stamp + 500) // 1000  # ns -> nearest us
        p, n, w = pos + hsize, self.obj_no_override or self.obj_no, self.w
        try:
            if otype in (1, 86):
                ch, fl, dlc, cid, raw = CAN_MSG.unpack_from(data, p)
                f = (
                    (EXT if cid & 0x80000000 else 0)
                    | (RTR if fl & 0x80 else 0)
                    | (TX if fl & 1 else 0)
                )
                w.add(
                    n, ts, str(ch), cid & 0x1FFFFFFF, f, dlc, b"" if f & RTR else raw[: min(dlc, 8)]
                )
            elif otype == 100:
                ch, fl, dlc, cid, _, _, fdf, valid, raw = CAN_FD_MSG.unpack_from(data, p)
                f = (
                    (EXT if cid & 0x80000000 else 0)
                    | (RTR if fl & 0x80 else 0)
                    | (TX if fl & 1 else 0)
                )
                f |= (FD if fdf & 1 else 0) | (BRS if fdf & 2 else 0) | (ESI if fdf & 4 else 0)
                w.add(n, ts, str(ch), cid & 0x1FFFFFFF, f, FD_LENGTHS[dlc & 15], raw[:valid])
            elif otype == 101:
                m = CAN_FD_MSG_64.unpack_from(data, p)
                ch, dlc, valid, cid, fdf, direction, ext_off = (
                    m[0],
                    m[1],
                    m[2],
                    m[4],
                    m[6],
                    m[12],
                    m[13],
                )
                room = (ext_off or size) - hsize - CAN_FD_MSG_64.size
                raw = data[
                    p + CAN_FD_MSG_64.size : p + CAN_FD_MSG_64.size + min(valid, room)
                ].ljust(valid, b"\0")
                f = (
                    (EXT if cid & 0x80000000 else 0)
                    | (RTR if fdf & 0x10 else 0)
                    | (TX if direction else 0)
                )
                f |= (
                    (FD if fdf & 0x1000 else 0)
                    | (BRS if fdf & 0x2000 else 0)
                    | (ESI if fdf & 0x4000 else 0)
                )
                w.add(n, ts, str(ch), cid & 0x1FFFFFFF, f, FD_LENGTHS[dlc & 15], raw)
            elif otype == 2:
                ch, _ = CAN_ERROR.unpack_from(data, p)
                w.add(n, ts, str(ch), 0, ERR, 0, b"")
                w.error(n, ts, str(ch), "error_frame", ErrorInfo())
            elif otype == 73:
                ch, _, efl, ecc, _, dlc, _, cid, _, raw = CAN_ERROR_EXT.unpack_from(data, p)
                info = decode_sja1000_ecc(ecc) if efl & 1 else ErrorInfo()
                w.add(
                    n, ts, str(ch), cid & 0x1FFFFFFF, ERR, min(dlc & 15, 8), raw[: min(dlc & 15, 8)]
                )
                w.error(n, ts, str(ch), "error_frame", info)
            else:  # 31 / 74: driver error counters
                ch, tx, rx, code = CAN_DRIVER_ERROR.unpack_from(data, p)
                info = ErrorInfo(classes=["counters"], tx_errors=tx, rx_errors=rx)
                info.state = state_from_counters(tx, rx)
                w.error(n, ts, str(ch), "driver", info, f"error code 0x{code:x}")
        except struct.error as exc:
            self.src.reject(
                f"offset {container_off}",
                "can.blf_bad_object",
                data[pos : pos + 16],
                f"object {n} ({NAMES[otype]}): {exc}",
            )
            return
        self.src.accepted()


@register
class BlfLog(Parser):
    name = "can_blf"
    version = "1"
    kind = "can_log"
    description = "Vector BLF binary log (CAN, CAN FD, error frames, driver errors)"
    signature = Magic((b"LOGG",))
    tables = TABLES

    def parse(self, src: Source, sink: Sink) -> None:
        """Fills can_frames/can_errors (ts UTC us, loc = object number) and derived events."""
        with CanWriter(src, sink, "blf", "frame") as w:
            BlfReader(src, w).run()
            w.finish()
