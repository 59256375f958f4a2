"""Slices of a capture for Wireshark: the packets behind a finding, a flow, or a time window.

The case stores where each capture was read from (`capture_info.source_path`); slicing
re-reads that file (streaming, the same reader as ingest) and writes the selected packets,
bytes unchanged, to a new capture: classic pcap when they share one link type and the name
does not end in .pcapng, else pcapng. Frames are renumbered in the slice (Wireshark numbers
what it opens); the original numbers are those in the verdict's locators.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from forensics import store
from forensics.errors import CaseError, UsageError


@dataclass
class Selection:
    """What to keep from one capture file: frame numbers, flows (endpoint pairs), a window."""

    frames: set[int] = field(default_factory=set)
    flows: set[tuple[str, int, str, int]] = field(default_factory=set)
    start_us: int | None = None
    end_us: int | None = None


def slice_packets(case_path, out_path, finding_id=None, flow=None, start=None, end=None) -> int:
    """Writes the selected packets to out_path; returns how many were written.

    finding_id: every capture evidence of that finding, as whole TCP connections (the
    frame alone where the event has no connection). flow: "<file_id>/<flow_id>" of
    tcp_flows, or "ip:port-ip:port". start/end: datetime or ISO-8601 (UTC), alone or
    narrowing the others. Raises UsageError when nothing is selected.
    """
    if finding_id is None and flow is None and start is None and end is None:
        raise UsageError("nothing to slice", hint="give --finding, --flow or --start/--end")
    con = store.connect(Path(case_path), read_only=True)
    try:
        sel = _select(con, finding_id, flow, _us(start), _us(end))
        sources = dict(con.execute("SELECT file_id, source_path FROM capture_info").fetchall())
        names = dict(con.execute("SELECT file_id, path FROM evidence").fetchall())
    finally:
        con.close()
    if not sel:
        raise UsageError("no capture packets match", hint="check the finding id or flow")
    packets: list[tuple[int, int, bytes, int]] = []  # (ts_us, linktype, bytes, origlen)
    for fid, s in sorted(sel.items()):
        path = Path(sources.get(fid) or "")
        if not path.is_file():
            raise CaseError(
                f"{names.get(fid, fid)}: the capture is no longer at {path}",
                hint="slice on the machine that ingested it, or ingest the bundle again",
            )
        packets.extend(_read(path, s))
    _write(Path(out_path), packets)
    return len(packets)


def _us(t) -> int | None:
    if t is None:
        return None
    if isinstance(t, str):
        t = dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
    if t.tzinfo is not None:
        t = t.astimezone(dt.UTC).replace(tzinfo=None)
    return int((t - dt.datetime(1970, 1, 1)).total_seconds() * 1_000_000)


def _select(con, finding_id, flow, start_us, end_us) -> dict[int, Selection]:
    pcap_files = [r[0] for r in con.execute("SELECT file_id FROM capture_info").fetchall()]
    sel: dict[int, Selection] = {}

    def get(fid: int) -> Selection:
        return sel.setdefault(fid, Selection(start_us=start_us, end_us=end_us))

    if finding_id is not None:
        row = con.execute(
            "SELECT evidence FROM findings WHERE finding_id = ?", [finding_id]
        ).fetchone()
        if row is None:
            raise UsageError(
                f"no finding {finding_id} in the case", hint="`forensics query` lists findings"
            )
        evs = con.execute(
            """SELECT file_id, locator, detail->>'client', detail->>'server' FROM events
               WHERE event_id IN (SELECT unnest(?::BIGINT[])) AND file_id IN (SELECT unnest(?::INTEGER[]))""",
            [row[0] or [], pcap_files],
        ).fetchall()
        for fid, loc, client, server in evs:
            s = get(fid)
            if client and server:
                s.flows.add(_pair(client, server))
            elif loc and loc.startswith("frame "):
                s.frames.add(int(loc.split()[1]))
    elif flow is not None:
        if "/" in flow and "-" not in flow:
            fid, num = (int(x) for x in flow.split("/"))
            r = con.execute(
                "SELECT client_ip, client_port, server_ip, server_port FROM tcp_flows "
                "WHERE file_id = ? AND flow_id = ?",
                [fid, num],
            ).fetchone()
            if r is None:
                raise UsageError(
                    f"no flow {flow} in the case", hint="see tcp_flows (file_id, flow_id)"
                )
            get(fid).flows.add((r[0], r[1], r[2], r[3]))
        else:
            a, b = flow.split("-", 1) if "]-" not in flow else flow.split("]-", 1)
            for fid in pcap_files:
                get(fid).flows.add(_pair(a.strip("[]"), b.strip("[]")))
    else:
        for fid in pcap_files:
            get(fid)
    return sel


def _pair(a: str, b: str) -> tuple[str, int, str, int]:
    ip_a, _, port_a = a.rpartition(":")
    ip_b, _, port_b = b.rpartition(":")
    return ip_a.strip("[]"), int(port_a), ip_b.strip("[]"), int(port_b)


def _read(path: Path, s: Selection):
    from forensics.parsers.base import Source
    from forensics.parsers.pcap.decode import addr_parts, decode
    from forensics.parsers.pcap.reader import CaptureReader

    keys = []
    for ip_a, p_a, ip_b, p_b in s.flows:
        keys.append((*addr_parts(ip_a), p_a, *addr_parts(ip_b), p_b))
    frames = np.array(sorted(s.frames), dtype=np.int64)
    with Source(path, path.name).open() as fh:
        reader = CaptureReader(fh, lambda *a: None)
        for c in reader.chunks():
            keep = np.zeros(len(c), dtype=bool)
            if len(frames):
                keep |= np.isin(c.frame, frames)
            if keys:
                pk = decode(c)
                for ah, al, ap, bh, bl, bp in keys:
                    fwd = (pk.src_hi == ah) & (pk.src_lo == al) & (pk.sport == ap)
                    fwd &= (pk.dst_hi == bh) & (pk.dst_lo == bl) & (pk.dport == bp)
                    rev = (pk.src_hi == bh) & (pk.src_lo == bl) & (pk.sport == bp)
                    rev &= (pk.dst_hi == ah) & (pk.dst_lo == al) & (pk.dport == ap)
                    keep |= pk.l4ok & (fwd | rev)
            if not len(frames) and not keys:
                keep[:] = True
            if s.start_us is not None:
                keep &= c.ts_us >= s.start_us
            if s.end_us is not None:
                keep &= c.ts_us <= s.end_us
            for i in np.flatnonzero(keep).tolist():
                o, n = int(c.data_off[i]), int(c.caplen[i])
                yield (
                    int(c.ts_us[i]),
                    int(c.linktype[i]),
                    bytes(c.buf[o : o + n]),
                    int(c.origlen[i]),
                )


def _write(out: Path, packets: list[tuple[int, int, bytes, int]]) -> None:
    links = sorted({p[1] for p in packets}) or [1]
    with open(out, "wb") as f:
        if len(links) == 1 and out.suffix.lower() != ".pcapng":
            f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, links[0]))
            for ts, _link, data, orig in packets:
                f.write(struct.pack("<IIII", ts // 1_000_000, ts % 1_000_000, len(data), orig))
                f.write(data)
            return
        f.write(_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)))
        for link in links:  # if_tsresol defaults to microseconds
            f.write(_block(1, struct.pack("<HHI", link, 0, 0)))
        index = {link: i for i, link in enumerate(links)}
        for ts, link, data, orig in packets:
            head = struct.pack("<IIIII", index[link], ts >> 32, ts & 0xFFFFFFFF, len(data), orig)
            f.write(_block(6, head + data))


def _block(btype: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    n = 12 + len(body)
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)
