"""CAN text formats on hand-written fixtures (tests/fixtures/can/README.md): exact rows,
exact rejects with locators, error classes and time bases."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import rows

FIX = Path(__file__).parent / "fixtures" / "can"


def _ingest(ingest_files, name: str, manifest: str = "", **opts):
    files = {name: (FIX / name).read_bytes()}
    if manifest:
        files["manifest.toml"] = manifest
    report, con = ingest_files(files, charger_id="CP-1", **opts)
    assert not report.failed, report.failed
    return con


def _evidence(con, name):
    return rows(
        con, "SELECT parser, records_parsed, records_rejected FROM evidence WHERE path = ?", [name]
    )[0]


def _frames(con):
    return rows(
        con,
        "SELECT loc, strftime(ts, '%H:%M:%S.%f'), channel, arbitration_id, flags, dlc, hex(data) "
        "FROM can_frames ORDER BY loc",
    )


def test_candump_log_exact_rows_and_rejects(ingest_files):
    con = _ingest(ingest_files, "corrupt.log")
    assert _evidence(con, "corrupt.log") == ("can_candump", 11, 3)
    assert rows(con, "SELECT locator, reason FROM rejects ORDER BY locator") == [
        ("line 10", "can.bad_id"),  # 9FF is above 0x7FF
        ("line 11", "can.bad_line"),
        ("line 9", "can.bad_data"),  # odd number of hex digits
    ]
    f = _frames(con)
    assert [r[0] for r in f] == [1, 2, 3, 4, 6, 7, 8, 12, 13, 14, 15]
    assert f[2][3:] == (0x18FF50E5, 1, 4, "DEADBEEF")  # extended
    assert f[4][4:6] == (2, 0) and f[5][4:6] == (2, 4)  # remote without / with length
    assert f[6][4:] == (8 | 16 | 32, 12, "001122334455667788990011")  # FD, BRS, ESI
    assert f[10][4] == 64  # python-can's trailing ' T' = transmitted
    errs = rows(con, "SELECT loc, classes, controller, protocol, location, tx_errors, rx_errors, state "
                     "FROM can_errors ORDER BY loc")  # fmt: skip
    assert errs == [
        (4, ["controller"], ["rx_passive"], [], None, None, None, "error_passive"),
        (12, ["protocol", "ack", "counters"], [], ["stuff"], "ack_slot", 0, 160, "error_passive"),
        (13, ["bus_off"], [], [], None, None, None, "bus_off"),
        (14, ["restarted"], [], [], None, None, None, "restarted"),
    ]
    kinds = rows(con, "SELECT kind, locator FROM events WHERE layer = 'can' ORDER BY ts, event_id")
    assert kinds == [("can.error_passive", "line 4"), ("can.error_frame", "line 12"),
                     ("can.bus_off", "line 13"), ("can.restart", "line 14")]  # fmt: skip
    assert rows(con, "SELECT time_basis, frames, error_frames FROM can_logs") == [
        ("absolute", 11, 4)
    ]


def test_candump_reference_path_gives_the_same_rows(ingest_files):
    fast = _ingest(ingest_files, "corrupt.log")
    ref = _ingest(ingest_files, "corrupt.log", '[files."corrupt.log"]\ncan_fast = false\n')
    assert _frames(fast) == _frames(ref)
    assert rows(fast, "SELECT locator, reason FROM rejects ORDER BY 1") == rows(
        ref, "SELECT locator, reason FROM rejects ORDER BY 1"
    )


def test_candump_console_output(ingest_files):
    con = _ingest(ingest_files, "console.txt")
    assert _evidence(con, "console.txt") == ("can_candump_console", 6, 1)
    assert rows(con, "SELECT locator, reason FROM rejects") == [("line 8", "can.bad_data")]
    f = _frames(con)
    assert [r[0] for r in f] == [1, 2, 3, 4, 5, 7]  # line 6 is the decoded text of line 5
    assert f[3][4:6] == (2, 4) and f[5][4:6] == (8, 12)  # remote request; FD from '[12]'
    assert rows(con, "SELECT state FROM can_errors") == [("error_passive",)]


def test_asc_vector_lines(ingest_files):
    con = _ingest(ingest_files, "vector.asc")
    assert _evidence(con, "vector.asc") == ("can_asc", 8, 2)
    assert rows(con, "SELECT locator, reason FROM rejects ORDER BY 1") == [
        ("line 14", "can.bad_data"),
        ("line 16", "can.bad_line"),
    ]
    f = _frames(con)
    # 10:26:40 pm in the Triggerblock date, no timezone given -> read as UTC
    assert f[0][:2] == (7, "22:26:40.010000")
    assert [r[0] for r in f] == [7, 8, 9, 10, 11, 15]
    assert f[1][4] == 1 | 64 and f[3][4:6] == (2, 4) and f[4][4:6] == (8 | 16, 12)
    assert f[5][2] == "2"
    errs = rows(
        con, "SELECT loc, source, protocol, location, tx_errors, state FROM can_errors ORDER BY loc"
    )
    assert errs == [
        (9, "error_frame", ["stuff", "tx"], "ack_slot", None, None),  # ECC 10 0 11001
        (12, "status", [], None, 130, "error_passive"),
        (17, "status", [], None, 20, "error_active"),
    ]
    kinds = rows(con, "SELECT kind FROM events ORDER BY ts, event_id")
    assert kinds == [("can.error_frame",), ("can.error_passive",), ("can.error_active",)]


def test_asc_relative_timestamps_are_deltas(ingest_files):
    con = _ingest(ingest_files, "vector_relative.asc", "[case]\ntimezone = 'Europe/Berlin'\n")
    got = [r[1] for r in _frames(con)]
    # 08:26:40 Berlin summer time = 06:26:40 UTC; deltas 10 ms, 10 ms, 500 ms
    assert got == ["06:26:40.010000", "06:26:40.020000", "06:26:40.520000"]


@pytest.mark.parametrize(
    ("name", "parsed", "frames", "errors", "first"),
    [
        ("peak_v1_0.trc", 4, 3, 2, "00:00:01.841000"),
        ("peak_v1_1.trc", 7, 6, 2, "12:52:33.543898"),
        ("peak_v1_3.trc", 7, 6, 2, "12:35:21.760998"),
        ("peak_v2_0.trc", 10, 8, 3, "09:46:57.674896"),
        ("peak_v2_1.trc", 11, 9, 4, "11:09:28.107754"),
    ],
)
def test_trc_versions_from_peak_document(ingest_files, name, parsed, frames, errors, first):
    con = _ingest(ingest_files, name)
    assert _evidence(con, name) == ("can_trc", parsed, 0)
    f = _frames(con)
    assert len(f) == frames and f[0][1] == first
    assert rows(con, "SELECT count(*) FROM can_errors")[0][0] == errors
    assert rows(con, "SELECT flags, dlc FROM can_frames WHERE arbitration_id = 256") == [(2, 3)]


def test_trc_v2_error_status_and_counters(ingest_files):
    con = _ingest(ingest_files, "peak_v2_1.trc")
    errs = rows(con, "SELECT loc, source, protocol, location, tx_errors, rx_errors, state "
                     "FROM can_errors ORDER BY loc")  # fmt: skip
    assert errs == [
        (13, "error_frame", ["stuff"], "id28_21", 0, 0, "error_active"),
        (16, "status", [], None, None, None, "error_warning"),  # ST 00000008 = BUSHEAVY
        (17, "error_frame", ["stuff"], "id28_21", 0, 8, "error_active"),
        (18, "counters", [], None, 2, 2, "error_active"),
    ]
    assert rows(con, "SELECT flags, dlc FROM can_frames WHERE arbitration_id = 1280") == [
        (8 | 64, 12)
    ]  # FD, Tx


def test_trc_v1_without_start_time_is_anchored_by_manifest(ingest_files):
    con = _ingest(ingest_files, "peak_v1_0.trc",
                  '[files."peak_v1_0.trc"]\nstart_time = "2026-05-28T20:00:00Z"\n')  # fmt: skip
    assert _frames(con)[0][1] == "20:00:01.841000"
    assert rows(con, "SELECT time_basis FROM can_logs") == [("anchored_manifest",)]


@pytest.mark.parametrize(
    "data",
    [b"a\r\nb", b"a\r\r\nb", b"a\r", b"a\rb\r\nc\r", b"\r\n\r\n", b"x\r\ny\rz\n\rq", b"",
     b"\n", b"a\x1fb\nc", b"\xff\xfeab\nc", b'x "q" y\n"z', b"\n\n\nx\n\n", b"a,b;c|d\te"],
)  # fmt: skip
def test_fast_line_split_equals_plain_split(data):
    """The CSV-reader line split the text fast paths use gives str.split's lines exactly."""
    from forensics.parsers.can.fastpath import split_lines

    plain = [
        ln[:-1] if ln.endswith("\r") else ln for ln in data.decode("utf-8", "replace").split("\n")
    ]
    assert split_lines(data).to_list() == plain


def test_asc_gate_then_prefix_capture_equals_full_capture():
    """The ASC fast path tests the whole pattern without captures, then captures with its
    prefix: on random near-ASC lines both give the full pattern's captures exactly."""
    import random

    import polars as pl

    from forensics.parsers.can.fastpath_asc import _ASC_FAST, _ASC_MATCH, _ASC_PREFIX

    r = random.Random(5)
    odd = ["1.5", "12.1234567", "18FF50E5x", "800", "r", "0ABC", "G1", "x", "\u00a0", "\x0b"]
    lines = []
    for _ in range(20000):
        parts = [f"0.{r.randrange(10**6):06d}", str(r.randrange(1, 4)),
                 r.choice(["181", "18FF50E5x", "7FF"]), r.choice(["Rx", "Tx"]), "d",
                 str(r.randrange(9))]  # fmt: skip
        parts += [r.choice(["01", "0A", "FF", "0ABC", "a"]) for _ in range(r.randrange(10))]
        parts += r.choice([[], ["Length", "=", "1234"], ["0A"], ["x"]])
        if r.random() < 0.3:
            parts[r.randrange(len(parts))] = r.choice(odd)
        seps = [r.choice([" ", "  ", "\t", "\u00a0", "\x0b"]) if r.random() < 0.2 else " "
                for _ in parts]  # fmt: skip
        lines.append("".join(s + p for s, p in zip(seps, parts, strict=True)) + r.choice(["", " "]))
    line = pl.col("line")
    df = pl.DataFrame({"line": lines})
    full = df.select(m=line.str.extract_groups(_ASC_FAST)).unnest("m")
    gated = df.select(
        m=pl.when(line.str.contains(_ASC_MATCH)).then(line.str.extract_groups(_ASC_PREFIX))
    ).unnest("m")
    assert full["1"].is_not_null().sum() > 1000
    assert full.equals(gated)
