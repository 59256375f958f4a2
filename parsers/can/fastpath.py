"""Vectorised text paths: the native scanner (textscan, parsers/can/_textscan.c) or, where it
is not built, polars reads a chunk of candump, ASC or TRC text at once and pulls the common
lines (classic data frames; candump SocketCAN and bare ASC error frames) out in one pass;
every other line (FD, remote, status, headers, anything odd) goes through the reference
line parser, so all paths give the same rows (tests compare them frame by frame). Error
classes are decoded once per distinct (class bits, data) and gathered back.

Chunks are cut on line ends (`CHUNK_BYTES`), two at a time in memory whatever the file size
(the native paths do not trim the heap per chunk: see textscan.scanned_chunks); frames reach
DuckDB as whole row groups from a writer thread (frames.WRITE_ROWS, CanWriter).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from forensics.parsers.base import Source, read_ahead
from forensics.parsers.can import arrowcols, textscan, timebase
from forensics.parsers.can.errorclass import (
    CAN_ERR_FLAG,
    CAN_ERR_MASK,
    ErrorInfo,
    decode_linux,
)
from forensics.parsers.can.frames import ERR, EXT, TX, CanWriter

CHUNK_BYTES = 16 << 20

# can-utils' canonical form of a classic data frame (uppercase hex, 6-digit microseconds);
# python-can appends ' R' / ' T'.
_CANDUMP_FAST = (  # no capture groups: used as a match test
    r"^\([0-9]+\.[0-9]{6}\) [^ ]+ (?:[0-9A-F]{3}|[0-9A-F]{8})#(?:[0-9A-F]{2}){0,8}(?: [RT])?$"
)


def text_chunks(src: Source) -> Iterator[tuple[int, pl.Series]]:
    """Yields (first_line_no, polars Series of lines) over the file, cut on newlines; the
    next chunk is read and split while the caller parses this one."""
    pieces = src.line_chunks(CHUNK_BYTES)
    return read_ahead(pieces, lambda piece: (piece[0], split_lines(piece[1])))


def split_lines(data: bytes) -> pl.Series:
    """The lines of `data` (split on LF, a CR before it dropped, invalid UTF-8 replaced).

    polars' CSV reader with a separator and no quote char splits lines several times faster
    than str.split; it drops a final empty line and breaks on the unit separator, so any
    count that does not match the newlines takes the plain split.
    """
    n = data.count(b"\n") + 1
    # CR handling matches (CR before LF dropped, any other CR kept); doubled CRs take the
    # plain split all the same, as a guard
    if b"\x1f" not in data and b"\r\r" not in data and not data.endswith(b"\n"):
        try:
            lines = pl.read_csv(
                io.BytesIO(data), has_header=False, separator="\x1f", quote_char=None,
                new_columns=["line"], schema={"line": pl.String}, encoding="utf8-lossy",
                raise_if_empty=False,
            )["line"]  # fmt: skip
        except pl.exceptions.PolarsError:
            lines = None
        if lines is not None and lines.len() == n:
            return lines.fill_null("")
    lines = pl.Series("line", [data.decode("utf-8", errors="replace")]).str.split("\n")
    return lines.explode().str.strip_suffix("\r")


@dataclass
class _Chunk:
    """What a fast path made of one chunk: its scanned frames (built once the time offset is
    known) and the other non-blank lines, for the reference parser."""

    n: int
    first: tuple[int, int] | None  # (line, stamp) of the first scanned frame
    frames: Callable[[int], pa.Table]  # offset_us -> frames
    errors: Callable[[int, str], pa.Table | None]  # offset_us, loc unit -> can_errors rows
    slow: list[tuple[int, str]]


def parse_candump(src: Source, w: CanWriter) -> None:
    """candump -L through the native scanner (or polars where it is not built); odd lines
    through `candump.parse_log_line`."""
    from forensics.parsers.can.candump import BadRecord, add_frame, parse_log_line, reject

    based = False
    chunks = _native_candump(src) if textscan.AVAILABLE else _polars_candump(src)
    for chunk in chunks:
        parsed_slow = []
        for line_no, line in chunk.slow:
            try:
                parsed_slow.append((line_no, line, parse_log_line(line)))
            except BadRecord as exc:
                parsed_slow.append((line_no, line, exc))
        if not based:
            firsts = [(ln, r[0]) for ln, _, r in parsed_slow if not isinstance(r, BadRecord)]
            if chunk.first is not None:
                firsts.append(chunk.first)
            if firsts:
                based = True
                first_ts = min(firsts)[1]
                w.set_relative() if timebase.looks_relative(first_ts) else w.set_absolute()
        if chunk.n:
            w.append_frames(chunk.frames(w.offset_us))
            errors = chunk.errors(w.offset_us, w.loc_unit)
            if errors is not None:
                w.append_errors(errors)
            src.accepted(chunk.n)
        del chunk
        for line_no, line, rec in parsed_slow:
            if isinstance(rec, BadRecord):
                reject(src, line_no, line, rec)
            else:
                add_frame(w, line_no, rec)
                src.accepted()


def _native_candump(src: Source) -> Iterator[_Chunk]:
    decoded: dict[tuple[int, bytes], ErrorInfo] = {}  # error patterns seen in this file
    for sc in textscan.scanned_chunks(src, "candump"):
        n = len(sc.loc)
        err = np.flatnonzero(sc.flags & ERR)

        def errors(offset_us: int, unit: str, sc=sc, err=err) -> pa.Table | None:
            if not len(err):
                return None
            return _native_error_rows(sc, err, offset_us, decoded)

        yield _Chunk(
            n=n,
            first=(int(sc.loc[0]), int(sc.ts[0])) if n else None,
            frames=lambda offset_us, sc=sc: textscan.frame_table(sc, sc.ts + offset_us),
            errors=errors,
            slow=sc.slow,
        )


def _native_error_rows(sc, err: np.ndarray, offset_us: int, decoded: dict) -> pa.Table:
    """can_errors rows of the scanned error frames `err`: each distinct (class bits, data)
    decoded once by `decode_linux` (kept in `decoded` across chunks), then gathered."""
    key = np.empty(len(err), dtype=[("cid", "u4"), ("dlc", "u1"), ("payload", "u8")])
    key["cid"] = sc.can_id[err] & CAN_ERR_MASK
    key["dlc"], key["payload"] = sc.dlc[err], sc.payload[err]
    uniq, first, which = np.unique(key, return_index=True, return_inverse=True)
    infos = []
    for cid, data in zip(uniq["cid"].tolist(), sc.payload_bytes(err[first]), strict=True):
        info = decoded.get((cid, data))
        if info is None:
            info = decoded[(cid, data)] = decode_linux(cid, data)
        infos.append(info)
    return arrowcols.error_table(
        sc.loc[err], sc.ts[err] + offset_us, sc.channels(err), infos, which, "error_frame", None
    )


def _polars_candump(src: Source) -> Iterator[_Chunk]:
    for first, lines in text_chunks(src):
        df = pl.DataFrame({"line": lines}).with_row_index("n", offset=first)
        del lines
        # a match test without captures runs as a DFA; fields are then cut by position
        ok = df["line"].str.contains(_CANDUMP_FAST)
        parts = pl.col("line").str.split_exact(" ", 3)
        frame = parts.struct.field("field_2").str.split_exact("#", 1)
        fast = (
            df.filter(ok)
            .select(
                "line",
                loc=pl.col("n").cast(pl.Int64),
                # '(sec.uuuuuu)' with exactly 6 digits: without '(.)' it is microseconds
                ts=parts.struct.field("field_0")
                .str.strip_chars("()")
                .str.replace(".", "", literal=True)
                .cast(pl.Int64, strict=False),
                channel=parts.struct.field("field_1"),
                id_s=frame.struct.field("field_0"),
                data=frame.struct.field("field_1").str.decode("hex"),
                tx=parts.struct.field("field_3") == "T",
            )
            .with_columns(can_id=pl.col("id_s").str.to_integer(base=16).cast(pl.UInt32))
        )
        # out-of-range ids (and absurd stamps) leave the fast path; error frames stay
        odd = (
            pl.col("ts").is_null()
            | (_EXT & ~_IS_ERR & (pl.col("can_id") > 0x1FFFFFFF))
            | (~_EXT & (pl.col("can_id") > 0x7FF))
        )
        rest = df.filter(~ok)
        del df, ok
        slow_df = pl.concat(
            [
                rest.filter(pl.col("line").str.strip_chars() != "").select(
                    loc=pl.col("n").cast(pl.Int64), line="line"
                ),
                fast.filter(odd).select("loc", "line"),
            ]
        ).sort("loc")
        del rest
        fast = fast.filter(~odd).drop("line")
        yield _Chunk(
            n=fast.height,
            first=(fast["loc"][0], fast["ts"][0]) if fast.height else None,
            frames=lambda offset_us, fast=fast: _to_arrow(fast, offset_us),
            errors=lambda offset_us, unit, fast=fast: _error_rows(
                fast.filter(_IS_ERR), offset_us, unit
            ),
            slow=list(slow_df.iter_rows()),
        )


# an 8-digit id with CAN_ERR_FLAG is an error frame: class bits in the id, details in data
_EXT = pl.col("id_s").str.len_bytes() == 8
_IS_ERR = _EXT & ((pl.col("can_id") & CAN_ERR_FLAG) != 0)


def _to_arrow(fast: pl.DataFrame, offset_us: int) -> pa.Table:
    out = fast.select(
        pl.col("loc"),
        (pl.col("ts") + offset_us).cast(pl.Datetime("us")).alias("ts"),
        pl.col("channel"),
        pl.when(_IS_ERR)
        .then(pl.col("can_id") & CAN_ERR_MASK)
        .otherwise(pl.col("can_id"))
        .alias("arbitration_id"),
        (
            pl.when(_IS_ERR).then(ERR).when(_EXT).then(EXT).otherwise(0)
            | pl.when(pl.col("tx")).then(TX).otherwise(0)
        )
        .cast(pl.UInt8)
        .alias("flags"),
        pl.col("data").bin.size().cast(pl.UInt8).alias("dlc"),
        pl.col("data"),
    )
    return out.to_arrow()


_LIST = pl.List(pl.String)
_INFO_SCHEMA = {
    "cid": pl.UInt32, "data": pl.Binary, "classes": _LIST, "controller": _LIST,
    "protocol": _LIST, "location": pl.String, "transceiver": pl.String,
    "tx_errors": pl.Int16, "rx_errors": pl.Int16, "state": pl.String,
}  # fmt: skip


def _error_rows(errs: pl.DataFrame, offset_us: int, unit: str) -> pa.Table | None:
    """can_errors rows of the error frames: each distinct (class bits, data) decoded once by
    `decode_linux`, then joined back (error frames repeat the same few patterns)."""
    if not errs.height:
        return None
    errs = errs.select("loc", "ts", "channel", pl.col("can_id") & CAN_ERR_MASK, "data").rename(
        {"can_id": "cid"}
    )
    keys = errs.select("cid", "data").unique()
    rows = []
    for cid, data in keys.iter_rows():
        i = decode_linux(cid, data)
        rows.append((cid, data, i.classes, i.controller, i.protocol, i.location, i.transceiver,
                     i.tx_errors, i.rx_errors, i.state))  # fmt: skip
    info = pl.DataFrame(rows, schema=_INFO_SCHEMA, orient="row")
    out = errs.join(info, on=["cid", "data"], how="left").select(
        pl.col("loc"),
        (pl.lit(unit + " ") + pl.col("loc").cast(pl.String)).alias("locator"),
        (pl.col("ts") + offset_us).cast(pl.Datetime("us")).alias("ts"),
        pl.col("channel"),
        pl.lit("error_frame").alias("source"),
        *[pl.col(c) for c in list(_INFO_SCHEMA)[2:]],
        pl.lit(None, pl.String).alias("text"),
    )
    return out.to_arrow()
