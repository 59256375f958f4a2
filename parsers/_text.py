"""Shared pieces of text-log parsers: lines as Arrow, and timestamp-to-UTC SQL."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from forensics.parsers.base import Source

# An ISO-8601 / RFC 3339 stamp that carries its own offset (Z, +02:00, +0200).
HAS_OFFSET_RE = r"(Z|z|[+-]\d\d:?\d\d)$"


def line_batches(src: Source, chunk_bytes: int = 16 << 20):
    """Yields Arrow tables (line BIGINT, text VARCHAR) of the file, 1-based line numbers.

    Empty lines are dropped (not records). Valid UTF-8 chunks are split by Arrow in C++
    without making Python strings; a chunk with invalid bytes (or a UTF-16 file) takes the
    slower Source.lines() path, which decodes with replacement and notes it. Memory stays
    at about two chunks.
    """
    with src.open() as fh:
        head = fh.read(2)
    if head in (b"\xff\xfe", b"\xfe\xff"):
        yield from _python_batches(src)
        return
    line_no = 1
    pending = b""
    with src.open() as fh:
        while True:
            chunk = fh.read(chunk_bytes)
            data = pending + chunk
            if not data:
                break
            if chunk:
                cut = data.rfind(b"\n")
                if cut < 0:
                    pending = data
                    continue
                pending, data = data[cut + 1 :], data[:cut]
            else:
                pending = b""
            if line_no == 1 and data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
            try:
                text = pa.array([data], pa.large_binary()).cast(pa.large_string())
            except pa.ArrowInvalid:
                lines = _decode_lines(src, data, line_no)
            else:
                lines = pc.list_flatten(pc.split_pattern(text, "\n"))
                if data.find(b"\r") >= 0:
                    lines = pc.utf8_rtrim(lines, "\r")
            n = len(lines)
            table = pa.table(
                {"line": pa.array(range(line_no, line_no + n), pa.int64()), "text": lines}
            )
            line_no += n
            table = table.filter(pc.greater(pc.utf8_length(table["text"]), 0))
            if table.num_rows:
                yield table


def _decode_lines(src: Source, data: bytes, first: int) -> pa.Array:
    """Lines of a chunk that is not valid UTF-8, decoded with replacement and noted."""
    out = []
    bad = []
    for i, raw in enumerate(data.split(b"\n")):
        try:
            out.append(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError:
            out.append(raw.decode("utf-8", errors="replace").rstrip("\r"))
            bad.append(first + i)
    src.notes.append(
        f"{len(bad)} line(s) not UTF-8, read with replacement characters (first at line {bad[0]})"
    )
    return pa.array(out, pa.large_string())


def _python_batches(src: Source):
    for first, parts in src.lines():
        table = pa.table(
            {
                "line": pa.array(range(first, first + len(parts)), pa.int64()),
                "text": pa.array(parts, pa.large_string()),
            }
        )
        table = table.filter(pc.greater(pc.utf8_length(table["text"]), 0))
        if table.num_rows:
            yield table


def utc_sql(expr: str, tz_param: str = "$tz") -> str:
    """SQL turning a timestamp string `expr` into UTC TIMESTAMP (NULL when unreadable).

    A stamp with an offset is exact; a naive one is local time in `tz_param` (an IANA name,
    or NULL meaning the stamp is already UTC). Epoch seconds or milliseconds are accepted.
    The connection's TimeZone must be UTC (the case store pins it).
    """
    e = f"trim({expr})"
    return f"""(CASE
        WHEN {e} IS NULL THEN NULL
        WHEN regexp_matches({e}, '{HAS_OFFSET_RE}')
            THEN TRY_CAST(replace({e}, ',', '.') AS TIMESTAMPTZ)::TIMESTAMP
        WHEN regexp_matches({e}, '^\\d{{9,10}}(\\.\\d+)?$')
            THEN to_timestamp(TRY_CAST({e} AS DOUBLE))::TIMESTAMP
        WHEN regexp_matches({e}, '^\\d{{12,13}}$')
            THEN to_timestamp(TRY_CAST({e} AS DOUBLE) / 1000.0)::TIMESTAMP
        WHEN {tz_param} IS NULL THEN TRY_CAST(replace({e}, ',', '.') AS TIMESTAMP)
        ELSE timezone({tz_param}, TRY_CAST(replace({e}, ',', '.') AS TIMESTAMP))::TIMESTAMP
    END)"""


def parse_ts(text: str | None, tz: str | None):
    """Python twin of utc_sql for small tables: naive UTC datetime, or None if unreadable."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    if text is None or not text.strip():
        return None
    s = text.strip().replace(",", ".")
    try:
        if s.replace(".", "", 1).isdigit():
            v = float(s)
            return datetime.fromtimestamp(v / 1000 if v > 1e11 else v, UTC).replace(tzinfo=None)
        dt = datetime.fromisoformat(s)
    except (ValueError, OverflowError, OSError):
        return None
    if dt.tzinfo is None:
        if not tz:
            return dt
        dt = dt.replace(tzinfo=ZoneInfo(tz))
    return dt.astimezone(UTC).replace(tzinfo=None)
