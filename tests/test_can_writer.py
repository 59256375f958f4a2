"""CanWriter inserts in a writer thread: every batch lands, the result is the same as writing
on the parser's own connection, a caller's transaction is respected, and a file that fails
mid-way leaves none of its rows behind (no insert lands after the failure is cleaned up).

Logs are written by python-can's own candump writer; WRITE_ROWS is lowered so a small file
takes many inserts."""

from __future__ import annotations

import time

import can
import pytest

from conftest import rows
from forensics import ingest, store
from forensics.parsers.base import FileContext, Sink, Source, in_transaction, registry
from forensics.parsers.can import frames, textscan

FRAMES = 20_000


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "bus.log"
    with can.Logger(str(path)) as out:
        for i in range(FRAMES):
            if i % 97 == 5:  # error frames: an error class in the id, details in the data
                m = can.Message(timestamp=1_780_000_000 + i / 1000, is_error_frame=True,
                                arbitration_id=0x88, data=bytes([0, 0, 4, 0x19, 0, 0, 0, 0]))  # fmt: skip
            else:
                m = can.Message(timestamp=1_780_000_000 + i / 1000, arbitration_id=0x181 + i % 4,
                                data=i.to_bytes(4, "big"), is_extended_id=False)  # fmt: skip
            out.on_message_received(m)
    return path


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(frames, "ROW_GROUP_ROWS", 300)  # FRAMES is no multiple of it
    monkeypatch.setattr(frames, "WRITE_ROWS", 1200)
    monkeypatch.setattr(frames, "EVICT_ROWS", 3600)


def _parse(con, path, file_id=1):
    src = Source(path, path.name, FileContext(charger_id="CP-1"))
    sink = Sink(con, file_id, set(store.table_names(con)))
    registry()["can_candump"]().parse(src, sink)
    return src, sink


def _tables(con):
    f = rows(con, "SELECT loc, ts, channel, arbitration_id, flags, dlc, data FROM can_frames "
                  "ORDER BY loc")  # fmt: skip
    e = rows(con, "SELECT loc, locator, classes, state FROM can_errors ORDER BY loc")
    return f, e


def test_writer_thread_and_own_connection_give_the_same_rows(tmp_path, log, small_batches):
    threaded = store.connect(tmp_path / "a.duckdb")
    assert not in_transaction(threaded)
    src, sink = _parse(threaded, log)
    assert sink.rows["can_frame_store"] == FRAMES == src.records_seen
    assert sink.rows["can_errors"] == len(range(5, FRAMES, 97))

    inline = store.connect(tmp_path / "b.duckdb")
    inline.execute("BEGIN TRANSACTION")  # no writer thread inside a caller's transaction
    assert in_transaction(inline)
    _parse(inline, log)
    inline.execute("COMMIT")
    a, b = _tables(threaded), _tables(inline)
    assert len(a[0]) == FRAMES and len(a[1]) == len(range(5, FRAMES, 97))
    assert a == b


def test_rollback_of_the_callers_transaction_leaves_nothing(tmp_path, log, small_batches):
    con = store.connect(tmp_path / "case.duckdb")
    con.execute("BEGIN TRANSACTION")
    _parse(con, log)
    assert rows(con, "SELECT count(*) FROM can_frame_store") == [(FRAMES,)]
    con.execute("ROLLBACK")
    assert rows(con, "SELECT count(*) FROM can_frame_store") == [(0,)]
    assert rows(con, "SELECT count(*) FROM can_errors") == [(0,)]


def test_a_file_that_fails_midway_leaves_no_rows(ingest_files, log, small_batches, monkeypatch):
    """The failure comes right after a batch was handed to the writer thread, whose insert
    is made slow, so it is still in flight when the parser fails: the writer must be
    stopped before ingest deletes the file's rows, or that insert lands after the delete."""
    handed = []
    append = frames.CanWriter.append_frames
    insert, discard = frames._insert_batch, ingest.discard_file
    inflight, at_discard = [0], []

    def slow_insert(*args):
        inflight[0] += 1
        time.sleep(0.3)
        try:
            insert(*args)
        finally:
            inflight[0] -= 1

    def watched_discard(*args):
        at_discard.append(inflight[0])
        discard(*args)

    def failing(self, table):
        append(self, table)
        handed.append(table.num_rows)
        if sum(handed) > FRAMES // 2:
            raise RuntimeError("disk full (injected)")

    monkeypatch.setattr(frames.CanWriter, "append_frames", failing)
    monkeypatch.setattr(frames, "_insert_batch", slow_insert)
    monkeypatch.setattr(ingest, "discard_file", watched_discard)
    report, con = ingest_files({"bus.log": log.read_bytes()}, charger_id="CP-1")
    assert [name for name, _ in report.failed] == ["bus.log"]
    assert "disk full" in report.failed[0][1]
    assert at_discard == [0]  # no insert in flight while the file's rows are deleted
    assert rows(con, "SELECT count(*) FROM can_frame_store") == [(0,)]
    assert rows(con, "SELECT count(*) FROM can_errors") == [(0,)]
    assert rows(con, "SELECT status FROM evidence WHERE path = 'bus.log'") == [("failed",)]


def test_inserts_fill_whole_row_groups(tmp_path, log, small_batches, monkeypatch):
    """Only the last insert of a file may end in a partial row group: the partial groups
    every insert would leave are merged by the checkpoint at close, whose time and memory
    then grow with the file."""
    monkeypatch.setattr(textscan, "CHUNK_BYTES", 48 << 10)  # chunks overshoot WRITE_ROWS
    sizes, evicted = [], []
    insert = frames._insert_batch

    def watched(sink, table, errors, evict):
        sizes.append(0 if table is None else table.num_rows)
        evicted.append(evict)
        insert(sink, table, errors, evict)

    monkeypatch.setattr(frames, "_insert_batch", watched)
    con = store.connect(tmp_path / "case.duckdb")
    _parse(con, log)
    assert len(sizes) > 5 and sum(sizes) == FRAMES
    assert all(n % frames.ROW_GROUP_ROWS == 0 for n in sizes[:-1]), sizes
    assert FRAMES % frames.ROW_GROUP_ROWS != 0 and sizes[-1] % frames.ROW_GROUP_ROWS != 0
    assert rows(con, "SELECT count(*) FROM can_frames") == [(FRAMES,)]
    # DuckDB's cache is dropped once per EVICT_ROWS frames, not after every insert
    since = 0
    for n, ev in zip(sizes, evicted, strict=True):
        since += n
        assert ev == (since >= frames.EVICT_ROWS)
        since = 0 if ev else since
    assert 0 < sum(evicted) < len(evicted)
