"""Verdict ranking on real cases: evidence against, incidents absorbing per-charger guesses,
id aliases, unexplained failures."""

from __future__ import annotations

import json

from forensics import derive, rules, verdict


def jl(ts, cp, frame=None, **extra):
    doc = {"ts": ts, "charger_id": cp, **extra}
    if frame is not None:
        doc["frame"] = frame
    return json.dumps(doc)


def boot(ts, cp, uid, status):
    call = [2, uid, "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}]
    res = [3, uid, {"status": status, "currentTime": ts, "interval": 60}]
    return [jl(ts, cp, call), jl(ts, cp, res)]


def analyse(con):
    derive.run(con)
    rules.analyze(con, rules.load_rules()[0])
    return verdict.build(con, "t", "b")


def test_evidence_against_lowers_the_score(ingest_files):
    lines = boot("2026-06-01T10:00:00Z", "CP-1", "1", "Rejected") + boot(
        "2026-06-01T10:10:00Z", "CP-1", "2", "Accepted"
    )
    _, con = ingest_files({"a.jsonl": "\n".join(lines)})
    doc = analyse(con)
    (v,) = doc["verdicts"]
    cause = v["causes"][0]
    assert cause["cause"] == "ocpp.identity_mismatch"
    assert cause["score"] == 0.5  # 0.8 for one rejection, minus half of the 0.6 against
    assert cause["against"][0]["summary"].startswith("BootNotification accepted 1 time")
    assert doc["status"] == "cause_found"


def test_site_incident_absorbs_charger_guesses_and_aliases_merge(ingest_files):
    inventory = "charger_id,site,connectivity\nCP-1,a,wifi\nCP-2,a,wifi\nCP-3,b,ethernet\n"
    lines = []
    for cp in ("CP-1", "CP-2", "CP-3"):
        lines += boot("2026-06-01T09:00:00Z", cp, f"b-{cp}", "Accepted")
    for n in range(6):  # CP-1 flaps all morning (a Wi-Fi storm), site a also drops at 11:00
        lines.append(jl(f"2026-06-01T10:{n * 5:02d}:00Z", "CP-1", event="disconnected"))
    lines += [
        jl("2026-06-01T11:00:00Z", "CP-1", event="disconnected"),
        jl("2026-06-01T11:00:20Z", "CP-2", event="disconnected"),
    ]
    lines += boot("2026-06-01T12:00:00Z", "cp-3", "x", "Rejected")
    _, con = ingest_files({"chargers.csv": inventory, "csms.jsonl": "\n".join(sorted(lines))})
    doc = analyse(con)
    subjects = [(v["scope"], v["subject"], v["causes"][0]["cause"]) for v in doc["verdicts"]]
    assert subjects[0] == ("site", "a", "network.site_outage")
    assert ("charger", "CP-3", "ocpp.identity_mismatch") in subjects  # cp-3 is CP-3
    assert ("charger", "CP-1", "network.wifi_loss") in subjects  # storm outside the incident
    assert not any(s[1] == "cp-3" for s in subjects)


def test_healthy_charger_gets_no_verdict(ingest_files):
    lines = boot("2026-06-01T10:00:00Z", "CP-1", "1", "Accepted")
    _, con = ingest_files({"a.jsonl": "\n".join(lines)})
    doc = analyse(con)
    assert doc["status"] == "no_failure" and doc["verdicts"] == []
