"""Declarative vendor fault-log formats: loading checks, parsing, rejects, user formats."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import rows
from forensics.errors import FormatError
from forensics.parsers.fault_log import BUILTIN, load_format

LOG = """2026-06-01 12:00:03 ERROR E310 Power module 2 not responding on CAN
2026-06-01 12:00:04 WARN CP-9 W401 vibration 3.2 g
not a fault line
2026-06-01 12:00:05 INFO E999 code nobody mapped
2026-13-01 12:00:06 ERROR E310 month 13
"""


def test_builtin_format_loads_and_parses(ingest_files):
    assert load_format(BUILTIN / "generic_fault_log.toml")["name"] == "generic_fault_log"
    report, con = ingest_files(
        {"faults.log": LOG, "manifest.toml": '[defaults]\ncharger_id = "CP-7"\n'}
    )
    assert (report.records, report.rejects) == (3, 2)
    assert rows(con, "SELECT locator, reason FROM rejects ORDER BY locator") == [
        ("line 3", "fault_log.unmatched"),
        ("line 5", "fault_log.bad_timestamp"),
    ]
    assert rows(
        con, "SELECT charger_id, channel, kind, severity, code, detail->>'cause' FROM events "
        "ORDER BY ts"
    ) == [
        ("CP-7", "internal", "fault.module_offline", "error", "E310", "module.offline"),
        ("CP-9", "internal", "fault.vibration", "warning", "W401", None),
        ("CP-7", "internal", "fault.code", "info", "E999", None),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ('line = "2026-06-01 12:00:03 ERROR', 'line = "12:00:03 ERROR'),
            "sample 1 does not match",
        ),
        (('cause = "module.offline"', 'cause = "module.gone"'), "not in catalogue"),
        (("(?P<code>", "(?P<kode>"), "lacks named group"),
        (('code = "W401"', 'code = "W402"'), "sample 2: code"),
    ],
)
def test_broken_formats_are_refused_with_the_reason(tmp_path, change, message):
    text = (BUILTIN / "generic_fault_log.toml").read_text().replace(*change)
    path = tmp_path / "vendor.toml"
    path.write_text(text)
    with pytest.raises(FormatError, match=message):
        load_format(path)


def test_user_format_folder(tmp_path):
    fmt = tmp_path / "formats"
    fmt.mkdir()
    (fmt / "acme.toml").write_text(
        '[format]\nname = "acme_faults"\n'
        "regex = '^(?P<ts>\\d{10}) ACME (?P<code>F\\d+) (?P<text>.*)$'\n"
        '[codes]\nF7 = { channel = "vehicle", kind = "fault.pilot", cause = "vehicle.cp_signal" }\n'
        '[[samples]]\nline = "1780000000 ACME F7 pilot state E"\ncode = "F7"\n'
    )
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "acme.txt").write_text("1780000000 ACME F7 pilot state E\n1780000060 ACME F7 again\n")
    env = {"FORENSICS_FORMATS": str(fmt), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "forensics", "triage", str(bundle), "--charger", "CP-3",
         "-o", str(tmp_path / "o"), "--format", "json"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert '"cause": "vehicle.cp_signal"' in out.stdout, out.stderr
    formats = subprocess.run(
        [sys.executable, "-m", "forensics", "formats"], capture_output=True, text=True, env=env
    ).stdout
    assert "acme_faults" in formats
