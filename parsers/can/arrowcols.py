"""Arrow columns built straight from numpy: channel names by index, constants, and the
`can_errors` rows of scanned error frames.

The native scanner hands over columns; going through polars DataFrames to make the few
remaining string and list columns cost a fixed ~10-20 ms per chunk (about 1 s over a 10M
frame ASC log), more than the scan itself. Here every column is one buffer operation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

from forensics.parsers.can.errorclass import ErrorInfo

ERRORS_SCHEMA = pa.schema(
    [
        ("loc", pa.int64()),
        ("ts", pa.timestamp("us")),
        ("channel", pa.string()),
        ("source", pa.string()),
        ("classes", pa.list_(pa.string())),
        ("controller", pa.list_(pa.string())),
        ("protocol", pa.list_(pa.string())),
        ("location", pa.string()),
        ("transceiver", pa.string()),
        ("tx_errors", pa.int16()),
        ("rx_errors", pa.int16()),
        ("state", pa.string()),
        ("text", pa.string()),
    ]
)  # can_errors without file_id and locator (CanWriter makes the locator from loc)


def numbers(values: np.ndarray, dtype, typ: pa.DataType) -> pa.Array:
    """A fixed-width Arrow array over the values' buffer (no nulls)."""
    a = np.ascontiguousarray(values, dtype=dtype)
    return pa.Array.from_buffers(typ, len(a), [None, pa.py_buffer(a)])


def strings(names: list[str], index: np.ndarray) -> pa.Array:
    """Row i is names[index[i]]. One name (a log of one channel, a constant) is laid out
    directly, ~10x faster than Arrow's dictionary cast, which does the general case."""
    n = len(index)
    raw = names[0].encode() if len(names) == 1 else b""
    if len(names) == 1 and n * len(raw) < 2**31:  # int32 offsets
        offsets = np.arange(n + 1, dtype=np.int32)
        offsets *= len(raw)
        buffers = [None, pa.py_buffer(offsets), pa.py_buffer(raw * n)]
        return pa.Array.from_buffers(pa.string(), n, buffers)
    idx = np.ascontiguousarray(index, dtype=np.int32)
    codes = pa.Array.from_buffers(pa.int32(), n, [None, pa.py_buffer(idx)])
    return pa.DictionaryArray.from_arrays(codes, pa.array(names, pa.string())).cast(pa.string())


def constant(value: str | None, n: int, typ: pa.DataType = pa.string()) -> pa.Array:
    """n copies of one value (None: n nulls of `typ`)."""
    if value is None:
        return pa.nulls(n, typ)
    return strings([value], np.zeros(n, dtype=np.intp))


def error_table(
    loc: np.ndarray,
    ts_us: np.ndarray,
    channel: pa.Array,
    infos: list[ErrorInfo],
    which: np.ndarray,
    source: str,
    text: str | None,
) -> pa.Table:
    """can_errors rows (ERRORS_SCHEMA): row i has decoded record infos[which[i]] (error
    frames repeat a few patterns, so each is decoded once and gathered)."""
    n = len(loc)
    take = numbers(which, np.int64, pa.int64())  # pa.array(ndarray) would import numpy.ma

    def col(get: Callable[[ErrorInfo], object], typ: pa.DataType) -> pa.Array:
        return pa.array([get(i) for i in infos], typ).take(take)

    lists = pa.list_(pa.string())
    return pa.Table.from_arrays(
        [
            numbers(loc, np.int64, pa.int64()),
            numbers(ts_us, np.int64, pa.timestamp("us")),
            channel,
            constant(source, n),
            col(lambda i: i.classes, lists),
            col(lambda i: i.controller, lists),
            col(lambda i: i.protocol, lists),
            col(lambda i: i.location, pa.string()),
            col(lambda i: i.transceiver, pa.string()),
            col(lambda i: i.tx_errors, pa.int16()),
            col(lambda i: i.rx_errors, pa.int16()),
            col(lambda i: i.state, pa.string()),
            constant(text, n),
        ],
        schema=ERRORS_SCHEMA,
    )
