"""can_frame_store keeps payloads as integers; the can_frames view must give back exactly the
bytes a parser handed over, whatever their length, dlc and flags (real DuckDB, the case DDL)."""

from __future__ import annotations

import duckdb
import polars as pl
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from forensics.parsers.can.frames import FD, FRAME_SCHEMA, RTR, store_layout
from forensics.parsers.can.schema import TABLES

# (flags, dlc, data): dlc normally says the length; remote frames carry a requested length
# and no bytes; FD frames go to 64 bytes; logs can disagree with themselves
frame = st.one_of(
    st.binary(max_size=8).map(lambda d: (0, len(d), d)),
    st.tuples(st.integers(0, 15)).map(lambda t: (RTR, t[0], b"")),
    st.binary(min_size=9, max_size=64).map(lambda d: (FD, len(d), d)),
    st.tuples(st.integers(0, 3), st.integers(0, 255), st.binary(max_size=12)),
)


def _case() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(TABLES["can_frame_store"])
    con.execute(TABLES["can_frames"])
    return con


def _table(frames: list[tuple[int, int, bytes]]) -> pa.Table:
    n = len(frames)
    cols = {
        "loc": pl.Series(range(n), dtype=pl.Int64),
        "ts": pl.Series(range(n), dtype=pl.Int64).cast(pl.Datetime("us")),
        "channel": pl.Series(["can0"] * n, dtype=pl.String),
        "arbitration_id": pl.Series([0x123] * n, dtype=pl.UInt32),
        "flags": pl.Series([f for f, _, _ in frames], dtype=pl.UInt8),
        "dlc": pl.Series([d for _, d, _ in frames], dtype=pl.UInt8),
        "data": pl.Series([b for _, _, b in frames], dtype=pl.Binary),
    }
    return pl.DataFrame(cols).to_arrow().cast(FRAME_SCHEMA)


@settings(max_examples=200, deadline=None)
@given(st.lists(frame, max_size=40))
def test_view_gives_back_the_bytes(frames):
    con = _case()
    tbl = store_layout(_table(frames))
    con.register("t", tbl)
    con.execute("INSERT INTO can_frame_store BY NAME SELECT *, 1 AS file_id FROM t")
    got = con.execute("SELECT flags, dlc, data FROM can_frames ORDER BY loc").fetchall()
    assert got == [(f, d, b) for f, d, b in frames]


def test_classic_payloads_are_integers_and_the_rest_blobs():
    frames = [
        (0, 8, bytes.fromhex("0102030405060708")),
        (0, 2, b"\x00\xff"),
        (0, 0, b""),
        (RTR, 8, b""),
        (FD, 12, bytes(range(12))),
        (0, 8, b"\x01\x02\x03"),  # dlc 8 but three bytes: kept as they came
    ]
    con = _case()
    con.register("t", store_layout(_table(frames)))
    con.execute("INSERT INTO can_frame_store BY NAME SELECT *, 1 AS file_id FROM t")
    assert con.execute(
        "SELECT payload, payload_blob IS NOT NULL FROM can_frame_store ORDER BY loc"
    ).fetchall() == [
        (0x0102030405060708, False),
        (0x00FF, False),
        (0, False),
        (0, False),
        (0, True),
        (0, True),
    ]


def test_evict_cache_keeps_the_configured_memory_limit(tmp_path):
    from forensics import store
    from forensics.parsers.base import Sink

    con = store.connect(tmp_path / "case.duckdb")
    before = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    Sink(con, 1, set(store.table_names(con))).evict_cache()
    assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0] == before


def test_evict_cache_drops_the_blocks_of_what_was_inserted(tmp_path):
    """After a 1M-row insert DuckDB keeps its blocks cached until memory_limit; evicting must
    leave (almost) none of them in RAM, or peak RSS grows with the file."""
    from forensics import store
    from forensics.parsers.base import Sink

    con = store.connect(tmp_path / "case.duckdb")
    sink = Sink(con, 1, set(store.table_names(con)))
    con.execute(
        """INSERT INTO can_frame_store
           SELECT 1, i, TIMESTAMP '2026-01-01' + to_microseconds(i), 'can0', i % 2048, 0, 8,
                  hash(i), NULL
           FROM range(1000000) t(i)"""
    )

    def cached_mb() -> float:
        q = "SELECT memory_usage_bytes FROM duckdb_memory() WHERE tag = 'BASE_TABLE'"
        return con.execute(q).fetchone()[0] / 2**20

    assert cached_mb() > 8
    sink.evict_cache()
    assert cached_mb() <= 4
    assert con.execute("SELECT count(*) FROM can_frames").fetchone()[0] == 1_000_000
