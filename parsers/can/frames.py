"""Shared CAN ingest: table layout, columnar frame and error buffers, and the per-file
writer every CAN log parser uses (time basis, anchoring, then bus/module analysis).

`can_frames` is the big table (tens of millions of rows), so it is kept narrow: no charger
or locator text per row, flags packed in one byte. `loc` is the record's line number in text
formats and its 1-based object number in binary ones; `can_logs.loc_unit` says which, and
`can_locator(unit, loc)` rebuilds 'line N' / 'frame N'.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from forensics.parsers.base import BATCH_ROWS, OneInFlight, Sink, Source
from forensics.parsers.can import timebase
from forensics.parsers.can.errorclass import ErrorInfo

# inserts are cut on multiples of this, a whole number of the case's row groups
# (store.ROW_GROUP_SIZE), so every row goes straight to the file and none to the WAL
ROW_GROUP_ROWS = 122_880
WRITE_ROWS = 4 * ROW_GROUP_ROWS  # frames pooled per insert (twice that: peak RSS +25 % at 10M)
# DuckDB's cache of written blocks is dropped after this many rows (Sink.evict_cache): after
# every insert cost 5 % of a 10M candump ingest (page faults), after every third ~30 MB peak
EVICT_ROWS = 3 * WRITE_ROWS

# flag bits of can_frames.flags
EXT, RTR, ERR, FD, BRS, ESI, TX = 1, 2, 4, 8, 16, 32, 64


def can_locator(unit: str, loc: int) -> str:
    return f"{unit} {loc}"


FRAME_SCHEMA = pa.schema(
    [
        ("loc", pa.int64()),
        ("ts", pa.timestamp("us")),
        ("channel", pa.string()),
        ("arbitration_id", pa.uint32()),
        ("flags", pa.uint8()),
        ("dlc", pa.uint8()),
        ("data", pa.binary()),
    ]
)

# what can_frame_store takes (file_id added on insert): data as `payload` / `payload_blob`
STORE_SCHEMA = pa.schema(
    [
        *[f for f in FRAME_SCHEMA if f.name != "data"],
        ("payload", pa.uint64()),
        ("payload_blob", pa.binary()),
    ]
)


@dataclass
class Frame:
    """One frame as the reference parsers produce it (ts in the log's own microseconds)."""

    ts_us: int
    channel: str
    can_id: int
    flags: int
    dlc: int
    data: bytes


class CanWriter:
    """Collects frames and error records of one file and writes them in Arrow batches.

    `offset_us` is added to every timestamp (0 for absolute logs; the anchor for relative
    ones). Use it as a context manager: inserts run in a writer thread, which must be
    stopped even when the parser fails. Call `finish()` once at the end: it flushes,
    records `can_logs`, and runs the bus-health, module-health and DBC analysis over this
    file's rows.
    """

    def __init__(self, src: Source, sink: Sink, fmt: str, loc_unit: str):
        self.src, self.sink, self.fmt, self.loc_unit = src, sink, fmt, loc_unit
        self.offset_us = 0
        self.basis = "absolute"
        self.anchor_us: int | None = None
        self.frames = 0
        self._f: list[list] = [[] for _ in range(7)]
        self._e: list[tuple] = []
        self._pending: list[pa.Table] = []  # STORE_SCHEMA
        self._pending_data: list[pa.Table] = []  # FRAME_SCHEMA, converted when written
        self._pending_rows = 0
        self._pending_err: list[pa.Table] = []
        self._pending_err_rows = 0
        self._unevicted = 0  # frames inserted since DuckDB's cache was last dropped
        self._writer: OneInFlight | None = None  # runs the inserts, one at a time
        self._writer_sink: Sink | None = None  # what they write with
        self.notes: list[str] = []
        extra = src.context.extra or {}
        self.bitrate = _int_or_none(extra.get("bitrate"))

    # -- time basis

    def set_absolute(self, offset_us: int = 0, basis: str = "absolute") -> None:
        """Stamps are epoch-based once `offset_us` (a header date, or 0) is added."""
        self.offset_us, self.basis = offset_us, basis
        if basis != "absolute":
            self.anchor_us = offset_us

    def set_relative(self) -> None:
        """Stamps are offsets from the log start: anchor them from manifest or case."""
        extra = self.src.context.extra or {}
        start = extra.get("start_time")
        if start:
            self.offset_us, self.basis = timebase.iso_to_us(start), "anchored_manifest"
            self.notes.append(f"relative time anchored at manifest start_time {start}")
        else:
            first = self._case_start()
            if first is not None:
                self.offset_us, self.basis = first, "anchored_case"
                self.notes.append(
                    "relative time anchored at the earliest event of this charger in the case; "
                    "set start_time in the manifest to be sure"
                )
            else:
                self.offset_us, self.basis = 0, "relative"
                self.notes.append(
                    "relative time with no anchor: timestamps count from 1970-01-01; set "
                    "start_time for this file in the manifest"
                )
        self.anchor_us = self.offset_us

    def _case_start(self) -> int | None:
        row = self.sink.con.execute(
            "SELECT epoch_us(min(ts)) FROM events WHERE file_id <> ? AND ts IS NOT NULL "
            "AND (charger_id = ? OR ? IS NULL)",
            [self.sink.file_id, self.src.context.charger_id, self.src.context.charger_id],
        ).fetchone()
        return row[0] if row and row[0] is not None else None

    def header_time_note(self, what: str) -> None:
        tz = self.src.context.timezone
        if tz:
            self.notes.append(f"{what} read as local time in {tz}")
        else:
            self.notes.append(f"{what} has no zone; taken as UTC (set timezone in the manifest)")

    # -- records

    def add(self, loc: int, ts_us: int, channel: str, can_id: int, flags: int, dlc: int,
            data: bytes) -> None:  # fmt: skip
        """One good frame (counted as accepted)."""
        f = self._f
        f[0].append(loc)
        f[1].append(ts_us + self.offset_us)
        f[2].append(channel)
        f[3].append(can_id)
        f[4].append(flags)
        f[5].append(dlc)
        f[6].append(data)
        if len(f[0]) >= BATCH_ROWS:
            self._f = [[] for _ in range(7)]
            self.append_frames(_frame_table(f))

    def error(self, loc: int, ts_us: int, channel: str, source: str, info: ErrorInfo,
              text: str | None = None) -> None:  # fmt: skip
        """One decoded error record (an error frame also goes through `add`)."""
        self._e.append((loc, ts_us + self.offset_us, channel, source, info, text))
        if len(self._e) >= BATCH_ROWS:
            self._flush_errors()

    def append_errors(self, table: pa.Table) -> None:
        """Vectorised paths hand over ready can_errors rows (ts absolute, microseconds;
        `locator` may be left out: it is made from `loc`), pooled like frames (BLF hands
        over a few per container)."""
        if self._pending_err:
            table = table.cast(self._pending_err[0].schema)
        self._pending_err.append(table)
        self._pending_err_rows += table.num_rows
        if self._pending_err_rows >= WRITE_ROWS:
            self._write_pending_errors()

    def _write_pending_errors(self) -> None:
        if self._pending_err:
            self._insert(None, self._error_table())

    def _error_table(self) -> pa.Table:
        tbl = pa.concat_tables(self._pending_err).combine_chunks()
        self._pending_err, self._pending_err_rows = [], 0
        if "locator" not in tbl.column_names:  # one string op here, not one per container
            loc = pl.from_arrow(tbl["loc"]).cast(pl.String)
            tbl = tbl.append_column("locator", (self.loc_unit + " " + loc).to_arrow())
        return tbl

    def append_frames(self, table: pa.Table) -> None:
        """Vectorised paths hand over ready Arrow frames (ts already absolute, microseconds),
        either with `data` (FRAME_SCHEMA) or already with `payload` (STORE_SCHEMA).

        Tables are pooled and inserted in large batches: each DuckDB insert has a fixed cost,
        and so has each conversion to the store layout (BLF hands over one small table per
        container), so those are done once per batch too.
        """
        if "data" in table.column_names:
            self._pending_data.append(table.cast(FRAME_SCHEMA))
        else:
            self._pending.append(table.cast(STORE_SCHEMA))
        self._pending_rows += table.num_rows
        if self._pending_rows >= WRITE_ROWS:
            self._write_pending()

    def _write_pending(self, final: bool = False) -> None:
        """Hands the pooled frames to the writer as whole row groups in one Arrow piece,
        the rest staying pooled until the last batch (`final`). Partial row groups are
        merged by the checkpoint when the case closes: at 10M BLF frames that took 2.5 s
        and 350 MB more than the whole ingest's peak, growing with the file."""
        frames = errors = None
        if self._pending_data:
            data = pa.concat_tables(self._pending_data).combine_chunks()
            self._pending.append(store_layout(data))
            self._pending_data = []
        if self._pending:
            frames = pa.concat_tables(self._pending)
            rest = None
            if not final:
                cut = frames.num_rows - frames.num_rows % ROW_GROUP_ROWS
                frames, rest = frames.slice(0, cut), frames.slice(cut)
            self._pending = [rest] if rest is not None and rest.num_rows else []
            self._pending_rows = rest.num_rows if rest is not None else 0
            self.frames += frames.num_rows
            frames = frames if frames.num_rows else None
        # the error rows of these frames go too: pooled to the end they grow with the file
        if self._pending_err:
            errors = self._error_table()
        if frames is not None or errors is not None:
            self._insert(frames, errors)

    def _insert(self, frames: pa.Table | None, errors: pa.Table | None) -> None:
        """Inserts in a writer thread while the parser goes on with the next batch: DuckDB
        releases the GIL, so the insert (about half of a big text log's ingest) overlaps
        the scan and the Arrow work. At most one insert is in flight (memory stays
        bounded); its error, if any, is raised at the next insert or at the end."""
        evict = False
        if frames is not None:
            self._unevicted += frames.num_rows
            if self._unevicted >= EVICT_ROWS:
                evict, self._unevicted = True, 0
        if self._writer is None:
            # inside the caller's open transaction there is no twin: written here, in it
            twin = self.sink.twin()
            self._writer = OneInFlight(threaded=twin is not None, name="can-writer")
            self._writer_sink = twin or self.sink
        self._writer.submit(_insert_batch, self._writer_sink, frames, errors, evict)

    def __enter__(self) -> CanWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """No insert may land after the parser stops: a failed file's rows are deleted
        next (ingest.discard_file), and a late insert would survive that."""
        if exc is None:
            self.close_writer()
            return
        with suppress(Exception):  # the parser's own error is the one to report
            self.close_writer()

    def close_writer(self) -> None:
        """Waits for the last insert and stops the writer thread (also after a failure)."""
        if self._writer is None:
            return
        try:
            self._writer.close()
        finally:
            if self._writer_sink is not self.sink:
                self._writer_sink.con.close()
            self._writer = self._writer_sink = None

    def flush(self) -> None:
        """Writes every buffered frame and error record."""
        f = self._f
        if f[0]:
            self._f = [[] for _ in range(7)]
            self.append_frames(_frame_table(f))
        self._write_pending(final=True)  # and the pooled error rows with them
        self.close_writer()
        self._flush_errors()

    def _flush_errors(self) -> None:
        if not self._e:
            return
        rows = self._e
        unit = self.loc_unit
        s = pl.Series
        infos = [r[4] for r in rows]
        tbl = pa.Table.from_pydict(
            {
                "loc": s([r[0] for r in rows], dtype=pl.Int64).to_arrow(),
                "locator": s([f"{unit} {r[0]}" for r in rows], dtype=pl.String).to_arrow(),
                "ts": s([r[1] for r in rows], dtype=pl.Int64).cast(pl.Datetime("us")).to_arrow(),
                "channel": s([r[2] for r in rows], dtype=pl.String).to_arrow(),
                "source": s([r[3] for r in rows], dtype=pl.String).to_arrow(),
                "classes": _str_lists([i.classes for i in infos]),
                "controller": _str_lists([i.controller for i in infos]),
                "protocol": _str_lists([i.protocol for i in infos]),
                "location": s([i.location for i in infos], dtype=pl.String).to_arrow(),
                "transceiver": s([i.transceiver for i in infos], dtype=pl.String).to_arrow(),
                "tx_errors": s([i.tx_errors for i in infos], dtype=pl.Int16).to_arrow(),
                "rx_errors": s([i.rx_errors for i in infos], dtype=pl.Int16).to_arrow(),
                "state": s([i.state for i in infos], dtype=pl.String).to_arrow(),
                "text": s([r[5] for r in rows], dtype=pl.String).to_arrow(),
            }
        )
        self.sink.append("can_errors", tbl)
        self._e = []

    # -- the end

    def finish(self) -> None:
        """Flushes, records the log's summary row, and runs the analyses over this file."""
        from forensics.parsers.can import dbc, health, modules

        self.flush()
        con, fid = self.sink.con, self.sink.file_id
        for note in self.notes:
            if note not in self.src.notes:
                self.src.notes.append(note)
        con.execute(
            """INSERT INTO can_logs
               SELECT ?, ?, ?, ?, ?, make_timestamp(?::BIGINT), min(ts), max(ts), count(*),
                      count(*) FILTER (WHERE flags & 4 <> 0), ?, ?
               FROM can_frames WHERE file_id = ?""",
            [fid, self.src.context.charger_id, self.fmt, self.loc_unit, self.basis,
             self.anchor_us, self.bitrate, "; ".join(self.notes) or None, fid],
        )  # fmt: skip
        self.sink.count("can_logs", 1)
        ctx = health.Context(
            con=con,
            sink=self.sink,
            file_id=fid,
            charger_id=self.src.context.charger_id,
            loc_unit=self.loc_unit,
            bitrate=self.bitrate,
            extra=self.src.context.extra or {},
        )
        health.analyse(ctx)
        modules.analyse(ctx)
        dbc.decode_log(ctx)


def parse_line_log(src: Source, sink: Sink, fmt: str, make_state: Callable, fast: Callable):
    """A line-oriented log with a state machine per format (ASC, TRC): `fast(src, state)`
    (the vectorised path) unless the manifest sets `can_fast = false`, else every line
    through `state.feed`; then the per-file analyses."""
    with CanWriter(src, sink, fmt, "line") as w:
        st = make_state(src, w)
        if (src.context.extra or {}).get("can_fast", True):
            fast(src, st)
        else:
            for first, lines in src.lines():
                for i, line in enumerate(lines):
                    st.feed(first + i, line)
        w.finish()


def _insert_batch(sink: Sink, frames: pa.Table | None, errors: pa.Table | None, evict: bool):
    """One writer-thread insert: the frames (then, with `evict`, DuckDB's cache of the blocks
    written since the last eviction is dropped, so the case is on disk, not in RAM: flat
    memory) and the error rows pooled with them."""
    if frames is not None:
        # one piece (copied here, off the parser's thread): DuckDB scans each Arrow batch
        # in its own thread, and each thread ends in a partial row group (BLF's many small
        # batches left 30 % of them so)
        sink.append("can_frame_store", frames.combine_chunks())
        if evict:
            sink.evict_cache()
    if errors is not None:
        sink.append("can_errors", errors)


_LIST = pl.List(pl.String)
# polars builds the arrays: pyarrow's pa.array imports pandas on first use (~0.3 s)
_FRAME_DTYPES = (pl.Int64, pl.Int64, pl.String, pl.UInt32, pl.UInt8, pl.UInt8, pl.Binary)


def _str_lists(lists: list[list[str]]) -> pa.Array:
    """list<string> from Python lists: flat values plus offsets (polars builds nested
    Series from Python objects ~20x slower)."""
    lens = np.fromiter((len(x) for x in lists), dtype=np.int32, count=len(lists))
    offsets = np.zeros(len(lists) + 1, dtype=np.int32)
    np.cumsum(lens, out=offsets[1:])
    flat = pl.Series([v for x in lists for v in x], dtype=pl.String).to_arrow()
    return pa.ListArray.from_arrays(
        pa.Array.from_buffers(pa.int32(), len(offsets), [None, pa.py_buffer(offsets)]),
        flat.cast(pa.string()),
    )


def _frame_table(cols: list[list]) -> pa.Table:
    """The Python-side frame columns (loc, ts_us, channel, id, flags, dlc, data) as Arrow."""
    arrays = [pl.Series(c, dtype=t).to_arrow() for c, t in zip(cols, _FRAME_DTYPES, strict=True)]
    arrays[1] = arrays[1].cast(pa.timestamp("us"))
    return pa.Table.from_arrays(arrays, names=FRAME_SCHEMA.names).cast(FRAME_SCHEMA)


def store_layout(tbl: pa.Table) -> pa.Table:
    """FRAME_SCHEMA rows as `can_frame_store` takes them: `data` becomes `payload` (the bytes
    as a big-endian integer) where dlc and the remote flag say how many bytes there are, and
    stays bytes in `payload_blob` where they do not (FD payloads over 8 bytes, odd lengths)."""
    data = tbl["data"].combine_chunks()
    n = len(data)
    offsets = np.frombuffer(data.buffers()[1], np.int32, n + 1, data.offset * 4)
    values = np.frombuffer(data.buffers()[2] or b"", np.uint8)
    lens = np.diff(offsets)
    flags = pl.from_arrow(tbl["flags"]).to_numpy()  # Arrow's to_numpy imports pandas
    want = np.where(flags & RTR, 0, pl.from_arrow(tbl["dlc"]).to_numpy())
    fits = (lens == want) & (lens <= 8)
    if data.null_count:
        fits &= pl.from_arrow(data).is_not_null().to_numpy()
    payload = np.zeros(n, np.uint64)
    counts = np.bincount(lens[fits], minlength=9)
    for size in np.flatnonzero(counts[1:9]) + 1:  # one gather per payload length present
        rows = slice(None) if counts[size] == n else np.flatnonzero(fits & (lens == size))
        start = offsets[:-1][rows]
        if counts[size] == n and start[-1] - start[0] == size * (n - 1):
            grid = values[start[0] : start[0] + size * n].reshape(n, size)  # contiguous
        else:
            grid = values[start[:, None] + np.arange(size)]
        if size < 8:  # right-align in 8 bytes so the bytes read as one big-endian integer
            grid = np.concatenate([np.zeros((len(grid), 8 - size), np.uint8), grid], axis=1)
        payload[rows] = np.ascontiguousarray(grid).view(">u8").ravel()
    if fits.all():
        blob = pa.nulls(n, pa.binary())
    else:  # the mask through polars: pa.array would import pandas (~0.3 s)
        blob = pc.if_else(pl.Series(~fits).to_arrow(), data, pa.nulls(n, pa.binary()))
    return (
        tbl.drop_columns(["data"])
        .append_column(
            "payload", pa.Array.from_buffers(pa.uint64(), n, [None, pa.py_buffer(payload)])
        )
        .append_column("payload_blob", blob)
    )


def _int_or_none(value) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def parse_hex_data(text: str) -> bytes:
    """'DE AD BE EF' or 'DEADBEEF' -> bytes; ValueError on anything else."""
    return bytes.fromhex(text)
