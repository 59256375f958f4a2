"""Vectorised text paths: polars reads a chunk of candump or ASC text at once and pulls the
common data-frame lines out with one regex; every other line (error frames, FD, remote,
status, headers, anything odd) goes through the reference line parser, so both paths give
the same rows (a test compares them frame by frame).

Chunks are cut on line ends (`CHUNK_BYTES`), so memory stays flat whatever the file size.
"""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl
import pyarrow as pa

from forensics.parsers.base import Source
from forensics.parsers.can import timebase
from forensics.parsers.can.frames import EXT, TX, CanWriter

CHUNK_BYTES = 32 << 20

# can-utils' canonical form of a classic data frame (uppercase hex, 6-digit microseconds);
# python-can appends ' R' / ' T'.
_CANDUMP_FAST = (  # no capture groups: used as a match test
    r"^\([0-9]+\.[0-9]{6}\) [^ ]+ (?:[0-9A-F]{3}|[0-9A-F]{8})#(?:[0-9A-F]{2}){0,8}(?: [RT])?$"
)


def text_chunks(src: Source) -> Iterator[tuple[int, list[str] | pl.Series]]:
    """Yields (first_line_no, polars Series of lines) over the file, cut on newlines."""
    line_no = 1
    pending = b""
    with src.open() as fh:
        head = fh.read(3)
        if head != b"\xef\xbb\xbf":
            pending = head
        while True:
            chunk = fh.read(CHUNK_BYTES)
            data = pending + chunk
            if chunk:
                cut = data.rfind(b"\n")
                if cut < 0:
                    pending = data
                    continue
                pending, data = data[cut + 1 :], data[:cut]
            else:
                pending = b""
            if not data and not chunk:
                break
            lines = pl.Series("line", [data.decode("utf-8", errors="replace")]).str.split("\n")
            lines = lines.explode().str.strip_suffix("\r")
            yield line_no, lines
            line_no += len(lines)
            if not chunk:
                break


def _slow_lines(df: pl.DataFrame) -> list[tuple[int, str]]:
    rest = df.filter(pl.col("line").str.strip_chars() != "")
    return list(zip(rest["n"].to_list(), rest["line"].to_list(), strict=True))


def parse_candump(src: Source, w: CanWriter) -> None:
    """candump -L through polars; odd lines through `candump.parse_log_line`."""
    from forensics.parsers.can.candump import BadRecord, add_frame, parse_log_line, reject

    based = False
    for first, lines in text_chunks(src):
        df = pl.DataFrame({"line": lines}).with_row_index("n", offset=first)
        # a match test without captures runs as a DFA; fields are then cut by position
        df = df.with_columns(
            pl.col("n").cast(pl.Int64), ok=pl.col("line").str.contains(_CANDUMP_FAST)
        )
        parts = pl.col("line").str.split_exact(" ", 3)
        ts_s = parts.struct.field("field_0")
        frame = parts.struct.field("field_2").str.split_exact("#", 1)
        n_ts = ts_s.str.len_bytes()
        fast = df.filter(pl.col("ok")).select(
            loc=pl.col("n"),
            ts=ts_s.str.slice(1, n_ts - 9).cast(pl.Int64) * 1_000_000
            + ts_s.str.slice(n_ts - 7, 6).cast(pl.Int64),
            channel=parts.struct.field("field_1"),
            id_s=frame.struct.field("field_0"),
            data=frame.struct.field("field_1").str.decode("hex"),
            dir=parts.struct.field("field_3"),
        )
        fast = fast.with_columns(can_id=pl.col("id_s").str.to_integer(base=16).cast(pl.UInt32))
        ext = pl.col("id_s").str.len_chars() == 8
        # error frames and out-of-range ids leave the fast path
        odd = (ext & (pl.col("can_id") >= 0x20000000)) | (~ext & (pl.col("can_id") > 0x7FF))
        slow_extra = fast.filter(odd).select("loc")
        fast = fast.filter(~odd)
        slow_mask = ~pl.col("ok") | pl.col("n").is_in(slow_extra["loc"].implode())
        slow = _slow_lines(df.filter(slow_mask))
        parsed_slow = []
        for line_no, line in slow:
            try:
                parsed_slow.append((line_no, line, parse_log_line(line)))
            except BadRecord as exc:
                parsed_slow.append((line_no, line, exc))
        if not based:
            firsts = [(ln, r[0]) for ln, _, r in parsed_slow if not isinstance(r, BadRecord)]
            if fast.height:
                firsts.append((fast["loc"][0], fast["ts"][0]))
            if firsts:
                based = True
                first_ts = min(firsts)[1]
                w.set_relative() if timebase.looks_relative(first_ts) else w.set_absolute()
        if fast.height:
            w.append_frames(_to_arrow(fast, w.offset_us))
            src.accepted(fast.height)
        for line_no, line, rec in parsed_slow:
            if isinstance(rec, BadRecord):
                reject(src, line_no, line, rec)
            else:
                add_frame(w, line_no, rec)
                src.accepted()


def _to_arrow(fast: pl.DataFrame, offset_us: int) -> pa.Table:
    ext = pl.col("id_s").str.len_chars() == 8
    out = fast.select(
        pl.col("loc"),
        (pl.col("ts") + offset_us).cast(pl.Datetime("us")).alias("ts"),
        pl.col("channel"),
        pl.col("can_id").alias("arbitration_id"),
        (pl.when(ext).then(EXT).otherwise(0) | pl.when(pl.col("dir") == "T").then(TX).otherwise(0))
        .cast(pl.UInt8)
        .alias("flags"),
        pl.col("data").bin.size().cast(pl.UInt8).alias("dlc"),
        pl.col("data"),
    )
    return out.to_arrow()
