"""Vectorised ASC path: the native scanner (or polars, with one regex) pulls classic data
frames (`<t> <ch> <id>[x] Rx|Tx d <dlc> <bytes>`) and bare error frames out of each chunk;
every other line (header, trigger blocks, error frames with details, FD, remote, status,
anything odd) goes through `AscState.feed` in line order. Data frames take the time base
that was in force at their line (the last change before it).

Files in `base dec` or with `timestamps relative` (deltas) take the reference path whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from forensics.parsers.base import Source
from forensics.parsers.can import arrowcols, textscan
from forensics.parsers.can.errorclass import ErrorInfo
from forensics.parsers.can.fastpath import text_chunks
from forensics.parsers.can.frames import ERR, EXT, TX

_ASC_PREFIX = (
    r"^\s*([0-9]+)\.([0-9]{1,6})\s+([0-9]+)\s+([0-9A-Fa-f]{1,8})(x?)\s+(Rx|Tx)\s+d\s+([0-8])"
    r"((?:[ \t]+[0-9A-Fa-f]{2}){0,8})"
)
_ASC_FAST = _ASC_PREFIX + r"(?:\s+[^\s0-9A-Fa-f].*)?\s*$"
# The whole pattern without captures decides (a DFA test); the prefix then captures. On a
# line the whole pattern matches, the greedy data group can only end where the prefix's does:
# one pair fewer leaves ' hh...' which neither the trailer nor the end accepts.
_ASC_MATCH = re.sub(r"\((?!\?)", "(?:", _ASC_FAST)
# a bare error frame (no ECC, nothing after): empty error classes, the text 'ErrorFrame'
_ASC_ERR = r"^\s*([0-9]+)\.([0-9]{1,6})\s+([0-9]+)\s+ErrorFrame\s*$"
_BASE = re.compile(rb"^\s*base\s+(hex|dec)(?:\s+timestamps\s+(absolute|relative))?", re.I | re.M)


def _reference_only(src: Source) -> bool:
    with src.open() as fh:
        head = fh.read(8192)
    m = _BASE.search(head)
    return bool(m and (m[1].lower() == b"dec" or (m[2] or b"").lower() == b"relative"))


def parse_asc(src: Source, st) -> None:
    """Feeds an ASC file through the native scanner or polars (data frames) and `st.feed`
    (everything else)."""
    if _reference_only(src):
        for first, lines in src.lines():
            for i, line in enumerate(lines):
                st.feed(first + i, line)
        return
    w = st.w
    carry: int | None = None  # offset in force at the end of the previous chunk
    chunks = _native_chunks(src) if textscan.AVAILABLE else _polars_chunks(src)
    for chunk in chunks:
        first, loc = chunk.first, chunk.loc
        changes: list[tuple[int, int]] = []
        if carry is not None:
            changes.append((first - 1, carry))
        first_fast = int(loc[0]) if len(loc) else None
        for line_no, line in chunk.slow:
            if first_fast is not None and line_no > first_fast and not st.anchored:
                st._anchor()  # a data frame came first: the reference anchors there
                changes.append((first_fast - 1, w.offset_us))
            before = (st.anchored, w.offset_us)
            st.feed(line_no, line)
            if st.anchored and (st.anchored, w.offset_us) != before:
                changes.append((line_no, w.offset_us))
        if len(loc):
            if not st.anchored:
                st._anchor()
                changes.append((first - 1, w.offset_us))
            if not changes or changes[0][0] > first_fast:
                changes.insert(0, (first - 1, w.offset_us if carry is None else carry))
            # each frame takes the time base in force at its line: the last change before it
            if len(changes) == 1:  # the usual chunk: one time base throughout
                ts = chunk.t + changes[0][1]
            else:
                at = np.array([c[0] for c in changes], np.int64)
                off = np.array([c[1] for c in changes], np.int64)
                order = np.argsort(at, kind="stable")
                last = np.searchsorted(at[order], loc, side="right") - 1
                ts = chunk.t + off[order][last]
            w.append_frames(chunk.frames(ts))
            errors = chunk.errors(ts, w.loc_unit)
            if errors is not None:
                w.append_errors(errors)
            src.accepted(len(loc))
        if st.anchored:
            carry = w.offset_us


@dataclass
class _Chunk:
    """Scanned frames of one chunk (loc sorted; t: microseconds on the log's own clock),
    built into rows once their time base is known, and the other non-blank lines."""

    first: int
    loc: np.ndarray
    t: np.ndarray
    frames: Callable[[np.ndarray], pa.Table]  # ts (UTC us) -> frames
    errors: Callable[[np.ndarray, str], pa.Table | None]  # ts, loc unit -> can_errors rows
    slow: list[tuple[int, str]]


def _native_chunks(src: Source) -> Iterator[_Chunk]:
    for sc in textscan.scanned_chunks(src, "asc"):
        err = np.flatnonzero(sc.flags & ERR)

        def errors(ts: np.ndarray, unit: str, sc=sc, err=err) -> pa.Table | None:
            if not len(err):
                return None
            # bare `ErrorFrame` lines, as AscState._classic writes them: nothing decoded
            which = np.zeros(len(err), dtype=np.int64)
            return arrowcols.error_table(sc.loc[err], ts[err], sc.channels(err),
                                         [ErrorInfo()], which, "error_frame", "ErrorFrame")  # fmt: skip

        yield _Chunk(
            first=int(sc.loc[0]) if len(sc.loc) else 0,
            loc=sc.loc,
            t=sc.ts,
            frames=lambda ts, sc=sc: textscan.frame_table(sc, ts),
            errors=errors,
            slow=sc.slow,
        )


def _polars_chunks(src: Source):
    for first, lines in text_chunks(src):
        df = pl.DataFrame({"line": lines}).with_row_index("n", offset=first)
        df = df.with_columns(
            pl.col("n").cast(pl.Int64),
            ok=pl.col("line").str.contains(_ASC_MATCH),
            e=pl.col("line").str.contains(_ASC_ERR),
        )
        m = pl.col("m").struct
        fast = (
            df.filter(pl.col("ok"))
            .select("n", m=pl.col("line").str.extract_groups(_ASC_PREFIX))
            .select(
                loc=pl.col("n"),
                t=m.field("1").cast(pl.Int64) * 1_000_000
                + m.field("2").str.pad_end(6, "0").cast(pl.Int64),
                channel=m.field("3"),
                can_id=m.field("4").str.to_integer(base=16),
                flags=(
                    pl.when(m.field("5") == "x").then(EXT).otherwise(0)
                    | pl.when(m.field("6") == "Tx").then(TX).otherwise(0)
                ).cast(pl.UInt8),
                dlc=m.field("7").cast(pl.UInt8),
                data=unspace(m.field("8")).str.decode("hex"),
            )
        )
        ext = pl.col("flags") & EXT != 0
        ok = (pl.col("data").bin.size() == pl.col("dlc")) & (
            pl.col("can_id") <= pl.when(ext).then(0x1FFFFFFF).otherwise(0x7FF)
        )
        bad_fast = fast.filter(~ok)["loc"]
        e = pl.col("e").struct
        errs = (
            df.filter(pl.col("e"))
            .select(loc=pl.col("n"), e=pl.col("line").str.extract_groups(_ASC_ERR))
            .select(
                loc=pl.col("loc"),
                t=e.field("1").cast(pl.Int64) * 1_000_000
                + e.field("2").str.pad_end(6, "0").cast(pl.Int64),
                channel=e.field("3"),
                can_id=pl.lit(0, pl.Int64),
                flags=pl.lit(ERR, pl.UInt8),
                dlc=pl.lit(0, pl.UInt8),
                data=pl.lit(b"", pl.Binary),
            )
        )
        fast = pl.concat([fast.filter(ok), errs]).sort("loc")
        slow = df.filter(~pl.col("ok") & ~pl.col("e"))
        if bad_fast.len():
            slow = pl.concat([slow, df.filter(pl.col("n").is_in(bad_fast.implode()))]).sort("n")
        slow = slow.filter(pl.col("line").str.strip_chars() != "")

        def with_ts(ts: np.ndarray, fast=fast) -> pl.DataFrame:
            return fast.with_columns(ts=pl.Series(ts).cast(pl.Datetime("us")))

        yield _Chunk(
            first=first,
            loc=fast["loc"].to_numpy(),
            t=fast["t"].to_numpy(),
            frames=lambda ts: _to_arrow(with_ts(ts)),
            errors=lambda ts, unit: _error_rows(
                with_ts(ts).filter(pl.col("flags") & ERR != 0), unit
            ),
            slow=list(zip(slow["n"].to_list(), slow["line"].to_list(), strict=True)),
        )


def unspace(expr: pl.Expr) -> pl.Expr:
    """Blanks and tabs out (the data groups allow nothing else): literal, not regex."""
    return expr.str.replace_all(" ", "", literal=True).str.replace_all("\t", "", literal=True)


def _to_arrow(fast: pl.DataFrame):
    return fast.select(
        pl.col("loc"),
        pl.col("ts"),
        pl.col("channel"),
        pl.col("can_id").cast(pl.UInt32).alias("arbitration_id"),
        pl.col("flags"),
        pl.col("dlc"),
        pl.col("data"),
    ).to_arrow()


_NO_LIST = pl.lit([], pl.List(pl.String))


def _error_rows(errs: pl.DataFrame, unit: str):
    """can_errors rows of bare `ErrorFrame` lines, as `AscState._classic` writes them."""
    if not errs.height:
        return None
    return errs.select(
        pl.col("loc"),
        (pl.lit(unit + " ") + pl.col("loc").cast(pl.String)).alias("locator"),
        pl.col("ts").cast(pl.Datetime("us")),
        pl.col("channel"),
        pl.lit("error_frame").alias("source"),
        _NO_LIST.alias("classes"),
        _NO_LIST.alias("controller"),
        _NO_LIST.alias("protocol"),
        pl.lit(None, pl.String).alias("location"),
        pl.lit(None, pl.String).alias("transceiver"),
        pl.lit(None, pl.Int16).alias("tx_errors"),
        pl.lit(None, pl.Int16).alias("rx_errors"),
        pl.lit(None, pl.String).alias("state"),
        pl.lit("ErrorFrame").alias("text"),
    ).to_arrow()
