"""pcap/pcapng reading: real dumpcap captures (tests/fixtures/pcap/README.md), their
corrupted copies with exact counts and offsets, hand-built rare blocks, and any bytes."""

from __future__ import annotations

import gzip
import io
import shutil
import struct
import subprocess
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forensics import store
from forensics.errors import ParserGaveUp
from forensics.ingest import read_head
from forensics.parsers.base import FileHead, Sink, Source, detect
from forensics.parsers.pcap.decode import addr_text, decode
from forensics.parsers.pcap.parser import PcapParser
from forensics.parsers.pcap.reader import CaptureReader

FIX = Path(__file__).parent / "fixtures" / "pcap"
ROOT = Path(__file__).resolve().parents[1]
# fixture -> (packets, link types) as tshark counts them
CAPTURES = {
    "lo_tcp.pcap": (23, {1}),
    "lo_tcp_ns.pcap": (23, {1}),
    "lo_tcp.pcapng": (23, {1}),
    "lo_tcp.pcapng.gz": (23, {1}),
    "any_sll.pcap": (10, {113}),
    "any_sll2.pcapng": (10, {276}),
    "raw_ip.pcap": (23, {101}),
    "bsd_loop.pcap": (23, {0}),
    "veth.pcapng": (13, {1}),
    "veth_vlan.pcapng": (13, {1}),
    "multi_if.pcapng": (20, {1, 276}),
    "tls_dsb.pcapng": (15, {1}),
}


def read(data: bytes, read_bytes: int = 1 << 20):
    """(frames, ts_us, rejects) of a capture held in memory."""
    rejects = []
    r = CaptureReader(io.BytesIO(data), lambda *a: rejects.append(a), read_bytes=read_bytes)
    frames, ts = [], []
    for c in r.chunks():
        frames += c.frame.tolist()
        ts += c.ts_us.tolist()
    return frames, ts, [(loc, reason) for loc, reason, _x, _d in rejects], r


def raw(name: str) -> bytes:
    data = (FIX / name).read_bytes()
    return gzip.decompress(data) if name.endswith(".gz") else data


def record_offsets_pcap(data: bytes) -> list[int]:
    out, o = [], 24
    while o < len(data):
        out.append(o)
        o += 16 + struct.unpack_from("<I", data, o + 8)[0]
    return out


def block_offsets(data: bytes) -> list[int]:
    out, o = [], 0
    while o < len(data):
        out.append(o)
        o += struct.unpack_from("<I", data, o + 4)[0]
    return out


def parse_into_memory(path: Path, name: str | None = None):
    """Runs the registered parser on one file into an in-memory case; returns (src, con)."""
    con = store.connect(Path(":memory:"))
    src = Source(path, name or path.name)
    sink = Sink(con, 1, set(store.table_names(con)))
    PcapParser().parse(src, sink)
    return src, con


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_real_captures_count_and_link_types(name):
    frames, _ts, rejects, r = read(raw(name), read_bytes=700)  # small reads: many chunks
    n, links = CAPTURES[name]
    assert frames == list(range(1, n + 1))
    assert rejects == []
    assert {i.linktype for i in r.interfaces} == links


@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark not installed")
@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_timestamps_and_addresses_match_tshark(name):
    fields = ["frame.time_epoch", "ip.src", "ipv6.src", "ip.dst", "ipv6.dst"]
    cmd = ["tshark", "-r", str(FIX / name), "-T", "fields", "-E", "separator=|"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()
    _frames, ts, _rej, _r = read(raw(name))
    assert ts == [int(Decimal(line.split("|")[0]) * 1_000_000) for line in out]
    r = CaptureReader(io.BytesIO(raw(name)), lambda *a: None)
    mine = []
    for c in r.chunks():
        p = decode(c)
        for i in range(len(c)):
            ok = p.ip_ver[i] > 0
            mine.append(
                (addr_text(p.src_hi[i], p.src_lo[i]), addr_text(p.dst_hi[i], p.dst_lo[i]))
                if ok
                else None
            )
    theirs = []
    for line in out:
        f = line.split("|")
        src, dst = (f[1] or f[2]).split(",")[0], (f[3] or f[4]).split(",")[0]
        theirs.append((src, dst) if src else None)
    assert mine == theirs


def test_vlan_tag_and_fragments():
    r = CaptureReader(io.BytesIO(raw("veth_vlan.pcapng")), lambda *a: None)
    p = decode(next(r.chunks()))
    assert set(p.vlan.tolist()) == {100}
    assert int(p.frag.sum()) == 3  # a 3000-byte UDP datagram over MTU 1500


def test_truncated_pcap_keeps_every_whole_packet():
    data = raw("lo_tcp.pcap")
    frames, _ts, rejects, _r = read(data[:-10])
    assert len(frames) == 22
    assert rejects == [("frame 23", "pcap.truncated_record")]


def test_truncated_pcapng_in_packet_and_in_trailing_block():
    data = raw("lo_tcp.pcapng")
    blocks = block_offsets(data)
    frames, _ts, rejects, _r = read(data[: blocks[-2] + 20])  # inside the last EPB
    assert (len(frames), rejects) == (22, [("frame 23", "pcap.truncated_record")])
    frames, _ts, rejects, _r = read(data[:-50])  # inside the closing ISB
    assert (len(frames), rejects) == (23, [(f"offset {blocks[-1]}", "pcapng.truncated_block")])


def test_corrupt_pcap_record_in_the_middle_resyncs():
    data = bytearray(raw("lo_tcp.pcap"))
    bad = record_offsets_pcap(bytes(data))[10]
    assert bad == 892
    data[bad + 8 : bad + 12] = b"\xff\xff\xff\x7f"  # caplen 2 GiB
    for rb in (1 << 20, 5):
        frames, _ts, rejects, _r = read(bytes(data), read_bytes=rb)
        assert rejects == [("offset 892", "pcap.corrupt_record")]
        assert frames == list(range(1, 23))  # 10 before, 12 after; the bad record is lost


def test_garbage_inside_pcap_loses_nothing():
    data = raw("lo_tcp.pcap")
    cut = record_offsets_pcap(data)[10]
    frames, _ts, rejects, _r = read(data[:cut] + b"\x00\xff" * 37 + data[cut:])
    assert len(frames) == 23
    assert rejects == [(f"offset {cut}", "pcap.corrupt_record")]


def test_corrupt_pcapng_block_in_the_middle_resyncs():
    data = bytearray(raw("lo_tcp.pcapng"))
    bad = block_offsets(bytes(data))[12]
    assert bad == 1368
    data[bad + 4 : bad + 8] = b"\x03\x00\x00\x00"  # block length 3: impossible
    frames, _ts, rejects, _r = read(bytes(data), read_bytes=3)
    assert rejects == [("offset 1368", "pcapng.corrupt_block")]
    assert len(frames) == 22


def test_unaligned_garbage_inside_pcapng_loses_nothing():
    data = raw("lo_tcp.pcapng")
    cut = block_offsets(data)[12]
    frames, _ts, rejects, _r = read(data[:cut] + b"\x06\x00\x00" + b"\xee" * 30 + data[cut:])
    assert len(frames) == 23
    assert rejects == [(f"offset {cut}", "pcapng.corrupt_block")]


def test_non_capture_named_pcap_is_not_detected(tmp_path):
    fake = tmp_path / "capture.pcap"
    fake.write_text("this is a text export of a capture, not a capture\n" * 5)
    cls = detect(FileHead(fake.name, read_head(fake)))
    assert cls is None or cls.name != "pcap"


def test_gzip_capture_is_detected_and_read():
    path = FIX / "lo_tcp.pcapng.gz"
    assert detect(FileHead(path.name, read_head(path))) is PcapParser
    src, _con = parse_into_memory(path)
    assert (src.records_seen, len(src.rejects)) == (23, 0)


def test_key_log_in_decryption_secrets_block():
    _f, _t, _r, reader = read(raw("tls_dsb.pcapng"))
    assert len(reader.secrets) == 1
    assert b"CLIENT_HANDSHAKE_TRAFFIC_SECRET" in reader.secrets[0]


def _blk(btype: int, body: bytes, e: str = "<") -> bytes:
    body += b"\x00" * (-len(body) % 4)
    n = 12 + len(body)
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def test_rare_blocks_spb_pb_nrb_isb_tsresol_and_big_endian_section():
    """Blocks dumpcap never writes, built around a real frame of lo_tcp.pcap."""
    data = raw("lo_tcp.pcap")
    first = record_offsets_pcap(data)[0]
    pkt = data[first + 16 : first + 16 + struct.unpack_from("<I", data, first + 8)[0]]
    shb = lambda e: _blk(0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1), e)  # noqa: E731
    opt_ms = struct.pack("<HHB3x", 9, 1, 3) + b"\x00" * 4  # if_tsresol = 10^-3 s
    idb = _blk(1, struct.pack("<HHI", 1, 0, 0) + opt_ms)
    t_ms = 1_700_000_000_123  # milliseconds
    epb = _blk(6, struct.pack("<IIIII", 0, t_ms >> 32, t_ms & 0xFFFFFFFF, len(pkt), len(pkt)) + pkt)
    spb = _blk(3, struct.pack("<I", len(pkt)) + pkt)
    pb = _blk(
        2,
        struct.pack("<HHIIII", 0, 0, t_ms >> 32, (t_ms + 1) & 0xFFFFFFFF, len(pkt), len(pkt)) + pkt,
    )
    nrb = _blk(4, struct.pack("<HH4s", 1, 4, bytes([127, 0, 0, 1])) + b"\x00" * 4)
    isb = _blk(5, struct.pack("<III", 0, 0, 0))
    be_idb = _blk(1, struct.pack(">HHI", 101, 0, 0), ">")
    t_us = 1_700_000_000_999_000
    be_epb = _blk(
        6,
        struct.pack(">IIIII", 0, t_us >> 32, t_us & 0xFFFFFFFF, len(pkt) - 14, len(pkt) - 14)
        + pkt[14:],
        ">",
    )
    capture = shb("<") + idb + nrb + epb + spb + pb + isb + shb(">") + be_idb + be_epb
    frames, ts, rejects, r = read(capture)
    assert rejects == []
    assert frames == [1, 2, 3, 4]
    assert ts == [1_700_000_000_123_000, 1_700_000_000_123_000, 1_700_000_000_124_000, t_us]
    assert r.stats.blocks == {"section": 2, "idb": 2, "nrb": 1, "isb": 1}
    assert r.interfaces[0].linktype == 101


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["lo_tcp.pcap", "lo_tcp.pcapng", "any_sll2.pcapng", "dns.pcapng"]),
    st.integers(min_value=0, max_value=3000),
    st.binary(min_size=0, max_size=300),
    st.integers(min_value=0, max_value=3000),
)
def test_any_damage_never_raises_and_every_record_is_counted(tmp_path_factory, name, at, junk, cut):
    """Any bytes spliced in and any cut: no exception (ParserGaveUp is the contract's 'not
    this format'), and records in = parsed + rejected."""
    data = raw(name)
    head = 24 if name.endswith(".pcap") else 28
    at = head + at % max(len(data) - head, 1)
    damaged = data[:at] + junk + data[at + len(junk) // 2 :]
    damaged = damaged[: max(head, len(damaged) - cut)]
    path = tmp_path_factory.mktemp("h") / name
    path.write_bytes(damaged)
    try:
        src, con = parse_into_memory(path)
    except ParserGaveUp:
        return
    info = con.execute("SELECT packets FROM capture_info").fetchone()[0]
    ocpp = con.execute("SELECT count(*) FROM ocpp_messages").fetchone()[0]
    assert src.records_seen == info + ocpp
    assert src.records_seen + len(src.rejects) >= info


def test_parser_counts_into_duckdb():
    src, con = parse_into_memory(FIX / "lo_tcp.pcapng")
    assert src.records_seen == 23
    rows = con.execute(
        "SELECT client_ip, server_port, state, history FROM tcp_flows ORDER BY flow_id"
    ).fetchall()
    assert rows[0][2:] == ("established", "ShADadFf")
    assert ("127.0.0.1", 47003, "refused", "Sr") in rows
    assert isinstance(con, duckdb.DuckDBPyConnection)


def test_dns_answers_and_errors():
    src, con = parse_into_memory(FIX / "dns.pcapng")
    assert src.records_seen == 6
    rows = con.execute(
        "SELECT qname, rcode_name, answers, client_ip, locator FROM dns_answers ORDER BY ts"
    ).fetchall()
    assert rows == [
        ("csms.test", "NOERROR", ["127.0.0.1"], "127.0.0.31", "frame 2"),
        ("csms.tset", "NXDOMAIN", [], "127.0.0.31", "frame 4"),
        ("ocpp.broken.test", "SERVFAIL", [], "127.0.0.31", "frame 6"),
    ]
    events = con.execute("SELECT kind, code, locator FROM events ORDER BY ts").fetchall()
    assert events == [("dns.error", "NXDOMAIN", "frame 4"), ("dns.error", "SERVFAIL", "frame 6")]


def test_damaged_files_through_ingest(tmp_path):
    """A truncated capture, one with a corrupt block in the middle and a text file named
    .pcap, as a field bundle: clear evidence rows, every good packet kept."""
    from forensics import ingest

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    ng = raw("lo_tcp.pcapng")
    (bundle / "cut.pcapng").write_bytes(ng[: block_offsets(ng)[-2] + 20])
    bad = bytearray(ng)
    bad[1368 + 4 : 1368 + 8] = b"\x03\x00\x00\x00"
    (bundle / "corrupt.pcapng").write_bytes(bytes(bad))
    (bundle / "export.pcap").write_text("No.  Time  Source  Destination  Protocol\n" * 20)
    ingest.ingest([bundle], tmp_path / "case.duckdb", tmp_path / "work")
    con = store.connect(tmp_path / "case.duckdb", read_only=True)
    ev = con.execute(
        "SELECT path, kind, status, records_parsed, records_rejected, message FROM evidence "
        "ORDER BY path"
    ).fetchall()
    assert ev[0][:5] == ("corrupt.pcapng", "pcap", "partial", 22, 1)
    assert ev[1][:5] == ("cut.pcapng", "pcap", "partial", 22, 1)
    assert ev[2][:3] == ("export.pcap", None, "unrecognised")
    rej = con.execute(
        "SELECT e.path, r.locator, r.reason, r.detail FROM rejects r JOIN evidence e USING (file_id) "
        "ORDER BY e.path"
    ).fetchall()
    assert rej[0][:3] == ("corrupt.pcapng", "offset 1368", "pcapng.corrupt_block")
    assert "skipped 128 bytes to the next valid block at offset 1496" in rej[0][3]
    assert rej[1][:3] == ("cut.pcapng", "frame 23", "pcap.truncated_record")
    assert con.execute("SELECT sum(packets) FROM capture_info").fetchone() == (44,)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["pcap-healthy", "pcap-client-cert", "pcap-wrong-url"]),
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=20000), st.integers(1, 255)), max_size=40
    ),
)
def test_flipped_bytes_in_tls_and_websocket_payloads_never_raise(tmp_path_factory, bundle, flips):
    """Bytes flipped anywhere in real TLS/WebSocket/OCPP captures: the parser keeps going."""
    data = bytearray((ROOT / "sample_traces" / bundle / "capture.pcapng").read_bytes())
    for pos, x in flips:
        p = 28 + pos % (len(data) - 28)
        data[p] ^= x
    path = tmp_path_factory.mktemp("f") / "capture.pcapng"
    path.write_bytes(bytes(data))
    try:
        src, con = parse_into_memory(path)
    except ParserGaveUp:
        return
    info = con.execute("SELECT packets FROM capture_info").fetchone()[0]
    ocpp = con.execute("SELECT count(*) FROM ocpp_messages").fetchone()[0]
    assert src.records_seen == info + ocpp
