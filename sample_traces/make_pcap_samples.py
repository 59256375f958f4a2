"""Makes the capture sample bundles sample_traces/pcap-<scenario>/ from real stacks.

    sudo .venv/bin/python sample_traces/make_pcap_samples.py [scenario ...]
    .venv/bin/python sample_traces/make_pcap_samples.py --fixtures   # rule fixtures from them

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

from _pcap_capture import capture, netns_pair, run  # noqa: E402
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
    """CP-1 on ws:// (OCPP visible, permessage-deflate), CP-2 on wss:// TLS 1.2 with a valid
    certificate, CP-10 on ws:// without compression (firmware that does not negotiate it)."""
    ws = Csms(port=WS_PORT, known={"CP-1", "CP-10"})
    wss = Csms(port=WSS_PORT, known={"CP-2"}, ssl=server_ctx(pki["server_cert"], pki["server_key"]))
    async with run_csms(ws), run_csms(wss):
        return list(
            await asyncio.gather(
                charge_point("CP-1", f"ws://127.0.0.1:{WS_PORT}/ocpp/CP-1", "127.0.0.11", heartbeats=3),
                charge_point("CP-10", f"ws://127.0.0.1:{WS_PORT}/ocpp/CP-10", "127.0.0.10", heartbeats=3,
                             compression=None),
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


async def basic_auth(pki) -> list[str]:
    """Security profile 1: CP-4 sends HTTP Basic credentials the CSMS does not hold: 401."""
    ws = Csms(port=WS_PORT, known={"CP-4"}, passwords={"CP-4": "s3cret-from-backend"})
    async with run_csms(ws):
        return await attempts(3, lambda: charge_point(
            "CP-4", f"ws://127.0.0.1:{WS_PORT}/ocpp/CP-4", "127.0.0.4", password="factory-default"))  # fmt: skip


async def wss_keylog(pki) -> list[str]:
    """CP-11 on wss:// with TLS 1.3 identifies as 'cp-11' (registered 'CP-11'): the 401 is
    inside TLS. The charger's TLS key log (SSLKEYLOGFILE) ships in the bundle as
    sslkeys.log, so the deep path decrypts it."""
    ctx = client_ctx(pki["ca_cert"], max_tls12=False)
    ctx.keylog_filename = pki["out"] + "/sslkeys.log"
    wss = Csms(
        port=WSS_PORT, known={"CP-11"}, ssl=server_ctx(pki["server_cert"], pki["server_key"])
    )
    async with run_csms(wss):
        return await attempts(2, lambda: charge_point(
            "cp-11", f"wss://127.0.0.1:{WSS_PORT}/ocpp/cp-11", "127.0.0.21", ssl_ctx=ctx, server_hostname=HOST))  # fmt: skip


NFT_LOSS = """table inet cfloss {
  chain out {
    type filter hook output priority 0;
    ip saddr 10.231.1.2 tcp dport 47080 numgen random mod 100 < 12 drop
  }
  chain in {
    type filter hook input priority 0;
    ip daddr 10.231.1.2 tcp sport 47080 numgen random mod 100 < 12 drop
  }
}
"""


async def _cp_in_ns(ns: str, cp_id: str, url: str, ip: str, n: int, gap: float) -> str:
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns, sys.executable, str(HERE / "_pcap_ocpp.py"), "cp", cp_id, url, ip,
        str(n), str(gap), stdout=asyncio.subprocess.PIPE)  # fmt: skip
    out, _ = await proc.communicate()
    return out.decode().strip()


async def wifi_loss_traffic() -> list[str]:
    cfg = Csms(host="10.231.1.1", port=WS_PORT, known={"CP-20", "CP-21"}, heartbeat_interval=300)
    async with run_csms(cfg):
        return list(await asyncio.gather(
            _cp_in_ns("cfloss", "CP-20", "ws://10.231.1.1:47080/ocpp/CP-20", "10.231.1.2", 40, 0.05),
            _cp_in_ns("cfloss", "CP-21", "ws://10.231.1.1:47080/ocpp/CP-21", "10.231.1.3", 40, 0.05),
        ))  # fmt: skip


def wifi_loss(out: Path) -> list[str]:
    """Two chargers behind one veth in a namespace; nftables drops 12% of CP-20's backend
    packets at random (this kernel has no netem), as a weak Wi-Fi link would."""
    with netns_pair("cfloss", "10.231.1.1", "10.231.1.2") as host_if:
        run(
            "ip", "netns", "exec", "cfloss", "ip", "addr", "add", "10.231.1.3/24", "dev", "cfloss-n"
        )
        run("ip", "netns", "exec", "cfloss", "nft", "-f", "-", input=NFT_LOSS)
        with capture(out / "capture.pcapng", host_if, f"port {WS_PORT}"):
            return asyncio.run(wifi_loss_traffic())


def unreachable(out: Path) -> list[str]:
    """CP-30 on a weak cellular link: its SYNs to the backend are never answered (the
    namespace drops them on arrival), two connection attempts."""
    with netns_pair("cfsyn", "10.231.2.1", "10.231.2.2") as host_if:
        rule = "table inet cfsyn {\n chain in {\n  type filter hook input priority 0;\n  tcp dport 47080 drop\n }\n}\n"
        run("ip", "netns", "exec", "cfsyn", "nft", "-f", "-", input=rule)
        with capture(out / "capture.pcapng", host_if, f"port {WS_PORT}"):
            return [asyncio.run(charge_point("CP-30", "ws://10.231.2.2:47080/ocpp/CP-30", "10.231.2.1"))
                    for _ in range(2)]  # fmt: skip


WS_URL = f"ws://{HOST}:{WS_PORT}/ocpp/"
WSS_URL = f"wss://{HOST}:{WSS_PORT}/ocpp/"
SCENARIOS = {
    "healthy": (healthy, [("CP-1", "depot", "Sample", "AC22", "1.4.2", "ethernet", "", "127.0.0.11", WS_URL, "1.6", "1"),
                          ("CP-2", "depot", "Sample", "AC22", "1.4.2", "ethernet", "", "127.0.0.12", WSS_URL, "1.6", "2"),
                          ("CP-10", "depot", "Other", "AC11", "0.9.8", "ethernet", "", "127.0.0.10", WS_URL, "1.6", "1")],
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
    "basic-auth": (basic_auth, [("CP-4", "depot", "Sample", "AC22", "1.4.2", "ethernet", "", "127.0.0.4", WS_URL, "1.6", "1")],
                   {"status": "cause_found", "verdicts": [{"subject": "CP-4", "channel": "backend", "cause": "tls.security_profile_mismatch"}]}),
    "wifi-loss": (wifi_loss, [("CP-20", "school", "Sample", "AC11", "1.4.2", "wifi", "-71", "10.231.1.2", "ws://10.231.1.1:47080/ocpp/", "1.6", "1"),
                              ("CP-21", "school", "Sample", "AC11", "1.4.2", "ethernet", "", "10.231.1.3", "ws://10.231.1.1:47080/ocpp/", "1.6", "1")],
                  {"status": "cause_found", "verdicts": [{"subject": "CP-20", "channel": "backend", "cause": "network.wifi_loss"}]}),
    "unreachable": (unreachable, [("CP-30", "farm", "Sample", "DC50", "2.0.1", "cellular", "-108", "10.231.2.1", "ws://10.231.2.2:47080/ocpp/", "1.6", "1")],
                    {"status": "cause_found", "verdicts": [{"subject": "CP-30", "channel": "backend", "cause": "network.cellular_signal"}]}),
    "wss-keylog": (wss_keylog, [("CP-11", "depot", "Sample", "AC22", "1.6.0", "ethernet", "", "127.0.0.21", WSS_URL, "1.6", "2")],
                   {"status": "cause_found", "verdicts": [{"subject": "CP-11", "channel": "backend", "cause": "ocpp.identity_mismatch"}]}),
    "subprotocol": (subprotocol, [("CP-6", "depot", "Sample", "AC22", "3.0.0", "ethernet", "", "127.0.0.6", WS_URL, "2.0.1", "1")],
                    {"status": "cause_found", "verdicts": [{"subject": "CP-6", "channel": "backend", "cause": "ocpp.version_mismatch"}]}),
}  # fmt: skip


def make(name: str, pki: dict) -> None:
    fn, rows, expected = SCENARIOS[name]
    out = HERE / f"pcap-{name}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    if fn in (wifi_loss, unreachable):  # namespaces: they capture on their own veth
        results = fn(out)
    else:
        with capture(out / "capture.pcapng", "lo", BPF):
            results = asyncio.run(fn({**pki, "out": str(out)}))
    (out / "chargers.csv").write_text(inventory(rows))
    (HERE / f"pcap-{name}.expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    size = (out / "capture.pcapng").stat().st_size
    print(f"pcap-{name}: {size} bytes; sessions: {results}")


def main(names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as td:
        pki = make_pki(Path(td), HOST)
        for name in names or list(SCENARIOS):
            make(name, pki)


if __name__ == "__main__" and sys.argv[1:] != ["--fixtures"]:
    main(sys.argv[1:])


# rule id -> (pack, fire bundle, charger it must name, silent bundle)
FIXTURES = {
    "tls.certificate_expired": ("tls", "cert-expired", "CP-7", "unknown-ca"),
    "tls.untrusted_backend_certificate": ("tls", "unknown-ca", "CP-8", "cert-expired"),
    "tls.client_certificate_missing": ("tls", "client-cert", "CP-9", "healthy"),
    "tls.alert_before_close": ("tls", "cert-expired", "CP-7", "healthy"),
    "ocpp.wrong_endpoint": ("websocket", "wrong-url", "CP-3", "identity"),
    "ocpp.identity_rejected": ("websocket", "identity", "CP-5", "wrong-url"),
    "ocpp.subprotocol_mismatch": ("websocket", "subprotocol", "CP-6", "healthy"),
    "ocpp.basic_auth_refused": ("websocket", "basic-auth", "CP-4", "identity"),
    "network.retransmission_rate": ("network", "wifi-loss", "CP-20", "healthy"),
    "network.syn_unanswered": ("network", "unreachable", "CP-30", "wrong-url"),
}


def fixtures() -> None:
    """Copies sample bundles into the rules' fire/silent fixture folders (a near miss as
    the silent case where one exists)."""
    root = HERE.parent / "queries"
    for rule_id, (pack, fire, cp, silent) in FIXTURES.items():
        base = root / pack / "fixtures" / rule_id
        shutil.rmtree(base, ignore_errors=True)
        for case, bundle in (("fire", fire), ("silent", silent)):
            shutil.copytree(HERE / f"pcap-{bundle}", base / case)
        (base / "fire" / "expect.toml").write_text(f'chargers = ["{cp}"]\n')


if __name__ == "__main__" and sys.argv[1:] == ["--fixtures"]:
    fixtures()
