"""Finding the next valid record or block after a corrupt one.

A candidate must look like a header (plausible lengths, timestamp fraction, block type)
and be confirmed by what follows it: the next pcap record header is plausible too, or the
pcapng block's trailing length repeats its leading length. Scanning is vectorised over a
window of the buffer, so a few megabytes of garbage cost milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from forensics.parsers.pcap.binary import gather_u32

WINDOW = 1 << 20  # bytes examined per step
MARGIN = 262_144 + 64  # room after a candidate to confirm it (one maximal record)
WEEK_S = 7 * 86_400

Finder = Callable[[bytes, int, int, bool], int]


def scan(reader, finder: Callable[[bytes, int], object]) -> int:
    """Scans from reader._buf[1:] onwards; returns the absolute file offset of the next valid
    record/block (the reader's buffer then holds it), or -1 at end of file."""
    start = 1
    while True:
        buf = reader._fill(0, start + WINDOW + MARGIN)
        limit = min(len(buf), start + WINDOW) if reader._eof else len(buf) - MARGIN
        limit = min(limit, start + WINDOW)
        if limit <= start:
            return -1
        pos = finder(buf, start, limit, reader._eof)
        if pos >= 0:
            return reader._base + pos
        if reader._eof and limit >= len(buf):
            return -1
        reader._fill(limit, MARGIN)
        start = 0


def pcap_candidates(endian: str, ticks: int, caplimit: int, last_s: int | None) -> Finder:
    """Finder for classic pcap record headers."""
    big = endian == ">"

    def plausible(a: np.ndarray, p: np.ndarray) -> np.ndarray:
        sec = gather_u32(a, p, big)
        frac = gather_u32(a, p + 4, big)
        cap = gather_u32(a, p + 8, big)
        orig = gather_u32(a, p + 12, big)
        ok = (cap <= caplimit) & (orig >= cap) & (orig <= (1 << 24)) & (frac < ticks)
        if last_s is not None:
            ok &= np.abs(sec - last_s) <= WEEK_S
        return ok

    def find(buf: bytes, start: int, limit: int, eof: bool) -> int:
        a = np.frombuffer(buf, dtype=np.uint8)
        n = len(buf)
        p = np.arange(start, min(limit, n - 15), dtype=np.int64)
        if not len(p):
            return -1
        p = p[plausible(a, p)]
        if not len(p):
            return -1
        nxt = p + 16 + gather_u32(a, p + 8, big)
        at_end = (nxt == n) & eof
        inside = nxt + 16 <= n
        ok = at_end.copy()
        if inside.any():
            ok[inside] |= plausible(a, nxt[inside])
        hits = np.flatnonzero(ok)
        return int(p[hits[0]]) if len(hits) else -1

    return find


PCAPNG_TYPES = np.array([0x0A0D0D0A, 1, 2, 3, 4, 5, 6, 0x0A], dtype=np.int64)


def pcapng_candidates(endian: str, max_block: int) -> Finder:
    """Finder for pcapng blocks: known type, sane length, trailing length equal."""
    big = endian == ">"

    def find(buf: bytes, start: int, limit: int, eof: bool) -> int:
        a = np.frombuffer(buf, dtype=np.uint8)
        n = len(buf)
        p = np.arange(start, min(limit, n - 11), dtype=np.int64)
        if not len(p):
            return -1
        btype = gather_u32(a, p, big)
        blen = gather_u32(a, p + 4, big)
        ok = np.isin(btype, PCAPNG_TYPES) & (blen >= 12) & (blen % 4 == 0) & (blen <= max_block)
        ok &= p + blen <= n
        p, blen, btype = p[ok], blen[ok], btype[ok]
        if not len(p):
            return -1
        ok = gather_u32(a, p + blen - 4, big) == blen
        epb = ok & (btype == 6) & (blen >= 32)
        if epb.any():
            cap = gather_u32(a, p[epb] + 20, big)
            ok[epb] = cap <= blen[epb] - 32
        ok &= ~((btype == 6) & (blen < 32))
        hits = np.flatnonzero(ok)
        return int(p[hits[0]]) if len(hits) else -1

    return find
