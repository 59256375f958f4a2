"""pcapng block walk (draft-ietf-opsawg-pcapng): SHB, IDB, EPB, SPB, obsolete PB, NRB, ISB,
DSB; several sections and interfaces, each interface with its own link type and timestamp
resolution (if_tsresol) and offset (if_tsoffset).

Yields reader.Chunk objects; unknown block types are skipped (counted in stats), as
Wireshark does with blocks it has no handler for.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator

import numpy as np

from forensics.parsers.pcap import resync
from forensics.parsers.pcap.binary import gather_u32
from forensics.parsers.pcap.reader import (
    BT_DSB,
    BT_EPB,
    BT_IDB,
    BT_ISB,
    BT_NRB,
    BT_PB,
    BT_SHB,
    BT_SPB,
    MAX_BLOCK,
    SECRETS_TLS_KEYLOG,
    CaptureReader,
    Chunk,
    Interface,
)

try:  # parsers/pcap/_pcapscan.c, built at install; optional: _EpbRun does the same
    from forensics.parsers.pcap import _pcapscan
except ImportError:
    _pcapscan = None

BOM = 0x1A2B3C4D
OPT_IF_NAME, OPT_IF_TSRESOL, OPT_IF_TSOFFSET = 2, 9, 14
MAX_TS_S = 253_402_300_799  # 9999-12-31 23:59:59 UTC: Python's datetime ends there
MAX_TICKS_PER_S = 10**18  # if_tsresol finer than this does not fit 64-bit arithmetic
MIN_TS_US = -62_135_596_800 * 1_000_000  # 0001-01-01 (a negative if_tsoffset)
NATIVE = "<" if sys.byteorder == "little" else ">"


class _EpbRun:
    """The common case fast: a run of well-formed Enhanced Packet Blocks, walked over a
    32-bit view of the buffer (blocks are 4-byte aligned) and then checked in bulk (trailer
    length, captured length). The first block that is anything else (another type, too
    short or long, cut by the buffer end, a bad trailer) is left to the careful per-block
    walk, which decides what it is exactly as before.

    The walk itself is mostly numpy: every word that could start an EPB (type 6, length a
    multiple of 4, >= 32, inside the buffer) is a candidate with its successor; from the
    current block on, candidates whose successor is the next candidate form the chain the
    per-block loop would follow. Where the chain breaks (a block that is no candidate, or
    a candidate word inside a packet's bytes) the per-block loop takes over."""

    WINDOW = 8192  # candidates compared per step (bounds the work per call)

    def __init__(self, buf: bytes):
        self.n4 = len(buf) >> 2
        self.mv = memoryview(buf)[: self.n4 << 2].cast("I")
        self.w = np.frombuffer(buf, dtype=np.uint32, count=self.n4)
        self.cand: np.ndarray | None = None

    def _candidates(self) -> None:
        w = self.w
        t = np.flatnonzero(w[:-1] == BT_EPB) if self.n4 > 1 else np.zeros(0, np.int64)
        bl = w[t + 1].astype(np.int64)
        nxt = t + (bl >> 2)
        ok = ((bl & 3) == 0) & (bl >= 32) & (nxt <= self.n4)
        self.cand, self.cnext = t[ok], nxt[ok]

    def _chain(self, i: int) -> tuple[list[np.ndarray], int]:
        if self.cand is None:
            self._candidates()
        cand, cnext, out = self.cand, self.cnext, []
        while True:
            k = int(np.searchsorted(cand, i))
            if k >= len(cand) or cand[k] != i:
                return out, i
            c, nx = cand[k : k + self.WINDOW], cnext[k : k + self.WINDOW]
            broken = np.flatnonzero(nx[:-1] != c[1:])
            m = int(broken[0]) if len(broken) else len(c) - 1
            out.append(c[: m + 1])
            i = int(nx[m])
            if len(broken):
                return out, i

    def run(self, off: int) -> tuple[np.ndarray, int]:
        """(offsets of the good EPBs from off on, offset of the first block not taken)."""
        parts, i = self._chain(off >> 2)
        mv, n4 = self.mv, self.n4
        got: list[int] = []
        ap = got.append
        while i + 3 <= n4:
            bl = mv[i + 1]
            if mv[i] != BT_EPB or bl & 3 or bl < 32:
                break
            j = i + (bl >> 2)
            if j > n4:
                break
            ap(i)
            i = j
        if got:
            parts.append(np.asarray(got, dtype=np.int64))
        if not parts:
            return _NONE, off
        w = self.w
        q = np.concatenate(parts) if len(parts) > 1 else parts[0]
        bl = w[q + 1].astype(np.int64)
        ok = (bl <= MAX_BLOCK) & (w[q + (bl >> 2) - 1] == bl) & (w[q + 5] <= bl - 32)
        if not ok.all():
            k = int(np.argmin(ok))
            q, i = q[:k], int(q[k])
        return q << 2, i << 2


class _NativeRun:
    """_EpbRun's walk in C (parsers/pcap/_pcapscan.c): the same blocks, without the GIL."""

    def __init__(self, buf: bytes):
        self.buf = buf

    def run(self, off: int) -> tuple[np.ndarray, int]:
        offs, nxt = _pcapscan.epb_run(self.buf, off)
        return np.frombuffer(offs, dtype=np.int64), nxt


_NONE = np.zeros(0, dtype=np.int64)


class _Offsets:
    """The packet blocks' offsets of one chunk: runs of EPBs (arrays, from the fast walk)
    and blocks the per-block loop took one by one, kept as numpy until the chunk is cut
    (a Python int per packet cost the read-ahead thread ~25 ms per 1M packets)."""

    __slots__ = ("n", "parts", "singles")

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.singles: list[int] = []
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def add(self, off: int) -> None:
        self.singles.append(off)
        self.n += 1

    def extend(self, run: np.ndarray) -> None:
        if len(run):
            self._flush()
            self.parts.append(run)
            self.n += len(run)

    def _flush(self) -> None:
        if self.singles:
            self.parts.append(np.array(self.singles, dtype=np.int64))
            self.singles = []

    def array(self) -> np.ndarray:
        self._flush()
        return np.concatenate(self.parts) if len(self.parts) != 1 else self.parts[0]


def walk(r: CaptureReader) -> Iterator[Chunk]:
    """Walks all blocks of the stream; packet blocks become chunks."""
    off = 0
    endian = _section_endian(r._fill(0, 12), 0)
    if endian is None:
        r._reject("offset 0", "pcapng.bad_section", r._buf[:16], "no byte-order magic")
        return
    hdr = struct.Struct(endian + "II").unpack_from
    u32 = struct.Struct(endian + "I").unpack_from
    while True:
        buf = r._buf
        n = len(buf)
        offs = _Offsets()
        special: dict[int, int] = {}  # index in offs -> block type, for SPB / PB
        ap = offs.add
        stop = ""  # "" need more data, "corrupt", "section"
        fast = (_EpbRun if _pcapscan is None else _NativeRun)(buf) if endian == NATIVE else None
        while off + 12 <= n:
            if fast is not None and not off & 3:
                got, off = fast.run(off)
                offs.extend(got)
                if off + 12 > n:
                    break
            btype, blen = hdr(buf, off)
            if blen < 12 or blen & 3 or blen > MAX_BLOCK:
                if btype == BT_SHB:
                    stop = "section"
                    break
                stop = "corrupt"
                break
            end = off + blen
            if end > n:
                if btype == BT_SHB:
                    stop = "section"
                break
            if u32(buf, end - 4)[0] != blen:
                stop = "section" if btype == BT_SHB else "corrupt"
                break
            if btype == BT_EPB:
                if blen < 32 or u32(buf, off + 20)[0] > blen - 32:
                    stop = "corrupt"
                    break
                ap(off)
            elif btype in (BT_SPB, BT_PB):
                if blen < (16 if btype == BT_SPB else 32):
                    stop = "corrupt"
                    break
                special[len(offs)] = btype
                ap(off)
            elif btype == BT_SHB:
                stop = "section"
                break
            else:
                # An IDB only appends within a section, so pending interface ids stay valid.
                _other_block(r, buf, off, btype, blen, endian)
            off = end
        if offs:
            yield _chunk(r, buf, offs, special, endian)
        if stop == "section":
            new = _section_endian(r._fill(off, 12), 0)
            off = 0
            blen = struct.unpack_from((new or "<") + "I", r._buf, 4)[0] if new else 0
            buf = r._fill(0, blen if 12 <= blen <= MAX_BLOCK else 12)
            ok = (
                new is not None
                and 28 <= blen <= MAX_BLOCK
                and blen % 4 == 0
                and len(buf) >= blen
                and struct.unpack_from(new + "I", buf, blen - 4)[0] == blen
            )
            if ok:
                endian = new
                hdr = struct.Struct(endian + "II").unpack_from
                u32 = struct.Struct(endian + "I").unpack_from
                r.interfaces = []
                r.stats.saw("section")
                off = blen
                continue
            if len(buf) < 12 or (new is not None and len(buf) < blen and r._eof):
                _truncated(r, 0)
                return
            stop = "corrupt"
        if stop == "corrupt":
            off = _resync(r, off, endian)
            if off < 0:
                return
            continue
        if not r._more(off):  # the buffer now starts at the unconsumed bytes
            if r._buf:
                _truncated(r, 0)
            return
        off = 0


def _section_endian(buf: bytes, off: int) -> str | None:
    if len(buf) < off + 12:
        return None
    if struct.unpack_from("<I", buf, off + 8)[0] == BOM:
        return "<"
    if struct.unpack_from(">I", buf, off + 8)[0] == BOM:
        return ">"
    return None


def _truncated(r: CaptureReader, off: int) -> None:
    buf = r._buf
    tail = buf[off:]
    packet = len(tail) >= 4 and struct.unpack_from("<I", tail)[0] in (BT_EPB, BT_SPB, BT_PB)
    packet = packet or (len(tail) >= 4 and struct.unpack_from(">I", tail)[0] in (6, 3, 2))
    packet = packet or len(tail) < 4
    r._reject(
        f"frame {r.frames + 1}" if packet else f"offset {r._base + off}",
        "pcap.truncated_record" if packet else "pcapng.truncated_block",
        tail[:16],
        f"the capture ends inside the block at offset {r._base + off} "
        f"({len(tail)} bytes of it present)",
    )


def _resync(r: CaptureReader, off: int, endian: str) -> int:
    bad_at = r._base + off
    r._fill(off, 16)
    excerpt = r._buf[:16]
    found = resync.scan(r, resync.pcapng_candidates(endian, MAX_BLOCK))
    skipped = (found if found >= 0 else r._base + len(r._buf)) - bad_at
    r.stats.skipped_bytes += skipped
    where = f"the next valid block at offset {found}" if found >= 0 else "the end of file"
    r._reject(
        f"offset {bad_at}",
        "pcapng.corrupt_block",
        excerpt,
        f"block length or trailer is not valid; skipped {skipped} bytes to {where}",
    )
    return found - r._base if found >= 0 else -1


def _options(buf: bytes, start: int, end: int, endian: str) -> Iterator[tuple[int, bytes]]:
    """(code, value) of a block's options between start and end (opt_endofopt stops)."""
    u16 = struct.Struct(endian + "HH").unpack_from
    p = start
    while p + 4 <= end:
        code, length = u16(buf, p)
        if code == 0:
            return
        val = buf[p + 4 : p + 4 + length]
        yield code, val
        p += 4 + ((length + 3) & ~3)


def _other_block(r: CaptureReader, buf: bytes, off: int, btype: int, blen: int, endian: str):
    end = off + blen - 4
    if btype == BT_IDB:
        linktype, _res, snaplen = struct.unpack_from(endian + "HHI", buf, off + 8)
        iface = Interface(linktype, snaplen)
        for code, val in _options(buf, off + 16, end, endian):
            if code == OPT_IF_TSRESOL and val:
                v = val[0]
                tps = 2 ** (v & 0x7F) if v & 0x80 else 10**v
                if tps > MAX_TICKS_PER_S:
                    r._reject(
                        f"offset {r._base + off}",
                        "pcapng.bad_option",
                        bytes(buf[off : off + 16]),
                        f"interface {len(r.interfaces)}: if_tsresol {v:#04x} is finer than "
                        "attoseconds; timestamps read as microseconds",
                    )
                else:
                    iface.ticks_per_s = tps
            elif code == OPT_IF_TSOFFSET and len(val) == 8:
                iface.offset_s = struct.unpack(endian + "q", val)[0]
            elif code == OPT_IF_NAME:
                iface.name = val.decode("utf-8", "replace")
        r.interfaces.append(iface)
        r.stats.saw("idb")
    elif btype == BT_DSB:
        stype, slen = struct.unpack_from(endian + "II", buf, off + 8)
        if stype == SECRETS_TLS_KEYLOG:
            r.secrets.append(bytes(buf[off + 16 : off + 16 + min(slen, blen - 20)]))
        r.stats.saw("dsb")
    elif btype == BT_ISB:
        r.stats.saw("isb")
    elif btype == BT_NRB:
        r.stats.saw("nrb")
    else:
        r.stats.saw(f"block 0x{btype:08x}")


def _chunk(r: CaptureReader, buf: bytes, offs: _Offsets, special: dict[int, int], endian):
    """Columnar view of EPB/SPB/PB blocks at offs (block starts in buf)."""
    big = endian == ">"
    a = np.frombuffer(buf, dtype=np.uint8)
    o = offs.array()
    if _pcapscan is not None:  # the same five gathers in C, without the GIL
        cols, ticks = np.empty((3, len(o)), dtype=np.int64), np.empty(len(o), dtype=np.uint64)
        _pcapscan.epb_fields(buf, o, big, cols, ticks)
        iface, cap, orig = cols
    else:
        iface = gather_u32(a, o + 8, big)
        ticks = (gather_u32(a, o + 12, big).astype(np.uint64) << np.uint64(32)) | gather_u32(
            a, o + 16, big
        ).astype(np.uint64)
        cap = gather_u32(a, o + 20, big)
        orig = gather_u32(a, o + 24, big)
    data = o + 28
    for i, bt in special.items():
        if bt == BT_PB:
            iface[i] = struct.unpack_from(endian + "H", buf, int(o[i]) + 8)[0]
        else:  # SPB: no interface id (always 0), no timestamp, caplen from block/snaplen
            blen, olen = struct.unpack_from(endian + "I4xI", buf, int(o[i]) + 4)
            snap = r.interfaces[0].snaplen if r.interfaces else 0
            iface[i] = 0
            orig[i] = olen
            cap[i] = min(olen, blen - 16, snap or olen)
            data[i] = o[i] + 12
            ticks[i] = 0
    n_if = len(r.interfaces)
    bad = iface >= n_if
    first = r.frames + 1
    frame = np.arange(first, first + len(o), dtype=np.int64)
    r.frames += len(o)
    ts = np.zeros(len(o), dtype=np.int64)
    link = np.zeros(len(o), dtype=np.int64)
    in_range = np.ones(len(o), dtype=bool)
    for k, itf in enumerate(r.interfaces):
        m = iface == k
        if not m.any():
            continue
        t = ticks[m]
        tps = np.uint64(itf.ticks_per_s)
        sec = t // tps
        in_range[m] = sec <= np.uint64(MAX_TS_S)  # else seconds * 10^6 would overflow
        if itf.ticks_per_s <= 10**12:  # exact: (t % tps) * 10^6 stays inside 64 bits
            frac = (t % tps) * np.uint64(1_000_000) // tps
        else:
            frac = (t % tps) // np.uint64(itf.ticks_per_s // 1_000_000)
        us = np.minimum(sec, MAX_TS_S).astype(np.int64) * 1_000_000 + frac.astype(np.int64)
        ts[m] = us + itf.offset_s * 1_000_000
        link[m] = itf.linktype
    spb = [i for i, bt in special.items() if bt == BT_SPB]
    for i in spb:  # a Simple Packet Block has no time: keep the previous packet's
        ts[i] = ts[i - 1] if i else 0
    # a time no calendar can show (years 1-9999) means a corrupt block or if_tsresol
    bad_ts = ~bad & ~(in_range & (ts >= MIN_TS_US) & (ts <= MAX_TS_S * 1_000_000))
    if bad.any() or bad_ts.any():
        for i in np.flatnonzero(bad | bad_ts):
            if bad[i]:
                reason = "pcapng.unknown_interface"
                detail = f"names interface {int(iface[i])}; the section declares {n_if}"
            else:
                reason = "pcap.bad_timestamp"
                detail = (
                    f"has a timestamp ({int(ticks[i])} ticks of interface {int(iface[i])}) "
                    "outside years 1-9999"
                )
            r._reject(
                f"frame {int(frame[i])}",
                reason,
                bytes(buf[int(o[i]) : int(o[i]) + 16]),
                f"packet block at offset {r._base + int(o[i])} {detail}",
            )
        keep = ~(bad | bad_ts)
        o, data, cap, orig, ts, link, frame = (
            x[keep] for x in (o, data, cap, orig, ts, link, frame)
        )
    return Chunk(buf, data, cap, orig, ts, link, frame, o + r._base)
