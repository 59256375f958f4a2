"""The native line scanner (parsers/can/_textscan.c) as chunks of columns.

`scan` takes one chunk of candump, ASC or TRC 2.x text and gives the common lines as numpy
columns plus every other non-blank line as text for the reference parser;
`scanned_chunks` does it over a candump or ASC file, the next chunk read and scanned in a
worker thread while this one is inserted (the scanner releases the GIL). `walk_blf` walks
the objects of decompressed BLF containers. Where the extension was not built (no C compiler at
install time) `AVAILABLE` is False and the polars paths in fastpath*.py do the same work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from forensics.parsers.base import Source, read_ahead
from forensics.parsers.can import arrowcols
from forensics.parsers.can.frames import STORE_SCHEMA

try:
    from forensics.parsers.can import _textscan
except ImportError:  # not compiled here: the polars paths take over
    _textscan = None

AVAILABLE = _textscan is not None
CHUNK_BYTES = 16 << 20


@dataclass
class Scanned:
    """One chunk: the scanned lines as columns, the others as (line number, text)."""

    loc: np.ndarray  # int64 line numbers (1-based, in the file)
    ts: np.ndarray  # int64 microseconds on the log's own clock (ASC: before the time base)
    channel_index: np.ndarray  # uint8 into channel_names
    channel_names: list[str]
    can_id: np.ndarray  # uint32 (error frames: the error class bits)
    flags: np.ndarray  # uint8, can_frames.flags bits
    dlc: np.ndarray  # uint8
    payload: np.ndarray  # uint64, data bytes big-endian
    slow: list[tuple[int, str]]

    @property
    def channel(self) -> pa.Array:
        """The channel of every row (string)."""
        return arrowcols.strings(self.channel_names, self.channel_index)

    def channels(self, rows: np.ndarray) -> pa.Array:
        """The channels of the given rows (string)."""
        return arrowcols.strings(self.channel_names, self.channel_index[rows])

    def payload_bytes(self, rows: np.ndarray) -> list[bytes]:
        """The data bytes of the given rows (few: error frames)."""
        be = self.payload[rows].astype(">u8").tobytes()
        return [be[i * 8 + 8 - d : i * 8 + 8] for i, d in enumerate(self.dlc[rows].tolist())]


def scan(first: int, data: bytes, fmt: str, columns: str = "") -> Scanned:
    """Scans one chunk whose first line is line `first`: fmt 'candump', 'asc', or 'trc'
    (with `columns`, the TRC $COLUMNS letters joined, ending in 'D')."""
    if fmt == "trc":
        return _columns(first, data, _textscan.scan_trc(data, columns))
    scanner: Callable = _textscan.scan_candump if fmt == "candump" else _textscan.scan_asc
    return _columns(first, data, scanner(data))


def walk_blf(data: bytes) -> dict | None:
    """The objects of decompressed BLF containers (see walk_blf in _textscan.c)."""
    return _textscan.walk_blf(data)


def scanned_chunks(src: Source, fmt: str) -> Iterator[Scanned]:
    """Yields `Scanned` chunks of a candump (`fmt='candump'`) or ASC (`'asc'`) file."""
    # no heap trim per chunk: the next chunk's buffers were page-faulted in again after each
    # (3 % of a 10M-line candump ingest) and the peak is not in this loop
    return read_ahead(src.line_chunks(CHUNK_BYTES), lambda piece: scan(*piece, fmt), trim=False)


def _columns(first: int, data: bytes, cols: dict) -> Scanned:
    def col(name: str, dtype) -> np.ndarray:
        return np.frombuffer(cols[name], dtype)

    slow = []
    pairs = col("slow", np.int64).reshape(-1, 2)
    for index, start in pairs.tolist():
        end = data.find(b"\n", start)
        raw = data[start : end if end >= 0 else len(data)]
        if raw.strip():
            line = raw.removesuffix(b"\r").decode("utf-8", errors="replace")
            slow.append((first + index, line))
    return Scanned(
        loc=col("line", np.int64) + first,
        ts=col("ts", np.int64),
        channel_index=col("channel", np.uint8),
        channel_names=cols["names"],
        can_id=col("can_id", np.uint32),
        flags=col("flags", np.uint8),
        dlc=col("dlc", np.uint8),
        payload=col("payload", np.uint64),
        slow=slow,
    )


def frame_table(sc: Scanned, ts_us: np.ndarray) -> pa.Table:
    """can_frame_store rows (STORE_SCHEMA) of the scanned lines, stamped `ts_us` (UTC)."""
    num = arrowcols.numbers
    return pa.Table.from_arrays(
        [
            num(sc.loc, np.int64, pa.int64()),
            num(ts_us, np.int64, pa.timestamp("us")),
            sc.channel,
            num(sc.can_id, np.uint32, pa.uint32()),
            num(sc.flags, np.uint8, pa.uint8()),
            num(sc.dlc, np.uint8, pa.uint8()),
            num(sc.payload, np.uint64, pa.uint64()),
            pa.nulls(len(sc.loc), pa.binary()),
        ],
        schema=STORE_SCHEMA,
    )
