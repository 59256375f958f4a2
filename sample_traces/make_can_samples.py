"""Writes the CAN sample bundles (sample_traces/can-<scenario>/ + .expected.json) and the
internal rule pack's fixtures (queries/internal/fixtures/<rule id>/{fire,silent}/).

Writers: python-can's own (ASCWriter, BLFWriter, TRCWriter) where they are right for the
scenario, and a can-utils-format candump -L writer (_can_scenarios.write_candump) for error
frames, because python-can's CanutilsLogWriter rewrites their class bits. Deterministic:
fixed seeds and start time. Run: .venv/bin/python sample_traces/make_can_samples.py
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import can

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _can_scenarios as sc  # noqa: E402

ROOT = HERE.parent
FIXTURES = ROOT / "queries" / "internal" / "fixtures"


def _python_can(path: Path, msgs: list[can.Message]) -> None:
    with can.Logger(str(path)) as log:
        for m in msgs:
            log.on_message_received(m)


def _bundle(folder: Path, charger: str, files: dict[str, object], extra: str = "") -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / "manifest.toml").write_text(
        f'[defaults]\ncharger_id = "{charger}"\n{extra}', encoding="utf-8"
    )
    for name, content in files.items():
        path = folder / name
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        elif name.endswith(".log"):
            sc.write_candump(path, content)
        else:
            _python_can(path, content)


def _expected(name: str, charger: str, cause: str) -> None:
    doc = {"status": "cause_found",
           "verdicts": [{"subject": charger, "channel": "internal", "cause": cause}]}  # fmt: skip
    (HERE / f"{name}.expected.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def _sessions(charger: str, n: int, before: float) -> str:
    from datetime import UTC, datetime

    rows = [
        "session_id,charger_id,connector_id,start,stop,vehicle_make,vehicle_model,evccid,result,error_code"
    ]
    for k in range(n):
        start = before - (n - k) * 6 * 3600
        iso = lambda t: datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
        rows.append(f"S{k + 1},{charger},1,{iso(start)},{iso(start + 1800)},Kia,EV6,,ok,")
    return "\n".join(rows) + "\n"


def samples() -> None:
    """Four scenario bundles, each < 1 MB."""
    p = 0.2
    _bundle(HERE / "can-termination", "CP-7", {"can0.log": sc.termination(120, period_s=p)})
    _expected("can-termination", "CP-7", "can.termination")

    wiring = sc.wiring(300, [60, 150, 240], (2, 240.5, 262), period_s=p)
    _bundle(HERE / "can-wiring", "CP-3",
            {"bus.asc": wiring, "sessions.csv": _sessions("CP-3", 12, sc.T0)})  # fmt: skip
    _expected("can-wiring", "CP-3", "can.wiring")

    _bundle(HERE / "can-module-offline", "CP-5",
            {"modules.blf": sc.module_offline(300, 3, 150, 400, period_s=p)})  # fmt: skip
    _expected("can-module-offline", "CP-5", "module.offline")

    fw = {1: (2, 4, 0), 2: (2, 4, 0), 3: (2, 3, 1), 4: (2, 4, 0)}
    _bundle(HERE / "can-firmware-mismatch", "CP-4",
            {"charger.dbc": sc.VERSION_DBC, "trace.trc": sc.versions(60, fw)})  # fmt: skip
    _expected("can-firmware-mismatch", "CP-4", "firmware.mismatch")


def fixtures() -> None:
    """Fire and silent bundles for every rule of the internal CAN pack (candump, small)."""
    p = 0.2
    term = sc.termination(40, period_s=p)
    wiring = sc.wiring(120, [30, 80], (2, 80.5, 95), period_s=p)
    same = {n: (2, 4, 0) for n in range(1, 5)}
    mixed = {**same, 3: (2, 3, 1)}
    cases = {
        "can.termination_persistent_errors": ({"can0.log": term}, {"can0.log": wiring}),
        "can.wiring_intermittent_bursts": ({"can0.log": wiring}, {"can0.log": term}),
        "module.offline_heartbeat_lost": (
            {"can0.log": sc.module_offline(60, 3, 30, 45, period_s=p)},
            {"can0.log": wiring},
        ),
        "firmware.module_version_mismatch": (
            {
                "charger.dbc": sc.VERSION_DBC,
                "can0.log": sc.versions(
                    20,
                    mixed,
                ),
            },
            {"charger.dbc": sc.VERSION_DBC, "can0.log": sc.versions(20, same)},
        ),
    }
    for rule_id, (fire, silent) in cases.items():
        _bundle(FIXTURES / rule_id / "fire", "CP-1", fire)
        (FIXTURES / rule_id / "fire" / "expect.toml").write_text(
            'chargers = ["CP-1"]\n', encoding="utf-8"
        )
        _bundle(FIXTURES / rule_id / "silent", "CP-1", silent)


if __name__ == "__main__":
    samples()
    fixtures()
    print("written: sample_traces/can-*/ and queries/internal/fixtures/<rule>/")
