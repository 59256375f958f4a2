"""The internal CAN rule pack: each rule fires on its fire fixture and stays silent on its
silent one (queries/internal/fixtures/, made by sample_traces/make_can_samples.py), and the
CAN sample bundles give their expected top cause end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from forensics import fixtures, rules

ROOT = Path(__file__).resolve().parent.parent
CAN_RULES = (
    "can.termination_persistent_errors",
    "can.wiring_intermittent_bursts",
    "module.offline_heartbeat_lost",
    "firmware.module_version_mismatch",
)


def _rule(rule_id: str) -> rules.Rule:
    loaded, errors = rules.load_rules()
    assert not [e for e in errors if rule_id in str(e)]
    return next(r for r in loaded if r.id == rule_id)


@pytest.mark.parametrize("rule_id", CAN_RULES)
@pytest.mark.parametrize("case", ["fire", "silent"])
def test_rule_fixture(rule_id, case):
    rule = _rule(rule_id)
    res = fixtures.run_fixture(rule, case, rule.fixtures()[case])
    assert res.ok, res.message


@pytest.mark.parametrize(
    "scenario", ["termination", "wiring", "module-offline", "firmware-mismatch"]
)
def test_sample_bundle_top_cause(scenario):
    expected = json.loads((ROOT / "sample_traces" / f"can-{scenario}.expected.json").read_text())
    out = subprocess.run(
        [str(Path(sys.executable).parent / "forensics"), "triage", str(ROOT / "sample_traces" / f"can-{scenario}"),
         "--format", "json"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    doc = json.loads(out.stdout[out.stdout.index("{") :])
    assert doc["status"] == expected["status"]
    want = expected["verdicts"][0]
    got = next(v for v in doc["verdicts"] if v["subject"] == want["subject"])
    assert got["channel"] == want["channel"]
    assert got["causes"][0]["cause"] == want["cause"]
    assert got["causes"][0]["evidence"], "the top cause must point at evidence"
