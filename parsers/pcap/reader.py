"""Streaming reader for pcap and pcapng: bounded chunks of packet records, columnar.

The only per-packet Python is the walk from one record header to the next (the offsets
depend on each other); every header field is then gathered with numpy from those offsets.
A chunk holds the raw bytes it points into, so nothing is copied per packet.

Damage is handled the way a field capture needs it:
- a file that ends inside a record (capture cut) -> one `pcap.truncated_record` reject;
- a corrupt record header (pcap) or block (pcapng) in the middle -> one reject at its byte
  offset, then a scan for the next valid record/block, and reading goes on from there.
Frame numbers count packet records as Wireshark does (1-based). A skipped corrupt region
uses no frame number: later frames are numbered as Wireshark numbers the file with that
region cut out.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from forensics.parsers.pcap import resync
from forensics.parsers.pcap.binary import gather_u32

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000),  # little-endian, microseconds
    b"\xa1\xb2\xc3\xd4": (">", 1_000_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000),  # nanoseconds
    b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
READ_BYTES = 8 << 20  # one read from the stream; a chunk is at most this plus one record
MAX_CAPLEN = 262_144  # libpcap's MAXIMUM_SNAPLEN; larger records are corrupt
MAX_BLOCK = 16 << 20  # Wireshark refuses pcapng blocks above 16 MiB as well
BT_SHB, BT_IDB, BT_PB, BT_SPB, BT_NRB, BT_ISB, BT_EPB, BT_DSB = (
    0x0A0D0D0A,
    1,
    2,
    3,
    4,
    5,
    6,
    0x0A,
)
SECRETS_TLS_KEYLOG = 0x544C534B  # 'TLSK'

Reject = Callable[[str, str, bytes, str], None]  # (locator, reason, excerpt, detail)


class NotACapture(ValueError):
    """The stream does not start with a pcap or pcapng header."""


@dataclass
class Interface:
    """One capture interface: link type and timestamp units (pcapng IDB or pcap header)."""

    linktype: int
    snaplen: int
    ticks_per_s: int = 1_000_000  # if_tsresol; classic pcap: 10^6 or 10^9
    offset_s: int = 0  # if_tsoffset, seconds added to every timestamp
    name: str = ""


@dataclass
class Chunk:
    """Packet records of one read. Offsets point into `buf`; ts_us is UTC microseconds."""

    buf: bytes
    data_off: np.ndarray  # int64, start of the packet bytes in buf
    caplen: np.ndarray  # int64, captured bytes
    origlen: np.ndarray  # int64, length on the wire
    ts_us: np.ndarray  # int64, microseconds since 1970-01-01 UTC
    linktype: np.ndarray  # int64, per packet (pcapng: of its interface)
    frame: np.ndarray  # int64, 1-based frame number
    file_off: np.ndarray  # int64, offset of the record header in the (decompressed) file

    def __len__(self) -> int:
        return len(self.frame)


@dataclass
class Stats:
    """What the walk saw besides packets: block counts and skipped bytes."""

    blocks: dict[str, int] = field(default_factory=dict)
    skipped_bytes: int = 0
    interface_stats: list[dict] = field(default_factory=list)

    def saw(self, what: str) -> None:
        self.blocks[what] = self.blocks.get(what, 0) + 1


class CaptureReader:
    """Reads one capture stream; `chunks()` yields Chunk objects in file order.

    `reject(locator, reason, excerpt, detail)` is called for each damaged region; `secrets`
    collects TLS key logs from pcapng Decryption Secrets Blocks.
    """

    def __init__(self, stream, reject: Reject, read_bytes: int = READ_BYTES):
        self._stream = stream
        self._reject = reject
        self._read_bytes = read_bytes
        self._buf = b""
        self._base = 0  # file offset of _buf[0]
        self._eof = False
        # a plain file: the unconsumed tail is read again with the next block (see _fill)
        self._reread = isinstance(stream, io.BufferedReader) and stream.seekable()
        self._origin = stream.tell() if self._reread else 0  # where the capture starts
        self.frames = 0  # packet records read so far (= last frame number)
        self.interfaces: list[Interface] = []
        self.secrets: list[bytes] = []
        self.stats = Stats()
        head = self._fill(0, 24)
        if len(head) >= 4 and head[:4] in PCAP_MAGICS:
            self.format = "pcap"
        elif head[:4] == PCAPNG_SHB:
            self.format = "pcapng"
        else:
            raise NotACapture("no pcap or pcapng magic at offset 0")

    # ------------------------------------------------------------ buffer

    def _fill(self, off: int, need: int) -> bytes:
        """Makes sure buf[off:off+need] is loaded (unless EOF); drops bytes before off."""
        if off > 0:
            self._buf = self._buf[off:]
            self._base += off
        while len(self._buf) < need and not self._eof:
            want = max(self._read_bytes, need - len(self._buf))
            if self._reread and self._buf:
                # the tail again from the file with the next block: each byte is copied
                # once (from the page cache), not twice (read, then joined to the tail)
                self._stream.seek(self._origin + self._base)
                data = self._stream.read(len(self._buf) + want)
                if len(data) <= len(self._buf):  # nothing past the tail
                    self._eof = True
                    break
                self._buf = data
                continue
            data = self._stream.read(want)
            if not data:
                self._eof = True
                break
            # join copies a big buffer without holding the GIL (CPython drops it past 1 MiB):
            # the read-ahead thread does this while the packet loop runs
            self._buf = b"".join((self._buf, data)) if self._buf else data
        return self._buf

    def _more(self, off: int) -> bool:
        """Drops consumed bytes and reads one more block; False at end of file."""
        have = len(self._buf) - off
        self._fill(off, have + 1)
        return len(self._buf) > have

    # ------------------------------------------------------------ pcap

    def chunks(self) -> Iterator[Chunk]:
        if self.format == "pcap":
            yield from self._pcap()
        else:
            yield from self._pcapng()

    def _pcap(self) -> Iterator[Chunk]:
        buf = self._fill(0, 24)
        endian, ticks = PCAP_MAGICS[buf[:4]]
        if len(buf) < 24:
            self._reject("offset 0", "pcap.truncated_record", buf, "file header cut short")
            return
        _vmaj, _vmin, _tz, _sig, snaplen, network = struct.unpack_from(endian + "HHiIII", buf, 4)
        # The top bits of the link type carry the FCS length (pcap spec, LinkType field).
        self.interfaces = [Interface(network & 0x0FFFFFFF, snaplen, ticks)]
        limit = max(snaplen, MAX_CAPLEN) if snaplen < (1 << 26) else MAX_CAPLEN
        unpack = struct.Struct(endian + "IIII").unpack_from
        off = 24
        last_s = None
        while True:
            buf = self._buf
            n = len(buf)
            offs: list[int] = []
            ap = offs.append
            corrupt = False
            while off + 16 <= n:
                _s, frac, cap, _orig = unpack(buf, off)
                if cap > limit or frac >= ticks:
                    corrupt = True
                    break
                end = off + 16 + cap
                if end > n:
                    break
                ap(off)
                off = end
            if offs:
                last_s = unpack(buf, offs[-1])[0]
                yield self._pcap_chunk(buf, offs, endian, ticks)
            if corrupt:
                off = self._resync_pcap(off, endian, ticks, limit, last_s)
                if off < 0:
                    return
                continue
            if not self._more(off):  # the buffer now starts at the unconsumed bytes
                if self._buf:
                    self._truncated(0, self._buf)
                return
            off = 0

    def _pcap_chunk(self, buf: bytes, offs: list[int], endian: str, ticks: int) -> Chunk:
        o = np.asarray(offs, dtype=np.int64)
        a = np.frombuffer(buf, dtype=np.uint8)
        big = endian == ">"
        sec = gather_u32(a, o, big).astype(np.int64)
        frac = gather_u32(a, o + 4, big).astype(np.int64)
        ts = sec * 1_000_000 + (frac // 1000 if ticks == 1_000_000_000 else frac)
        first = self.frames + 1
        self.frames += len(o)
        return Chunk(
            buf=buf,
            data_off=o + 16,
            caplen=gather_u32(a, o + 8, big).astype(np.int64),
            origlen=gather_u32(a, o + 12, big).astype(np.int64),
            ts_us=ts,
            linktype=np.full(len(o), self.interfaces[0].linktype, dtype=np.int64),
            frame=np.arange(first, first + len(o), dtype=np.int64),
            file_off=o + self._base,
        )

    def _resync_pcap(self, off: int, endian: str, ticks: int, limit: int, last_s) -> int:
        """Rejects the corrupt record at `off`; returns the next valid record's offset in the
        (refilled) buffer, or -1 when the file ends first."""
        bad_at = self._base + off
        self._fill(off, 16)
        buf = self._buf
        excerpt = buf[:16]
        found = resync.scan(self, resync.pcap_candidates(endian, ticks, limit, last_s))
        skipped = (found if found >= 0 else self._base + len(self._buf)) - bad_at
        self.stats.skipped_bytes += skipped
        where = f"the next valid record at offset {found}" if found >= 0 else "the end of file"
        self._reject(
            f"offset {bad_at}",
            "pcap.corrupt_record",
            excerpt,
            f"record header is not valid; skipped {skipped} bytes to {where}",
        )
        return found - self._base if found >= 0 else -1

    def _truncated(self, off: int, tail: bytes) -> None:
        self._reject(
            f"frame {self.frames + 1}",
            "pcap.truncated_record",
            tail[:16],
            f"the capture ends inside the record at offset {self._base + off} "
            f"({len(tail)} bytes of it present)",
        )

    # ------------------------------------------------------------ pcapng

    def _pcapng(self) -> Iterator[Chunk]:
        from forensics.parsers.pcap import pcapng

        yield from pcapng.walk(self)
