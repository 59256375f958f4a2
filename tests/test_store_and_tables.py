"""Case store guarantees and the inventory / sessions tables."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import rows, write_bundle
from forensics import ingest, store
from forensics.parsers.base import FileHead, Parser, Sink, Source, detect

INVENTORY = (
    "charger_id,site,connectivity,signal_dbm,firmware,installer\n"
    "CP-1,north,Cellular,-104,4.2.1,Voltwerk\n"
    ",north,wifi,,,\n"
    "CP-2,south,ethernet,strong,4.2.1,Voltwerk\n"
    "CP-3,south\n"
)
SESSIONS = (
    "session_id;charger_id;connector_id;start;stop;vehicle_make;vehicle_model;evccid;result;error_code\n"
    "S1;CP-1;1;2026-06-01 10:00:00;2026-06-01 11:00:00;VW;ID.4;ABC;ok;\n"
    "S2;CP-1;2;2026-06-01 12:00:00;2026-06-01 12:00:30;Voltra;EX5;DEF;Failed;SLAC\n"
    "S3;CP-2;1;yesterday;;VW;ID.4;;ok;\n"
)


def test_inventory_keeps_unknown_columns_and_rejects_rows_without_id(ingest_files):
    report, con = ingest_files({"chargers.csv": INVENTORY})
    assert (report.records, report.rejects) == (2, 2)
    assert rows(con, "SELECT locator, reason FROM rejects ORDER BY locator") == [
        ("line 3", "inventory.no_charger_id"),
        ("line 5", "csv.wrong_field_count"),
    ]
    assert rows(
        con,
        "SELECT charger_id, connectivity, signal_dbm, extra->>'installer' FROM chargers "
        "WHERE NOT inferred ORDER BY 1",
    ) == [("CP-1", "cellular", -104.0, "Voltwerk"), ("CP-2", "ethernet", None, "Voltwerk")]
    notes = rows(con, "SELECT notes FROM evidence")[0][0]
    assert notes == ["line 4: signal_dbm 'strong' is not a number (kept empty)"]


def test_sessions_local_time_and_failed_events(ingest_files):
    report, con = ingest_files(
        {"sessions.csv": SESSIONS, "manifest.toml": '[case]\ntimezone = "Europe/Paris"\n'}
    )
    assert (report.records, report.rejects) == (2, 1)
    assert rows(con, "SELECT locator, detail FROM rejects") == [("line 4", "bad start")]
    assert rows(con, "SELECT session_id, start::VARCHAR, result FROM sessions ORDER BY 1") == [
        ("S1", "2026-06-01 08:00:00", "ok"),
        ("S2", "2026-06-01 10:00:00", "failed"),
    ]
    assert rows(con, "SELECT kind, code, locator FROM events") == [
        ("session.failed", "SLAC", "line 3")
    ]


def test_reingest_adds_nothing(tmp_path):
    bundle = write_bundle(tmp_path / "b", {"chargers.csv": INVENTORY, "s.csv": SESSIONS})
    db = tmp_path / "case.duckdb"
    first = ingest.ingest([bundle], db, tmp_path / "w")
    second = ingest.ingest([bundle], db, tmp_path / "w")
    assert first.parsed == 2 and second.parsed == 0 and second.already_in_case == 2
    con = store.connect(db)
    assert rows(con, "SELECT count(*) FROM evidence") == [(2,)]
    assert rows(con, "SELECT count(*) FROM chargers WHERE NOT inferred") == [(2,)]
    con.close()


class _Exploding(Parser):
    """A parser that writes rows, then fails: the case must not keep them."""

    name = "exploding_test"
    kind = "test"
    signature = None

    def parse(self, src: Source, sink: Sink) -> None:
        import pyarrow as pa

        sink.append("chargers", pa.table({"charger_id": ["GHOST"]}))
        raise RuntimeError("bug in parser")


def test_failed_parse_leaves_case_as_it_was(tmp_path):
    src_file = tmp_path / "x.bin"
    src_file.write_bytes(b"data")
    con = store.connect(tmp_path / "case.duckdb")
    report = ingest.IngestReport()
    planned = ingest._Planned(
        ingest.intake.BundleFile("b", "x.bin", src_file), "00", 4, _Exploding,
        ingest.manifest.Manifest().context_for("x.bin"),
    )  # fmt: skip
    ingest.ingest_file(con, planned, report)
    assert rows(con, "SELECT count(*) FROM chargers") == [(0,)]
    assert rows(con, "SELECT status, message FROM evidence") == [
        ("failed", "internal error in parser exploding_test: RuntimeError: bug in parser")
    ]
    con.close()


def test_detection_is_by_content_not_name(tmp_path):
    head = FileHead("random-name.txt", INVENTORY.encode())
    assert detect(head).name == "inventory_csv"
    assert detect(FileHead("chargers.csv", b"\x00\x01\x02")) is None


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40), max_size=10)
)
def test_inventory_any_rows_never_crash(ingest_files, cells):
    body = "\n".join(",".join([c.replace("\n", " ")] * 3) for c in cells)
    report, con = ingest_files({"chargers.csv": "charger_id,site,model\n" + body + "\n"})
    assert not report.failed
    parsed, rejected = rows(con, "SELECT records_parsed, records_rejected FROM evidence")[0]
    assert parsed == rows(con, "SELECT count(*) FROM chargers WHERE NOT inferred")[0][0]
    assert rejected == rows(con, "SELECT count(*) FROM rejects")[0][0]


def test_broken_manifest_is_a_reject_and_the_bundle_still_ingests(ingest_files):
    report, con = ingest_files(
        {"manifest.toml": '[case]\nid = "X"\ntimezone = Europe/Berlin\n', "chargers.csv": INVENTORY}
    )
    assert report.records == 2 and report.failed[0][0] == "manifest.toml"
    assert rows(
        con, "SELECT locator, reason, excerpt FROM rejects WHERE reason LIKE 'manifest%'"
    ) == [("line 3", "manifest.invalid", "timezone = Europe/Berlin")]
    assert rows(con, "SELECT status FROM evidence WHERE kind = 'manifest'") == [("failed",)]


def _insert_events(con, n: int) -> None:
    con.execute(
        """INSERT INTO events (ts, charger_id, channel, layer, kind, severity, code, file_id)
           SELECT TIMESTAMP '2026-06-01' + to_microseconds(i), 'CP' || (i % 97), 'backend',
                  'ocpp', 'ocpp.call', 'info', 'Heartbeat', 1
           FROM range(?) r(i)""",
        [n],
    )


def _row_groups(con, table: str) -> list[int]:
    """Rows in each row group of a table, as stored."""
    return [
        r[1]
        for r in rows(
            con,
            f"""SELECT row_group_id, sum(count) FROM pragma_storage_info('{table}')
                WHERE column_path = '[0]' GROUP BY ALL ORDER BY 1""",
        )
    ]


def test_a_bulk_insert_goes_straight_to_the_case_file(tmp_path):
    """A file's insert of 10^4-10^5 rows is written compressed as it is inserted, not
    through the WAL and a later checkpoint (store.ROW_GROUP_SIZE), by every writer."""
    db = tmp_path / "case.duckdb"
    wal = tmp_path / "case.duckdb.wal"
    n = 3 * store.ROW_GROUP_SIZE + 100  # less than one row group at DuckDB's default size
    con = store.connect(db)
    _insert_events(con, n)
    # at the default size these rows would be ~4MB of WAL
    assert not wal.exists() or wal.stat().st_size < 512 << 10
    assert rows(con, "SELECT current_setting('temp_directory')") == [(f"{db}.tmp",)]
    con.close()
    con = store.connect(db)  # a second writer keeps the size (it is not kept in the file)
    other = store.cursor(con)  # another thread's connection writes to the same case
    _insert_events(other, n)
    other.close()
    con.execute("CHECKPOINT")
    groups = _row_groups(con, "events")
    assert sum(groups) == 2 * n and max(groups) <= store.ROW_GROUP_SIZE and len(groups) >= 6
    con.close()
    ro = store.connect(db, read_only=True)
    assert rows(ro, "SELECT count(*), count(DISTINCT event_id) FROM events") == [(2 * n, 2 * n)]
    ro.close()


def test_can_inserts_are_cut_on_whole_row_groups():
    """The CAN writer's inserts stay whole row groups of the case (none left for the WAL)."""
    from forensics.parsers.can import frames

    assert frames.ROW_GROUP_ROWS % store.ROW_GROUP_SIZE == 0
    assert frames.WRITE_ROWS % store.ROW_GROUP_SIZE == 0
