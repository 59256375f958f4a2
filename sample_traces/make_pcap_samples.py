"""Makes the capture sample bundles sample_traces/pcap-<scenario>/ from real stacks.

    sudo .venv/bin/python sample_traces/make_pcap_samples.py [scenario ...]

Each scenario runs a real CSMS (ocpp + websockets, TLS from Python's ssl with certificates
made by _pcap_pki) and real charge points on loopback, each charger from its own source
address 127.0.0.N (so the inventory's `ip` attributes encrypted flows), while dumpcap
captures. The bundle is what the field would send: the capture, chargers.csv, and the
expected verdict next to it (pcap-<scenario>.expected.json).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _pcap_capture import capture  # noqa: E402
from _pcap_ocpp import (  # noqa: E402
    Csms,
    charge_point,
    charge_point_blocking,
    client_ctx,
    run_csms,
    run_csms_blocking,
    server_ctx,
)
from _pcap_pki import make_pki  # noqa: E402

WS_PORT, WSS_PORT = 47080, 47443
BPF = f"port {WS_PORT} or port {WSS_PORT} or port 47081"
HOST = "csms.test"
INVENTORY_HEAD = "charger_id,site,vendor,model,firmware,connectivity,signal_dbm,ip,backend_url,ocpp_version,security_profile"


def inventory(rows: list[tuple]) -> str:
    return INVENTORY_HEAD + "\n" + "\n".join(",".join(str(x) for x in r) for r in rows) + "\n"


async def attempts(n: int, coro_fn, pause: float = 0.3) -> list[str]:
    out = []
    for _ in range(n):
        out.append(await coro_fn())
        await asyncio.sleep(pause)
    return out


# ---------------------------------------------------------------- scenarios


async def healthy(pki) -> list[str]:
    """CP-1 on ws:// (OCPP visible), CP-2 on wss:// TLS 1.2 with a valid certificate."""
    ws = Csms(port=WS_PORT, known={"CP-1"})
    wss = Csms(port=WSS_PORT, known={"CP-2"}, ssl=server_ctx(pki["server_cert"], pki["server_key"]))
    async with run_csms(ws), run_csms(wss):
        return list(
            await asyncio.gather(
                charge_point("CP-1", f"ws://127.0.0.1:{WS_PORT}/ocpp/CP-1", "127.0.0.11", heartbeats=3),
                charge_point("CP-2", f"wss://127.0.0.1:{WSS_PORT}/ocpp/CP-2", "127.0.0.12",
                             ssl_ctx=client_ctx(pki["ca_cert"]), heartbeats=3, server_hostname=HOST),
            )
        )  # fmt: skip


def tls_failure(pki, cp_id: str, server_cert: str, ip: str, require_client_ca: str | None = None):
    """Three connection attempts of one charger against a CSMS whose TLS set-up it rejects
    (or that rejects it), with blocking socket TLS on both sides."""
    ctx = server_ctx(server_cert, pki["server_key"], require_client_ca=require_client_ca)
    cfg = Csms(port=WSS_PORT, known={cp_id}, ssl=ctx)
    out = []
    with run_csms_blocking(cfg):
        for _ in range(3):
            out.append(charge_point_blocking(cp_id, f"wss://127.0.0.1:{WSS_PORT}/ocpp/{cp_id}", ip,
                                             client_ctx(pki["ca_cert"]), HOST))  # fmt: skip
            time.sleep(0.3)
    return out


async def cert_expired(pki) -> list[str]:
    """The CSMS presents a certificate that expired 35 days ago; CP-7 refuses it."""
    return await asyncio.to_thread(tls_failure, pki, "CP-7", pki["expired_cert"], "127.0.0.7")


async def unknown_ca(pki) -> list[str]:
    """The CSMS certificate chains to a root CP-8 does not have."""
    return await asyncio.to_thread(tls_failure, pki, "CP-8", pki["untrusted_cert"], "127.0.0.8")


async def client_cert(pki) -> list[str]:
    """Security profile 3 on the CSMS (client certificate required); CP-9 is set up for
    profile 2 and sends none."""
    return await asyncio.to_thread(
        tls_failure, pki, "CP-9", pki["server_cert"], "127.0.0.9", require_client_ca=pki["ca_cert"]
    )


async def wrong_url(pki) -> list[str]:
    """CP-3 is configured with another backend's path (/steve/websocket/...): 404, and
    once with the wrong port (nothing listens: RST)."""
    ws = Csms(port=WS_PORT, known={"CP-3"})
    async with run_csms(ws):
        out = await attempts(3, lambda: charge_point(
            "CP-3", f"ws://127.0.0.1:{WS_PORT}/steve/websocket/CentralSystemService/CP-3", "127.0.0.3"))  # fmt: skip
        out.append(await charge_point("CP-3", "ws://127.0.0.1:47081/ocpp/CP-3", "127.0.0.3"))
        return out


async def identity(pki) -> list[str]:
    """CP-5 is registered as 'CP-5' but identifies as 'cp-5': 401 on the id path."""
    ws = Csms(port=WS_PORT, known={"CP-5"})
    async with run_csms(ws):
        return await attempts(3, lambda: charge_point(
            "cp-5", f"ws://127.0.0.1:{WS_PORT}/ocpp/cp-5", "127.0.0.5"))  # fmt: skip


async def subprotocol(pki) -> list[str]:
    """CP-6 speaks OCPP 2.0.1 only; the CSMS only 1.6: 101 without a protocol, close 1002."""
    ws = Csms(port=WS_PORT, known={"CP-6"})
    async with run_csms(ws):
        return await attempts(3, lambda: charge_point(
            "CP-6", f"ws://127.0.0.1:{WS_PORT}/ocpp/CP-6", "127.0.0.6", subprotocols=("ocpp2.0.1",)))  # fmt: skip


WS_URL = f"ws://{HOST}:{WS_PORT}/ocpp/"
WSS_URL = f"wss://{HOST}:{WSS_PORT}/ocpp/"
SCENARIOS = {
    "healthy": (healthy, [("CP-1", "depot", "Sample", "AC22", "1.4.2", "ethernet", "", "127.0.0.11", WS_URL, "1.6", "1"),
                          ("CP-2", "depot", "Sample", "AC22", "1.4.2", "ethernet", "", "127.0.0.12", WSS_URL, "1.6", "2")],
                {"status": "no_failure", "verdicts": []}),
    "cert-expired": (cert_expired, [("CP-7", "harbour", "Sample", "DC50", "2.0.1", "cellular", "-85", "127.0.0.7", WSS_URL, "1.6", "2")],
                     {"status": "cause_found", "verdicts": [{"subject": "CP-7", "channel": "backend", "cause": "tls.certificate_expired"}]}),
    "unknown-ca": (unknown_ca, [("CP-8", "harbour", "Sample", "DC50", "2.0.1", "ethernet", "", "127.0.0.8", WSS_URL, "1.6", "2")],
                   {"status": "cause_found", "verdicts": [{"subject": "CP-8", "channel": "backend", "cause": "tls.unknown_ca"}]}),
    "client-cert": (client_cert, [("CP-9", "mall", "Sample", "AC22", "1.5.0", "wifi", "", "127.0.0.9", WSS_URL, "1.6", "2")],
                    {"status": "cause_found", "verdicts": [{"subject": "CP-9", "channel": "backend", "cause": "tls.security_profile_mismatch"}]}),
    "wrong-url": (wrong_url, [("CP-3", "depot", "Sample", "AC22", "1.4.2", "ethernet", "", "127.0.0.3", WS_URL, "1.6", "1")],
                  {"status": "cause_found", "verdicts": [{"subject": "CP-3", "channel": "backend", "cause": "ocpp.wrong_url"}]}),
    "identity": (identity, [("CP-5", "depot", "Sample", "AC22", "1.4.2", "ethernet", "", "127.0.0.5", WS_URL, "1.6", "1")],
                 {"status": "cause_found", "verdicts": [{"subject": "CP-5", "channel": "backend", "cause": "ocpp.identity_mismatch"}]}),
    "subprotocol": (subprotocol, [("CP-6", "depot", "Sample", "AC22", "3.0.0", "ethernet", "", "127.0.0.6", WS_URL, "2.0.1", "1")],
                    {"status": "cause_found", "verdicts": [{"subject": "CP-6", "channel": "backend", "cause": "ocpp.version_mismatch"}]}),
}  # fmt: skip


def make(name: str, pki: dict) -> None:
    fn, rows, expected = SCENARIOS[name]
    out = HERE / f"pcap-{name}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    with capture(out / "capture.pcapng", "lo", BPF):
        results = asyncio.run(fn(pki))
    (out / "chargers.csv").write_text(inventory(rows))
    (HERE / f"pcap-{name}.expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    size = (out / "capture.pcapng").stat().st_size
    print(f"pcap-{name}: {size} bytes; sessions: {results}")


def main(names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as td:
        pki = make_pki(Path(td), HOST)
        for name in names or list(SCENARIOS):
            make(name, pki)


if __name__ == "__main__":
    main(sys.argv[1:])
