"""The bulk fast paths agree with the careful per-record code they bypass: the pcapng EPB
walk, the flow-key hash index, and WebSocket segments holding one whole text frame."""

from __future__ import annotations

import hashlib
import io
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_pcap_reader import CAPTURES, block_offsets, raw

from forensics import ingest, store
from forensics.parsers.base import Sink, Source
from forensics.parsers.pcap import parser, pcapng, tcp
from forensics.parsers.pcap.decode import decode
from forensics.parsers.pcap.reader import CaptureReader
from forensics.parsers.pcap.websocket import WsFlow, text_frames, unmask

SAMPLES = Path(__file__).resolve().parent.parent / "sample_traces"


def read_all(data: bytes, read_bytes: int):
    rejects, chunks = [], []
    r = CaptureReader(io.BytesIO(data), lambda *a: rejects.append(a[:2]), read_bytes=read_bytes)
    for c in r.chunks():
        chunks.append((c.frame.tolist(), c.ts_us.tolist(), c.caplen.tolist(), c.linktype.tolist()))
    frames = [x for c in chunks for x in c[0]]
    return frames, [x for c in chunks for x in c[1]], rejects, r.stats.skipped_bytes


def walk_both(data: bytes, read_bytes: int, monkeypatch):
    fast = read_all(data, read_bytes)
    with monkeypatch.context() as m:
        m.setattr(pcapng, "NATIVE", "?")  # no section matches: block by block only
        slow = read_all(data, read_bytes)
    return fast, slow


@pytest.mark.parametrize("name", sorted(n for n in CAPTURES if ".pcapng" in n))
@pytest.mark.parametrize("read_bytes", [700, 1 << 20])
def test_epb_runs_read_as_block_by_block(name, read_bytes, monkeypatch):
    fast, slow = walk_both(raw(name), read_bytes, monkeypatch)
    assert fast == slow
    assert len(fast[0]) == CAPTURES[name][0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5000), st.integers(1, 255)), min_size=1, max_size=8))
def test_epb_runs_agree_on_damaged_files(flips):
    data = bytearray(raw("lo_tcp.pcapng"))
    for pos, x in flips:
        data[4 + pos % (len(data) - 4)] ^= x  # the magic stays: a capture still
    mp = pytest.MonkeyPatch()
    try:
        fast, slow = walk_both(bytes(data), 700, mp)
    finally:
        mp.undo()
    assert fast == slow


def read_file(path: Path, read_bytes: int, skip: int = 0):
    """read_all, from a file opened as ingest opens it (the tail is re-read from it)."""
    rejects, frames, ts, skipped = [], [], [], 0
    with open(path, "rb") as fh:
        fh.read(skip)
        r = CaptureReader(fh, lambda *a: rejects.append(a[:2]), read_bytes=read_bytes)
        assert r._reread
        for c in r.chunks():
            frames += c.frame.tolist()
            ts += c.ts_us.tolist()
        skipped = r.stats.skipped_bytes
    return frames, ts, rejects, skipped


@pytest.mark.parametrize("read_bytes", [300, 700, 4096, 1 << 20])
def test_reading_a_file_gives_what_reading_a_stream_gives(tmp_path, read_bytes):
    """A capture file's unconsumed tail is read again with the next block (one copy of
    each byte); chunks, frames, times and rejects are what a stream that cannot seek
    gives, for every fixture, a capture cut mid-block and one with a corrupt block."""
    data = raw("multi_if.pcapng")
    at = block_offsets(data)[8]
    damaged = {
        "cut.pcapng": data[:-7],
        "corrupt.pcapng": data[:at] + b"\xee" * 40 + data[at + 40 :],
    }
    for name, blob in [*((n, raw(n)) for n in CAPTURES if not n.endswith(".gz")), *damaged.items()]:
        path = tmp_path / name
        path.write_bytes(blob)
        assert read_file(path, read_bytes) == read_all(blob, read_bytes), name
    # a capture that starts further into the file (the stream handed over past a header)
    path.write_bytes(b"header" + blob)
    assert read_file(path, read_bytes, skip=6) == read_all(blob, read_bytes)


def tsresol_at(data: bytes) -> int:
    """Offset of the first IDB's if_tsresol value byte."""
    idb = next(o for o in block_offsets(data) if struct.unpack_from("<I", data, o)[0] == 1)
    p = idb + 16
    while struct.unpack_from("<H", data, p)[0] != 9:
        p += 4 + (struct.unpack_from("<H", data, p + 2)[0] + 3) // 4 * 4
    return p + 4


@pytest.mark.parametrize(
    ("resol", "first"),
    [(0x86, []), (0xFF, [("offset 180", "pcapng.bad_option")])],
)
def test_timestamps_outside_the_calendar_are_rejects(resol, first):
    """A flipped if_tsresol (2^-6 s; 2^-127 s, finer than anything 64 bits hold) puts the
    nanosecond tick counts past year 9999: every packet is a reject, never a crash."""
    data = bytearray(raw("lo_tcp.pcapng"))
    data[tsresol_at(bytes(data))] = resol
    frames, _ts, rejects, _skipped = read_all(bytes(data), 1 << 20)
    assert frames == []
    assert rejects == first + [(f"frame {i}", "pcap.bad_timestamp") for i in range(1, 24)]


@pytest.mark.parametrize("name", ["lo_tcp.pcapng", "veth_vlan.pcapng", "multi_if.pcapng"])
def test_flow_ids_survive_hash_collisions(name, monkeypatch):
    """Every flow key hashing alike sends each chunk down the exact path: same flows."""

    def flows(data):
        r = CaptureReader(io.BytesIO(data), lambda *a: None, read_bytes=700)
        ft = tcp.FlowTable()
        out = []
        for c in r.chunks():
            idx, gid, d = ft.update(decode(c))
            out += list(zip(c.frame[idx].tolist(), gid.tolist(), d.tolist(), strict=True))
        return out, ft.n, ft.pkts[: ft.n].tolist(), [ft.history(g) for g in range(ft.n)]

    data = raw(name)
    normal = flows(data)
    monkeypatch.setattr(tcp, "_mix", lambda key: np.zeros(len(key), dtype=np.uint64))
    assert flows(data) == normal
    assert normal[1] >= 1


def ws_frame(opcode, fin, payload: bytes, key: bytes | None, rsv1=False, ext16=False):
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    mb = 0x80 if key is not None else 0
    if n >= 126 or ext16:
        head = bytes([b0, mb | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, mb | n])
    if key is not None:
        head += key
        payload = unmask(payload, key)
    return head + payload


frames = st.builds(
    ws_frame,
    st.sampled_from([0, 1, 1, 1, 2, 8, 9]),
    st.booleans(),
    st.one_of(st.text(max_size=300).map(str.encode), st.binary(max_size=200)),
    st.one_of(st.none(), st.binary(min_size=4, max_size=4)),
    st.booleans(),
    st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(frames, st.integers(0, 400)), min_size=1, max_size=12))
def test_text_frames_match_the_frame_parser(segs):
    """Whatever text_frames takes, feeding the segment to a fresh WebSocket flow
    yields exactly that one text message and consumes it whole."""
    data = [f[:cut] if cut < len(f) and cut % 3 == 0 else f for f, cut in segs]
    buf = b"".join(data)
    off = np.cumsum([0] + [len(x) for x in data[:-1]]).astype(np.int64)
    ln = np.array([len(x) for x in data], dtype=np.int64)
    pos, found = text_frames(np.frombuffer(buf, dtype=np.uint8), off, ln)
    texts = {p: found[k] for k, p in enumerate(pos.tolist())}
    for i, seg in enumerate(data):
        h = WsFlow()
        h.ws, h.streams[0].next = True, 0  # upgraded, in order
        h.feed(0, 0, seg, 7, 99)
        one_text = h.counts == {"c2s": 1, "s2c": 0, "ping": 0, "pong": 0, "binary": 0}
        one_frame = one_text and not h.closes and not h.streams[0].buf and seg[0] == 0x81
        if one_frame and seg[1] & 0x7F != 127 and "\ufffd" not in h.messages[0][3]:
            assert i in texts  # a segment that is one whole UTF-8 text frame is found
        if i in texts:
            assert h.messages == [(0, 7, 99, texts[i])]
            assert h.streams[0].next == len(seg) and not h.streams[0].buf
            taken = WsFlow()
            taken.ws, taken.streams[0].next = True, 0
            assert taken.take_text(0, 0, len(seg), texts[i], 7, 99)
            assert (taken.messages, taken.counts) == (h.messages, h.counts)
            assert taken.streams[0].next == h.streams[0].next
            assert taken.streams[0].consumed == h.streams[0].consumed


@pytest.mark.parametrize("fake_len", [32, 64, 0x1000])
def test_epb_lookalike_inside_packet_bytes(fake_len, monkeypatch):
    """Packet bytes that read like an EPB header (type 6, a plausible length) at a 4-byte
    boundary are no block: the chain breaks there and the per-block walk goes on."""
    data = bytearray(raw("lo_tcp.pcapng"))
    for o in block_offsets(bytes(data)):
        btype, blen = struct.unpack_from("<II", data, o)
        if btype == 6 and blen >= 28 + 48:
            struct.pack_into("<II", data, o + 28 + 16, 6, fake_len)
    fast, slow = walk_both(bytes(data), 1 << 20, monkeypatch)
    assert fast == slow
    assert len(fast[0]) == 23


def evidence_rows(case):
    con = duckdb.connect(str(case))
    try:
        return con.execute(
            "SELECT bundle, path, sha256, size, kind, status, records_parsed, records_rejected "
            "FROM evidence ORDER BY path, file_id"
        ).fetchall()
    finally:
        con.close()


def test_hash_beside_parsing_records_what_hashing_first_does(tmp_path, monkeypatch):
    """A file whose size no other file has is hashed while it is parsed; the evidence is
    the same as hashing first, a second ingest still finds it in the case, and same-size
    files (possible duplicates) are hashed before parsing as before."""
    bundle = tmp_path / "bundle"
    shutil.copytree(SAMPLES / "pcap-wifi-loss", bundle)
    shutil.copy(SAMPLES / "pcap-healthy" / "capture.pcapng", bundle / "other.pcapng")
    shutil.copy(SAMPLES / "pcap-healthy" / "capture.pcapng", bundle / "again.pcapng")
    seen = []
    real = ingest.hash_file
    monkeypatch.setattr(ingest, "hash_file", lambda p: seen.append(p.name) or real(p))
    runs = {}
    for name, beside in (("first", 1 << 62), ("beside", 1)):
        monkeypatch.setattr(ingest, "HASH_BESIDE_BYTES", beside)
        seen.clear()
        case = tmp_path / f"{name}.duckdb"
        rep = ingest.ingest([bundle], case, tmp_path / f"work-{name}")
        assert (rep.duplicates, rep.already_in_case) == (1, 0)
        runs[name] = evidence_rows(case), sorted(seen)
        again = ingest.ingest([bundle], case, tmp_path / f"work-{name}")
        assert again.already_in_case == 4  # the duplicate too
    assert runs["beside"][0] == runs["first"][0]
    shas = {r[1]: r[2] for r in runs["beside"][0]}
    assert (
        shas["capture.pcapng"]
        == hashlib.sha256((bundle / "capture.pcapng").read_bytes()).hexdigest()
    )
    assert all(shas.values())
    assert runs["beside"][1] == runs["first"][1]  # each file hashed once either way


def test_ingest_does_not_import_pandas(tmp_path):
    """pyarrow's first pa.array of a list would import pandas (0.3-0.4 s) only to ask if it
    is a pandas object; ingest primes it without, and pandas still works afterwards."""
    code = f"""if True:
        import sys
        from pathlib import Path
        from forensics import ingest
        rep = ingest.ingest([Path({str(SAMPLES / "pcap-healthy")!r})], Path({str(tmp_path / "c.duckdb")!r}),
                            Path({str(tmp_path / "w")!r}))
        assert rep.records > 0 and not rep.failed, rep
        print("pandas" in sys.modules)
        import pyarrow as pa
        print(type(pa.table({{"a": [1]}}).to_pandas()).__name__)
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "DataFrame"]


CASE_TABLES = ("tcp_flows", "tls_handshakes", "ws_sessions", "ocpp_messages", "events", "rejects")


def case_rows(case) -> dict:
    con = duckdb.connect(str(case))
    try:
        return table_rows(con, CASE_TABLES)
    finally:
        con.close()


def table_rows(con, tables) -> dict:
    """Every row of each table, sorted, without the event ids (numbered as they come)."""
    out = {}
    for t in tables:
        cols = [r[0] for r in con.execute(f"DESCRIBE {t}").fetchall() if r[0] != "event_id"]
        sel = ", ".join(f'"{c}"' for c in cols)
        out[t] = con.execute(f"SELECT {sel} FROM {t} ORDER BY ALL").fetchall()
    return out


@pytest.mark.parametrize("read_bytes", [1 << 15, 8 << 20])
def test_websocket_texts_taken_in_bulk_as_one_by_one(tmp_path, monkeypatch, read_bytes):
    """Flows whose segments in a chunk are all whole text frames in order are taken at
    once; every table (OCPP seq numbering and clock events included) is the same as when
    each segment is taken on its own. Fleet traffic (many WebSocket flows, chunks cut
    across them) and a lossy Wi-Fi capture (retransmissions: the one-by-one path)."""
    sys.path.insert(0, str(SAMPLES.parent / "bench"))
    import _pcap_fleet

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    _pcap_fleet.write(bundle / "fleet.pcapng", 40_000)
    shutil.copy(SAMPLES / "pcap-wifi-loss" / "capture.pcapng", bundle / "wifi.pcapng")
    monkeypatch.setattr(CaptureReader.__init__, "__defaults__", (read_bytes,))
    taken = []
    bulk = parser.Capture._take_texts

    def spy(self, *a):
        out = bulk(self, *a)
        taken.append(0 if out is None else int(out[0].sum()))
        return out

    monkeypatch.setattr(parser.Capture, "_take_texts", spy)
    runs = {}
    for name, on in (("one_by_one", False), ("bulk", True)):
        monkeypatch.setattr(parser.Capture, "bulk", on)
        rep = ingest.ingest([bundle], tmp_path / f"{name}.duckdb", tmp_path / f"w-{name}")
        assert not rep.failed and rep.parsed == 2, rep
        runs[name] = case_rows(tmp_path / f"{name}.duckdb")
    if read_bytes < 1 << 20:  # flows span chunks: later chunks hold their steady state
        assert sum(taken) > 2000
    assert len(runs["bulk"]["ocpp_messages"]) > sum(taken)
    for t in CASE_TABLES:
        assert runs["bulk"][t] == runs["one_by_one"][t], t


def test_capture_tables_built_in_blocks_of_flows_are_the_same(tmp_path, monkeypatch):
    """prepare builds the rows a block of flows at a time (memory of long captures): any
    block size gives the same tables, also where a column is all NULL in some block (its
    type comes from the others) and with DNS rows that belong to no flow."""
    sys.path.insert(0, str(SAMPLES.parent / "bench"))
    import _pcap_fleet

    from forensics.parsers.pcap import tables

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    _pcap_fleet.write(tmp_path / "fleet.pcapng", 20_000)
    # one file of flows and DNS answers: the fleet, then a second section with DNS errors
    dns = (Path(__file__).parent / "fixtures" / "pcap" / "dns.pcapng").read_bytes()
    (bundle / "fleet-dns.pcapng").write_bytes((tmp_path / "fleet.pcapng").read_bytes() + dns)
    shutil.copy(SAMPLES / "pcap-cert-expired" / "capture.pcapng", bundle / "cert.pcapng")
    runs = {}
    for block in (3, 10_000):
        monkeypatch.setattr(tables, "PREPARE_BLOCK", block)
        rep = ingest.ingest([bundle], tmp_path / f"{block}.duckdb", tmp_path / f"w{block}")
        assert not rep.failed, rep
        con = duckdb.connect(str(tmp_path / f"{block}.duckdb"))
        runs[block] = table_rows(con, (*CASE_TABLES, "dns_answers"))
        con.close()
    assert len(runs[3]["tcp_flows"]) > 20 and len(runs[3]["dns_answers"]) == 3
    assert runs[3] == runs[10_000]


def test_many_new_flows_in_one_chunk(tmp_path, monkeypatch):
    """A chunk that brings more than twice the flows seen so far (a fleet reconnecting at
    once after a quiet spell) leaves every new flow's payload kind unknown until its own
    first payload: the same flows, handshakes and sessions as with room for all from the
    start (the kinds of earlier flows were copied onto new ones, which then had no
    handler)."""
    sys.path.insert(0, str(SAMPLES.parent / "bench"))
    import _pcap_fleet

    quiet, burst = tmp_path / "quiet.pcapng", tmp_path / "burst.pcapng"
    _pcap_fleet.write(quiet, 1500)
    _pcap_fleet.write(burst, 40_000)
    rejects: list = []
    readers = [CaptureReader(io.BytesIO(f.read_bytes()), lambda *a: rejects.append(a))
               for f in (quiet, burst)]  # fmt: skip
    chunks = [c for r in readers for c in r.chunks()]
    assert len(chunks) == 2 and not rejects
    seen = {}
    for slots in (1024, 2):
        monkeypatch.setattr(parser, "APP_SLOTS", slots)
        cap = parser.Capture()
        for chunk in chunks:
            cap.feed(chunk)
            if slots == 2 and chunk is chunks[0]:
                assert 2 <= cap.flows.n <= 8  # the burst brings far more than twice that
        assert cap.flows.n > 40
        seen[slots] = (
            cap.app[: cap.flows.n].tolist(),
            {g: type(h).__name__ for g, h in cap.handlers.items()},
            len(cap.ocpp_ready),
        )
    assert seen[2] == seen[1024]


def test_capture_messages_are_numbered_in_frame_order(tmp_path, monkeypatch):
    """OCPP messages are collected flow by flow; they are numbered (seq) in the order of
    the frames that carried them, so one charger's several flows in one chunk (fleet
    traffic: every charger has a few) neither make clock jumps that never were (capture
    time only moves forward) nor hide a CALLRESULT behind its CALL from the pairing."""
    sys.path.insert(0, str(SAMPLES.parent / "bench"))
    import _pcap_fleet

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    _pcap_fleet.write(bundle / "fleet.pcapng", 60_000)
    monkeypatch.setattr(parser, "OCPP_BATCH", 2000)  # several staged batches
    rep = ingest.ingest([bundle], tmp_path / "case.duckdb", tmp_path / "w")
    assert rep.parsed == 1 and not rep.failed, rep
    con = duckdb.connect(str(tmp_path / "case.duckdb"))
    flows_per_charger = con.execute(
        "SELECT max(n) FROM (SELECT count(*) n FROM ws_sessions GROUP BY charger_id)"
    ).fetchone()[0]
    messages, backwards = con.execute(
        """SELECT count(*), count(*) FILTER (WHERE line < prev OR ts < prev_ts)
           FROM (SELECT line, ts, lag(line) OVER w prev, lag(ts) OVER w prev_ts
                 FROM ocpp_messages WINDOW w AS (ORDER BY seq))"""
    ).fetchone()
    jumps = con.execute("SELECT count(*) FROM events WHERE kind = 'clock.jump'").fetchone()[0]
    # a CALL whose CALLRESULT (same charger and unique id) came later has its latency
    unpaired = con.execute(
        """SELECT count(*) FROM ocpp_messages c
           WHERE c.message_type = 2 AND c.response_ms IS NULL AND EXISTS (
             SELECT 1 FROM ocpp_messages r
             WHERE r.message_type = 3 AND r.charger_id = c.charger_id
               AND r.unique_id = c.unique_id AND r.line > c.line)"""
    ).fetchone()[0]
    con.close()
    assert flows_per_charger > 2 and messages > 5000
    assert (backwards, jumps, unpaired) == (0, 0, 0)


def test_ocpp_frames_number_packed_and_listed_messages_by_frame():
    """Messages handed on packed (the bulk path) and as Python values (a flow's own list)
    come out as one table, each numbered by its frame and its place among the messages
    that frame completed; what is not a JSON array as _is_array sees it (white space,
    also non-ASCII, before the '[' is allowed) is left out."""
    from forensics.parsers.pcap.websocket import SEQ_FRAME_BITS, OcppFrames, Texts

    f = OcppFrames()
    listed = ['[2,"a","Heartbeat",{}]', "{}", '[3,"a",{}]']  # frame 40 completes two
    f.add_columns("cp-1", "1.6", [0, 1, 1], [40, 10, 40], [400, 100, 401], listed)
    texts = ['[3,"b",{}]', ' \n[2,"c","X",{}]', "hello", '\u00a0[3,"é",{}]', "", "[]"]
    n = len(texts)
    side = np.array([1, 0, 0, 1, 0, 1], dtype=np.int64)
    frame = np.array([20, 30, 35, 50, 55, 60], dtype=np.int64)
    cp, version = np.full(n, "cp-2", dtype=object), np.full(n, None, dtype=object)
    packed = Texts.pack([t.encode() for t in texts])
    f.add_packed(frame * 10, cp, side, frame, version, packed)
    assert len(f) == 2 + 4
    t = f.table().to_pydict()
    rows = sorted(
        zip(t["seq"], t["line"], t["frame"], t["direction"], t["charger_id"], strict=True)
    )
    assert rows == [
        (20 << SEQ_FRAME_BITS, 20, '[3,"b",{}]', "csms_to_cp", "cp-2"),
        (30 << SEQ_FRAME_BITS, 30, ' \n[2,"c","X",{}]', "cp_to_csms", "cp-2"),
        (40 << SEQ_FRAME_BITS, 40, '[2,"a","Heartbeat",{}]', "cp_to_csms", "cp-1"),
        ((40 << SEQ_FRAME_BITS) + 1, 40, '[3,"a",{}]', "csms_to_cp", "cp-1"),
        (50 << SEQ_FRAME_BITS, 50, '\u00a0[3,"é",{}]', "csms_to_cp", "cp-2"),
        (60 << SEQ_FRAME_BITS, 60, "[]", "csms_to_cp", "cp-2"),
    ]
    assert t["locator"][t["line"].index(50)] == "frame 50"
    assert t["ts"][t["line"].index(50)].timestamp() == 500 / 1e6


def test_read_ahead_gives_what_reading_in_turn_gives(tmp_path, monkeypatch):
    """The next chunk read and decoded in a worker thread: same tables, rejects (with
    their offsets) and notes as reading chunk after chunk, on fleet traffic cut into
    many chunks with damage in the middle and a truncated end."""
    sys.path.insert(0, str(SAMPLES.parent / "bench"))
    import _pcap_fleet

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    _pcap_fleet.write(tmp_path / "fleet.pcapng", 30_000)
    data = bytearray((tmp_path / "fleet.pcapng").read_bytes())
    blocks = block_offsets(bytes(data))
    for at in (blocks[len(blocks) // 3], blocks[len(blocks) // 2]):
        data[at : at + 64] = b"\xee" * 64  # a block header and its start
    (bundle / "damaged.pcapng").write_bytes(bytes(data[: len(data) - 100]))
    monkeypatch.setattr(CaptureReader.__init__, "__defaults__", (1 << 16,))
    runs = {}
    for on in (False, True):
        monkeypatch.setattr(parser, "READ_AHEAD", on)
        case = tmp_path / f"{on}.duckdb"
        rep = ingest.ingest([bundle], case, tmp_path / f"w-{on}")
        assert rep.parsed == 1 and rep.rejects >= 2, rep
        con = duckdb.connect(str(case))
        notes = con.execute(
            "SELECT records_parsed, records_rejected, notes FROM evidence"
        ).fetchall()
        con.close()
        runs[on] = case_rows(case), notes
    assert runs[True] == runs[False]


def test_ocpp_close_in_a_small_duckdb_budget_gives_the_same_rows(tmp_path, monkeypatch):
    """A capture stages its OCPP frames with DuckDB's automatic checkpoint deferred, on
    STAGING_THREADS, and closes them under CLOSE_MEMORY with all threads: the same tables as
    under the case's own limit, and the settings are back to the case's afterwards (fleet
    traffic, several staged batches)."""
    sys.path.insert(0, str(SAMPLES.parent / "bench"))
    import _pcap_fleet

    cap = tmp_path / "fleet.pcapng"
    _pcap_fleet.write(cap, 40_000)
    monkeypatch.setattr(parser, "OCPP_BATCH", 1000)
    monkeypatch.setattr(CaptureReader.__init__, "__defaults__", (1 << 16,))
    seen: list[tuple[str, str]] = []

    def setting(con, name):
        return con.execute("SELECT current_setting(?)", [name]).fetchone()[0]

    stage, close = parser.tables.stage_ocpp, parser.close_frames
    monkeypatch.setattr(
        parser.tables,
        "stage_ocpp",
        lambda src, sink, f, **kw: (
            seen.append(("stage", setting(sink.con, "checkpoint_threshold")))
            or seen.append(("stage threads", setting(sink.con, "threads")))
            or stage(src, sink, f, **kw)
        ),
    )
    monkeypatch.setattr(
        parser,
        "close_frames",
        lambda src, sink: (
            seen.append(("close", setting(sink.con, "memory_limit")))
            or seen.append(("close threads", setting(sink.con, "threads")))
            or close(src, sink)
        ),
    )
    runs = {}
    for budget in ("64GB", "64MB"):  # 64GB: above the case's limit, so not applied
        monkeypatch.setattr(parser, "CLOSE_MEMORY", budget)
        case = tmp_path / f"{budget}.duckdb"
        con = store.connect(case)
        con.execute("SET threads = 2")  # the case's own, whatever this machine has
        names = ("memory_limit", "checkpoint_threshold", "threads")
        before = [setting(con, n) for n in names]
        parser.PcapParser().parse(Source(cap, cap.name), Sink(con, 1, set(store.table_names(con))))
        assert [setting(con, n) for n in names] == before
        con.close()
        runs[budget] = case_rows(case)
    # while packets are read: STAGING_CHECKPOINT (as DuckDB shows it); the rest at the end
    stages = [v for k, v in seen if k == "stage"]
    assert stages.count("14.9 GiB") >= 6 and set(stages) == {"14.9 GiB", "16.0 MiB"}
    assert [v for k, v in seen if k == "close"] == ["488.2 MiB", "61.0 MiB"]
    threads = [v for k, v in seen if k == "stage threads"]
    assert threads.count(int(parser.STAGING_THREADS)) >= 6, threads
    assert [v for k, v in seen if k == "close threads"] == [2, 2]
    assert len(runs["64MB"]["ocpp_messages"]) > 4000
    for t in CASE_TABLES:
        assert runs["64MB"][t] == runs["64GB"][t], t


def test_frames_parsed_between_batches_close_as_staged_whole(tmp_path):
    """ocpp_frames.parse_staged (the capture parses each staged batch while it reads on):
    the same messages, events and rejects as parsing everything at close, on real CSMS
    frames from several chargers with broken ones mixed in."""
    import json

    import pyarrow as pa

    from forensics.parsers import ocpp_frames

    rows = []
    for path in sorted(SAMPLES.glob("*/csms-ocpp.jsonl"))[:4]:
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # the samples' own damaged lines: the log parser's business
            if "frame" in rec and "direction" in rec:
                rows.append(
                    (rec["ts"], rec["charger_id"], rec["direction"], json.dumps(rec["frame"]))
                )
    rows[5] = (*rows[5][:3], "[2, 'not json'")  # a reject near the start, one per batch later
    rows[900] = (*rows[900][:3], '[9, "x", {}]')
    rows[-3] = (rows[-3][0], "", *rows[-3][2:])
    batches = [rows[i : i + 700] for i in range(0, len(rows), 700)]
    assert len(batches) >= 4

    def table(batch, first):
        ts = pa.array([r[0] for r in batch]).cast(pa.timestamp("us", tz="UTC"))
        lines = list(range(first, first + len(batch)))
        return pa.table({"ts": ts, "charger_id": [r[1] for r in batch],
                         "direction": [r[2] for r in batch], "frame": [r[3] for r in batch],
                         "locator": [f"line {n}" for n in lines], "line": lines})  # fmt: skip

    runs = {}
    for early in (False, True):
        case = tmp_path / f"{early}.duckdb"
        con = store.connect(case)
        src, sink = Source(case, "frames"), Sink(con, 1, set(store.table_names(con)))
        first = 1
        for b in batches:
            ocpp_frames.store_frames(src, sink, table(b, first))
            first += len(b)
            if early:
                ocpp_frames.parse_staged(sink)
        assert ocpp_frames.close_frames(src, sink) == len(rows) - 3
        for r in src.rejects:
            con.execute(
                "INSERT INTO rejects VALUES (1, ?, ?, ?, ?)",
                [r.locator, r.reason, r.excerpt, r.detail],
            )
        con.close()
        runs[early] = case_rows(case), [(r.locator, r.reason) for r in src.rejects]
    assert runs[True] == runs[False]
    assert [loc for loc, _ in runs[True][1]] == ["line 6", "line 901", f"line {len(rows) - 2}"]


def test_capture_inside_a_callers_transaction_rolls_back_whole(tmp_path):
    """Parsed inside a caller's open transaction, a capture writes everything on that
    connection (no worker cursor whose commits would outlive the rollback): before the
    rollback the rows are those of a capture parsed on its own, after it nothing is left."""
    sys.path.insert(0, str(SAMPLES.parent / "bench"))
    import _pcap_fleet

    cap = tmp_path / "fleet.pcapng"
    _pcap_fleet.write(cap, 30_000)
    tables = ("tcp_flows", "ws_sessions", "ocpp_messages", "events")

    def rows(con):
        return table_rows(con, tables)

    def parse(con):
        parser.PcapParser().parse(Source(cap, cap.name), Sink(con, 1, set(store.table_names(con))))

    alone = store.connect(tmp_path / "alone.duckdb")
    parse(alone)
    expected = rows(alone)
    alone.close()
    assert all(expected[t] for t in tables), {t: len(v) for t, v in expected.items()}

    con = store.connect(tmp_path / "txn.duckdb")
    con.execute("BEGIN TRANSACTION")
    parse(con)
    assert rows(con) == expected
    con.execute("ROLLBACK")
    assert all(not v for v in rows(con).values())
    con.close()


def test_tls_flows_past_their_handshake_follow_only_alerts_and_report_the_same(
    tmp_path, monkeypatch
):
    """Once a finished handshake has QUIET_AFTER application records each way, only its
    alerts are looked at: every table is the same as when each record is still counted
    (fleet traffic with long wss:// sessions and refused handshakes, plus every sample
    capture: expired and unknown certificates, client certificates, TLS 1.3 key logs)."""
    sys.path.insert(0, str(SAMPLES.parent / "bench"))
    import _pcap_fleet

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    _pcap_fleet.write(bundle / "fleet.pcapng", 40_000)
    for cap in sorted(SAMPLES.glob("pcap-*/*.pcap*")):
        shutil.copy(cap, bundle / f"{cap.parent.name}.pcapng")
    quiet = []
    feed = parser.Capture.feed

    def spy(self, *a):
        feed(self, *a)
        quiet.append(len(self.quiet))

    monkeypatch.setattr(parser.Capture, "feed", spy)
    runs = {}
    for name, after in (("all_records", 10**9), ("quiet", parser.QUIET_AFTER)):
        monkeypatch.setattr(parser, "QUIET_AFTER", after)
        rep = ingest.ingest([bundle], tmp_path / f"{name}.duckdb", tmp_path / f"w-{name}")
        assert not rep.failed, rep
        runs[name] = case_rows(tmp_path / f"{name}.duckdb")
    assert max(quiet) > 10, "no TLS flow went quiet"
    for t in CASE_TABLES:
        assert runs["quiet"][t] == runs["all_records"][t], t


def test_a_chargers_late_attributed_flow_is_numbered_in_frame_order(tmp_path):
    """A charger whose first session names no charger in its path (attributed at the end,
    by its address in the inventory) has its messages numbered in frame order with those
    of its other sessions: no clock jump that never was."""
    sys.path.insert(0, str(SAMPLES.parent / "bench"))
    import _pcap_fleet

    _pcap_fleet.write(tmp_path / "fleet.pcapng", 30_000)
    data = (tmp_path / "fleet.pcapng").read_bytes()
    assert data.count(b"GET /ocpp/CP-10 HTTP") > 1
    hidden = data.replace(b"GET /ocpp/CP-10 HTTP", b"GET /////////// HTTP", 1)  # the first
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "capture.pcapng").write_bytes(hidden)
    (bundle / "chargers.csv").write_text("charger_id,ip\nCP-10,10.0.0.12\n")
    rep = ingest.ingest([bundle], tmp_path / "case.duckdb", tmp_path / "w")
    assert rep.parsed == 2 and not rep.failed, rep
    con = duckdb.connect(str(tmp_path / "case.duckdb"))
    how = con.execute(
        "SELECT DISTINCT attributed_by FROM ws_sessions WHERE charger_id = 'CP-10'"
    ).fetchall()
    backwards, jumps = con.execute(
        """SELECT count(*) FILTER (WHERE line < prev),
                  (SELECT count(*) FROM events WHERE kind = 'clock.jump')
           FROM (SELECT line, lag(line) OVER (ORDER BY seq) prev FROM ocpp_messages
                 WHERE charger_id = 'CP-10')"""
    ).fetchone()
    con.close()
    assert sorted(how) == [("inventory_ip",), ("ws_path",)]
    assert (backwards, jumps) == (0, 0)


def test_frames_attributed_only_at_the_end_are_stored_with_the_rest(tmp_path, monkeypatch):
    """WebSocket flows whose upgrade path names no charger keep their OCPP frames until the
    end (attributed then by address or manifest) and are staged after the packet loop's
    batches: every table is the same with the worker threads as reading in turn, and those
    flows' messages are in ocpp_messages under the manifest's charger."""
    sys.path.insert(0, str(SAMPLES.parent / "bench"))
    import _pcap_fleet

    _pcap_fleet.write(tmp_path / "fleet.pcapng", 30_000)
    data = (tmp_path / "fleet.pcapng").read_bytes()
    hidden = data.replace(b"GET /ocpp/CP-10 HTTP", b"GET /////////// HTTP")
    assert hidden != data
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "capture.pcapng").write_bytes(hidden)
    (bundle / "manifest.toml").write_text('[defaults]\ncharger_id = "CP-10"\n')
    runs = {}
    for on in (False, True):
        monkeypatch.setattr(parser, "READ_AHEAD", on)
        case = tmp_path / f"{on}.duckdb"
        rep = ingest.ingest([bundle], case, tmp_path / f"w-{on}")
        assert rep.parsed == 2 and not rep.failed, rep
        runs[on] = case_rows(case)
    assert runs[True] == runs[False]
    con = duckdb.connect(str(tmp_path / "True.duckdb"))
    n = con.execute("SELECT count(*) FROM ocpp_messages WHERE charger_id = 'CP-10'").fetchone()[0]
    con.close()
    assert n > 100
