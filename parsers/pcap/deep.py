"""Deep path: decrypt TLS with tshark when a key log is available, so OCPP inside wss://,
the WebSocket upgrade inside TLS and TLS 1.3 alerts become visible in the same tables.

Key logs come from a pcapng Decryption Secrets Block or from an NSS key log file beside the
capture in the bundle (`sslkeys.log`, `*keylog*`, any file whose lines are CLIENT_RANDOM /
*_TRAFFIC_SECRET entries). tshark runs once over the capture with `tls.keylog_file` and a
display filter on decrypted records only; its JSON output is small. Where tshark is absent,
a note says so once and the fast path's results stand.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

KEYLOG_LINE = re.compile(
    rb"^(CLIENT_RANDOM|CLIENT_HANDSHAKE_TRAFFIC_SECRET|SERVER_HANDSHAKE_TRAFFIC_SECRET|"
    rb"CLIENT_TRAFFIC_SECRET_0|SERVER_TRAFFIC_SECRET_0|EXPORTER_SECRET|EARLY_EXPORTER_SECRET|"
    rb"CLIENT_EARLY_TRAFFIC_SECRET) [0-9a-fA-F]{64} [0-9a-fA-F]+\s*$",
    re.M,
)
FIELDS = [
    "frame.number", "frame.time_epoch", "ip.src", "ipv6.src", "tcp.srcport", "ip.dst",
    "ipv6.dst", "tcp.dstport", "http.request.method", "http.request.uri", "http.response.code",
    "http.authorization", "websocket.payload.text", "tls.alert_message.level",
    "tls.alert_message.desc",
]  # fmt: skip
DISPLAY_FILTER = "tls && (http || websocket.payload.text || tls.alert_message)"
TIMEOUT_S = 600


@dataclass
class Decrypted:
    """What tshark saw inside TLS, by flow endpoints (client ip, port, server ip, port)."""

    upgrades: dict[tuple, dict] = field(default_factory=dict)  # request + response
    texts: list[tuple[tuple, int, int, bool, str]] = field(default_factory=list)
    alerts: list[tuple[tuple, int, int, bool, str, str]] = field(default_factory=list)
    error: str = ""


def find_keylog(capture: Path, secrets: list[bytes]) -> bytes:
    """Key log text from the capture's DSBs and from key log files beside it."""
    out = b"".join(s if s.endswith(b"\n") else s + b"\n" for s in secrets)
    for p in sorted(capture.parent.iterdir()) if capture.parent.is_dir() else []:
        if p == capture or not p.is_file() or p.stat().st_size > (64 << 20):
            continue
        with open(p, "rb") as f:
            head = f.read(4096)
        if KEYLOG_LINE.search(head):
            out += p.read_bytes()
    return out


def decrypt(capture: Path, keylog: bytes, server_ports: set[int]) -> Decrypted:
    """Runs tshark over the capture with the key log; returns the decrypted facts."""
    res = Decrypted()
    if not shutil.which("tshark"):
        res.error = "tshark not installed: TLS payloads stay encrypted (fast path only)"
        return res
    with tempfile.NamedTemporaryFile(suffix=".keylog") as kf:
        kf.write(keylog)
        kf.flush()
        cmd = ["tshark", "-r", str(capture), "-o", f"tls.keylog_file:{kf.name}", "-Y",
               DISPLAY_FILTER, "-T", "json"]  # fmt: skip
        for port in sorted(server_ports):  # non-standard ports: tell tshark they carry TLS
            cmd += ["-d", f"tcp.port=={port},tls"]
        for f in FIELDS:
            cmd += ["-e", f]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            res.error = f"tshark did not finish within {TIMEOUT_S} s"
            return res
    if proc.returncode != 0:
        res.error = "tshark failed: " + proc.stderr.decode(errors="replace").strip()[:200]
        return res
    for pkt in json.loads(proc.stdout or b"[]"):
        _record(res, pkt["_source"]["layers"], server_ports)
    return res


def _one(layers: dict, name: str) -> str | None:
    v = layers.get(name)
    return v[0] if v else None


def _record(res: Decrypted, ly: dict, server_ports: set[int]) -> None:
    src = _one(ly, "ip.src") or _one(ly, "ipv6.src")
    dst = _one(ly, "ip.dst") or _one(ly, "ipv6.dst")
    sport, dport = int(_one(ly, "tcp.srcport") or 0), int(_one(ly, "tcp.dstport") or 0)
    from_client = dport in server_ports or sport not in server_ports
    key = (src, sport, dst, dport) if from_client else (dst, dport, src, sport)
    frame = int(_one(ly, "frame.number"))
    ts_us = round(float(_one(ly, "frame.time_epoch")) * 1_000_000)
    up = (
        res.upgrades.setdefault(key, {})
        if ("http.request.uri" in ly or "http.response.code" in ly)
        else None
    )
    if up is not None and "http.request.uri" in ly:
        auth = _one(ly, "http.authorization") or ""
        up.update(path=_one(ly, "http.request.uri"), method=_one(ly, "http.request.method"),
                  frame=frame, ts=ts_us, auth_scheme=auth.split(" ")[0] or None)  # fmt: skip
    if up is not None and "http.response.code" in ly:
        up.update(status=int(_one(ly, "http.response.code")), resp_frame=frame, resp_ts=ts_us)
    for text in ly.get("websocket.payload.text", []):
        res.texts.append((key, frame, ts_us, from_client, text))
    descs = ly.get("tls.alert_message.desc", [])
    levels = ly.get("tls.alert_message.level", [])
    for i, desc in enumerate(descs):
        lvl = levels[i] if i < len(levels) else "2"
        res.alerts.append((key, frame, ts_us, from_client, desc, lvl))


def merge(dec: Decrypted, flow_of: dict[tuple, int], base: dict, events, hs_rows: list[dict],
          ws_rows: list[dict], ocpp) -> None:  # fmt: skip
    """Adds what decryption revealed to the rows and events of the fast path."""
    from forensics.parsers.pcap.events import SIDE, ts
    from forensics.parsers.pcap.tls import ALERTS

    for key, up in dec.upgrades.items():
        g = flow_of.get(key)
        if g is None or "path" not in up:
            continue
        cp, flt = base["charger_id"][g], base["wireshark_filter"][g]
        cp_id = up["path"].split("?")[0].rstrip("/").split("/")[-1] or None
        status = up.get("status")
        row = {k: base[k][g] for k in base}
        row.update(ts=ts(up["ts"]), method=up.get("method"), path=up["path"], charge_point_id=cp_id,
                   auth_scheme=up.get("auth_scheme"), status=status,
                   ts_response=ts(up["resp_ts"]) if "resp_ts" in up else None,
                   locator=f"frame {up['frame']}")  # fmt: skip
        ws_rows.append(row)
        info = {"client": f"{key[0]}:{key[1]}", "server": f"{key[2]}:{key[3]}", "path": up["path"],
                "charge_point_id": cp_id, "status": status, "auth_scheme": up.get("auth_scheme"),
                "decrypted": True}  # fmt: skip
        frame, t = (
            (up["resp_frame"], up["resp_ts"]) if "resp_frame" in up else (up["frame"], up["ts"])
        )
        if status is not None and status != 101:
            events.add(
                t, cp, "websocket", "ws.upgrade_rejected", "error", str(status), frame, info, flt
            )
        elif status == 101:
            events.add(t, cp, "websocket", "ws.open", "info", None, frame, info, flt)
    for key, frame, t, from_client, text in dec.texts:
        g = flow_of.get(key)
        if g is not None:
            ocpp.add(t, base["charger_id"][g], from_client, text, frame, None)
    by_flow = {r["flow_id"] - 1: r for r in hs_rows}
    for key, frame, t, from_client, desc, lvl in dec.alerts:
        g = flow_of.get(key)
        if g is None:
            continue
        name = ALERTS.get(int(desc), f"alert_{desc}")
        level = "fatal" if lvl == "2" else "warning"
        side = SIDE[0 if from_client else 1]
        sev = "info" if name == "close_notify" else ("error" if level == "fatal" else "warning")
        events.add(t, base["charger_id"][g], "tls", "tls.alert", sev, name, frame,
                   {"from": side, "level": level, "decrypted": True}, base["wireshark_filter"][g])  # fmt: skip
        row = by_flow.get(g)
        if row is not None and name != "close_notify" and row.get("alert_description") is None:
            row.update(alert_level=level, alert_description=name, alert_from=side)
            if level == "fatal" and row["outcome"] != "established":
                row["outcome"] = "alert"


def charge_point_ids(dec: Decrypted, flow_of: dict[tuple, int]) -> dict[int, str]:
    """Flow -> charge point id from decrypted upgrade paths (for attribution)."""
    out = {}
    for key, up in dec.upgrades.items():
        g = flow_of.get(key)
        if g is not None and up.get("path"):
            cp = up["path"].split("?")[0].rstrip("/").split("/")[-1]
            if cp:
                out[g] = cp
    return out
