"""Capture ingest speed: ours vs the tshark-fields route vs a plain dpkt loop vs pyshark.

    .venv/bin/python bench/bench_pcap.py [--packets 1000000] [--rss-packets 4000000]
                                         [--workdir /tmp/pcap-bench] [--json out.json]
                                         [--repeat 3]

Generates fleet-backend captures (bench/_pcap_fleet.py: real-stack connections replayed for
many chargers) of --packets and --rss-packets packets, then runs each route in its own
process (wall time; peak RSS from wait4) and prints packets/s, MB/s and ratios:
- floor: reading the file from page cache, nothing else;
- ours: `forensics.ingest.ingest` of the capture into a new case (sha256, detection,
  TCP flow state, TLS, WebSocket, OCPP through store_frames, events), and the parser alone;
  each --repeat times (alternating, one round before tshark, one between tshark and dpkt,
  one after), the median quoted;
- tshark: `tshark -T fields` with 11 fields (-E quote=d) to CSV, then DuckDB read_csv;
- dpkt: a plain dpkt loop decoding Ethernet/IP/TCP into Arrow batches inserted into DuckDB;
- pyshark: on a 10k-packet prefix, extrapolated linearly.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable
TSHARK_FIELDS = [
    "frame.number", "frame.time_epoch", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst",
    "tcp.srcport", "tcp.dstport", "tcp.flags", "tcp.len", "tls.alert_message.desc",
]  # fmt: skip


def run_route(route: str, capture: Path, work: Path, memory_limit: str | None = None) -> dict:
    """Runs one route in a child process; returns its own timing plus wall and peak RSS.
    `memory_limit` is the case database's DuckDB memory_limit (FORENSICS_MEMORY_LIMIT)."""
    env = dict(os.environ)
    if memory_limit:
        env["FORENSICS_MEMORY_LIMIT"] = memory_limit
    t0 = time.perf_counter()
    p = subprocess.Popen([PY, __file__, "--route", route, "--capture", str(capture), "--workdir", str(work)],
                         stdout=subprocess.PIPE, env=env)  # fmt: skip
    out = p.stdout.read()
    _pid, status, _ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"route {route} failed ({status})")
    res = json.loads(out.decode().strip().splitlines()[-1])
    # VmHWM of the child's own address space: ru_maxrss would carry the parent's RSS over
    # fork+exec and inflate small routes
    res.update(
        route=route,
        wall_s=round(wall, 3),
        rss_mb=max(res.pop("hwm_mb"), res.get("tshark_rss_mb", 0)),
    )
    return res


def _hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


# ---------------------------------------------------------------- routes (child side)


def route_floor(capture: Path, work: Path) -> dict:
    n = 0
    with open(capture, "rb") as f:
        while chunk := f.read(8 << 20):
            n += len(chunk)
    return {"bytes": n}


def route_ours(capture: Path, work: Path) -> dict:
    from forensics import ingest

    case = work / "ours.duckdb"
    case.unlink(missing_ok=True)
    t = time.perf_counter()
    rep = ingest.ingest([capture], case, work / "ours-work")
    return {"s": time.perf_counter() - t, "records": rep.records, "rejects": rep.rejects}


def route_parser(capture: Path, work: Path) -> dict:
    from forensics import ingest, store
    from forensics.parsers.base import Sink, Source
    from forensics.parsers.pcap.parser import PcapParser

    case = work / "parser.duckdb"
    case.unlink(missing_ok=True)
    con = store.connect(case)
    ingest.arrow_without_pandas()  # as ingest does: pyarrow's first look imports no pandas
    t = time.perf_counter()
    src = Source(capture, capture.name)
    # inserts auto-commit as in forensics.ingest (one open transaction would hold every
    # insert in RAM); the garbage collector and thread switching set as ingest sets them
    with ingest.bulk_runtime():
        PcapParser().parse(src, Sink(con, 1, set(store.table_names(con))))
    s = time.perf_counter() - t
    counts = {
        t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("tcp_flows", "tls_handshakes", "ws_sessions", "ocpp_messages", "events")
    }
    return {"s": s, "packets": src.records_seen, **counts}


def route_tshark(capture: Path, work: Path) -> dict:
    import duckdb

    csv = work / "tshark.csv"
    cmd = ["tshark", "-r", str(capture), "-T", "fields", "-E", "header=y", "-E", "separator=,",
           "-E", "quote=d"]  # fmt: skip
    for f in TSHARK_FIELDS:
        cmd += ["-e", f]
    t = time.perf_counter()
    with open(csv, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
        _pid, _status, ru = os.wait4(proc.pid, 0)
    t_csv = time.perf_counter() - t
    db = work / "tshark.duckdb"
    db.unlink(missing_ok=True)
    con = duckdb.connect(str(db))
    con.execute(f"CREATE TABLE p AS SELECT * FROM read_csv('{csv}', header=true, all_varchar=true)")
    rows = con.execute("SELECT count(*) FROM p").fetchone()[0]
    return {"s": time.perf_counter() - t, "tshark_s": t_csv, "rows": rows,
            "tshark_rss_mb": round(ru.ru_maxrss / 1024, 1)}  # fmt: skip


def route_dpkt(capture: Path, work: Path) -> dict:
    import dpkt
    import duckdb
    import pyarrow as pa

    db = work / "dpkt.duckdb"
    db.unlink(missing_ok=True)
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE p (frame BIGINT, ts DOUBLE, src VARCHAR, dst VARCHAR, sport INT, "
                "dport INT, flags INT, len INT)")  # fmt: skip
    t = time.perf_counter()
    cols = {k: [] for k in ("frame", "ts", "src", "dst", "sport", "dport", "flags", "len")}
    n = 0

    def flush():
        con.register("b", pa.table(cols))
        con.execute("INSERT INTO p SELECT * FROM b")
        con.unregister("b")
        for v in cols.values():
            v.clear()

    with open(capture, "rb") as f:
        for ts, buf in dpkt.pcapng.Reader(f):
            n += 1
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            src = dst = None
            sport = dport = flags = ln = None
            if isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
                src, dst = bytes(ip.src).hex(), bytes(ip.dst).hex()
                if isinstance(ip.data, dpkt.tcp.TCP):
                    tcp = ip.data
                    sport, dport, flags, ln = tcp.sport, tcp.dport, tcp.flags, len(tcp.data)
            for k, v in zip(cols, (n, ts, src, dst, sport, dport, flags, ln), strict=True):
                cols[k].append(v)
            if len(cols["frame"]) == 65536:
                flush()
    flush()
    return {"s": time.perf_counter() - t, "packets": n}


def route_pyshark(capture: Path, work: Path) -> dict:
    import pyshark

    prefix = work / "prefix-10k.pcapng"
    subprocess.run(["editcap", "-r", str(capture), str(prefix), "1-10000"], check=True,
                   capture_output=True)  # fmt: skip
    t = time.perf_counter()
    n = 0
    cap = pyshark.FileCapture(str(prefix), keep_packets=False)
    for pkt in cap:
        n += 1
        _ = (pkt.number, pkt.sniff_timestamp, getattr(pkt, "ip", None), getattr(pkt, "tcp", None))
    cap.close()
    return {"s": time.perf_counter() - t, "packets": n}


ROUTES = {"floor": route_floor, "ours": route_ours, "parser": route_parser,
          "tshark": route_tshark, "dpkt": route_dpkt, "pyshark": route_pyshark}  # fmt: skip


# ---------------------------------------------------------------- driver


def make_capture(work: Path, packets: int) -> tuple[Path, int]:
    sys.path.insert(0, str(HERE))
    import _pcap_fleet

    path = work / f"fleet-{packets}.pcapng"
    meta = path.with_suffix(".count")
    if not (path.exists() and meta.exists()):
        meta.write_text(str(_pcap_fleet.write(path, packets)))
    return path, int(meta.read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--rss-packets", type=int, default=4_000_000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/pcap-bench"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--low-memory-limit", default="128MB",
                    help="also measure ours' RSS at both sizes with this DuckDB memory_limit "
                         "(FORENSICS_MEMORY_LIMIT); '' to skip")  # fmt: skip
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of ours and of the parser alone; the median is quoted")  # fmt: skip
    ap.add_argument("--route")
    ap.add_argument("--capture", type=Path)
    a = ap.parse_args()
    a.workdir.mkdir(parents=True, exist_ok=True)
    if a.route:  # child
        res = ROUTES[a.route](a.capture, a.workdir)
        print(json.dumps({**res, "hwm_mb": _hwm_mb()}))
        return
    cap, n = make_capture(a.workdir, a.packets)
    size_mb = cap.stat().st_size / 1e6
    print(f"capture: {cap} {n} packets, {size_mb:.0f} MB")
    # The routes of a few seconds run --repeat times and the median counts (on a shared
    # machine one run moves by +-20 %); the long ones run once, between those rounds, so that
    # the machine's drift over the minutes of a bench weighs on both sides of each ratio.
    res = {"floor": run_route("floor", cap, a.workdir)}
    runs: dict[str, list[dict]] = {"ours": [], "parser": []}
    long_routes = ["tshark", "dpkt"]
    for i in range(max(a.repeat, 1)):
        for r in runs:
            runs[r].append(run_route(r, cap, a.workdir))
        if i < len(long_routes):
            res[long_routes[i]] = run_route(long_routes[i], cap, a.workdir)
    for r in [*long_routes[max(a.repeat, 1) :], "pyshark"]:
        res[r] = run_route(r, cap, a.workdir)
    for r, rs in runs.items():
        rs.sort(key=lambda x: x["s"])
        res[r] = {**rs[len(rs) // 2], "runs_s": [round(x["s"], 3) for x in rs]}
    pys = res["pyshark"]
    pys["extrapolated_s"] = pys["s"] * n / max(pys["packets"], 1)
    big, n4 = make_capture(a.workdir, a.rss_packets) if a.rss_packets else (None, 0)
    rss4 = run_route("ours", big, a.workdir) if big else None
    low = a.low_memory_limit
    rss_low = (
        (run_route("ours", cap, a.workdir, low), run_route("ours", big, a.workdir, low))
        if big and low
        else None
    )
    t = {"floor": res["floor"]["wall_s"], "ours": res["ours"]["s"], "parser": res["parser"]["s"],
         "tshark": res["tshark"]["s"], "dpkt": res["dpkt"]["s"], "pyshark": pys["extrapolated_s"]}  # fmt: skip
    print(f"{'route':10} {'seconds':>9} {'packets/s':>11} {'MB/s':>8} {'peak RSS MB':>12}")
    for r, s in t.items():
        rss = res[r]["rss_mb"]
        print(f"{r:10} {s:9.2f} {n / s:11,.0f} {size_mb / s:8.1f} {rss:12.0f}")
    print(f"ours: median of {a.repeat} runs, {res['ours']['runs_s']} s")
    print(f"ours vs tshark-fields: {t['tshark'] / t['ours']:.1f}x  (goal >= 15x)")
    print(f"ours vs dpkt loop:     {t['dpkt'] / t['ours']:.1f}x  (goal >= 8x)")
    print(f"ours vs pyshark:       {t['pyshark'] / t['ours']:.0f}x (pyshark extrapolated from 10k)")
    print(
        f"parser alone:          {t['parser']:.2f} s; ingest adds sha256, detection, evidence rows"
    )
    print(f"ours produced: {res['parser']}")
    if rss4:
        ratio = rss4["rss_mb"] / res["ours"]["rss_mb"]
        print(f"peak RSS ours: {res['ours']['rss_mb']:.0f} MB at {n} packets, {rss4['rss_mb']:.0f} MB at "
              f"{n4} packets ({rss4['s']:.1f} s): {ratio:.2f}x (goal <= 1.25x)")  # fmt: skip
    if rss_low:
        r1, r4 = (r["rss_mb"] for r in rss_low)
        print(f"  with FORENSICS_MEMORY_LIMIT={low}: {r1:.0f} MB at {n} ({rss_low[0]['s']:.2f} s), "
              f"{r4:.0f} MB at {n4} ({rss_low[1]['s']:.1f} s): {r4 / r1:.2f}x")  # fmt: skip
    if a.json:
        a.json.write_text(json.dumps({"packets": n, "mb": size_mb, "routes": res, "rss_big": rss4,
                                      "packets_big": n4, "rss_low_limit": rss_low}, indent=2, default=str))  # fmt: skip


if __name__ == "__main__":
    main()
