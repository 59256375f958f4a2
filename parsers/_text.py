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
    without making Python strings; a chunk with invalid bytes is decoded line by line with
    replacement (and noted) by Source.decode_lines.
    """
    for first, data in src.line_chunks(chunk_bytes):
        try:
            text = pa.array([data], pa.large_binary()).cast(pa.large_string())
        except pa.ArrowInvalid:
            lines = pa.array(src.decode_lines(data, first), pa.large_string())
        else:
            lines = pc.list_flatten(pc.split_pattern(text, "\n"))
            if data.find(b"\r") >= 0:
                lines = pc.utf8_rtrim(lines, "\r")
        n = len(lines)
        table = pa.table({"line": pa.array(range(first, first + n), pa.int64()), "text": lines})
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
