"""The native candump/ASC scanner (parsers/can/_textscan.c) against the reference parsers:
every line it takes must give the row the reference gives that line, and whole files must
ingest to the same tables through the scanner, the polars path and the reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import rows
from forensics.parsers.can import textscan
from forensics.parsers.can.candump import BadRecord, parse_log_line

native = pytest.mark.skipif(not textscan.AVAILABLE, reason="scanner not built")


def test_scanner_is_built():
    """The project's install compiles it (gcc and Python's headers); without it CAN text
    ingest still works, ~3x slower: fail here so a broken build is seen, not just slow."""
    assert textscan.AVAILABLE, "parsers/can/_textscan.c was not built: run scripts/setup"


CANDUMP_NEAR = st.one_of(
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
ASC_NEAR = st.one_of(
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
def test_asc_files_scanner_equals_reference(ingest_files, lines):
    data = (ASC_HEAD + "\n".join(lines) + "\n").encode()
    _, fast = ingest_files({"x.asc": data}, charger_id="CP-1")
    manifest = '[files."x.asc"]\ncan_fast = false\n'
    _, ref = ingest_files({"x.asc": data, "manifest.toml": manifest}, charger_id="CP-1")
    for sql in QUERIES:
        assert rows(fast, sql) == rows(ref, sql), sql


@native
@pytest.mark.parametrize("ext", ["log", "asc"])
def test_polars_fallback_equals_scanner(tmp_path, ingest_files, monkeypatch, ext):
    """Where the scanner is not built, the polars path gives the same tables."""
    from test_can_roundtrip import _messages, _write

    path = tmp_path / f"v.{ext}"
    _write(path, _messages(2000, errors=True, fd=ext != "log", remote=True))
    lines = path.read_bytes().split(b"\n")
    lines[100] = b"broken line"
    lines[1500] = lines[1500][:-3]
    data = b"\n".join(lines)
    _, native = ingest_files({path.name: data}, charger_id="CP-1")
    monkeypatch.setattr(textscan, "AVAILABLE", False)
    _, polars = ingest_files({path.name: data}, charger_id="CP-1")
    for sql in QUERIES:
        assert rows(native, sql) == rows(polars, sql), sql
    assert rows(native, "SELECT count(*) FROM can_frames")[0][0] >= 1990
