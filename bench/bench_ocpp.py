"""OCPP log ingest benchmark (issue 2): our ingest vs DuckDB's own read_json (the floor in
this stack) vs a plain json.loads loop, on a generated JSONL log of N lines over 500
chargers; peak RSS of each from /usr/bin/time -v; plus triage wall time per sample bundle.

    .venv/bin/python bench/bench_ocpp.py                 # 1M and 4M lines
    .venv/bin/python bench/bench_ocpp.py --lines 200000  # quick look

Each method runs in its own process so peak memory is its own. Files go to bench/data/.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
ROOT = HERE.parent


def generate(path: Path, lines: int, chargers: int = 500, seed: int = 7) -> None:
    """Fleet traffic in the bundle convention: heartbeats, status, meter values, boots,
    with their responses and some disconnects (frames shaped as OCPP 1.6 defines them)."""
    rng = random.Random(seed)
    t0 = datetime(2026, 6, 1, tzinfo=UTC)
    step = timedelta(seconds=86400 / max(lines, 1) * 2)
    ts = t0
    uid = 0
    with path.open("w", encoding="utf-8") as fh:
        n = 0
        while n < lines:
            cp = f"CP-{rng.randrange(chargers):04d}"
            uid += 1
            stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
            reply = ts + timedelta(milliseconds=rng.randrange(40, 400))
            rstamp = reply.strftime("%Y-%m-%dT%H:%M:%S.") + f"{reply.microsecond // 1000:03d}Z"
            r = rng.random()
            if r < 0.45:
                call = [2, str(uid), "Heartbeat", {}]
                res = [3, str(uid), {"currentTime": stamp}]
            elif r < 0.8:
                call = [2, str(uid), "MeterValues", {"connectorId": 1, "transactionId": uid % 9000,
                        "meterValue": [{"timestamp": stamp, "sampledValue": [
                            {"value": f"{rng.uniform(0, 90000):.1f}", "measurand":
                             "Energy.Active.Import.Register", "unit": "Wh"}]}]}]  # fmt: skip
                res = [3, str(uid), {}]
            elif r < 0.97:
                call = [2, str(uid), "StatusNotification", {"connectorId": rng.randrange(1, 3),
                        "errorCode": "NoError", "status": rng.choice(["Available", "Charging",
                        "Preparing", "Finishing"]), "timestamp": stamp}]  # fmt: skip
                res = [3, str(uid), {}]
            elif r < 0.995:
                call = [2, str(uid), "BootNotification", {"chargePointVendor": "Kempower",
                        "chargePointModel": "S-Series", "firmwareVersion": "4.2.1"}]  # fmt: skip
                res = [3, str(uid), {"status": "Accepted", "currentTime": stamp, "interval": 60}]
            else:
                fh.write(json.dumps({"ts": stamp, "charger_id": cp, "event": "disconnected",
                                     "code": 1006}) + "\n")  # fmt: skip
                n += 1
                ts += step
                continue
            fh.write(json.dumps({"ts": stamp, "charger_id": cp, "direction": "cp_to_csms",
                                 "frame": call}) + "\n")  # fmt: skip
            fh.write(json.dumps({"ts": rstamp, "charger_id": cp, "direction": "csms_to_cp",
                                 "frame": res}) + "\n")  # fmt: skip
            n += 2
            ts += step


# ---------------------------------------------------------------- the measured methods


def run_floor(path: Path) -> int:
    import duckdb

    with tempfile.TemporaryDirectory() as tmp:
        con = duckdb.connect(str(Path(tmp) / "floor.duckdb"))
        con.execute(
            "CREATE TABLE t AS SELECT * FROM read_json(?, format='newline_delimited')",
            [str(path)],
        )
        return con.execute("SELECT count(*) FROM t").fetchall()[0][0]


def run_loads(path: Path) -> int:
    n = 0
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            json.loads(line)
            n += 1
    return n


def run_ours(path: Path) -> int:
    from forensics import ingest

    with tempfile.TemporaryDirectory() as tmp:
        report = ingest.ingest([path], Path(tmp) / "case.duckdb", Path(tmp) / "work")
        return report.records


METHODS = {"floor": run_floor, "loads": run_loads, "ours": run_ours}


def measure(method: str, path: Path) -> dict:
    """Runs one method in a child under /usr/bin/time -v: wall seconds, peak RSS MiB."""
    cmd = ["/usr/bin/time", "-v", sys.executable, __file__, "--run", method, str(path)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return {"method": method, "wall_s": round(wall, 2), "peak_rss_mib": round(rss_kb / 1024),
            "records": int(proc.stdout.strip().splitlines()[-1])}  # fmt: skip


def triage_times() -> list[tuple[str, float]]:
    out = []
    samples = sorted(p.name.removesuffix(".expected.json")
                     for p in (ROOT / "sample_traces").glob("*.expected.json"))  # fmt: skip
    for name in samples:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "forensics", "triage",
                            str(ROOT / "sample_traces" / name), "--out", tmp, "--format", "json"],
                           capture_output=True, check=False)  # fmt: skip
            out.append((name, round(time.perf_counter() - t0, 2)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, nargs="*", default=[1_000_000, 4_000_000])
    ap.add_argument("--run", nargs=2, metavar=("METHOD", "FILE"), help=argparse.SUPPRESS)
    ap.add_argument("--skip-loads-above", type=int, default=1_000_000)
    args = ap.parse_args()
    if args.run:
        print(METHODS[args.run[0]](Path(args.run[1])))
        return
    DATA.mkdir(exist_ok=True)
    results = []
    for n in args.lines:
        path = DATA / f"ocpp-{n}.jsonl"
        if not path.exists():
            generate(path, n)
        size_mb = path.stat().st_size / 1e6
        row = {"lines": n, "mb": round(size_mb)}
        for method in ("floor", "ours", "loads"):
            if method == "loads" and n > args.skip_loads_above:
                continue
            m = measure(method, path)
            row[method] = m
            print(f"{n:>9} lines {size_mb:7.0f} MB  {method:6} {m['wall_s']:7.2f} s  "
                  f"{n / m['wall_s'] / 1e3:7.0f}k lines/s  peak {m['peak_rss_mib']:5} MiB  "
                  f"records {m['records']}", flush=True)  # fmt: skip
        row["ours_vs_floor"] = round(row["ours"]["wall_s"] / row["floor"]["wall_s"], 2)
        if "loads" in row:
            row["loads_vs_ours"] = round(row["loads"]["wall_s"] / row["ours"]["wall_s"], 2)
        print(f"  ours / read_json floor = {row['ours_vs_floor']}x"
              + (f"; json.loads loop / ours = {row['loads_vs_ours']}x" if "loads" in row else ""))  # fmt: skip
        results.append(row)
    if len(results) > 1:
        a, b = results[0], results[-1]
        print(f"peak RSS of our ingest: {a['ours']['peak_rss_mib']} MiB at {a['lines']} lines, "
              f"{b['ours']['peak_rss_mib']} MiB at {b['lines']} lines "
              f"({b['ours']['peak_rss_mib'] / a['ours']['peak_rss_mib']:.2f}x)")  # fmt: skip
    for name, secs in triage_times():
        print(f"triage {name:24} {secs:6.2f} s (start-up included)")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "ocpp.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
