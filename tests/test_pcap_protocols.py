"""TCP, TLS, WebSocket and OCPP from captures of real stacks (sample_traces/pcap-*),
checked against tshark where it has an opinion, through the real ingest into DuckDB."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from forensics import ingest, store
from forensics.parsers.base import Sink, Source
from forensics.parsers.pcap.parser import PcapParser
from forensics.parsers.pcap.stream import Stream

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_traces"
FIX = Path(__file__).parent / "fixtures" / "pcap"
HAVE_TSHARK = shutil.which("tshark") is not None


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """One ingested case per sample bundle, opened read-only on demand."""
    made: dict[str, Path] = {}

    def get(name: str):
        if name not in made:
            d = tmp_path_factory.mktemp(name)
            ingest.ingest([SAMPLES / f"pcap-{name}"], d / "case.duckdb", d / "work")
            made[name] = d / "case.duckdb"
        return store.connect(made[name], read_only=True)

    return get


def tshark(path: Path, flt: str, *fields: str) -> list[list[str]]:
    cmd = ["tshark", "-r", str(path), "-Y", flt, "-T", "fields", "-E", "separator=|"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [line.split("|") for line in out.splitlines()]


@pytest.mark.skipif(not HAVE_TSHARK, reason="tshark not installed")
def test_retransmissions_and_dup_acks_agree_with_tshark(cases):
    con = cases("wifi-loss")
    retr, dup = con.execute(
        "SELECT sum(retrans_c2s + retrans_s2c), sum(dupack_c2s + dupack_s2c) FROM tcp_flows"
    ).fetchone()
    cap = SAMPLES / "pcap-wifi-loss" / "capture.pcapng"
    assert retr == len(tshark(cap, "tcp.analysis.retransmission", "frame.number")) == 8
    assert dup == len(tshark(cap, "tcp.analysis.duplicate_ack", "frame.number")) == 2
    rows = con.execute(
        "SELECT charger_id, attributed_by, retrans_c2s + retrans_s2c FROM tcp_flows ORDER BY 1"
    ).fetchall()
    assert rows == [("CP-20", "ws_path", 8), ("CP-21", "ws_path", 0)]


def test_tcp_states_and_history(cases):
    con = cases("wrong-url")
    states = con.execute(
        "SELECT state, history, app, server_port FROM tcp_flows ORDER BY first_frame"
    ).fetchall()
    assert states.count(("established", "ShADadfF", "http", 47080)) == 3
    assert ("refused", "Sr", None, 47081) in states
    con = cases("unreachable")
    rows = con.execute("SELECT state, syn_retries, history FROM tcp_flows").fetchall()
    assert [r[0] for r in rows] == ["syn_unanswered"] * 2
    assert all(r[1] >= 1 and r[2] == "ST" for r in rows)  # SYN retried (T, as Wireshark flags it)
    kinds = con.execute("SELECT kind, locator FROM events ORDER BY ts").fetchall()
    assert [k for k, _ in kinds] == ["tcp.syn_unanswered"] * 2
    assert kinds[0][1] == "frame 1"


@pytest.mark.skipif(not HAVE_TSHARK, reason="tshark not installed")
def test_tls_alert_and_expired_certificate_at_tshark_frames(cases):
    con = cases("cert-expired")
    cap = SAMPLES / "pcap-cert-expired" / "capture.pcapng"
    alerts = tshark(cap, "tls.alert_message", "frame.number", "tls.alert_message.desc")
    mine = con.execute(
        "SELECT locator, code FROM events WHERE kind = 'tls.alert' ORDER BY ts"
    ).fetchall()
    assert mine == [(f"frame {f}", "certificate_expired") for f, d in alerts if d == "45"]
    hs = con.execute(
        "SELECT sni, version, offered_versions, cert_valid_at_capture, alert_description, "
        "alert_from, outcome, history, cert_subject FROM tls_handshakes"
    ).fetchall()
    assert len(hs) == 3
    sni, version, offered, valid, desc, side, outcome, hist, subject = hs[0]
    assert (sni, version, valid, desc, side, outcome, hist) == (
        "csms.test",
        "TLS 1.2",
        False,
        "certificate_expired",
        "client",
        "alert",
        "CsxknL",
    )
    assert "TLS 1.2" in offered and "CN=csms.test" in subject
    cert_frames = {f for (f,) in tshark(cap, "tls.handshake.type == 11", "frame.number")}
    located = con.execute("SELECT locator FROM events WHERE kind = 'tls.cert_expired'").fetchall()
    assert {loc.split()[1] for (loc,) in located} == cert_frames


def test_client_certificate_requested_and_empty(cases):
    con = cases("client-cert")
    rows = con.execute(
        "SELECT cert_requested, client_cert_sent, alert_description, alert_from, history "
        "FROM tls_handshakes"
    ).fetchall()
    assert rows == [(True, False, "handshake_failure", "server", "CsxkrnXGIFl")] * 3


def test_tls13_established_with_key_log_present():
    con = store.connect(Path(":memory:"))
    src = Source(FIX / "tls_dsb.pcapng", "tls_dsb.pcapng")
    PcapParser().parse(src, Sink(con, 1, set(store.table_names(con))))
    assert con.execute("SELECT version, outcome FROM tls_handshakes").fetchall() == [
        ("TLS 1.3", "established")
    ]
    assert con.execute("SELECT tls_keylog FROM capture_info").fetchone() == (True,)


def test_websocket_upgrade_frames_and_ocpp_through_the_one_code_path(cases):
    con = cases("healthy")
    ws = con.execute(
        "SELECT charger_id, path, charge_point_id, host, offered_protocols, accepted_protocol, "
        "status, messages_c2s, messages_s2c, close_code, close_from FROM ws_sessions "
        "ORDER BY charger_id"
    ).fetchall()
    assert ws == [
        ("CP-1", "/ocpp/CP-1", "CP-1", "127.0.0.1:47080", ["ocpp1.6"], "ocpp1.6", 101, 5, 5,
         1000, "client"),
        ("CP-10", "/ocpp/CP-10", "CP-10", "127.0.0.1:47080", ["ocpp1.6"], "ocpp1.6", 101, 5, 5,
         1000, "client"),
    ]  # fmt: skip
    msgs = con.execute(
        "SELECT direction, message_type, action, response_ms IS NOT NULL, locator LIKE 'frame %' "
        "FROM ocpp_messages WHERE charger_id = 'CP-1' ORDER BY line"
    ).fetchall()
    assert len(msgs) == 10
    assert msgs[0] == ("cp_to_csms", 2, "BootNotification", True, True)
    assert {m[2] for m in msgs} == {"BootNotification", "StatusNotification", "Heartbeat"}
    assert con.execute(
        "SELECT count(*) FROM events WHERE severity IN ('error', 'critical')"
    ).fetchone() == (0,)


@pytest.mark.skipif(not HAVE_TSHARK, reason="tshark not installed")
def test_permessage_deflate_frames_decoded_like_tshark(cases):
    con = cases("healthy")
    cap = SAMPLES / "pcap-healthy" / "capture.pcapng"
    compressed = tshark(cap, "websocket.rsv == 0x04", "frame.number")
    assert len(compressed) >= 8  # websockets negotiates permessage-deflate by default
    frames = {int(f) for (f,) in compressed}
    mine = {
        r[0]
        for r in con.execute("SELECT line FROM ocpp_messages WHERE charger_id = 'CP-1'").fetchall()
    }
    assert mine <= frames


def test_upgrade_refusals_and_subprotocol(cases):
    con = cases("identity")
    assert con.execute(
        "SELECT DISTINCT charger_id, attributed_by, status, auth_scheme FROM ws_sessions"
    ).fetchall() == [("cp-5", "ws_path", 401, None)]
    con = cases("basic-auth")
    assert con.execute(
        "SELECT DISTINCT auth_scheme, auth_user, status FROM ws_sessions"
    ).fetchall() == [("Basic", "CP-4", 401)]
    con = cases("subprotocol")
    kinds = con.execute(
        "SELECT kind, code FROM events WHERE layer = 'websocket' ORDER BY event_id"
    ).fetchall()
    assert kinds.count(("ws.subprotocol_mismatch", "ocpp2.0.1")) == 3


def test_attribution_by_inventory_ip_for_encrypted_flows(cases):
    con = cases("unknown-ca")
    assert con.execute("SELECT DISTINCT charger_id, attributed_by FROM tcp_flows").fetchall() == [
        ("CP-8", "inventory_ip")
    ]
    assert con.execute("SELECT count(*) FROM events WHERE charger_id IS NULL").fetchone() == (0,)


def test_every_capture_event_points_at_a_frame_and_a_filter(cases):
    for name in ("cert-expired", "wrong-url", "healthy"):
        con = cases(name)
        bad = con.execute(
            """SELECT kind, locator, detail FROM events
               WHERE layer <> 'ocpp' AND (locator NOT LIKE 'frame %'
                  OR detail->>'wireshark_filter' IS NULL)"""
        ).fetchall()
        assert bad == []


def test_stream_reassembly_out_of_order_retransmitted_and_gap():
    s = Stream()
    s.feed(1, b"hello ", 1, 10)
    s.feed(13, b"world", 3, 30)  # ahead: waits for bytes 7..12
    s.feed(1, b"hello ", 4, 40)  # retransmission: ignored
    s.feed(7, b"there ", 2, 20)
    assert bytes(s.buf) == b"hello there world"
    assert s.consume(12) == (2, 20)  # the message completed in frame 2
    t = Stream()
    t.feed(1, b"a", 1, 1)
    for k in range(66):  # far ahead of a lost segment: the queue overflows, a gap is declared
        t.feed(100 + k, b"x", 2 + k, 2 + k)
    assert t.gaps == 1 and t.gap_bytes == 98 and t.take_gap() and not t.take_gap()
    assert bytes(t.buf).startswith(b"x")


@pytest.mark.skipif(not HAVE_TSHARK, reason="tshark not installed")
def test_deep_path_decrypts_wss_with_the_bundled_key_log(cases):
    con = cases("wss-keylog")
    kinds = con.execute(
        "SELECT kind, code, charger_id FROM events WHERE kind = 'ws.upgrade_rejected'"
    ).fetchall()
    assert kinds == [("ws.upgrade_rejected", "401", "cp-11")] * 2
    assert con.execute("SELECT DISTINCT attributed_by FROM tcp_flows").fetchall() == [
        ("ws_path_decrypted",)
    ]
    notes = con.execute("SELECT notes FROM evidence WHERE kind = 'pcap'").fetchone()[0]
    assert any("deep path: TLS decrypted" in n for n in notes)
    assert con.execute("SELECT status FROM evidence WHERE kind = 'tls_keylog'").fetchone() == (
        "parsed",
    )
