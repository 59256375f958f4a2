"""A real CSMS and real charge points for the capture samples: the `ocpp` package (OCPP
1.6 / 2.0.1 message classes and routing) over `websockets`, with optional TLS from
Python's `ssl`. Everything listens and connects on loopback only.

The CSMS accepts a WebSocket on `<prefix><charge point id>` when the id is registered
(case-sensitive, as most backends), with the subprotocols it supports; otherwise it
answers the upgrade with 404 (unknown path) or 401 (unknown charge point), as field
backends do.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import ssl
from dataclasses import dataclass, field
from http import HTTPStatus

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as Cp16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action, RegistrationStatus
from websockets.asyncio.server import serve

logging.getLogger("ocpp").setLevel(logging.CRITICAL)
logging.getLogger("websockets").setLevel(logging.CRITICAL)


@dataclass
class Csms:
    """Backend settings for one sample."""

    host: str = "127.0.0.1"
    port: int = 47080
    prefix: str = "/ocpp/"
    known: set[str] = field(default_factory=set)
    subprotocols: tuple[str, ...] = ("ocpp1.6",)
    ssl: ssl.SSLContext | None = None
    heartbeat_interval: int = 60
    passwords: dict[str, str] = field(default_factory=dict)  # security profile 1/2


class CsmsHandler(Cp16):
    @on(Action.boot_notification)
    def on_boot(self, charge_point_vendor, charge_point_model, **kwargs):
        return result16.BootNotification(
            current_time=dt.datetime.now(dt.UTC).isoformat(),
            interval=self._interval,
            status=RegistrationStatus.accepted,
        )

    @on(Action.heartbeat)
    def on_heartbeat(self, **kwargs):
        return result16.Heartbeat(current_time=dt.datetime.now(dt.UTC).isoformat())

    @on(Action.status_notification)
    def on_status(self, **kwargs):
        return result16.StatusNotification()


@contextlib.asynccontextmanager
async def run_csms(cfg: Csms):
    """Serves the CSMS while the block runs."""

    def check(connection, request):
        path = request.path
        if not path.startswith(cfg.prefix):
            return connection.respond(HTTPStatus.NOT_FOUND, "no such endpoint\n")
        cp_id = path[len(cfg.prefix) :].strip("/")
        if cp_id not in cfg.known:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "unknown charge point\n")
        if cp_id in cfg.passwords:
            import base64

            auth = request.headers.get("Authorization", "")
            want = base64.b64encode(f"{cp_id}:{cfg.passwords[cp_id]}".encode()).decode()
            if auth != f"Basic {want}":
                return connection.respond(HTTPStatus.UNAUTHORIZED, "bad credentials\n")
        return None

    async def handler(ws):
        if ws.subprotocol is None:
            # no common OCPP version: close as the OCPP-J spec asks (protocol error)
            await ws.close(1002, "no supported OCPP subprotocol")
            return
        cp = CsmsHandler(ws.request.path.rstrip("/").split("/")[-1], ws)
        cp._interval = cfg.heartbeat_interval
        with contextlib.suppress(websockets.ConnectionClosed):
            await cp.start()

    async with serve(
        handler,
        cfg.host,
        cfg.port,
        subprotocols=list(cfg.subprotocols),
        process_request=check,
        ssl=cfg.ssl,
        ping_interval=None,
    ) as server:
        yield server


class Charger(Cp16):
    pass


async def charge_point(
    cp_id: str,
    url: str,
    source_ip: str,
    subprotocols: tuple[str, ...] = ("ocpp1.6",),
    ssl_ctx: ssl.SSLContext | None = None,
    heartbeats: int = 2,
    gap_s: float = 0.2,
    server_hostname: str | None = None,
    password: str | None = None,
    compression: str | None = "deflate",
) -> str:
    """One charge point session: connect from source_ip, boot, heartbeats, a status; returns
    'ok' or the error text (a failed upgrade or handshake is the point of most samples)."""
    try:
        async with websockets.connect(
            url,
            subprotocols=list(subprotocols),
            ssl=ssl_ctx,
            local_addr=(source_ip, 0),
            server_hostname=server_hostname if ssl_ctx else None,
            ping_interval=None,
            open_timeout=5,
            proxy=None,
            compression=compression,
            additional_headers=_basic(cp_id, password),
        ) as ws:
            if ws.subprotocol is None:
                await asyncio.sleep(0.2)  # the CSMS closes with 1002
                return "no subprotocol"
            cp = Charger(cp_id, ws)
            task = asyncio.create_task(cp.start())
            await cp.call(
                call16.BootNotification(charge_point_model="AC22", charge_point_vendor="Sample")
            )
            await cp.call(
                call16.StatusNotification(connector_id=1, error_code="NoError", status="Available")
            )
            for _ in range(heartbeats):
                await asyncio.sleep(gap_s)
                await cp.call(call16.Heartbeat())
            task.cancel()
            return "ok"
    except (OSError, websockets.InvalidStatus, websockets.InvalidHandshake, ssl.SSLError,
            websockets.ConnectionClosed, TimeoutError) as exc:  # fmt: skip
        return f"{type(exc).__name__}: {exc}"


def _basic(cp_id: str, password: str | None) -> dict:
    import base64

    if password is None:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(f"{cp_id}:{password}".encode()).decode()}


def client_ctx(ca: str | None, max_tls12: bool = True, cert=None, key=None) -> ssl.SSLContext:
    """The charger's TLS context: verifies the CSMS against `ca`; TLS 1.2 by default (most
    charger firmware), which keeps certificates and alerts visible in the capture."""
    ctx = ssl.create_default_context(cafile=ca)
    if max_tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def server_ctx(cert: str, key: str, require_client_ca: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if require_client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(require_client_ca)
    return ctx


# ---------------------------------------------------------------- blocking TLS stacks
# asyncio's TLS (memory BIO) drops the fatal alert OpenSSL writes when a handshake fails;
# socket-based stacks, like most charger firmware, put it on the wire. The TLS failure
# samples therefore use websockets' threaded (blocking socket) client and server.


@contextlib.contextmanager
def run_csms_blocking(cfg: Csms):
    """A threaded CSMS (websockets.sync) with the same upgrade checks; answers BootNotification
    and Heartbeat with plain OCPP-J results (the failures happen before any OCPP)."""
    import json
    import threading

    from websockets.sync.server import serve as serve_sync

    def check(connection, request):
        path = request.path
        if not path.startswith(cfg.prefix) or path[len(cfg.prefix) :].strip("/") not in cfg.known:
            return connection.respond(HTTPStatus.NOT_FOUND, "no such charge point\n")
        return None

    def handler(ws):
        with contextlib.suppress(websockets.ConnectionClosed):
            for msg in ws:
                call = json.loads(msg)
                now = dt.datetime.now(dt.UTC).isoformat()
                payload = {"currentTime": now}
                if call[2] == "BootNotification":
                    payload |= {"interval": cfg.heartbeat_interval, "status": "Accepted"}
                ws.send(json.dumps([3, call[1], payload]))

    server = serve_sync(handler, cfg.host, cfg.port, ssl=cfg.ssl, subprotocols=list(cfg.subprotocols),
                        process_request=check)  # fmt: skip
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield server
    finally:
        server.shutdown()
        t.join(timeout=5)


def charge_point_blocking(
    cp_id: str, url: str, source_ip: str, ssl_ctx, server_hostname: str
) -> str:
    """A charger with a socket-based TLS stack: connect, boot, one heartbeat."""
    import json

    from websockets.sync.client import connect as connect_sync

    try:
        with connect_sync(url, ssl=ssl_ctx, server_hostname=server_hostname, subprotocols=["ocpp1.6"],
                          source_address=(source_ip, 0), open_timeout=5, proxy=None) as ws:  # fmt: skip
            for i, action in enumerate(("BootNotification", "Heartbeat")):
                body = {"chargePointModel": "DC50", "chargePointVendor": "Sample"} if i == 0 else {}
                ws.send(json.dumps([2, f"{cp_id}-{i}", action, body]))
                ws.recv(timeout=5)
        return "ok"
    except (
        OSError,
        ssl.SSLError,
        websockets.InvalidHandshake,
        websockets.ConnectionClosed,
        TimeoutError,
    ) as exc:
        return f"{type(exc).__name__}: {exc}"


def _main(argv: list[str]) -> None:
    """`python _pcap_ocpp.py cp ID URL SOURCE_IP HEARTBEATS GAP_S`: one charge point run
    (used inside network namespaces)."""
    cp_id, url, ip, n, gap = argv[1:6]
    print(asyncio.run(charge_point(cp_id, url, ip, heartbeats=int(n), gap_s=float(gap))))


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])
