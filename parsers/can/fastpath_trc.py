"""Vectorised TRC path (versions 2.x): the native scanner (or polars, with one regex) pulls
classic data frames (`DT`, hex bytes, length 0-8) out of each chunk in the layout of the
file's `$COLUMNS`; every other line (headers, comments, error/status/counter lines, FD,
remote, anything odd) goes through `TrcState.feed` in line order, so all paths give the
same rows.

A chunk holding `;$` header lines feeds everything up to its last header through the
reference first: data frames always see the header state in force at their line.
Version 1.x files take the reference path whole (they are small: PCAN-View 1.x era).
"""

from __future__ import annotations

import polars as pl

from forensics.parsers.base import Source, read_ahead
from forensics.parsers.can import textscan
from forensics.parsers.can.fastpath import text_chunks
from forensics.parsers.can.fastpath_asc import unspace
from forensics.parsers.can.frames import EXT, TX

_SEP = r"[ \t]+"
# column letter -> regex piece (named groups the frame is built from); R and N are not read
_PIECES = {
    "N": r"[0-9]+",
    "O": r"(?P<ms>[0-9]+)(?:\.(?P<frac>[0-9]*))?",
    "T": r"DT",
    "B": r"(?P<bus>[0-9]+)",
    "I": r"(?P<id>[0-9A-Fa-f]{1,8})",
    "d": r"(?P<dir>Rx|Tx)",
    "R": r"-",
    "L": r"(?P<dlc>[0-9]{1,2})",
    "l": r"(?P<len>[0-9]{1,2})",
}
_DEFAULT_V2 = ["N", "O", "T", "I", "d", "l", "D"]


def frame_regex(version: str, columns: list[str]) -> str | None:
    """The data-frame regex for this header state, or None when only the reference can read
    the layout (version 1.x, unknown or repeated columns, data not last)."""
    cols = columns or _DEFAULT_V2
    if not version.startswith("2") or len(set(cols)) != len(cols) or cols[-1:] != ["D"]:
        return None
    if not {"O", "T", "I", "d"} <= set(cols) or ("L" in cols) == ("l" in cols):
        return None
    if any(c not in _PIECES for c in cols[:-1]):
        return None
    body = _SEP.join(_PIECES[c] for c in cols[:-1])
    # no trailing blanks in the pattern (lines are right-stripped first): a one-pass regex,
    # which the regex crate captures with its fast one-pass DFA
    return rf"^[ \t]*{body}(?P<data>(?:{_SEP}[0-9A-Fa-f]{{2}})*)$"


def parse_trc(src: Source, st) -> None:
    """Feeds a TRC file through the native scanner or polars (data frames) and `st.feed`
    (everything else)."""
    if textscan.AVAILABLE:
        _parse_native(src, st)
    else:
        _parse_polars(src, st)


def _parse_native(src: Source, st) -> None:
    """Header lines (`;$...`) set the layout for the lines after them, so a chunk is
    scanned ahead, in the read-ahead thread, with the layout known then; the main thread
    uses that scan only if the layout is still the same when it gets there (headers come
    first: in practice only the first chunk is scanned here)."""
    w = st.w

    def layout() -> tuple[str, tuple[str, ...]]:
        return st.version, tuple(st.columns or _DEFAULT_V2)

    def prepare(piece: tuple[int, bytes]):
        first, data = piece
        head = data.rfind(b";$")
        version, cols = layout()
        if head >= 0 or frame_regex(version, list(cols)) is None:
            return first, data, head, None
        return (
            first,
            data,
            head,
            ((version, cols), textscan.scan(first, data, "trc", "".join(cols))),
        )

    chunks = read_ahead(src.line_chunks(textscan.CHUNK_BYTES), prepare, trim=False)  # as textscan
    for first, data, head, ahead in chunks:
        if head >= 0:  # header lines: the state they set holds for the lines after them
            cut = data.find(b"\n", head)
            cut = len(data) if cut < 0 else cut
            lines = src.decode_lines(data[:cut], first)
            for i, line in enumerate(lines):
                st.feed(first + i, line)
            first, data = first + len(lines), data[cut + 1 :]
            if not data:
                continue
        version, cols = layout()
        if frame_regex(version, list(cols)) is None:
            for i, line in enumerate(src.decode_lines(data, first)):
                st.feed(first + i, line)
            continue
        if ahead is not None and ahead[0] == (version, cols):
            sc = ahead[1]
        else:
            sc = textscan.scan(first, data, "trc", "".join(cols))
        del data, ahead
        for line_no, line in sc.slow:
            st.feed(line_no, line)
        if len(sc.loc):
            if not st.based:
                st._base()
            w.append_frames(textscan.frame_table(sc, sc.ts + w.offset_us))
            src.accepted(len(sc.loc))
        del sc


def _parse_polars(src: Source, st) -> None:
    w = st.w
    for first, lines in text_chunks(src):
        df = pl.DataFrame({"line": lines}).with_row_index("n", offset=first)
        df = df.with_columns(pl.col("n").cast(pl.Int64))
        heads = df.filter(pl.col("line").str.contains(";$", literal=True))["n"]
        if heads.len():
            last = heads.max()
            for line_no, line in df.filter(pl.col("n") <= last).iter_rows():
                st.feed(line_no, line)
            df = df.filter(pl.col("n") > last)
        rx = frame_regex(st.version, st.columns)
        if rx is None:
            for line_no, line in df.iter_rows():
                st.feed(line_no, line)
            continue
        df = df.with_columns(m=pl.col("line").str.strip_chars_end(" \t").str.extract_groups(rx))
        m = pl.col("m").struct
        length = (
            m.field("dlc").cast(pl.Int64).clip(upper_bound=8)
            if "L" in (st.columns or _DEFAULT_V2)
            else m.field("len").cast(pl.Int64)
        )
        fast = (
            df.filter(m.field("id").is_not_null())
            .select(
                loc=pl.col("n"),
                us=m.field("ms").cast(pl.Int64) * 1000
                + (m.field("frac").fill_null("") + "000").str.slice(0, 3).cast(pl.Int64),
                channel=m.field("bus").fill_null("1") if "B" in (st.columns or ()) else pl.lit("1"),
                id_s=m.field("id"),
                tx=m.field("dir") == "Tx",
                dlc=length,
                data=unspace(m.field("data")).str.decode("hex"),
            )
            .with_columns(can_id=pl.col("id_s").str.to_integer(base=16))
        )
        ext = pl.col("id_s").str.len_bytes() > 4
        ok = (
            (pl.col("dlc") <= 8)
            & (pl.col("data").bin.size() == pl.col("dlc"))
            & (pl.col("can_id") <= pl.when(ext).then(0x1FFFFFFF).otherwise(0x7FF))
        )
        bad = fast.filter(~ok)["loc"]
        fast = fast.filter(ok)
        slow = df.filter(m.field("id").is_null())
        if bad.len():
            slow = pl.concat([slow, df.filter(pl.col("n").is_in(bad.implode()))]).sort("n")
        for line_no, line in zip(slow["n"].to_list(), slow["line"].to_list(), strict=True):
            st.feed(line_no, line)
        if fast.height:
            if not st.based:
                st._base()
            w.append_frames(_to_arrow(fast, w.offset_us))
            src.accepted(fast.height)


def _to_arrow(fast: pl.DataFrame, offset_us: int):
    ext = pl.col("id_s").str.len_bytes() > 4
    return fast.select(
        pl.col("loc"),
        (pl.col("us") + offset_us).cast(pl.Datetime("us")).alias("ts"),
        pl.col("channel"),
        pl.col("can_id").cast(pl.UInt32).alias("arbitration_id"),
        (pl.when(ext).then(EXT).otherwise(0) | pl.when(pl.col("tx")).then(TX).otherwise(0))
        .cast(pl.UInt8)
        .alias("flags"),
        pl.col("dlc").cast(pl.UInt8),
        pl.col("data"),
    ).to_arrow()
