"""The native candump/ASC scanner (parsers/can/_textscan.c) against the reference parsers:
every line it takes must give the row the reference gives that line, and whole files must
ingest to the same tables through the scanner, the polars path and the reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import rows
from forensics.parsers.can import textscan
from forensics.parsers.can.candump import BadRecord, parse_log_line

native = pytest.mark.skipif(not textscan.AVAILABLE, reason="scanner not built")


def test_scanner_is_built():
    """The project's install compiles it (gcc and Python's headers); without it CAN text
    ingest still works, ~3x slower: fail here so a broken build is seen, not just slow."""
    assert textscan.AVAILABLE, "parsers/can/_textscan.c was not built: run scripts/setup"


def _hexbytes(draw, n: int, sep: str = "") -> str:
    raw = draw(st.binary(min_size=n, max_size=n))
    text = (raw.hex(sep) if sep else raw.hex()).upper()
    return text.lower() if draw(st.integers(0, 9)) == 0 else text


def _id(draw, ext: bool) -> int:
    return draw(st.integers(0, 0x1FFFFFFF if ext else 0x7FF) | st.integers(0, 0xFFFFFFFF))


@st.composite
def candump_line(draw) -> str:
    """Mostly can-utils' canonical lines; now and then one thing off."""
    ext = draw(st.booleans())
    cid = _id(draw, ext) | (0x20000000 if ext and draw(st.integers(0, 9)) == 0 else 0)
    ident = f"{cid:08X}" if ext else f"{cid:03X}"
    n = draw(st.integers(0, 8) | st.sampled_from([9, 12]))
    stamp = f"({draw(st.integers(0, 2_000_000_000))}.{draw(st.integers(0, 999_999)):06d})"
    chan = draw(st.sampled_from(["can0", "can0", "vcan12", "c\u00e4n"]))
    tail = draw(st.sampled_from(["", "", " R", " T", " X", "  "]))
    return f"{stamp} {chan} {ident}#{_hexbytes(draw, n)}{tail}"


CANDUMP_NEAR = st.one_of(
    candump_line(),
    candump_line(),
    st.from_regex(
        r"\((17800000\d\d|\d{1,13})\.\d{5,7}\) (can0|vcan1|c\u00e4n|can 0) "
        r"([0-9A-F]{3}|[0-9A-Fa-f]{8}|[0-9A-F]{2,9})#([0-9A-F]{2}){0,9}[0-9A-F]?( [RTr])?\r?",
        fullmatch=True,
    ),
    st.text(alphabet="0123456789ABCDEFR#()._ x\t", max_size=40),
)


def _scan(text: str):
    cols = textscan._textscan.scan_candump(text.encode("utf-8"))
    sc = textscan._columns(1, text.encode("utf-8"), cols)
    return sc


@native
@settings(max_examples=400, deadline=None)
@given(st.lists(CANDUMP_NEAR, min_size=1, max_size=20))
def test_candump_lines_taken_are_the_reference_rows(lines):
    sc = _scan("\n".join(lines))
    taken = dict(zip(sc.loc.tolist(), range(len(sc.loc)), strict=True))
    data = sc.payload_bytes(np.arange(len(sc.loc)))
    channels = sc.channel.to_pylist()
    for no, line in enumerate(lines, start=1):
        if no not in taken:
            assert not line.strip() or (no, line.removesuffix("\r")) in sc.slow
            continue
        i = taken[no]
        try:
            ref = parse_log_line(line.removesuffix("\r"))
        except BadRecord as exc:  # the scanner took a line the reference rejects
            pytest.fail(f"{line!r}: scanned, but the reference says {exc}")
        got = (int(sc.ts[i]), channels[i], int(sc.can_id[i]), int(sc.flags[i]),
               int(sc.dlc[i]), data[i])  # fmt: skip
        assert got == ref, line


ASC_HEAD = "date Thu May 28 20:26:40.100 2026\nbase hex  timestamps absolute\n"


@st.composite
def asc_line(draw) -> str:
    """Mostly Vector's classic frame lines; now and then one thing off."""
    ext = draw(st.booleans())
    ident = f"{_id(draw, ext):X}{'x' if ext else ''}"
    dlc = draw(st.integers(0, 8))
    n = draw(st.sampled_from([dlc] * 6 + [dlc + 1, max(dlc - 1, 0)]))
    sep = draw(st.sampled_from([" ", " ", "  ", "\t"]))
    stamp = (
        f"{draw(st.integers(0, 9999))}.{draw(st.integers(0, 999_999)):0{draw(st.integers(1, 7))}d}"
    )
    head = sep.join([stamp, str(draw(st.integers(1, 16))), ident,
                     draw(st.sampled_from(["Rx", "Tx", "rx"])), "d", str(dlc)])  # fmt: skip
    data = _hexbytes(draw, n, " ")
    tail = draw(st.sampled_from(["", "", "  Length = 232000 BitCount = 118 ID = 385x", " 1"]))
    return f"   {head} {data}{tail}" if data else f"   {head}{tail}"


ASC_NEAR = st.one_of(
    asc_line(),
    asc_line(),
    asc_line(),
    st.from_regex(
        r"[ \t]{0,2}\d{1,3}\.\d{1,7}[ \t]{1,2}\d{1,2}[ \t]{1,2}[0-9A-Fa-f]{1,9}x?[ \t]{1,2}"
        r"(Rx|Tx|rx)[ \t]{1,2}[dr][ \t]{1,2}[0-9][ \t]{0,2}([ \t][0-9A-Fa-f]{1,3}){0,9}"
        r"( Length = \d+ BitCount = \d+| \d)?[ \t]?",
        fullmatch=True,
    ),
    st.from_regex(r" ?\d{1,3}\.\d{6} \d  ErrorFrame( ECC: 10100010)? ?", fullmatch=True),
    st.sampled_from(
        [
            "Begin Triggerblock Thu May 28 20:26:41.000 2026",
            "End TriggerBlock",
            " 0.5 Start of measurement",
            "",
        ]
    ),
)
QUERIES = (
    "SELECT loc, epoch_us(ts), channel, arbitration_id, flags, dlc, data FROM can_frames ORDER BY loc",
    "SELECT * EXCLUDE (file_id) FROM can_errors ORDER BY loc",
    "SELECT locator, reason, excerpt FROM rejects ORDER BY 1",
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(ASC_NEAR, min_size=1, max_size=25))
@example(lines=["   0.0\t1\t0\tRx\td\t0"])  # tabs: the reference once read only spaces
def test_asc_files_scanner_equals_reference(ingest_files, lines):
    data = (ASC_HEAD + "\n".join(lines) + "\n").encode()
    _, fast = ingest_files({"x.asc": data}, charger_id="CP-1")
    manifest = '[files."x.asc"]\ncan_fast = false\n'
    _, ref = ingest_files({"x.asc": data, "manifest.toml": manifest}, charger_id="CP-1")
    for sql in QUERIES:
        assert rows(fast, sql) == rows(ref, sql), sql


@native
@pytest.mark.parametrize("ext", ["log", "asc", "trc", "blf"])
def test_fallback_equals_scanner(tmp_path, ingest_files, monkeypatch, ext):
    """Where the scanner is not built, the polars (text) and numpy (BLF) paths give the
    same tables."""
    from test_can_roundtrip import _messages, _write, write_small_container_blf

    path = tmp_path / f"v.{ext}"
    msgs = _messages(3000, errors=ext != "trc", fd=ext in ("asc", "blf"), remote=ext != "trc")
    if ext == "blf":
        write_small_container_blf(path, msgs)
        data = path.read_bytes()
        data = data[:5000] + b"\xff" * 64 + data[5064:]  # a damaged stretch
    else:
        _write(path, msgs)
        lines = path.read_bytes().split(b"\n")
        lines[100] = b"broken line"
        lines[1500] = lines[1500][:-3]
        data = b"\n".join(lines)
    _, native = ingest_files({path.name: data}, charger_id="CP-1")
    monkeypatch.setattr(textscan, "AVAILABLE", False)
    _, fallback = ingest_files({path.name: data}, charger_id="CP-1")
    for sql in QUERIES:
        assert rows(native, sql) == rows(fallback, sql), sql
    assert rows(native, "SELECT count(*) FROM can_frames")[0][0] >= 2900


TRC_HEADS = {
    "2.1": ";$FILEVERSION=2.1\n;$STARTTIME=46170.85185301042\n;$COLUMNS=N,O,T,B,I,d,R,L,D\n",
    "2.0": ";$FILEVERSION=2.0\n;$STARTTIME=46170.85185301042\n;$COLUMNS=N,O,T,I,d,l,D\n",
}


@st.composite
def trc_line(draw, version: str) -> str:
    """Mostly PEAK's DT lines in the version's layout; now and then one thing off."""
    ext = draw(st.booleans())
    ident = f"{_id(draw, ext):08X}" if ext else f"{_id(draw, ext):04X}"
    dlc = draw(st.integers(0, 15))
    n = draw(st.sampled_from([min(dlc, 8)] * 6 + [dlc + 1, max(dlc - 1, 0)]))
    sep = draw(st.sampled_from([" ", " ", "  ", "\t"]))
    stamp = (
        f"{draw(st.integers(0, 10**7))}{draw(st.sampled_from(['', '.', '.1', '.123', '.1234']))}"
    )
    kind = draw(st.sampled_from(["DT"] * 8 + ["ER", "FD"]))
    way = draw(st.sampled_from(["Rx", "Tx", "rx"]))
    bus = str(draw(st.integers(1, 16)))
    cols = ([str(draw(st.integers(1, 10**6))), stamp, kind, bus, ident, way, "-", str(dlc)]
            if version == "2.1" else
            [str(draw(st.integers(1, 10**6))), stamp, kind, ident, way, str(dlc)])  # fmt: skip
    data = _hexbytes(draw, n, " ")
    return sep.join(cols) + (f"  {data}" if data else "") + draw(st.sampled_from(["", " ", "\t"]))


TRC_NEAR = st.one_of(
    st.from_regex(
        r"[ \t]{0,3}\d{1,7}[ \t]{1,2}\d{1,6}(\.\d{0,4})?[ \t]{1,2}(DT|ER|XX)[ \t]{1,2}"
        r"(\d{1,2}[ \t]{1,2})?[0-9A-Fa-f]{1,9}[ \t]{1,2}(Rx|Tx|rx)[ \t]{1,2}(-[ \t]{1,2})?"
        r"\d{1,2}([ \t]{1,2}[0-9A-Fa-f]{1,3}){0,9}[ \t]{0,2}",
        fullmatch=True,
    ),
    st.sampled_from([";   comment", "", ";$COLUMNS=N,O,T,I,d,l,D", " \t"]),
)


@native
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_trc_files_scanner_equals_reference(ingest_files, data):
    version = data.draw(st.sampled_from(sorted(TRC_HEADS)))
    line = st.one_of(trc_line(version), trc_line(version), trc_line(version), TRC_NEAR)
    lines = data.draw(st.lists(line, min_size=1, max_size=25))
    text = (TRC_HEADS[version] + "\n".join(lines) + "\n").encode()
    _, fast = ingest_files({"x.trc": text}, charger_id="CP-1")
    manifest = '[files."x.trc"]\ncan_fast = false\n'
    _, ref = ingest_files({"x.trc": text, "manifest.toml": manifest}, charger_id="CP-1")
    for sql in QUERIES:
        assert rows(fast, sql) == rows(ref, sql), sql


def _can_message(i: int) -> bytes:
    """A CAN_MESSAGE object (type 1, header version 1), as BLF writers lay it out."""
    import struct

    head = struct.pack("<4sHHII", b"LOBJ", 32, 1, 48, 1)
    head += struct.pack("<IHHQ", 1, 0, 0, 1_000_000 * i)  # flags (10 us units), stamp
    return head + struct.pack("<HBBI8s", 1, 0, 8, 0x100 + i, bytes(range(i, i + 8)))


@native
@settings(max_examples=300, deadline=None)
@given(st.data())
def test_blf_walk_survives_any_damage(data):
    """Damaged container bytes: the walk never reads out of bounds, and what it reports
    stays inside the data (or it leaves the data to the reference)."""
    good = b"".join(_can_message(i) for i in range(8))
    buf = bytearray(good)
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(buf) - 1))
        buf[at] = data.draw(st.integers(0, 255))
    buf = bytes(buf[: data.draw(st.integers(0, len(buf)))])
    out = textscan.walk_blf(buf)
    if out is None:
        return
    assert 0 <= out["tail"] <= len(buf)
    index = np.frombuffer(out["index"], np.int64).tolist()
    other = np.frombuffer(out["other"], np.int64).reshape(-1, 2)[:, 0].tolist()
    assert sorted(index + other) == list(range(out["objects"]))
    assert all(0 <= p < len(buf) for p in np.frombuffer(out["other"], np.int64)[1::2].tolist())


@native
def test_blf_walk_reads_messages():
    out = textscan.walk_blf(b"".join(_can_message(i) for i in range(3)) + b"LOBJ")
    assert out["objects"] == 3 and out["tail"] == 3 * 48
    assert np.frombuffer(out["can_id"], np.uint32).tolist() == [0x100, 0x101, 0x102]
    assert np.frombuffer(out["payload"], np.uint64).tolist()[1] == 0x0102030405060708
