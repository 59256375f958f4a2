"""Bus health, controller states, module health and DBC decoding over generated scenario
logs (sample_traces/_can_scenarios.py) in candump format."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from conftest import rows

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "sample_traces"))
import _can_scenarios as sc

from forensics.parsers.can import errorclass


def _log(msgs) -> str:
    buf = io.StringIO()
    for m in msgs:
        buf.write(sc.candump_line(m) + "\n")
    return buf.getvalue()


def test_error_h_decoding():
    info = errorclass.decode_linux(0x20C, bytes([0, 0x20, 0, 0, 0, 0, 130, 5]))
    assert info.classes == ["controller", "protocol", "counters"]
    assert info.controller == ["tx_passive"] and info.state == "error_passive"
    assert (info.tx_errors, info.rx_errors) == (130, 5)
    assert (
        errorclass.decode_linux(0x10, bytes([0, 0, 0, 0, 0x70, 0, 0, 0])).transceiver
        == "canl_short_to_gnd"
    )
    ecc = errorclass.decode_sja1000_ecc(0b01111000)  # form error, rx, crc delimiter
    assert ecc.protocol == ["form"] and ecc.location == "crc_delimiter"
    assert errorclass.decode_peak_status(0x10).state == "bus_off"
    assert errorclass.state_from_counters(95, 0) == "error_active"
    assert errorclass.state_from_counters(96, 0) == "error_warning"
    assert errorclass.state_from_counters(0, 128) == "error_passive"
    assert errorclass.state_from_counters(256, 0) == "bus_off"


def test_termination_states_and_bus_stats(ingest_files):
    text = _log(sc.termination(20, period_s=0.2))
    _, con = ingest_files({"can0.log": text, "manifest.toml": '[files."can0.log"]\nbitrate = 250000\n'},
                          charger_id="CP-7")  # fmt: skip
    kinds = [
        r[0]
        for r in rows(
            con,
            "SELECT kind FROM events WHERE layer='can' AND kind <> 'can.error_frame' ORDER BY ts",
        )
    ]
    assert kinds == ["can.error_warning", "can.error_passive", "can.bus_off", "can.restart",
                     "can.error_passive", "can.bus_off", "can.restart", "can.error_passive"]  # fmt: skip
    secs, err_secs, load = rows(con, "SELECT count(*), count(*) FILTER (WHERE error_frames > 0), max(load_pct) "
                                     "FROM can_bus_stats")[0]  # fmt: skip
    assert secs == 20 and err_secs == 20
    assert 1 < load < 10  # ~26 frames/s of ~110 bits at 250 kbit/s
    assert rows(con, "SELECT DISTINCT charger_id, channel FROM events") == [("CP-7", "internal")]


def test_bursts_are_grouped(ingest_files):
    text = _log(sc.wiring(60, [10, 40], None, period_s=0.2))
    _, con = ingest_files({"can0.log": text}, charger_id="CP-3")
    bursts = rows(
        con, "SELECT detail->>'count', locator FROM events WHERE kind='can.error_frame' ORDER BY ts"
    )
    assert [b[0] for b in bursts] == ["25", "25"]


def test_canopen_heartbeat_gap(ingest_files):
    text = _log(sc.module_offline(60, 3, 20, 35, period_s=0.2))
    _, con = ingest_files({"can0.log": text}, charger_id="CP-5")
    ev = rows(con, "SELECT kind, code, locator, detail->>'first_after_locator', detail->>'nmt_state' "
                   "FROM events WHERE layer='module' ORDER BY ts")  # fmt: skip
    assert [(e[0], e[1]) for e in ev] == [("module.offline", "node 3"), ("module.online", "node 3")]
    lines = text.splitlines()
    last_before = int(ev[0][2].split()[1])
    first_after = int(ev[0][3].split()[1])
    assert lines[last_before - 1].split()[2].startswith("703#")
    assert lines[first_after - 1].split()[2] == "703#00"  # boot-up after the gap
    assert ev[1][4] == "boot_up" and ev[1][2] == ev[0][3]
    mods = rows(con, "SELECT module, source, period_ms, gaps FROM can_modules ORDER BY module")
    assert mods == [(f"node {n}", "canopen", 2000.0, 1 if n == 3 else 0) for n in range(1, 5)]


def test_manifest_module_map(ingest_files):
    text = _log(sc.module_offline(30, 2, 10, 30, period_s=0.2))
    manifest = '[files."can0.log"]\nmodules = { PM2 = ["0x182"], PM1 = [0x181] }\n'
    _, con = ingest_files({"can0.log": text, "manifest.toml": manifest}, charger_id="CP-5")
    ev = rows(con, "SELECT code, detail->>'returned' FROM events WHERE kind='module.offline'")
    assert ev == [("PM2", "false")]  # silent until the end of the log
    assert rows(con, "SELECT module, source FROM can_modules ORDER BY 1") == [
        ("PM1", "manifest"),
        ("PM2", "manifest"),
    ]


def test_dbc_signals_and_firmware_versions(ingest_files):
    fw = {1: (2, 4, 0), 2: (2, 4, 0), 3: (2, 3, 1), 4: (2, 4, 0)}
    _report, con = ingest_files(
        {"c.dbc": sc.VERSION_DBC, "can0.log": _log(sc.versions(20, fw))}, charger_id="CP-4"
    )
    assert rows(con, "SELECT parser, records_parsed FROM evidence WHERE path = 'c.dbc'") == [
        ("can_dbc", 8)
    ]
    got = rows(con, "SELECT component, version, frames FROM firmware_versions ORDER BY component")
    assert got == [
        ("PM1", "2.4.0", 4),
        ("PM2", "2.4.0", 4),
        ("PM3", "2.3.1", 4),
        ("PM4", "2.4.0", 4),
    ]
    # the DBC's cycle times make the status frames the modules' presence signal
    assert rows(con, "SELECT count(*), min(source), min(period_ms) FROM can_modules") == [
        (4, "dbc", 100.0)
    ]
    # only changes are kept: State is constant (1 row per module), voltage changes
    assert rows(con, "SELECT count(*) FROM can_signals WHERE signal = 'State'") == [(4,)]
    assert rows(con, "SELECT count(*) FROM events WHERE kind = 'firmware.version'") == [(4,)]


def test_broken_dbc_is_a_reject(ingest_files):
    text = 'VERSION ""\nBO_ 12 M: x A\n SG_ S : 0|8@1+ (1,0) [0|1] "" A\nBU_: A\n'
    _report, con = ingest_files({"c.dbc": text})
    assert rows(con, "SELECT locator, reason FROM rejects") == [("line 2", "dbc.unreadable")]
