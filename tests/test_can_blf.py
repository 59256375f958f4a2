"""BLF: damaged containers, cut files and junk between objects cost exactly the damaged
part; the rest ingests. Files come from python-can's BLFWriter with 100 objects a container."""

from __future__ import annotations

import struct

import can

from conftest import rows

T0 = 1_780_000_000.0


def _blf(path, n=300) -> list[int]:
    """Writes n CAN_MESSAGE objects (48 bytes each), 100 per container; returns the
    byte offsets of the containers."""
    w = can.BLFWriter(str(path))
    w.max_container_size = 48 * 100
    for i in range(n):
        w.on_message_received(can.Message(timestamp=T0 + i * 0.01, arbitration_id=0x181,
                                          is_extended_id=False, data=bytes([i % 256] * 8)))  # fmt: skip
    w.stop()
    data = path.read_bytes()
    offs, pos = [], struct.unpack_from("<L", data, 4)[0]
    while pos + 16 <= len(data):
        assert data[pos : pos + 4] == b"LOBJ"
        size = struct.unpack_from("<L", data, pos + 8)[0]
        offs.append(pos)
        pos += size + size % 4
    return offs


def _ingest(ingest_files, data: bytes):
    report, con = ingest_files({"t.blf": data}, charger_id="CP-1")
    assert not report.failed
    ev = rows(
        con, "SELECT records_parsed, records_rejected, status FROM evidence WHERE path='t.blf'"
    )[0]
    return con, ev


def test_clean_file(tmp_path, ingest_files):
    path = tmp_path / "a.blf"
    offs = _blf(path)
    assert len(offs) == 3
    con, ev = _ingest(ingest_files, path.read_bytes())
    assert ev == (300, 0, "parsed")
    assert rows(con, "SELECT min(loc), max(loc), count(DISTINCT data) FROM can_frames") == [
        (1, 300, 256)
    ]


def test_corrupt_container_is_one_reject(tmp_path, ingest_files):
    path = tmp_path / "a.blf"
    offs = _blf(path)
    data = bytearray(path.read_bytes())
    data[offs[1] + 60 : offs[1] + 68] = b"\xff" * 8  # inside the zlib stream
    con, ev = _ingest(ingest_files, bytes(data))
    assert ev == (200, 1, "partial")
    assert rows(con, "SELECT locator, reason FROM rejects") == [
        (f"offset {offs[1]}", "can.blf_bad_container")
    ]
    assert rows(con, "SELECT count(*) FROM can_frames WHERE loc <= 200") == [(200,)]


def test_cut_file_keeps_whole_containers(tmp_path, ingest_files):
    path = tmp_path / "a.blf"
    offs = _blf(path)
    data = path.read_bytes()[: offs[2] + 40]
    con, ev = _ingest(ingest_files, data)
    assert ev == (200, 1, "partial")
    assert rows(con, "SELECT locator, reason FROM rejects") == [
        (f"offset {offs[2]}", "can.blf_truncated")
    ]


def test_junk_between_objects_resyncs(tmp_path, ingest_files):
    path = tmp_path / "a.blf"
    offs = _blf(path)
    data = path.read_bytes()
    data = data[: offs[1]] + b"JUNKJUNKJUNK" + data[offs[1] :]
    con, ev = _ingest(ingest_files, data)
    assert ev == (300, 1, "partial")
    assert rows(con, "SELECT locator, reason FROM rejects") == [
        (f"offset {offs[1]}", "can.blf_bad_object")
    ]


def test_header_time_in_manifest_timezone(tmp_path, ingest_files):
    path = tmp_path / "a.blf"
    _blf(path, n=1)
    _report, con = ingest_files(
        {"t.blf": path.read_bytes(), "manifest.toml": "[case]\ntimezone = 'Europe/Berlin'\n"}
    )
    # python-can writes the header in UTC; read as Berlin local time it is two hours early
    assert rows(con, "SELECT epoch_us(ts) FROM can_frames") == [(int(T0 * 1e6) - 7200 * 1_000_000,)]
