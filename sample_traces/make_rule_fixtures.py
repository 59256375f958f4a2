"""Regenerates the fire/silent fixture bundles of the log-based rules
(queries/<pack>/fixtures/<rule id>/{fire,silent}/), with the same validated OCPP messages as
the sample bundles.

    .venv/bin/python sample_traces/make_rule_fixtures.py
"""

from __future__ import annotations

import csv
import random
import shutil
from datetime import timedelta
from pathlib import Path

from make_log_samples import T0, CsmsLog, inventory, iso

QUERIES = Path(__file__).resolve().parent.parent / "queries"


def folder(pack: str, rule_id: str, case: str) -> Path:
    d = QUERIES / pack / "fixtures" / rule_id / case
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


def chargers(*specs: tuple[str, str]) -> list[dict]:
    return [{"charger_id": cp, "site": site} for cp, site in specs]


def boot_rejected() -> None:
    for case, status in (("fire", "Rejected"), ("silent", "Accepted")):
        d = folder("backend", "ocpp.boot_rejected", case)
        log = CsmsLog()
        log.boot(T0, "CP-001", status=status)
        log.write(d / "csms.jsonl")
        if case == "fire":
            (d / "expect.toml").write_text('chargers = ["CP-001"]\n')


def boot_accepted_later() -> None:
    for case, statuses in (
        ("fire", ["Rejected", "Accepted"]),
        ("silent", ["Rejected", "Rejected"]),
    ):
        d = folder("backend", "ocpp.boot_accepted_later", case)
        log = CsmsLog()
        for n, status in enumerate(statuses):
            log.boot(T0 + timedelta(minutes=10 * n), "CP-001", status=status)
        log.write(d / "csms.jsonl")
        if case == "fire":
            (d / "expect.toml").write_text('chargers = ["CP-001"]\n')


def id_case_mismatch() -> None:
    for case, seen in (("fire", "cp-001 "), ("silent", "CP-001")):
        d = folder("backend", "ocpp.id_case_mismatch", case)
        inventory(d / "chargers.csv", chargers(("CP-001", "a"), ("CP-002", "a")))
        log = CsmsLog()
        log.boot(T0, seen)
        log.boot(T0, "CP-002")
        log.write(d / "csms.jsonl")
        if case == "fire":
            (d / "expect.toml").write_text('chargers = ["CP-001"]\n')


def heartbeat_flapping() -> None:
    for case in ("fire", "silent"):
        d = folder("backend", "ocpp.heartbeat_offline_flapping", case)
        log = CsmsLog()
        log.boot(T0, "CP-001", interval=120)
        ts = T0 + timedelta(seconds=120)
        for _ in range(5):
            log.exchange(ts, "CP-001", "Heartbeat", {}, {"currentTime": iso(ts)})
            log.event(ts + timedelta(seconds=90), "CP-001", "marked_offline")
            if case == "silent":  # a real drop: the socket closes, no heartbeat follows soon
                log.event(ts + timedelta(seconds=91), "CP-001", "disconnected", code=1006)
                ts += timedelta(minutes=30)
            else:
                ts += timedelta(seconds=120)
        log.write(d / "csms.jsonl")


def disconnect_storm() -> None:
    for case, gap in (("fire", timedelta(minutes=6)), ("silent", timedelta(minutes=70))):
        d = folder("backend", "network.disconnect_storm", case)
        rows = chargers(("CP-001", "hotel"))
        rows[0]["connectivity"] = "wifi"
        inventory(d / "chargers.csv", rows)
        log = CsmsLog()
        ts = T0
        for _ in range(6):
            log.boot(ts, "CP-001")
            log.event(ts + timedelta(minutes=3), "CP-001", "disconnected", code=1006)
            ts += gap
        log.write(d / "csms.jsonl")
        if case == "fire":
            (d / "expect.toml").write_text('chargers = ["CP-001"]\n')


def fleet_drop() -> None:
    inv = chargers(("CP-001", "a"), ("CP-002", "a"), ("CP-003", "b"), ("CP-004", "b"))
    for case, spread in (("fire", 15), ("silent", 1800)):
        d = folder("fleet", "fleet.simultaneous_drop", case)
        inventory(d / "chargers.csv", inv)
        log = CsmsLog()
        for n, c in enumerate(inv):
            log.boot(T0, c["charger_id"])
            log.event(
                T0 + timedelta(minutes=20, seconds=n * spread), c["charger_id"], "disconnected"
            )
        log.write(d / "csms.jsonl")
        if case == "fire":
            (d / "expect.toml").write_text('chargers = ["CP-001", "CP-004"]\n')


def site_drop() -> None:
    inv = chargers(("CP-001", "a"), ("CP-002", "a"), ("CP-003", "b"), ("CP-004", "b"))
    for case, dropping in (
        ("fire", ["CP-001", "CP-002"]),
        ("silent", [c["charger_id"] for c in inv]),
    ):
        d = folder("fleet", "fleet.site_drop", case)
        inventory(d / "chargers.csv", inv)
        log = CsmsLog()
        for n, c in enumerate(inv):
            log.boot(T0, c["charger_id"])
            if c["charger_id"] in dropping:
                log.event(
                    T0 + timedelta(minutes=20, seconds=5 * n), c["charger_id"], "disconnected"
                )
        log.write(d / "csms.jsonl")
        if case == "fire":
            (d / "expect.toml").write_text('chargers = ["a"]\n')


def model_cluster() -> None:
    rng = random.Random(3)
    plans = {
        "fire": [("Voltra", "EX5", 20, 8), ("Tesla", "Model 3", 100, 1), ("Kia", "EV6", 100, 1)],
        # Two failures in three sessions is a high rate on a tiny sample: must stay silent.
        "silent": [("Voltra", "EX5", 3, 2), ("Tesla", "Model 3", 100, 2), ("Kia", "EV6", 100, 2)],
    }
    for case, plan in plans.items():
        d = folder("vehicle", "vehicle.model_failure_cluster", case)
        with (d / "sessions.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["session_id", "charger_id", "connector_id", "start", "stop",
                        "vehicle_make", "vehicle_model", "evccid", "result", "error_code"])  # fmt: skip
            n = 0
            for make, model, total, failed in plan:
                for i in range(total):
                    n += 1
                    start = T0 + timedelta(minutes=rng.uniform(0, 600))
                    bad = i < failed
                    w.writerow([f"S{n}", f"CP-{1 + n % 3:03d}", 1, iso(start),
                                iso(start + timedelta(minutes=1 if bad else 40)), make, model, "",
                                "failed" if bad else "ok", "SLACTimeout" if bad else ""])  # fmt: skip


def charger_side() -> None:
    rng = random.Random(4)
    models = [("VW", "ID.4"), ("Tesla", "Model Y"), ("Kia", "EV6"), ("BMW", "i4")]
    for case, bad_rate in (("fire", 0.8), ("silent", 0.05)):
        d = folder("vehicle", "vehicle.charger_fails_every_vehicle", case)
        with (d / "sessions.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["session_id", "charger_id", "connector_id", "start", "stop",
                        "vehicle_make", "vehicle_model", "evccid", "result", "error_code"])  # fmt: skip
            for n in range(120):
                cp = f"CP-{1 + n % 4:03d}"
                make, model = models[(n // 4) % 4]  # every charger sees every model
                failed = rng.random() < (bad_rate if cp == "CP-002" else 0.03)
                start = T0 + timedelta(minutes=5 * n)
                w.writerow([f"S{n}", cp, 1, iso(start), iso(start + timedelta(minutes=1)), make,
                            model, "", "failed" if failed else "ok",
                            "SLAC_TIMEOUT" if failed else ""])  # fmt: skip
        if case == "fire":
            (d / "expect.toml").write_text('chargers = ["CP-002"]\n')


def firmware() -> None:
    for case, reported in (("fire", "4.1.0"), ("silent", "4.2.1")):
        d = folder("internal", "firmware.boot_vs_inventory", case)
        inventory(d / "chargers.csv", chargers(("CP-001", "a")))
        log = CsmsLog()
        log.boot(T0, "CP-001", firmware=reported)
        log.write(d / "csms.jsonl")
        if case == "fire":
            (d / "expect.toml").write_text('chargers = ["CP-001"]\n')


if __name__ == "__main__":
    for make in (boot_rejected, boot_accepted_later, id_case_mismatch, heartbeat_flapping, disconnect_storm,
                 fleet_drop, site_drop, model_cluster, charger_side, firmware):  # fmt: skip
        make()
    print("fixtures written under", QUERIES)
