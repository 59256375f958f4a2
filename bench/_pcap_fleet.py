"""A fleet-backend capture of any size, replicated from real captures of real stacks.

Templates are whole TCP connections taken from sample_traces/pcap-* (captured by dumpcap
from the ocpp/websockets/ssl stacks): an OCPP 1.6 session over ws:// (permessage-deflate),
a TLS 1.2 wss:// session, a TLS handshake refused over an expired certificate, a refused
connect (RST), a lossy Wi-Fi session with retransmissions, an IPv6 TCP exchange; each is
replayed for many chargers (own client address and port, shifted timestamps), some
with an 802.1Q tag, interleaved in time order, and written as pcapng (EPB, microseconds).
Payload bytes are the captured ones; checksums are left as captured (not verified by us
nor by tshark's default settings).
"""

from __future__ import annotations

import heapq
import struct
from pathlib import Path

import dpkt

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_traces"
FIX = ROOT / "tests" / "fixtures" / "pcap"

# (file, server port, connections per cycle, vlan, steady-state repetitions). Chargers keep
# their backend connection open for hours: the steady part of a session (after the TLS
# handshake or the WebSocket upgrade, before the close) is repeated with sequence numbers
# advanced, so most packets are mid-connection as in a real fleet capture.
TEMPLATES = [
    ("pcap-healthy/capture.pcapng", 47443, 12, False, 60),  # wss:// TLS 1.2 session
    # ws:// OCPP 1.6 from the charger without permessage-deflate (a deflate stream cannot
    # be replayed: its back-references need the earlier context)
    ("pcap-healthy/capture.pcapng", 47080, 5, False, 30),
    ("pcap-healthy/capture.pcapng", 47080, 2, True, 30),  # the same over 802.1Q
    ("pcap-cert-expired/capture.pcapng", 47443, 3, False, 0),  # handshake refused
    ("pcap-wrong-url/capture.pcapng", 47081, 2, False, 0),  # RST to SYN
    ("pcap-wrong-url/capture.pcapng", 47080, 1, False, 0),  # 404 upgrade
    ("pcap-wifi-loss/capture.pcapng", 47080, 1, True, 0),  # retransmissions
]
CLIENT = {"pcap-healthy/capture.pcapng": "127.0.0.10"}  # which charger's connection to take
IPV6_TEMPLATE = ("lo_tcp.pcapng", 47002, 2)
TEMPLATE_T0 = [0]


def _flows(path: Path, server_port: int, client_ip: str | None = None):
    """First whole TCP connection to server_port (from client_ip when given):
    [(rel_ts_us, frame bytes, from_client)]."""
    with open(path, "rb") as f:
        pkts = [(ts, bytes(buf)) for ts, buf in dpkt.pcapng.Reader(f)]
    out, client = [], None
    for ts, buf in pkts:
        eth = dpkt.ethernet.Ethernet(buf)
        ip = eth.data
        if not isinstance(ip.data, dpkt.tcp.TCP):
            continue
        tcp = ip.data
        if server_port not in (tcp.sport, tcp.dport):
            continue
        key = tcp.sport if tcp.dport == server_port else tcp.dport
        peer = ip.src if tcp.dport == server_port else ip.dst
        if (
            client_ip
            and isinstance(ip, dpkt.ip.IP)
            and server_port == 47080
            and peer != bytes(map(int, client_ip.split(".")))
        ):
            continue
        client = client or key
        if key != client:
            continue
        out.append((ts, buf, tcp.dport == server_port))
    t0 = out[0][0]
    TEMPLATE_T0[0] = TEMPLATE_T0[0] or round(t0 * 1e6)
    return [(round((ts - t0) * 1e6), buf, c) for ts, buf, c in out]


def _vlan(buf: bytes) -> bytes:
    return buf[:12] + b"\x81\x00\x00\x64" + buf[12:]


def templates():
    """[(packets, weight)] where packets are (rel_us, frame, from_client, v6)."""
    out = []
    for rel, port, weight, vlan, reps in TEMPLATES:
        pk = _extend(_flows(SAMPLES / rel, port, CLIENT.get(rel)), reps)
        out.append(([(t, _vlan(b) if vlan else b, c, False) for t, b, c in pk], weight))
    rel, port, weight = IPV6_TEMPLATE
    out.append(([(t, b, c, True) for t, b, c in _flows(FIX / rel, port)], weight))
    return out


def _extend(pk, reps: int, idle_us: int = 1_000_000):
    """Repeats the steady part of a connection `reps` times (sequence/ack numbers and time
    advanced per repetition)."""
    if reps <= 0:
        return pk
    data = [i for i, (_t, b, _c) in enumerate(pk) if _tcp(b)[3] > 0]
    # the steady part ends before the close: FIN, a TLS alert record, a WebSocket close
    ends = [
        i
        for i, (_t, b, _c) in enumerate(pk)
        if _tcp(b)[2] & 1 or _payload(b)[:1] in (b"\x15", b"\x88")
    ]
    lo = data[min(3, len(data) - 1)]  # after the upgrade / first handshake records
    hi = (ends[0] if ends else len(pk)) - 1
    loop = pk[lo : hi + 1]
    c_len = sum(_tcp(b)[3] for _t, b, c in loop if c)
    s_len = sum(_tcp(b)[3] for _t, b, c in loop if not c)
    span = loop[-1][0] - loop[0][0] + idle_us
    out = list(pk[: hi + 1])
    for r in range(1, reps + 1):
        for t, b, c in loop:
            out.append((t + r * span, _shift(_new_ids(b, r), c, r * c_len, r * s_len), c))
    for t, b, c in pk[hi + 1 :]:
        out.append((t + reps * span, _shift(b, c, reps * c_len, reps * s_len), c))
    return out


def _tcp(b: bytes):
    """(l4 offset, ip header end, flags, payload length) of an Ethernet IPv4/IPv6 frame."""
    l3 = 14
    if b[12:14] == b"\x86\xdd":
        l4, end = l3 + 40, l3 + 40 + struct.unpack_from(">H", b, l3 + 4)[0]
    else:
        l4, end = l3 + (b[l3] & 0x0F) * 4, l3 + struct.unpack_from(">H", b, l3 + 2)[0]
    doff = (b[l4 + 12] >> 4) * 4
    return l4, end, b[l4 + 13], end - l4 - doff


def _new_ids(b: bytes, r: int) -> bytes:
    """Gives the OCPP-J messages of repetition r their own unique ids (as a charger would):
    the first 4 hex digits of each id become r, re-masked for client frames."""
    _l4, end, _f, n = _tcp(b)
    p = end - n
    out = bytearray(b)
    while p + 2 <= end:
        b1 = out[p + 1]
        ln, q = b1 & 0x7F, p + 2
        if ln == 126:
            ln, q = struct.unpack_from(">H", out, p + 2)[0], p + 4
        key = bytes(out[q : q + 4]) if b1 & 0x80 else b"\0\0\0\0"
        q += 4 if b1 & 0x80 else 0
        if out[p] & 0x0F != 1 or q + ln > end:
            break
        text = bytes(x ^ key[i % 4] for i, x in enumerate(out[q : q + ln]))
        if text[:1] == b"[" and text[3:4] == b'"':
            text = text[:4] + b"%04x" % (r & 0xFFFF) + text[8:]
            out[q : q + ln] = bytes(x ^ key[i % 4] for i, x in enumerate(text))
        p = q + ln
    return bytes(out)


def _payload(b: bytes) -> bytes:
    _l4, end, _f, n = _tcp(b)
    return b[end - n : end]


def _shift(b: bytes, from_client: bool, c_add: int, s_add: int) -> bytes:
    l4 = _tcp(b)[0]
    seq, ack = struct.unpack_from(">II", b, l4 + 4)
    own, other = (c_add, s_add) if from_client else (s_add, c_add)
    out = bytearray(b)
    struct.pack_into(">II", out, l4 + 4, (seq + own) & 0xFFFFFFFF, (ack + other) & 0xFFFFFFFF)
    return bytes(out)


def _patch(frame: bytes, from_client: bool, v6: bool, k: int) -> bytes:
    """Gives the client side of instance k its own address (10.a.b.c / ::1 + k) and port,
    and its own charge point id in a WebSocket upgrade path (same length: CP-1 -> Zxxx)."""
    b = bytearray(frame)
    at = b.find(b"/ocpp/CP-1 HTTP/1.1")
    if at >= 0:
        b[at + 6 : at + 10] = b"Z%03x" % (k % 4096)
    l3 = 18 if b[12:14] == b"\x81\x00" else 14
    port = 20000 + (k % 40000)
    if v6:
        addr_off = l3 + (8 if from_client else 24) + 12
        struct.pack_into(">I", b, addr_off, 0x0A000000 + k)
        l4 = l3 + 40
    else:
        addr_off = l3 + (12 if from_client else 16)
        struct.pack_into(">I", b, addr_off, 0x0A000000 + (k & 0xFFFFFF))
        l4 = l3 + (b[l3] & 0x0F) * 4
    struct.pack_into(">H", b, l4 + (0 if from_client else 2), port)
    return bytes(b)


def write(path: Path, packets: int) -> int:
    """Writes a capture of at least `packets` packets; returns the packet count. Times
    start where the templates were captured (their certificates are valid then)."""
    tpl = templates()
    start_us = TEMPLATE_T0[0]
    cycle = [t for t, w in tpl for _ in range(w)]
    with open(path, "wb") as f:
        f.write(_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)))
        f.write(_block(1, struct.pack("<HHI", 1, 0, 262144)))
        heap: list = []
        written, k, t_next = 0, 0, start_us
        while written < packets or heap:
            # open a new connection every 20 ms until enough packets are scheduled
            while (written + len(heap) < packets) and (not heap or heap[0][0] >= t_next):
                pk = cycle[k % len(cycle)]
                for i, (rel, frame, c, v6) in enumerate(pk):
                    heapq.heappush(heap, (t_next + rel, k, i, frame, c, v6))
                k += 1
                t_next += 20_000
            ts, kk, _i, frame, c, v6 = heapq.heappop(heap)
            data = _patch(frame, c, v6, kk)
            f.write(
                _block(
                    6,
                    struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data))
                    + data,
                )
            )
            written += 1
    return written


def _block(btype: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    n = 12 + len(body)
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)
