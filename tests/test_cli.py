"""The command line as a user drives it: ingest, analyze, query, timeline, rules, formats,
and one-line errors with a hint and exit code 2."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

from conftest import SAMPLES


def run(*args: str, ok: int | None = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "forensics", *args], capture_output=True, text=True, timeout=300
    )
    if ok is not None:
        assert proc.returncode == ok, proc.stderr
    return proc


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    db = tmp_path_factory.mktemp("cli") / "case.duckdb"
    proc = run("ingest", str(SAMPLES / "identity-mismatch"), "--case", str(db))
    assert "3 files: 3 parsed" in proc.stdout
    again = run("ingest", str(SAMPLES / "identity-mismatch"), "--case", str(db))
    assert "0 parsed" in again.stdout and "3 already in the case" in again.stdout
    return db


def test_analyze_then_query_and_timeline(case):
    proc = run("analyze", "--case", str(case), "--format", "json")
    doc = json.loads(proc.stdout)
    assert doc["verdicts"][0]["subject"] == "CP-007"
    out = run("query", "--case", str(case), "--format", "csv",
              "SELECT kind, count(*) AS n FROM events WHERE charger_id = 'cp-007' "
              "GROUP BY kind ORDER BY kind").stdout  # fmt: skip
    table = list(csv.DictReader(io.StringIO(out)))
    assert {"kind": "ocpp.boot_rejected", "n": "9"} in table
    tl = run("timeline", "--case", str(case), "--charger", "cp-007", "--kind", "ws.",
             "--from", "2026-06-01T06:00:00Z", "--to", "2026-06-01T06:06:00Z",
             "--format", "json").stdout  # fmt: skip
    events = json.loads(tl)
    # the CSMS closes cleanly (code 1000) after each rejected boot: ws.close, not a drop
    assert [e["kind"] for e in events] == ["ws.connect", "ws.close", "ws.connect", "ws.close"]
    assert events[0]["file"] == "steve-csms.log" and events[0]["locator"].startswith("line ")


def test_query_errors_are_one_line_with_hint(case):
    proc = run("query", "--case", str(case), "SELECT * FROM nope", ok=2)
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("error: query failed:") and lines[1].startswith("  hint: tables:")
    assert "Traceback" not in proc.stderr


def test_missing_bundle_and_bad_timezone(tmp_path):
    proc = run("triage", str(tmp_path / "missing.zip"), ok=2)
    assert proc.stderr.startswith("error: ") and "hint:" in proc.stderr
    proc = run("triage", str(SAMPLES / "healthy"), "--timezone", "Mars/Olympus", "--out",
               str(tmp_path / "o"), ok=2)  # fmt: skip
    assert "unknown timezone 'Mars/Olympus'" in proc.stderr


def test_rules_list_show_test_and_formats():
    listing = run("rules", "list").stdout
    assert "fleet.simultaneous_drop" in listing and "backend.outage" in listing
    show = run("rules", "show", "vehicle.model_failure_cluster").stdout
    assert "fisher_greater" in show and "fixtures: fire, silent" in show
    formats = run("formats").stdout
    assert "ocpp_jsonl" in formats and "inventory_csv" in formats
    run("rules", "show", "no.such.rule", ok=2)


def test_rules_test_on_a_user_folder(tmp_path):
    (tmp_path / "mine.sql").write_text(
        "-- id: user.any_disconnect\n-- title: t\n-- cause: network.wifi_loss\n"
        "-- channel: backend\n-- severity: low\n-- status: experimental\n-- fix: f\n"
        "SELECT charger_id, ts AS ts_start, ts AS ts_end, 0.5 AS score, kind AS summary,\n"
        "       [event_id] AS evidence FROM events WHERE kind = 'ws.disconnect' ORDER BY ts\n"
    )
    fire = tmp_path / "fixtures" / "user.any_disconnect" / "fire"
    silent = tmp_path / "fixtures" / "user.any_disconnect" / "silent"
    fire.mkdir(parents=True)
    silent.mkdir(parents=True)
    (fire / "a.jsonl").write_text(
        '{"ts": "2026-06-01T12:00:00Z", "charger_id": "C", "event": "disconnected"}\n'
    )
    (silent / "a.jsonl").write_text(
        '{"ts": "2026-06-01T12:00:00Z", "charger_id": "C", "event": "connected"}\n'
    )
    proc = run("rules", "test", str(tmp_path))
    assert "2 passed, 0 failed" in proc.stdout
    (silent / "a.jsonl").write_text(
        '{"ts": "2026-06-01T12:00:00Z", "charger_id": "C", "event": "disconnected"}\n'
    )
    proc = run("rules", "test", str(tmp_path), ok=1)
    assert "1 passed, 1 failed" in proc.stdout
