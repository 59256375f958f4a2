"""Shared pieces of text-log parsers: lines as Arrow, and timestamp-to-UTC SQL."""

from __future__ import annotations

import pyarrow as pa

from forensics.parsers.base import Source

# An ISO-8601 / RFC 3339 stamp that carries its own offset (Z, +02:00, +0200).
HAS_OFFSET_RE = r"(Z|z|[+-]\d\d:?\d\d)$"


def line_batches(src: Source, skip_blank: bool = True):
    """Yields Arrow tables (line BIGINT, text VARCHAR) of the file, 1-based line numbers.

    Blank lines are dropped (not records). Chunks are ~16 MiB of text, so memory stays flat.
    """
    for first, parts in src.lines():
        numbers = pa.array(range(first, first + len(parts)), pa.int64())
        table = pa.table({"line": numbers, "text": pa.array(parts, pa.string())})
        if skip_blank:
            import pyarrow.compute as pc

            keep = pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(table["text"])), 0)
            table = table.filter(keep)
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
        WHEN regexp_matches({e}, '^\\d{{9,10}}(\\.\\d+)?$')
            THEN to_timestamp(TRY_CAST({e} AS DOUBLE))::TIMESTAMP
        WHEN regexp_matches({e}, '^\\d{{12,13}}$')
            THEN to_timestamp(TRY_CAST({e} AS DOUBLE) / 1000.0)::TIMESTAMP
        WHEN regexp_matches({e}, '{HAS_OFFSET_RE}')
            THEN TRY_CAST(replace({e}, ',', '.') AS TIMESTAMPTZ)::TIMESTAMP
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
