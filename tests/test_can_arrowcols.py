"""arrowcols builds Arrow columns by buffer arithmetic: they must read back as the Python
values they stand for, whatever the names (empty, unequal lengths, non-ASCII)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from forensics.parsers.can import arrowcols
from forensics.parsers.can.errorclass import ErrorInfo


@settings(deadline=None)  # timing is not what this checks; a loaded machine is slow
@given(
    names=st.lists(st.text(max_size=12), min_size=1, max_size=6),
    picks=st.lists(st.integers(0, 5), max_size=60),
)
def test_strings_by_index(names, picks):
    idx = np.array([p % len(names) for p in picks], dtype=np.uint8)
    col = arrowcols.strings(names, idx)
    col.validate(full=True)
    assert col.to_pylist() == [names[i] for i in idx]


def test_constants():
    assert arrowcols.constant("can0", 3).to_pylist() == ["can0"] * 3
    assert arrowcols.constant(None, 2, pa.int16()).to_pylist() == [None, None]


def test_error_table_gathers_each_decoded_record():
    infos = [ErrorInfo(), ErrorInfo(["bus_off"], state="bus_off"),
             ErrorInfo(["controller"], ["rx_warning"], tx_errors=3, rx_errors=97)]  # fmt: skip
    which = np.array([2, 0, 1, 2])
    t = arrowcols.error_table(np.array([10, 11, 12, 13]), np.array([1, 2, 3, 4]) * 1_000_000,
                              arrowcols.constant("can1", 4), infos, which, "error_frame", None)  # fmt: skip
    t.validate(full=True)
    assert t.schema == arrowcols.ERRORS_SCHEMA
    got = t.to_pylist()
    assert [r["loc"] for r in got] == [10, 11, 12, 13]
    assert [r["classes"] for r in got] == [["controller"], [], ["bus_off"], ["controller"]]
    assert [r["controller"] for r in got] == [["rx_warning"], [], [], ["rx_warning"]]
    assert [r["state"] for r in got] == [None, None, "bus_off", None]
    assert [r["rx_errors"] for r in got] == [97, None, None, 97]
    assert {r["source"] for r in got} == {"error_frame"} and {r["text"] for r in got} == {None}
    assert got[3]["ts"] == datetime(1970, 1, 1, 0, 0, 4) and got[0]["channel"] == "can1"
