"""Every sample bundle through the real CLI: the verdict names the expected cause, meets the
contract (JSON Schema), exits with the documented code, and its evidence points at real
lines of the bundle's files."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import pytest

from conftest import ROOT, SAMPLES

SCHEMA = json.loads((ROOT / "forensics" / "schemas" / "verdict-1.json").read_text())
CASES = sorted(p.name.removesuffix(".expected.json") for p in SAMPLES.glob("*.expected.json"))


def forensics(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "forensics", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("name", CASES)
def test_sample_verdict(name, tmp_path):
    expected = json.loads((SAMPLES / f"{name}.expected.json").read_text())
    proc = forensics("triage", str(SAMPLES / name), "--out", str(tmp_path), "--format", "json")
    assert proc.returncode == (1 if expected["status"] == "inconclusive" else 0), proc.stderr
    doc = json.loads(proc.stdout)
    jsonschema.validate(doc, SCHEMA)
    assert doc["status"] == expected["status"]
    assert json.loads((tmp_path / "findings.json").read_text()) == doc
    for want in expected["verdicts"]:
        match = [v for v in doc["verdicts"] if v["subject"] == want["subject"]]
        assert match, f"no verdict for {want['subject']}: {[v['subject'] for v in doc['verdicts']]}"
        assert match[0]["channel"] == want["channel"]
        assert match[0]["causes"][0]["cause"] == want["cause"]
    if expected["status"] == "no_failure":
        assert doc["verdicts"] == []
    for v in doc["verdicts"]:
        for e in v["causes"][0]["evidence"]:
            check_locator(SAMPLES / name, e, v)


def check_locator(bundle: Path, item: dict, verdict: dict) -> None:
    """A 'line N' locator must name a real, non-blank line of that file; for OCPP and
    connection events that line must mention one of the verdict's chargers."""
    kind, _, number = item["locator"].partition(" ")
    path = bundle / item["file"]
    if kind != "line" or not path.is_file():
        return
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    line = lines[int(number) - 1]
    assert line.strip(), item
    if item["what"].startswith(("ocpp.", "ws.", "csms.")):
        ids = verdict["chargers"] + [verdict["subject"]]
        assert any(cp.lower() in line.lower() for cp in ids), (item, line)


def test_zipped_bundle_gives_the_same_verdict(tmp_path):
    archive = tmp_path / "site-outage.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted((SAMPLES / "site-outage").iterdir()):
            zf.write(f, f"export/{f.name}")
    proc = forensics("triage", str(archive), "--out", str(tmp_path / "o"), "--format", "json")
    doc = json.loads(proc.stdout)
    assert doc["verdicts"][0]["causes"][0]["cause"] == "network.site_outage"
    assert doc["verdicts"][0]["causes"][0]["evidence"][0]["file"].startswith("export/")


def test_text_output_and_markdown(tmp_path):
    proc = forensics("triage", str(SAMPLES / "backend-outage"), "--out", str(tmp_path))
    assert proc.returncode == 0
    assert "backend.outage" in proc.stdout and "fix:" in proc.stdout
    assert "csms-ocpp.jsonl line" in proc.stdout
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("## charger-forensics: cause found") and "`backend.outage`" in md
    page = (tmp_path / "report.html").read_text()
    assert "<code>backend.outage</code>" in page and "Plotly.newPlot" in page
    assert "csms-ocpp.jsonl" in page  # evidence listed, and in the chart's hover text


def test_inconclusive_exit_code_and_missing_data(tmp_path):
    bundle = tmp_path / "b"
    bundle.mkdir()
    lines = [
        {
            "ts": f"2026-06-01T12:0{n}:00Z",
            "charger_id": "CP-9",
            "event": "disconnected",
            "code": 1006,
        }
        for n in range(2)
    ]
    (bundle / "csms.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    proc = forensics("triage", str(bundle), "--out", str(tmp_path / "o"), "--format", "json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    jsonschema.validate(doc, SCHEMA)
    assert doc["status"] == "inconclusive"
    (v,) = doc["verdicts"]
    assert v["subject"] == "CP-9" and v["causes"][0]["cause"] == "unknown"
    assert any("capture" in m for m in v["missing_data"])
