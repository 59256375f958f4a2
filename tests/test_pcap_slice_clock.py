"""Slicing the packets behind a finding / flow / window, and clock offsets between a capture
and an OCPP log that saw the same messages."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from pathlib import Path

import dpkt
import pytest

from forensics import clock, ingest, pipeline, store
from forensics.slice import slice_packets

SAMPLES = Path(__file__).resolve().parents[1] / "sample_traces"


def make_case(tmp_path: Path, *inputs: Path) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    db = tmp_path / "case.duckdb"
    ingest.ingest(list(inputs), db, tmp_path / "work")
    return db


def count_packets(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in dpkt.pcap.UniversalReader(f))


def test_slice_finding_gives_its_connections(tmp_path):
    db = make_case(tmp_path, SAMPLES / "pcap-cert-expired")
    con = store.connect(db)
    pipeline.analyze(con, None)
    fid = con.execute(
        "SELECT finding_id FROM findings WHERE rule_id = 'tls.certificate_expired'"
    ).fetchone()[0]
    total = con.execute("SELECT sum(packets_c2s + packets_s2c) FROM tcp_flows").fetchone()[0]
    con.close()
    out = tmp_path / "finding.pcap"
    n = slice_packets(db, out, finding_id=fid)
    assert n == total == 29  # three refused handshakes, every packet of each
    assert count_packets(out) == 29
    if shutil.which("tshark"):
        res = subprocess.run(
            ["tshark", "-r", str(out), "-Y", "tls.alert_message.desc == 45"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert len(res.stdout.splitlines()) == 3


def test_slice_one_flow_and_a_time_window(tmp_path):
    db = make_case(tmp_path, SAMPLES / "pcap-wrong-url")
    con = store.connect(db, read_only=True)
    fid, flow_id, pkts, t0, t1 = con.execute(
        "SELECT file_id, flow_id, packets_c2s + packets_s2c, ts_start, ts_end FROM tcp_flows "
        "WHERE state = 'refused'"
    ).fetchone()
    con.close()
    assert slice_packets(db, tmp_path / "flow.pcapng", flow=f"{fid}/{flow_id}") == pkts == 2
    assert count_packets(tmp_path / "flow.pcapng") == 2
    n = slice_packets(db, tmp_path / "win.pcap", start=t0, end=t1 + dt.timedelta(microseconds=1))
    assert n >= 2
    with pytest.raises(Exception, match="nothing to slice"):
        slice_packets(db, tmp_path / "x.pcap")


def test_clock_offset_between_capture_and_shifted_ocpp_log(tmp_path):
    """A charger-side OCPP log whose clock runs 2.5 s ahead of the capture host."""
    db0 = make_case(tmp_path / "a", SAMPLES / "pcap-healthy")
    con = store.connect(db0, read_only=True)
    rows = con.execute(
        "SELECT ts, charger_id, direction, message_type, unique_id, action, payload "
        "FROM ocpp_messages WHERE charger_id = 'CP-1' ORDER BY ts"
    ).fetchall()
    con.close()
    log = tmp_path / "bundle" / "cp1-ocpp.jsonl"
    log.parent.mkdir(parents=True)
    shutil.copytree(SAMPLES / "pcap-healthy", tmp_path / "bundle", dirs_exist_ok=True)
    lines = []
    for ts, cp, direction, mtype, uid, action, payload in rows:
        body = json.loads(payload) if payload else {}
        frame = [mtype, uid, action, body] if mtype == 2 else [mtype, uid, body]
        t = (ts + dt.timedelta(milliseconds=2500)).isoformat(timespec="milliseconds") + "Z"
        lines.append(
            json.dumps({"ts": t, "charger_id": cp, "direction": direction, "frame": frame})
        )
    log.write_text("\n".join(lines) + "\n")
    db = make_case(tmp_path / "b", tmp_path / "bundle")
    con = store.connect(db)
    out = clock.estimate_offsets(con)
    by_kind = dict(
        con.execute(
            "SELECT e.kind, o.offset_ms FROM clock_offsets o JOIN evidence e USING (file_id)"
        ).fetchall()
    )
    assert len(out) == 2
    assert by_kind["pcap"] == 0.0
    log_row = next(r for r in out if r["method"] != "reference")
    assert log_row["pairs"] == 10
    assert abs(log_row["offset_ms"] + 2500) < 2  # log ts + offset = capture ts (ms rounding)
    assert clock.estimate_offsets(con) == out  # idempotent
