"""Vectorised decode of link, IP and TCP/UDP headers for every packet of a chunk.

No per-packet Python: the native scanner (_pcapscan.c) decodes packet by packet in C; its
reference, decode_numpy, gathers each field with numpy at computed offsets. Both guard
every read with masks so a short or malformed packet never reads outside its own bytes. Addresses come back as
two uint64 halves of a 16-byte address (IPv4 as ::ffff:a.b.c.d), which makes flow keys
uniform across IPv4 and IPv6.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import numpy as np

from forensics.parsers.pcap.binary import gather_u8, gather_u16, gather_u32, overlapping
from forensics.parsers.pcap.reader import Chunk

try:  # parsers/pcap/_pcapscan.c, built at install; optional: numpy does the same
    from forensics.parsers.pcap import _pcapscan
except ImportError:
    _pcapscan = None

LINK_ETHERNET, LINK_NULL, LINK_LOOP, LINK_SLL, LINK_SLL2 = 1, 0, 108, 113, 276
LINK_RAW = (101, 12, 14)
LINK_IPV4, LINK_IPV6 = 228, 229
ET_IPV4, ET_IPV6 = 0x0800, 0x86DD
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
V4_MAPPED_HI = np.uint64(0)
V4_MAPPED_LO_PREFIX = np.uint64(0xFFFF) << np.uint64(32)
IPV6_EXT = (0, 43, 60)  # hop-by-hop, routing, destination options
PROTO_TCP, PROTO_UDP = 6, 17


@dataclass
class Packets:
    """Decoded headers of one chunk; every array has one entry per packet (int64 unless said).

    ip_ver 0 marks a packet that is not (decodable) IP; l4 fields are valid where `l4ok`.
    Payload bytes of packet i are chunk.buf[pay_off[i] : pay_off[i] + pay_len[i]].
    """

    chunk: Chunk
    linkok: np.ndarray  # bool: link type known and link header present
    vlan: np.ndarray  # VLAN id of the outer 802.1Q tag, -1 when untagged
    ip_ver: np.ndarray  # 4 | 6 | 0
    src_hi: np.ndarray  # uint64 halves of the 16-byte source address
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    proto: np.ndarray  # IP protocol of the transport header (6 TCP, 17 UDP, ...)
    frag: np.ndarray  # bool: an IP fragment (first or later)
    l4ok: np.ndarray  # bool: TCP/UDP header fully captured
    sport: np.ndarray
    dport: np.ndarray
    seq: np.ndarray  # TCP only
    ack: np.ndarray
    flags: np.ndarray  # TCP flags byte (FIN 1, SYN 2, RST 4, PSH 8, ACK 16)
    win: np.ndarray  # TCP window field, unscaled
    pay_off: np.ndarray  # offset of the transport payload in chunk.buf
    pay_len: np.ndarray  # captured payload bytes (Ethernet padding excluded)


def decode(chunk: Chunk) -> Packets:
    """Decodes every packet of the chunk; see Packets for units. The native decoder when
    it is built (the same fields, without the GIL), else decode_numpy."""
    if _pcapscan is None:
        return decode_numpy(chunk)
    n = len(chunk)
    ints = np.empty((_pcapscan.N_INT, n), dtype=np.int64)
    u64 = np.empty((_pcapscan.N_U64, n), dtype=np.uint64)
    flags = np.empty((_pcapscan.N_BOOL, n), dtype=np.bool_)
    cols = (np.ascontiguousarray(x, dtype=np.int64) for x in (chunk.data_off, chunk.caplen))
    link = np.ascontiguousarray(chunk.linktype, dtype=np.int64)
    _pcapscan.decode(chunk.buf, *cols, link, ints, u64, flags)
    vlan, ip_ver, proto, sport, dport, seq, ack, tcp_flags, win, pay_off, pay_len = ints
    return Packets(
        chunk=chunk,
        linkok=flags[0],
        vlan=vlan,
        ip_ver=ip_ver,
        src_hi=u64[0],
        src_lo=u64[1],
        dst_hi=u64[2],
        dst_lo=u64[3],
        proto=proto,
        frag=flags[1],
        l4ok=flags[2],
        sport=sport,
        dport=dport,
        seq=seq,
        ack=ack,
        flags=tcp_flags,
        win=win,
        pay_off=pay_off,
        pay_len=pay_len,
    )


def decode_numpy(chunk: Chunk) -> Packets:
    """decode() in numpy: the reference the native decoder is tested against."""
    a = np.frombuffer(chunk.buf, dtype=np.uint8)
    last = len(a) - 1
    n = len(chunk)
    start = chunk.data_off
    end = start + chunk.caplen

    def masked(gather, off, ok):
        # ok guarantees the bytes lie inside the packet; read only those (most masks are
        # all or nothing: one link type, one IP version per capture)
        if ok.all():
            return gather(off)
        out = np.zeros(n, dtype=np.int64)
        if ok.any():
            out[ok] = gather(off[ok])
        return out

    def g16(off, ok, big=True):
        return masked(lambda o: gather_u16(a, o, big), off, ok)

    def g8(off, ok):
        return masked(lambda o: gather_u8(a, o), off, ok)

    def g32(off, ok, big=True):
        return masked(lambda o: gather_u32(a, o, big), off, ok)

    link = chunk.linktype
    et = np.zeros(n, dtype=np.int64)
    l3 = start.copy()
    vlan = np.full(n, -1, dtype=np.int64)
    linkok = np.zeros(n, dtype=bool)

    m = (link == LINK_ETHERNET) & (chunk.caplen >= 14)
    et = np.where(m, g16(start + 12, m), et)
    l3 = np.where(m, start + 14, l3)
    linkok |= m
    for _ in range(2):  # 802.1Q / 802.1ad: up to two tags
        t = m & np.isin(et, VLAN_TPIDS) & (l3 + 4 <= end)
        vlan = np.where(t & (vlan < 0), g16(l3, t) & 0x0FFF, vlan)
        et = np.where(t, g16(l3 + 2, t), et)
        l3 = np.where(t, l3 + 4, l3)
    m = (link == LINK_SLL) & (chunk.caplen >= 16)
    et = np.where(m, g16(start + 14, m), et)
    l3 = np.where(m, start + 16, l3)
    linkok |= m
    m = (link == LINK_SLL2) & (chunk.caplen >= 20)
    et = np.where(m, g16(start, m), et)
    l3 = np.where(m, start + 20, l3)
    linkok |= m
    m = (np.isin(link, LINK_RAW) | (link == LINK_IPV4) | (link == LINK_IPV6)) & (chunk.caplen >= 1)
    ver = g8(start, m) >> 4
    et = np.where(m, np.where(ver == 4, ET_IPV4, np.where(ver == 6, ET_IPV6, 0)), et)
    linkok |= m
    m = np.isin(link, (LINK_NULL, LINK_LOOP)) & (chunk.caplen >= 4)
    # BSD loopback: address family in the writer's byte order (DLT_NULL) or big-endian (LOOP)
    fam = np.where(link == LINK_LOOP, g32(start, m), g32(start, m, big=False))
    fam = np.where(fam > 0xFFFF, g32(start, m), fam)
    et = np.where(
        m, np.where(fam == 2, ET_IPV4, np.where(np.isin(fam, (24, 28, 30)), ET_IPV6, 0)), et
    )
    l3 = np.where(m, start + 4, l3)
    linkok |= m

    # ---- IPv4
    v4 = linkok & (et == ET_IPV4) & (l3 + 20 <= end)
    vhl = g8(l3, v4)
    ihl = (vhl & 0x0F) * 4
    v4 &= ((vhl >> 4) == 4) & (ihl >= 20) & (l3 + ihl <= end)
    tot = g16(l3 + 2, v4)
    fr = g16(l3 + 6, v4)
    proto = np.where(v4, g8(l3 + 9, v4), -1)
    frag = v4 & ((fr & 0x3FFF) != 0)
    later_frag = v4 & ((fr & 0x1FFF) != 0)
    s4 = g32(l3 + 12, v4).astype(np.uint64)
    d4 = g32(l3 + 16, v4).astype(np.uint64)
    ip_end = np.where(v4, np.minimum(l3 + np.maximum(tot, ihl), end), end)
    l4 = np.where(v4, l3 + ihl, l3)

    # ---- IPv6 (extension headers: hop-by-hop, routing, destination options, fragment)
    v6 = linkok & (et == ET_IPV6) & (l3 + 40 <= end)
    v6 &= (g8(l3, v6) >> 4) == 6
    plen = g16(l3 + 4, v6)
    nh = g8(l3 + 6, v6)
    src6 = [_u64(a, l3 + k, v6, last) for k in (8, 16)]
    dst6 = [_u64(a, l3 + k, v6, last) for k in (24, 32)]
    ip_end = np.where(v6, np.minimum(l3 + 40 + plen, end), ip_end)
    p6 = l3 + 40
    for _ in range(3):
        ext = v6 & np.isin(nh, IPV6_EXT) & (p6 + 8 <= end)
        nxt = g8(p6, ext)
        hlen = (g8(p6 + 1, ext) + 1) * 8
        nh = np.where(ext, nxt, nh)
        p6 = np.where(ext, p6 + hlen, p6)
        fx = v6 & (nh == 44) & (p6 + 8 <= end)
        fo = g16(p6 + 2, fx)
        frag |= fx
        later_frag |= fx & ((fo & 0xFFF8) != 0)
        nh = np.where(fx, g8(p6, fx), nh)
        p6 = np.where(fx, p6 + 8, p6)
    proto = np.where(v6, nh, proto)
    l4 = np.where(v6, p6, l4)

    ip_ver = np.where(v4, 4, np.where(v6, 6, 0))
    src_hi = np.where(v6, src6[0], V4_MAPPED_HI)
    src_lo = np.where(v6, src6[1], V4_MAPPED_LO_PREFIX | s4)
    dst_hi = np.where(v6, dst6[0], V4_MAPPED_HI)
    dst_lo = np.where(v6, dst6[1], V4_MAPPED_LO_PREFIX | d4)

    # ---- TCP / UDP (not in a later fragment: no transport header there)
    ipok = (ip_ver > 0) & ~later_frag
    tcp = ipok & (proto == PROTO_TCP) & (l4 + 20 <= ip_end)
    doff = (g8(l4 + 12, tcp) >> 4) * 4
    tcp &= (doff >= 20) & (l4 + doff <= ip_end)
    udp = ipok & (proto == PROTO_UDP) & (l4 + 8 <= ip_end)
    l4ok = tcp | udp
    pay_off = np.where(tcp, l4 + doff, np.where(udp, l4 + 8, ip_end))
    return Packets(
        chunk=chunk,
        linkok=linkok,
        vlan=vlan,
        ip_ver=ip_ver,
        src_hi=src_hi,
        src_lo=src_lo,
        dst_hi=dst_hi,
        dst_lo=dst_lo,
        proto=proto,
        frag=frag,
        l4ok=l4ok,
        sport=g16(l4, l4ok),
        dport=g16(l4 + 2, l4ok),
        seq=g32(l4 + 4, tcp),
        ack=g32(l4 + 8, tcp),
        flags=g8(l4 + 13, tcp),
        win=g16(l4 + 14, tcp),
        pay_off=pay_off,
        pay_len=np.where(l4ok, np.maximum(ip_end - pay_off, 0), 0),
    )


def _u64(a: np.ndarray, off: np.ndarray, ok: np.ndarray, last: int) -> np.ndarray:
    """Big-endian 64-bit words at off (uint64), 0 where not ok."""
    return np.where(ok, overlapping(a, ">u8")[np.minimum(off, last - 7)], np.uint64(0))


def addr_text(hi: int, lo: int) -> str:
    """The address as text: dotted IPv4 for ::ffff:a.b.c.d, else compressed IPv6."""
    hi, lo = int(hi), int(lo)
    if hi == 0 and (lo >> 32) == 0xFFFF:
        return str(ipaddress.IPv4Address(lo & 0xFFFFFFFF))
    return str(ipaddress.IPv6Address((hi << 64) | lo))


def addr_parts(text: str) -> tuple[int, int]:
    """Inverse of addr_text: (hi, lo) uint64 halves of an IPv4 or IPv6 address."""
    ip = ipaddress.ip_address(text.strip())
    if ip.version == 4:
        return 0, (0xFFFF << 32) | int(ip)
    v = int(ip)
    return v >> 64, v & 0xFFFFFFFFFFFFFFFF
