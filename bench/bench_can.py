"""CAN ingest benchmark: our ingest (frames, error classes, bus stats, module health, into an
on-disk case) against iterating python-can's reader over the same file, per format.

Files are written by python-can's own writers (candump log, ASC, BLF, TRC; 1 % error frames,
TRC without them since its writer drops them) under bench/data/ (git-ignored) and reused when
present. Every measurement runs in a fresh subprocess, so peak RSS is that run's own.

    .venv/bin/python bench/bench_can.py --frames 2000000,10000000 --formats log,asc,blf,trc
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"

WRITE = r"""
import sys, can, random
path, n, ext = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = random.Random(1)
ids = [0x181, 0x182, 0x183, 0x184, 0x200, 0x701, 0x702, 0x703, 0x704, 0x18FF50E5]
with can.Logger(path) as log:
    t = 1_780_000_000.1
    for i in range(n):
        t += 0.0001
        if ext != "trc" and i % 100 == 50:
            m = can.Message(timestamp=t, is_error_frame=True, arbitration_id=0x88,
                            data=bytes([0, 0, 4, 0x19, 0, 0, 0, 0]), channel=0)
        else:
            cid = ids[i % len(ids)]
            m = can.Message(timestamp=t, arbitration_id=cid, is_extended_id=cid > 0x7FF,
                            data=bytes([i & 255, (i >> 8) & 255, 3, 4, 5, 6, 7, 8]), channel=0)
        log.on_message_received(m)
"""

PYCAN = r"""
import sys, time, resource, can
path = sys.argv[1]
kw = {"relative_timestamp": False} if path.endswith(".asc") else {}
t0 = time.perf_counter(); n = 0
for m in can.LogReader(path, **kw):
    n += 1
dt = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_SELF)
print({"frames": n, "seconds": dt, "rss_mb": ru.ru_maxrss / 1024, "cpu_s": ru.ru_utime + ru.ru_stime})
"""

OURS = r"""
import sys, time, resource, duckdb
from pathlib import Path
from forensics import ingest
path, case, work = sys.argv[1], sys.argv[2], sys.argv[3]
t0 = time.perf_counter()
rep = ingest.ingest([Path(path)], Path(case), Path(work), charger_id="CP-1")
dt = time.perf_counter() - t0
con = duckdb.connect(case, read_only=True)
n = con.execute("SELECT count(*) FROM can_frames").fetchone()[0]
errs = con.execute("SELECT count(*) FROM can_errors").fetchone()[0]
ru = resource.getrusage(resource.RUSAGE_SELF)
print({"frames": n, "errors": errs, "seconds": dt, "failed": rep.failed, "rejects": rep.rejects,
       "rss_mb": ru.ru_maxrss / 1024, "cpu_s": ru.ru_utime + ru.ru_stime})
"""


def _py(code: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    return eval(out.stdout.strip().splitlines()[-1])  # our own dict literal, printed above


def ensure(n: int, ext: str) -> Path:
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"bench_{n}.{ext}"
    if not path.exists():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", WRITE, str(path), str(n), ext], check=True)
        print(f"  wrote {path.name} ({path.stat().st_size >> 20} MiB) in {time.perf_counter() - t0:.0f} s",
              flush=True)  # fmt: skip
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", default="2000000,10000000", help="comma-separated frame counts")
    ap.add_argument("--formats", default="log,asc,blf,trc")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    results = []
    for n in [int(x) for x in args.frames.split(",")]:
        for ext in args.formats.split(","):
            path = ensure(n, ext)
            ref = _py(PYCAN, str(path))
            with tempfile.TemporaryDirectory(dir=DATA) as tmp:
                ours = _py(OURS, str(path), f"{tmp}/case.duckdb", f"{tmp}/work")
            row = {
                "format": ext, "frames": n, "size_mib": path.stat().st_size >> 20,
                "python_can_fps": round(ref["frames"] / ref["seconds"]),
                "ours_fps": round(ours["frames"] / ours["seconds"]),
                "speedup": round(ref["seconds"] / ours["seconds"], 2),
                # CPU seconds of each process (ours: all threads, start-up included): a
                # loaded machine stretches wall time, CPU time much less
                "ours_cpu_s": round(ours["cpu_s"], 2), "python_can_cpu_s": round(ref["cpu_s"], 2),
                "ours_rss_mb": round(ours["rss_mb"]), "python_can_rss_mb": round(ref["rss_mb"]),
                "ours_frames": ours["frames"], "ours_errors": ours["errors"], "rejects": ours["rejects"],
                "load_1min": round(os.getloadavg()[0], 1),  # shared cores: how busy they were
            }  # fmt: skip
            results.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
