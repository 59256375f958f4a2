"""The registered pcap/pcapng parser: the fast path over a whole capture.

Per chunk: the reader walks records, `decode` gathers every header with numpy, the flow
table folds all TCP packets in bulk; per-packet Python runs only for the flows whose
payload matters (TLS until the handshake is over, HTTP upgrades and WebSocket flows) and
for DNS responses. At the end the flows, handshakes, sessions and events are written in
bulk (see tables.py) and OCPP messages found in WebSocket text frames go through the one
OCPP code path (`ocpp_frames.store_frames`).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from forensics.parsers.base import Magic, Parser, Sink, Source, register, release_memory
from forensics.parsers.pcap import tables
from forensics.parsers.pcap.decode import decode
from forensics.parsers.pcap.dns import DnsLog
from forensics.parsers.pcap.reader import PCAP_MAGICS, PCAPNG_SHB, CaptureReader, NotACapture
from forensics.parsers.pcap.tcp import FlowTable
from forensics.parsers.pcap.tls import (
    REC_ALERT,
    REC_APP,
    TLS13_ALERT_RECORD,
    TlsFlow,
    looks_like_tls,
)
from forensics.parsers.pcap.websocket import (
    OcppFrames,
    WsFlow,
    looks_like_http,
    single_text_frames,
)

OCPP_BATCH = 20_000  # OCPP frames staged per store_frames call


APP_UNKNOWN, APP_TLS, APP_TLS_DONE, APP_HTTP, APP_OTHER = 0, 1, 2, 3, 4


class Capture:
    """State of one capture being read: flows, their payload handlers, DNS, counters."""

    def __init__(self) -> None:
        self.flows = FlowTable()
        self.app = np.zeros(1024, dtype=np.int8)
        self.handlers: dict[int, TlsFlow | WsFlow] = {}
        self.dns = DnsLog()
        self.packets = 0
        self.ip_packets = 0
        self.fragments = 0
        self.not_ip = 0
        self.first_ts: int | None = None
        self.last_ts = 0
        self.touched: set[int] = set()  # WebSocket flows that got payload in this chunk
        self.ocpp_ready = OcppFrames()  # OCPP frames whose charger is known (ws path)
        self.ocpp_staged = 0
        self.malformed: list[tuple[int, str]] = []  # (frame, error) where payload parsing stopped

    def feed(self, chunk) -> None:
        pk = decode(chunk)
        self.packets += len(chunk)
        ipm = pk.ip_ver > 0
        self.ip_packets += int(ipm.sum())
        self.not_ip += int((~ipm).sum())
        self.fragments += int(pk.frag.sum())
        if len(chunk):
            self.first_ts = int(chunk.ts_us[0]) if self.first_ts is None else self.first_ts
            self.last_ts = max(self.last_ts, int(chunk.ts_us.max()))
        idx, gid, d = self.flows.update(pk)
        if len(self.app) < self.flows.n:
            self.app = np.resize(self.app, max(self.flows.n, 2 * len(self.app)))
            self.app[len(self.app) // 2 :] = APP_UNKNOWN
        self._payloads(pk, idx, gid, d)
        self.dns.feed(pk)

    def _payloads(self, pk, idx, gid, d) -> None:
        has = pk.pay_len[idx] > 0
        idx, gid, d = idx[has], gid[has], d[has]
        if not len(idx):
            return
        buf = pk.chunk.buf
        off, ln = pk.pay_off[idx], pk.pay_len[idx]
        unknown = self.app[gid] == APP_UNKNOWN
        if unknown.any():
            ug, first = np.unique(gid[unknown], return_index=True)
            pos = np.flatnonzero(unknown)[first]
            for g, p in zip(ug.tolist(), pos.tolist(), strict=True):
                head = bytes(buf[off[p] : off[p] + min(int(ln[p]), 16)])
                if looks_like_tls(head):
                    self.app[g], self.handlers[g] = APP_TLS, TlsFlow()
                elif looks_like_http(head):
                    self.app[g], self.handlers[g] = APP_HTTP, WsFlow()
                else:
                    self.app[g] = APP_OTHER
        kind = self.app[gid]
        a = np.frombuffer(buf, dtype=np.uint8)
        first_byte = a[np.minimum(off, len(a) - 1)]
        late = (kind == APP_TLS_DONE) & (
            (first_byte == REC_ALERT) | ((first_byte == REC_APP) & (ln == 5 + TLS13_ALERT_RECORD))
        )
        pick = np.flatnonzero((kind == APP_TLS) | (kind == APP_HTTP) | late)
        if not len(pick):
            return
        rel = self.flows.rel_seq(pk, idx[pick], gid[pick], d[pick])
        frames = pk.chunk.frame[idx[pick]].tolist()
        tss = pk.chunk.ts_us[idx[pick]].tolist()
        handlers = self.handlers
        # WebSocket segments holding one whole text frame (most OCPP messages) are decoded
        # in bulk; the flow takes them if its stream is in the state feed() expects
        ws = np.flatnonzero(kind[pick] == APP_HTTP)
        texts = single_text_frames(a, off[pick][ws], ln[pick][ws]) if len(ws) else {}
        fast = {int(ws[p]): t for p, t in texts.items()}
        for j, (g, dd, o, n, s) in enumerate(
            zip(
                gid[pick].tolist(),
                d[pick].tolist(),
                off[pick].tolist(),
                ln[pick].tolist(),
                rel.tolist(),
                strict=True,
            )
        ):
            h = handlers[g]
            t = fast.get(j)
            try:
                if t is None or not h.take_text(dd, s, n, t, frames[j], tss[j]):
                    h.feed(dd, s, buf[o : o + n], frames[j], tss[j])
            except (IndexError, ValueError, KeyError, struct.error, zlib.error) as exc:
                # payload that breaks the protocol parser: stop following this flow (its
                # TCP state goes on) and say where, in the evidence notes
                self.app[g] = APP_OTHER
                self.malformed.append((frames[j], f"{type(exc).__name__}: {exc}"[:120]))
                continue
            kind = self.app[g]
            if kind == APP_HTTP:
                self.touched.add(g)
            elif kind == APP_TLS and not h.active:
                self.app[g] = APP_TLS_DONE
        self._take_ocpp()

    def _take_ocpp(self) -> None:
        """Moves OCPP text messages of WebSocket flows whose charge point id is in the
        upgrade path out of the flow (memory stays flat on long captures); the others
        wait for attribution at the end."""
        for g in self.touched:
            h = self.handlers[g]
            up = h.upgrade() if h.messages else None
            if up is None or not up.charge_point_id:
                continue
            self.ocpp_ready.add_flow(h, up.charge_point_id, up.accepted)
        self.touched.clear()


@register
class PcapParser(Parser):
    name = "pcap"
    version = "1"
    kind = "pcap"
    description = (
        "Packet captures (pcap, pcapng, gzip'd): TCP flows, TLS handshakes, WebSocket "
        "upgrades and frames, OCPP-J inside ws://, DNS errors"
    )
    signature = Magic((*PCAP_MAGICS, PCAPNG_SHB))
    tables = tables.DDL

    def parse(self, src: Source, sink: Sink) -> None:
        def reject(locator: str, reason: str, excerpt: bytes, detail: str) -> None:
            src.reject(locator=locator, reason=reason, excerpt=excerpt.hex(" "), detail=detail)

        cap = Capture()
        with src.open() as fh:
            try:
                reader = CaptureReader(fh, reject)
            except NotACapture as exc:
                src.reject("offset 0", "pcap.not_a_capture", b"", str(exc))
                return
            for chunk in reader.chunks():
                src.accepted(len(chunk))
                cap.feed(chunk)
                del chunk
                if len(cap.ocpp_ready) >= OCPP_BATCH:
                    cap.ocpp_staged += tables.stage_ocpp(src, sink, cap.ocpp_ready)
                    cap.ocpp_ready = OcppFrames()
                release_memory()
        tables.write(src, sink, cap, reader)
