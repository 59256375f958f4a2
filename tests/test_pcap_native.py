"""The native scanner (parsers/pcap/_pcapscan.c) gives what the numpy/Python code it stands
in for gives: the pcapng EPB walk (pcapng._EpbRun), the header decode (decode.decode_numpy)
and the WebSocket text decode (websocket.text_frames' loop), on every real capture
here, on their damaged copies, and on fuzzed packets and frames."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_pcap_fastpaths import frames
from test_pcap_reader import CAPTURES, FIX, block_offsets, raw

from forensics.parsers.pcap import decode as dec
from forensics.parsers.pcap import pcapng, tcp, websocket
from forensics.parsers.pcap.reader import CaptureReader, Chunk

SAMPLES = Path(__file__).resolve().parent.parent / "sample_traces"
SAMPLE_CAPTURES = sorted(SAMPLES.glob("pcap-*/*.pcap*"))
LINKS = [0, 1, 12, 14, 101, 105, 108, 113, 228, 229, 276]


def test_native_scanner_is_built():
    assert dec._pcapscan is not None and pcapng._pcapscan is not None, (
        "parsers/pcap/_pcapscan.c was not built: run scripts/setup "
        "(or .venv/bin/python -m pip install -c constraints.txt --no-deps -e .)"
    )


def same_packets(chunk: Chunk) -> None:
    native, ref = dec.decode(chunk), dec.decode_numpy(chunk)
    for f in dataclasses.fields(dec.Packets):
        if f.name == "chunk":
            continue
        a, b = getattr(native, f.name), getattr(ref, f.name)
        assert a.dtype == b.dtype and np.array_equal(a, b), f.name


def chunks(data: bytes, read_bytes: int, monkeypatch=None, numpy_walk=False):
    rejects = []
    if numpy_walk:
        monkeypatch.setattr(pcapng, "_pcapscan", None)
    try:
        r = CaptureReader(io.BytesIO(data), lambda *a: rejects.append(a), read_bytes=read_bytes)
        out = list(r.chunks())
    finally:
        if numpy_walk:
            monkeypatch.undo()
    return out, rejects


def walked(cs) -> list:
    cols = ("frame", "file_off", "data_off", "ts_us", "caplen", "origlen", "linktype")
    return [tuple(getattr(c, k).tolist() for k in cols) for c in cs]


CAPTURE_BYTES = [pytest.param(lambda n=n: raw(n), id=n) for n in sorted(CAPTURES)] + [
    pytest.param(lambda p=p: p.read_bytes(), id=p.parent.name + "/" + p.name)
    for p in SAMPLE_CAPTURES
]


@pytest.mark.parametrize("get", CAPTURE_BYTES)
@pytest.mark.parametrize("read_bytes", [600, 1 << 20])
def test_real_captures_walk_and_decode_as_numpy(get, read_bytes, monkeypatch):
    data = get()
    native, rej_n = chunks(data, read_bytes)
    ref, rej_r = chunks(data, read_bytes, monkeypatch, numpy_walk=True)
    assert walked(native) == walked(ref) and rej_n == rej_r
    assert sum(len(c) for c in native) > 0
    for c in native:
        same_packets(c)


def _packets() -> list[tuple[int, bytes]]:
    """(link type, bytes) of every packet of the fixture captures: seeds for the fuzz."""
    out = []
    for name in sorted(CAPTURES):
        for c, _ in [chunks(raw(name), 1 << 20)]:
            for ch in c:
                for o, n, lt in zip(
                    ch.data_off.tolist(), ch.caplen.tolist(), ch.linktype.tolist(), strict=True
                ):
                    out.append((lt, bytes(ch.buf[o : o + n])))
    return out


SEEDS = _packets()


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(SEEDS) - 1),
            st.sampled_from([None, *LINKS]),  # None: the packet's own link type
            st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
            st.integers(0, 400),  # captured length cut
        ),
        min_size=1,
        max_size=30,
    ),
    st.binary(max_size=8),
)
def test_fuzzed_packets_decode_as_numpy(specs, tail):
    """Real packets with bytes overwritten (VLAN tags, IP versions, header lengths, IPv6
    extension chains, TCP offsets all get hit), cut short, or read as another link type."""
    buf, offs, caps, links = bytearray(16), [], [], []  # a record header comes first
    for i, link, writes, cut in specs:
        lt, pkt = SEEDS[i]
        pkt = bytearray(pkt)
        for pos, val in writes:
            if pkt:
                pkt[pos % len(pkt)] = val
        pkt = pkt[: min(cut, len(pkt))]
        offs.append(len(buf))
        caps.append(len(pkt))
        links.append(lt if link is None else link)
        buf += pkt
    buf += tail
    n = len(offs)
    i64 = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    chunk = Chunk(bytes(buf), i64(offs), i64(caps), i64(caps), i64([0] * n), i64(links),
                  i64(range(1, n + 1)), i64(offs))  # fmt: skip
    same_packets(chunk)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(sorted(n for n in CAPTURES if ".pcapng" in n)),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=10),
    st.integers(0, 3000),
)
def test_epb_run_on_damaged_bytes_as_numpy(name, flips, cut):
    """From every block start and every 4-byte offset near the damage, the native run
    takes the same blocks as _EpbRun and stops at the same place (and stays inside the
    buffer, cut at any length)."""
    data = bytearray(raw(name))
    for pos, x in flips:
        data[pos % len(data)] ^= x
    data = bytes(data[: len(data) - cut])
    starts = set(range(0, min(len(data), 4096), 4))
    starts |= {p - p % 4 for p, _ in flips if p % len(data) < len(data)}
    native, ref = pcapng._NativeRun(data), pcapng._EpbRun(data)
    for off in sorted(s for s in starts if s <= len(data)):
        (got, end), (want, want_end) = native.run(off), ref.run(off)
        assert (got.tolist(), end) == (want.tolist(), want_end), off


def test_damaged_fixture_walks_and_decodes_as_numpy(monkeypatch):
    """A corrupt block in the middle and a cut end: same chunks, rejects and packets."""
    data = bytearray(raw("multi_if.pcapng"))
    at = block_offsets(bytes(data))[8]
    data[at : at + 40] = b"\xee" * 40  # a block header and its start
    data = bytes(data[:-7])
    native, rej_n = chunks(data, 500)
    ref, rej_r = chunks(data, 500, monkeypatch, numpy_walk=True)
    assert walked(native) == walked(ref) and rej_n == rej_r and len(rej_n) >= 2
    for c in native:
        same_packets(c)


def test_native_refuses_what_lies_outside_the_buffer():
    i64 = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    chunk = Chunk(b"\x00" * 40, i64([0, 30]), i64([20, 20]), i64([20, 20]), i64([0, 0]),
                  i64([1, 1]), i64([1, 2]), i64([0, 30]))  # fmt: skip
    with pytest.raises(ValueError, match="packet 1 lies outside"):
        dec.decode(chunk)
    with pytest.raises(ValueError, match="aligned"):
        pcapng._NativeRun(raw("lo_tcp.pcapng")).run(2)
    offs, end = pcapng._NativeRun(b"\x06\x00\x00\x00" * 3).run(0)
    assert (offs.tolist(), end) == ([], 0)
    assert (FIX / "lo_tcp.pcapng").exists()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(frames, st.integers(0, 400)), min_size=1, max_size=12))
def test_websocket_texts_as_the_python_loop(segs):
    """Whole text frames found in bulk (masked or not, any bytes: a frame that is not
    UTF-8 is left out) are the same texts natively as in the Python loop."""
    data = [f[:cut] if cut < len(f) and cut % 3 == 0 else f for f, cut in segs]
    buf = b"".join(data)
    off = np.cumsum([0] + [len(x) for x in data[:-1]]).astype(np.int64)
    ln = np.array([len(x) for x in data], dtype=np.int64)
    a = np.frombuffer(buf, dtype=np.uint8)
    pos, native = websocket.text_frames(a, off, ln)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(websocket, "_pcapscan", None)
        pos_py, loop = websocket.text_frames(a, off, ln)
    assert pos.tolist() == pos_py.tolist()
    assert native.bounds.tolist() == loop.bounds.tolist()
    assert native.data.tobytes() == loop.data.tobytes()


# byte runs around every rule of well-formed UTF-8 (RFC 3629 table 3-7): the lead byte
# ranges, their second-byte limits, overlong forms, surrogates, past U+10FFFF, truncation
UTF8_PIECES = [
    b"a", b"[", b"\x7f", b"\xc2\x80", b"\xdf\xbf", b"\xc0\x80", b"\xc1\xbf", b"\xe0\xa0\x80",
    b"\xe0\x9f\xbf", b"\xe1\x80\x80", b"\xec\xbf\xbf", b"\xed\x9f\xbf", b"\xed\xa0\x80",
    b"\xee\x80\x80", b"\xef\xbf\xbf", b"\xf0\x90\x80\x80", b"\xf0\x8f\xbf\xbf",
    b"\xf1\x80\x80\x80", b"\xf3\xbf\xbf\xbf", b"\xf4\x8f\xbf\xbf", b"\xf4\x90\x80\x80",
    b"\xf5\x80\x80\x80", b"\xff", b"\x80", b"\xbf", b"\xe2\x82", b"\xf0\x9f\x98", b"\xc3",
]  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.lists(st.lists(st.sampled_from(UTF8_PIECES), max_size=6), min_size=1, max_size=8))
def test_packed_texts_are_utf8_as_python_decodes_it(texts):
    """pack_texts' UTF-8 check says what Python's strict decoder says, text by text."""
    raw = [b"".join(t) for t in texts]
    buf = b"".join(raw)
    end = np.cumsum([len(t) for t in raw]).astype(np.int64)
    start = end - [len(t) for t in raw]
    out, ok = np.empty(len(buf), np.uint8), np.empty(len(raw), np.uint8)
    dec._pcapscan.pack_texts(buf, start, end, np.zeros(len(raw), np.int64), out, ok)

    def strict(t: bytes) -> bool:
        try:
            t.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True

    assert ok.astype(bool).tolist() == [strict(t) for t in raw]
    assert out.tobytes() == buf


def test_websocket_texts_refuse_what_lies_outside_the_buffer():
    i64 = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    out, ok = np.empty(64, np.uint8), np.empty(2, np.uint8)
    with pytest.raises(ValueError, match="frame 1 lies outside"):
        dec._pcapscan.pack_texts(b"\x81\x02ok", i64([2, 2]), i64([4, 9]), i64([0, 0]), out, ok)
    with pytest.raises(ValueError, match="frame 0 lies outside"):  # no room for a key
        dec._pcapscan.pack_texts(b"\x81\x82ok", i64([2]), i64([4]), i64([1]), out, ok[:1])
    with pytest.raises(ValueError, match="out: 64 bytes, expected 2"):
        dec._pcapscan.pack_texts(b"\x81\x02ok", i64([2]), i64([4]), i64([0]), out, ok[:1])


def flow_state(ft: tcp.FlowTable) -> dict:
    """The flows' state (not the lookup index, which differs between the two paths)."""
    arrays = {k: v for k, v in vars(ft).items() if isinstance(v, np.ndarray) and k[0] != "_"}
    return {k: v[: ft.n].tolist() for k, v in arrays.items()} | {"n": ft.n}


def fold_both(packet_chunks, monkeypatch) -> tuple[dict, dict]:
    out = []
    for native in (True, False):
        with monkeypatch.context() as m:
            if not native:
                m.setattr(tcp, "_pcapscan", None)
            ft = tcp.FlowTable(capacity=4)  # grown while folding, as on long captures
            for pk in packet_chunks:
                ft.update(pk)
            out.append(flow_state(ft))
    return out[0], out[1]


@pytest.mark.parametrize("get", CAPTURE_BYTES)
def test_real_captures_fold_tcp_state_as_numpy(get, monkeypatch):
    cs, _ = chunks(get(), 900)
    native, ref = fold_both([dec.decode(c) for c in cs], monkeypatch)
    assert native == ref


def cut_in_two(chunk, pk, cut: int) -> list:
    """The packets of `pk` (over `chunk`) as two Packets objects cut at `cut`, as two chunks
    of a capture would give them (an empty side is left out)."""
    n = len(chunk.frame)
    parts = []
    for a, b in ((0, cut), (cut, n)):
        if b > a:
            sel = slice(a, b)
            sub = Chunk(b"", *(x[sel] for x in (chunk.data_off, chunk.caplen, chunk.origlen,
                        chunk.ts_us, chunk.linktype, chunk.frame, chunk.file_off)))  # fmt: skip
            parts.append(dec.Packets(sub, *(getattr(pk, f.name)[sel] for f in
                                            dataclasses.fields(dec.Packets)[1:])))  # fmt: skip
    return parts


def synthetic(rows, cut: int) -> list:
    """Packets objects of TCP segments between a few endpoints: (client?, flow, flags,
    seq, ack, window, payload length) per row; cut in two chunks at `cut`."""
    n = len(rows)
    i64 = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    frames = i64(range(1, n + 1))
    chunk = Chunk(b"", i64([0] * n), i64([60] * n), i64([60] * n), frames * 1000, i64([1] * n),
                  frames, i64([0] * n))  # fmt: skip
    c_port = i64([40000 + r[1] for r in rows])
    c_side = np.array([r[0] for r in rows])
    u = lambda x: np.asarray(x, dtype=np.uint64)  # noqa: E731
    cip, sip = u([0xFFFF0A000001] * n), u([0xFFFF0A000002] * n)
    pk = dec.Packets(
        chunk=chunk, linkok=np.ones(n, bool), vlan=i64([-1] * n), ip_ver=i64([4] * n),
        src_hi=u([0] * n), src_lo=np.where(c_side, cip, sip), dst_hi=u([0] * n),
        dst_lo=np.where(c_side, sip, cip), proto=i64([6] * n), frag=np.zeros(n, bool),
        l4ok=np.ones(n, bool), sport=np.where(c_side, c_port, 443),
        dport=np.where(c_side, 443, c_port), seq=i64([r[3] for r in rows]),
        ack=i64([r[4] for r in rows]), flags=i64([r[2] for r in rows]),
        win=i64([r[5] for r in rows]), pay_off=i64([0] * n), pay_len=i64([r[6] for r in rows]),
    )  # fmt: skip
    return cut_in_two(chunk, pk, cut)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.integers(0, 3),  # flow
            st.sampled_from([2, 18, 16, 24, 17, 4, 20, 1, 0, 25, 3, 255]),  # SYN, SYN-ACK, ...
            st.integers(0, 4000) | st.sampled_from([0, 2**32 - 1, 2**31]),
            st.sampled_from([0, 1, 100, 2**32 - 1]),
            st.sampled_from([0, 1, 512, 65535]),
            st.sampled_from([0, 0, 1, 100, 1460]),
        ),
        min_size=1,
        max_size=60,
    ),
    st.integers(0, 60),
)
def test_synthetic_segments_fold_as_numpy(rows, cut):
    """Retransmissions, keep-alives, duplicate ACKs, zero windows, sequence wrap, flags in
    any combination, flows and directions interleaved, state carried across a chunk cut."""
    with pytest.MonkeyPatch.context() as mp:
        native, ref = fold_both(synthetic(rows, cut), mp)
    assert native == ref


def test_fold_refuses_flows_beyond_the_table():
    ft = tcp.FlowTable(capacity=4)
    ft.n = 2
    state = tuple(getattr(ft, name) for name in tcp._STATE)
    packets = np.zeros((dec._pcapscan.N_PKT, 1), dtype=np.int64)
    packets[0, 0] = 2  # flow 2 of 2
    with pytest.raises(ValueError, match="packet 0 names no flow"):
        dec._pcapscan.fold(
            packets, state, ft.last_frame, ft.last_ts, ft.hist_frame, ft.hist_ts, ft.n
        )
    with pytest.raises(ValueError, match="beyond"):
        dec._pcapscan.fold(packets, state, ft.last_frame, ft.last_ts, ft.hist_frame, ft.hist_ts, 5)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(sorted(n for n in CAPTURES if ".pcapng" in n)),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=10),
    st.integers(0, 300),
    st.sampled_from([64, 700, 1 << 20]),
)
def test_damaged_pcapng_walks_as_numpy(name, flips, cut, read_bytes):
    """Flipped bytes anywhere (block types, lengths, interface ids, timestamps, trailers)
    and a cut end: the native run and field gathers give the numpy walk's chunks and
    rejects."""
    data = bytearray(raw(name))
    for pos, x in flips:
        data[8 + pos % (len(data) - 8)] ^= x  # the section header's magic stays
    data = bytes(data[: len(data) - cut])
    with pytest.MonkeyPatch.context() as mp:
        native, rej_n = chunks(data, read_bytes)
        ref, rej_r = chunks(data, read_bytes, mp, numpy_walk=True)
    assert walked(native) == walked(ref) and rej_n == rej_r


def many_flows(rows, cut: int) -> list:
    """Packets between random endpoints (address words up to 2^64, so the canonical key
    order and the hash see full values), each row (a, b, a's port, b's port, from a?,
    flags); cut in two chunks at `cut`."""
    n = len(rows)
    i64 = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    u = lambda x: np.asarray(x, dtype=np.uint64)  # noqa: E731
    frames = i64(range(1, n + 1))
    chunk = Chunk(b"", i64([0] * n), i64([60] * n), i64([60] * n), frames * 1000, i64([1] * n),
                  frames, i64([0] * n))  # fmt: skip
    ends = [((r[0] >> 64, r[0] & (2**64 - 1), r[2]), (r[1] >> 64, r[1] & (2**64 - 1), r[3]))
            for r in rows]  # fmt: skip
    src = [a if r[4] else b for (a, b), r in zip(ends, rows, strict=True)]
    dst = [b if r[4] else a for (a, b), r in zip(ends, rows, strict=True)]
    pk = dec.Packets(
        chunk=chunk, linkok=np.ones(n, bool), vlan=i64([-1] * n), ip_ver=i64([6] * n),
        src_hi=u([s[0] for s in src]), src_lo=u([s[1] for s in src]),
        dst_hi=u([x[0] for x in dst]), dst_lo=u([x[1] for x in dst]), proto=i64([6] * n),
        frag=np.zeros(n, bool), l4ok=np.ones(n, bool), sport=i64([s[2] for s in src]),
        dport=i64([x[2] for x in dst]), seq=i64(frames * 10), ack=i64([0] * n),
        flags=i64([r[5] for r in rows]), win=i64([1000] * n), pay_off=i64([0] * n),
        pay_len=i64([0] * n),
    )  # fmt: skip
    return cut_in_two(chunk, pk, cut)


addresses = st.sampled_from([0, 1, 2**64, 2**64 + 1, 2**127, 2**128 - 1]) | st.integers(
    0, 2**128 - 1
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            addresses,
            addresses,
            st.integers(0, 65535),
            st.integers(0, 65535),
            st.booleans(),
            st.sampled_from([2, 18, 16, 24, 4, 1]),
        ),
        min_size=1,
        max_size=400,
    ),
    st.integers(0, 400),
)
def test_many_flows_get_the_ids_and_directions_numpy_gives(rows, cut):
    """Hundreds of flows (the native index grows and is refilled several times), both
    directions of each, endpoints equal in one word and not the other, and flows that
    first appear in the second chunk: the same flow ids, client sides and per-direction
    counts as the numpy path."""
    with pytest.MonkeyPatch.context() as mp:
        native, ref = fold_both(many_flows(rows, cut), mp)
    assert native == ref
    assert native["n"] == len({tuple(sorted(((r[0], r[2]), (r[1], r[3])))) for r in rows})
