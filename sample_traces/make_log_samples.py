"""Regenerates the log-based sample bundles in sample_traces/ with their expected verdicts.

Every OCPP frame is built with the `ocpp` library's message classes and validated with its
own `validate_payload` against the official OCPP 1.6 JSON schemas before it is written; the
timelines (who drops when) are simulated with a fixed seed, so the output is reproducible.

    .venv/bin/python sample_traces/make_log_samples.py
"""

from __future__ import annotations

import asyncio
import csv
import json
import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from ocpp.messages import Call, CallResult, validate_payload

HERE = Path(__file__).resolve().parent
T0 = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
_pending: list = []


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def call(uid: str, action: str, payload: dict) -> str:
    msg = Call(uid, action, payload)
    _pending.append(msg)
    return msg.to_json()


def result(uid: str, action: str, payload: dict) -> str:
    msg = CallResult(uid, payload, action=action)
    _pending.append(msg)
    return msg.to_json()


def validate_all() -> None:
    async def run():
        for msg in _pending:
            await validate_payload(msg, "1.6")

    asyncio.run(run())
    _pending.clear()


class CsmsLog:
    """A CSMS-side JSONL log (the bundle convention) for many chargers."""

    def __init__(self) -> None:
        self.rows: list[tuple[datetime, dict]] = []
        self.uid = 0

    def _next(self) -> str:
        self.uid += 1
        return f"{self.uid:06d}"

    def frame(self, ts, cp, direction, frame_json):
        self.rows.append(
            (ts, {"ts": iso(ts), "charger_id": cp, "direction": direction,
                  "frame": json.loads(frame_json)})
        )  # fmt: skip

    def event(self, ts, cp, event, **extra):
        self.rows.append((ts, {"ts": iso(ts), "charger_id": cp, "event": event, **extra}))

    def exchange(self, ts, cp, action, req, resp, rtt_ms=120):
        uid = self._next()
        self.frame(ts, cp, "cp_to_csms", call(uid, action, req))
        self.frame(ts + timedelta(milliseconds=rtt_ms), cp, "csms_to_cp", result(uid, action, resp))

    def boot(self, ts, cp, firmware="4.2.1", status="Accepted", interval=60):
        self.event(ts - timedelta(milliseconds=300), cp, "connected")
        req = {"chargePointVendor": "Kempower", "chargePointModel": "S-Series",
               "firmwareVersion": firmware}  # fmt: skip
        resp = {"status": status, "currentTime": iso(ts), "interval": interval}
        self.exchange(ts, cp, "BootNotification", req, resp)
        if status == "Accepted":
            for connector in (1, 2):
                self.exchange(
                    ts + timedelta(seconds=1), cp, "StatusNotification",
                    {"connectorId": connector, "errorCode": "NoError", "status": "Available"}, {},
                )  # fmt: skip

    def heartbeats(self, cp, start, end, interval_s=60, rtt_ms=120, jitter_s=2.0, rng=None):
        rng = rng or random.Random(1)
        ts = start + timedelta(seconds=rng.uniform(0, interval_s))
        while ts < end:
            self.exchange(ts, cp, "Heartbeat", {}, {"currentTime": iso(ts)}, rtt_ms)
            ts += timedelta(seconds=interval_s + rng.uniform(-jitter_s, jitter_s))

    def write(self, path: Path, garbage_after: int | None = None) -> None:
        self.rows.sort(key=lambda r: r[0])
        lines = [json.dumps(doc, separators=(", ", ": ")) for _, doc in self.rows]
        if garbage_after is not None:
            lines.insert(garbage_after, '{"ts": "2026-06-01T07:00:00Z", "charger_id": "CP-')
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        validate_all()


def inventory(path: Path, rows: list[dict]) -> None:
    cols = ["charger_id", "site", "vendor", "model", "firmware", "connectivity", "signal_dbm",
            "ip", "backend_url", "ocpp_version", "security_profile", "installer"]  # fmt: skip
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            base = {"vendor": "Kempower", "model": "S-Series", "firmware": "4.2.1",
                    "connectivity": "ethernet", "backend_url": "wss://csms.example.net/ocpp",
                    "ocpp_version": "1.6", "security_profile": "2", "installer": "Voltwerk"}  # fmt: skip
            w.writerow(base | r)


def fleet(sites: dict[str, int]) -> list[dict]:
    rows, n = [], 0
    for site, count in sites.items():
        for _ in range(count):
            n += 1
            rows.append({"charger_id": f"CP-{n:03d}", "site": site, "ip": f"10.20.{n}.10"})
    return rows


def bundle(name: str, expected: dict) -> Path:
    d = HERE / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    (HERE / f"{name}.expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    return d


def steady(log: CsmsLog, chargers: list[dict], start, end, rng) -> None:
    for c in chargers:
        log.boot(start + timedelta(seconds=rng.uniform(0, 30)), c["charger_id"])
        log.heartbeats(c["charger_id"], start + timedelta(seconds=40), end, rng=rng)


def make_backend_outage() -> None:
    """Nine chargers at three sites all lose the CSMS within 40 s, then come back."""
    rng = random.Random(11)
    d = bundle("backend-outage", {"status": "cause_found", "verdicts": [
        {"subject": "fleet", "channel": "backend", "cause": "backend.outage"}]})  # fmt: skip
    chargers = fleet({"depot-north": 3, "depot-south": 3, "city-hub": 3})
    inventory(d / "chargers.csv", chargers)
    log = CsmsLog()
    outage = T0 + timedelta(minutes=50)
    for c in chargers:
        cp = c["charger_id"]
        log.boot(T0 + timedelta(seconds=rng.uniform(0, 20)), cp)
        log.heartbeats(cp, T0 + timedelta(seconds=30), outage, rng=rng)
        drop = outage + timedelta(seconds=rng.uniform(0, 40))
        log.event(drop, cp, "disconnected", code=1006, reason="abnormal closure")
        back = outage + timedelta(minutes=9, seconds=rng.uniform(0, 60))
        log.boot(back, cp)
        log.heartbeats(cp, back + timedelta(seconds=5), back + timedelta(minutes=20), rng=rng)
    log.write(d / "csms-ocpp.jsonl", garbage_after=200)


def make_site_outage() -> None:
    """The three chargers of one site drop together; the other sites stay connected."""
    rng = random.Random(12)
    d = bundle("site-outage", {"status": "cause_found", "verdicts": [
        {"subject": "depot-south", "channel": "backend", "cause": "network.site_outage"}]})  # fmt: skip
    chargers = fleet({"depot-north": 3, "depot-south": 3, "city-hub": 2})
    inventory(d / "chargers.csv", chargers)
    log = CsmsLog()
    end = T0 + timedelta(minutes=80)
    cut = T0 + timedelta(minutes=35)
    for c in chargers:
        cp = c["charger_id"]
        log.boot(T0 + timedelta(seconds=rng.uniform(0, 20)), cp)
        if c["site"] != "depot-south":
            log.heartbeats(cp, T0 + timedelta(seconds=30), end, rng=rng)
            continue
        log.heartbeats(cp, T0 + timedelta(seconds=30), cut, rng=rng)
        log.event(cut + timedelta(seconds=rng.uniform(0, 25)), cp, "disconnected", code=1006)
        back = cut + timedelta(minutes=22, seconds=rng.uniform(0, 30))
        log.boot(back, cp)
        log.heartbeats(cp, back + timedelta(seconds=5), end, rng=rng)
    log.write(d / "csms-ocpp.jsonl")


def make_identity_mismatch() -> None:
    """cp-007 is registered as CP-007: the CSMS (text log, local time) rejects every boot."""
    rng = random.Random(13)
    d = bundle("identity-mismatch", {"status": "cause_found", "verdicts": [
        {"subject": "CP-007", "channel": "backend", "cause": "ocpp.identity_mismatch"}]})  # fmt: skip
    chargers = fleet({"garage-west": 8})
    inventory(d / "chargers.csv", chargers)
    (d / "manifest.toml").write_text(
        '[case]\nid = "TCK-4711"\ntitle = "CP-007 never comes online after commissioning"\n'
        'timezone = "Europe/Berlin"\n'
    )
    log = CsmsLog()
    end = T0 + timedelta(minutes=45)
    for c in chargers:
        cp = c["charger_id"]
        if cp == "CP-007":
            ts = T0 + timedelta(seconds=10)
            while ts < end:
                log.event(ts - timedelta(seconds=1), "cp-007", "connected")
                log.exchange(ts, "cp-007", "BootNotification",
                             {"chargePointVendor": "Kempower", "chargePointModel": "S-Series",
                              "firmwareVersion": "4.2.1"},
                             {"status": "Rejected", "currentTime": iso(ts), "interval": 300})  # fmt: skip
                log.event(ts + timedelta(seconds=2), "cp-007", "disconnected", code=1000)
                ts += timedelta(minutes=5)
            continue
        log.boot(T0 + timedelta(seconds=rng.uniform(0, 20)), cp)
        log.heartbeats(cp, T0 + timedelta(seconds=30), end, rng=rng)
    # The CSMS writes a SteVe-style text log in local time (Europe/Berlin).
    berlin = ZoneInfo("Europe/Berlin")
    log.rows.sort(key=lambda r: r[0])
    out = []
    for ts, doc in log.rows:
        local = (
            ts.astimezone(berlin).strftime("%Y-%m-%d %H:%M:%S,") + f"{ts.microsecond // 1000:03d}"
        )
        who = (
            f"[chargeBoxId={doc['charger_id']}, sessionId=ws-{abs(hash(doc['charger_id'])) % 997}]"
        )
        if "frame" in doc:
            verb = "Received" if doc["direction"] == "cp_to_csms" else "Sending"
            text = json.dumps(doc["frame"], separators=(",", ":"))
            out.append(f"{local} DEBUG WebSocketLogger - {who} {verb}: {text}")
        elif doc["event"] == "connected":
            out.append(f"{local} INFO  OcppWebSocketHandler - {who} New connection established")
        else:
            out.append(
                f"{local} INFO  OcppWebSocketHandler - {who} connection closed, code {doc['code']}"
            )
        if len(out) == 40:
            out.append(f"{local} WARN  TaskScheduler - pool size 8, queue 0")
    (d / "steve-csms.log").write_text("\n".join(out) + "\n", encoding="utf-8")
    validate_all()


def make_heartbeat_interval() -> None:
    """A cellular charger heartbeats every 120 s; the CSMS marks chargers offline after 90 s."""
    rng = random.Random(14)
    d = bundle("heartbeat-interval", {"status": "cause_found", "verdicts": [
        {"subject": "CP-003", "channel": "backend", "cause": "ocpp.heartbeat_interval"}]})  # fmt: skip
    chargers = fleet({"retail-park": 4})
    chargers[2] |= {"connectivity": "cellular", "signal_dbm": -84}
    inventory(d / "chargers.csv", chargers)
    log = CsmsLog()
    end = T0 + timedelta(minutes=60)
    for c in chargers:
        cp = c["charger_id"]
        if cp != "CP-003":
            log.boot(T0 + timedelta(seconds=rng.uniform(0, 20)), cp)
            log.heartbeats(cp, T0 + timedelta(seconds=30), end, rng=rng)
            continue
        log.boot(T0 + timedelta(seconds=5), cp, interval=120)
        ts = T0 + timedelta(seconds=125)
        while ts < end:
            rtt = int(rng.uniform(400, 1800))
            log.exchange(ts, cp, "Heartbeat", {}, {"currentTime": iso(ts)}, rtt)
            log.event(
                ts + timedelta(seconds=90), cp, "marked_offline", reason="no message for 90 s"
            )
            log.event(ts + timedelta(seconds=120), cp, "marked_online")
            ts += timedelta(seconds=120 + rng.uniform(-1, 1))
    log.write(d / "csms-ocpp.jsonl")


def make_vehicle_model() -> None:
    """Sessions across a depot: one vehicle model fails far above the fleet rate."""
    rng = random.Random(15)
    d = bundle("vehicle-model", {"status": "cause_found", "verdicts": [
        {"subject": "fleet", "channel": "vehicle", "cause": "vehicle.model_specific"}]})  # fmt: skip
    chargers = fleet({"bus-depot": 6})
    inventory(d / "chargers.csv", chargers)
    log = CsmsLog()
    end = T0 + timedelta(hours=3)
    steady(log, chargers, T0, end, rng)
    log.write(d / "csms-ocpp.jsonl")
    models = [("Volkswagen", "ID.4", 0.02), ("Tesla", "Model Y", 0.02), ("Renault", "Megane E-Tech", 0.03),
              ("Voltra", "EX5", 0.45), ("Hyundai", "Ioniq 5", 0.02)]  # fmt: skip
    with (d / "sessions.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["session_id", "charger_id", "connector_id", "start", "stop", "vehicle_make",
                    "vehicle_model", "evccid", "result", "error_code"])  # fmt: skip
        for n in range(320):
            make, model, p_fail = models[n % len(models)]
            start = T0 + timedelta(minutes=rng.uniform(0, 170))
            failed = rng.random() < p_fail
            stop = start + timedelta(
                seconds=rng.uniform(5, 40) if failed else rng.uniform(900, 3600)
            )
            w.writerow([f"S-{n:05d}", f"CP-{1 + n % 6:03d}", 1 + n % 2, iso(start), iso(stop), make,
                        model, f"{rng.getrandbits(48):012X}", "failed" if failed else "ok",
                        "SessionSetupTimeout" if failed else ""])  # fmt: skip


def make_healthy() -> None:
    """Four chargers, heartbeats and sessions, nothing wrong."""
    rng = random.Random(16)
    d = bundle("healthy", {"status": "no_failure", "verdicts": []})
    chargers = fleet({"office": 4})
    inventory(d / "chargers.csv", chargers)
    log = CsmsLog()
    steady(log, chargers, T0, T0 + timedelta(hours=1), rng)
    log.write(d / "csms-ocpp.jsonl")


def make_wifi_storm() -> None:
    """A Wi-Fi charger far from the access point drops again and again."""
    rng = random.Random(17)
    d = bundle("wifi-storm", {"status": "cause_found", "verdicts": [
        {"subject": "CP-002", "channel": "backend", "cause": "network.wifi_loss"}]})  # fmt: skip
    chargers = fleet({"hotel": 3})
    chargers[1] |= {"connectivity": "wifi"}
    inventory(d / "chargers.csv", chargers)
    log = CsmsLog()
    end = T0 + timedelta(minutes=90)
    for c in chargers:
        cp = c["charger_id"]
        if cp != "CP-002":
            log.boot(T0 + timedelta(seconds=rng.uniform(0, 20)), cp)
            log.heartbeats(cp, T0 + timedelta(seconds=30), end, rng=rng)
            continue
        ts = T0
        while ts < end:
            log.boot(ts, cp)
            up = timedelta(minutes=rng.uniform(3, 9))
            log.heartbeats(cp, ts + timedelta(seconds=5), ts + up, rng=rng)
            log.event(ts + up, cp, "disconnected", code=1006, reason="ping timeout")
            ts += up + timedelta(seconds=rng.uniform(20, 90))
    log.write(d / "csms-ocpp.jsonl")


def make_fault_slac() -> None:
    """CP-002 cannot start DC sessions: its fault log shows SLAC failing with every vehicle."""
    rng = random.Random(18)
    d = bundle("fault-slac", {"status": "cause_found", "verdicts": [
        {"subject": "CP-002", "channel": "vehicle", "cause": "vehicle.slac_failure"}]})  # fmt: skip
    chargers = fleet({"highway-hub": 3})
    inventory(d / "chargers.csv", chargers)
    log = CsmsLog()
    steady(log, chargers, T0, T0 + timedelta(hours=2), rng)
    log.write(d / "csms-ocpp.jsonl")
    models = [("Volkswagen", "ID.4"), ("Tesla", "Model Y"), ("Hyundai", "Ioniq 5"), ("BMW", "i4")]
    faults = []
    with (d / "sessions.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["session_id", "charger_id", "connector_id", "start", "stop", "vehicle_make",
                    "vehicle_model", "evccid", "result", "error_code"])  # fmt: skip
        for n in range(36):
            cp = f"CP-{1 + n % 3:03d}"
            make, model = models[n % len(models)]
            start = T0 + timedelta(minutes=3 * n + rng.uniform(0, 2))
            failed = cp == "CP-002"
            stop = start + timedelta(seconds=25 if failed else rng.uniform(900, 2400))
            w.writerow([f"S-{n:04d}", cp, 1, iso(start), iso(stop), make, model,
                        f"{rng.getrandbits(48):012X}", "failed" if failed else "ok",
                        "SLACTimeout" if failed else ""])  # fmt: skip
            if failed:
                for k, code in enumerate(("I001", "E202")):
                    ts = start + timedelta(seconds=12 + 10 * k)
                    text = ("SLAC: CM_SLAC_PARM.REQ from EV" if code == "I001"
                            else "SLAC matching failed: no CM_SLAC_MATCH.CNF within 10 s")  # fmt: skip
                    level = "INFO" if code == "I001" else "ERROR"
                    faults.append(f"{ts.strftime('%Y-%m-%d %H:%M:%S')} {level} {code} {text}")
    (d / "cp-002-faults.log").write_text("\n".join(faults) + "\n", encoding="utf-8")
    (d / "manifest.toml").write_text('[files."cp-002-faults.log"]\ncharger_id = "CP-002"\n')


if __name__ == "__main__":
    for make in (make_backend_outage, make_site_outage, make_identity_mismatch,
                 make_heartbeat_interval, make_vehicle_model, make_healthy, make_wifi_storm,
                 make_fault_slac):  # fmt: skip
        make()
        print("wrote", make.__doc__.splitlines()[0])
