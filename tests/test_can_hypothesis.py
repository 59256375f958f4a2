"""Property: any bytes given to a CAN parser -> no exception escapes (only ParserGaveUp, the
contract's 'not this format'), and records parsed + rejected = records seen, where every
non-blank candump line is a record and every accepted record is a row we wrote."""

from __future__ import annotations

import gzip

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forensics import store
from forensics.errors import ParserGaveUp
from forensics.parsers.base import FileContext, Sink, Source, registry

LINE = st.one_of(
    st.from_regex(r"\(17800000\d\d\.\d{6}\) can0 [0-9A-F]{3}#([0-9A-F]{2}){0,8}", fullmatch=True),
    st.from_regex(
        r"\(\d{1,10}\.\d{1,7}\) \w{1,5} [0-9A-Fa-f]{1,9}##?[0-9A-Fa-fR_.]{0,20}( [RT])?",
        fullmatch=True,
    ),
    st.text(alphabet="0123456789ABCDEFR#()._ x\t", max_size=40),
)


def _run(parser_name: str, path, tmp_path, **extra):
    con = store.connect(":memory:")
    try:
        con.execute("BEGIN TRANSACTION")
        sink = Sink(con, 1, set(store.table_names(con)))
        src = Source(path, path.name, FileContext(charger_id="CP-1", extra=extra))
        try:
            registry()[parser_name]().parse(src, sink)
        except (ParserGaveUp, EOFError, gzip.BadGzipFile):
            return None  # not this format / a gzip member cut short: ingest marks the file
        frames = con.execute("SELECT count(*) FROM can_frames").fetchone()[0]
        errors = con.execute(
            "SELECT count(*) FROM can_errors WHERE source <> 'error_frame'"
        ).fetchone()[0]
        return src, frames, errors
    finally:
        con.execute("ROLLBACK")
        con.close()


SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(lines=st.lists(LINE, max_size=30))
def test_candump_lines(tmp_path, lines):
    path = tmp_path / "x.log"
    path.write_text("\n".join(lines), encoding="utf-8")
    for fast in (True, False):
        out = _run("can_candump", path, tmp_path, can_fast=fast)
        if out is None:
            continue
        src, frames, _ = out
        seen = sum(1 for ln in lines if ln.strip())
        assert src.records_seen + len(src.rejects) == seen
        assert src.records_seen == frames


@pytest.mark.parametrize(
    "parser", ["can_candump", "can_candump_console", "can_asc", "can_trc", "can_csv", "can_blf"]
)
@SETTINGS
@given(data=st.binary(max_size=600))
def test_any_bytes(tmp_path, parser, data):
    path = tmp_path / "x.bin"
    path.write_bytes(data)
    out = _run(parser, path, tmp_path)
    if out is None:
        return
    src, frames, other_errors = out
    assert src.records_seen == frames + other_errors


@SETTINGS
@given(cut=st.integers(min_value=0, max_value=2000), flip=st.integers(min_value=0, max_value=2000))
def test_blf_damaged_anywhere(tmp_path, cut, flip):
    import can

    path = tmp_path / "x.blf"
    w = can.BLFWriter(str(path))
    w.max_container_size = 480
    for i in range(40):
        w.on_message_received(
            can.Message(timestamp=1_780_000_000 + i, arbitration_id=i, data=b"12345678")
        )
    w.stop()
    data = bytearray(path.read_bytes())
    data[flip % len(data)] ^= 0xFF
    path.write_bytes(bytes(data[: len(data) - cut % 300]))
    out = _run("can_blf", path, tmp_path)
    if out is not None:
        src, frames, _ = out
        assert src.records_seen == frames <= 40
