"""The registered pcap/pcapng parser: the fast path over a whole capture.

Per chunk: the reader walks records, `decode` gathers every header with numpy, the flow
table folds all TCP packets in bulk; per-packet Python runs only for the flows whose
payload matters (TLS until the handshake is over, HTTP upgrades and WebSocket flows) and
for DNS responses. OCPP messages found in WebSocket text frames go through the one OCPP
code path (`ocpp_frames.store_frames`), staged and parsed in batches while packets are
read; at the end their close runs while the flows, handshakes, sessions and events,
built in bulk (see tables.py), are written.
"""

from __future__ import annotations

import re
import struct
import zlib
from contextlib import contextmanager

import numpy as np

from forensics.parsers.base import (
    Magic,
    OneInFlight,
    Parser,
    Sink,
    Source,
    read_ahead,
    register,
    release_memory,
)
from forensics.parsers.ocpp_frames import close_frames
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
    text_frames,
)

OCPP_BATCH = 20_000  # OCPP frames staged per store_frames call
OCPP_EVICT = 100_000  # staged frames held in DuckDB's memory before they go to its temp file
READ_AHEAD = True  # the next chunk read and decoded in a worker thread (read_ahead)
# DuckDB memory_limit while the capture's OCPP frames are closed: the close of an 8M-packet
# capture (950k messages) needs 48-64MB of it; a big capture peaks here at about this more
CLOSE_MEMORY = "96MB"
STAGING_CHECKPOINT = "16GB"  # DuckDB checkpoint_threshold while packets are read
# DuckDB threads while packets are read. The main thread's Python is the packet loop's
# critical path; DuckDB only parses staged OCPP batches beside it (one in flight), and at
# two threads that parse took the core the main thread was about to run on: 1.58 -> 1.54 s
# and 10 MB less RSS at 1M packets with one (10 alternating pairs). The close gets them all.
STAGING_THREADS = "1"


APP_UNKNOWN, APP_TLS, APP_TLS_DONE, APP_HTTP, APP_OTHER = 0, 1, 2, 3, 4
APP_SLOTS = 1024  # flows whose payload kind is kept before the array grows
# A TLS flow past its handshake with this many application records each way: more records
# change nothing reported (TlsFlow.established needs 2 each way, TlsFlow.finish reads the
# last record only while there are at most 2), so only its alerts are followed from then on.
QUIET_AFTER = 3


class Capture:
    """State of one capture being read: flows, their payload handlers, DNS, counters."""

    bulk = True  # False: every payload segment through its flow's feed(), one by one

    def __init__(self) -> None:
        self.flows = FlowTable()
        self.app = np.full(APP_SLOTS, APP_UNKNOWN, dtype=np.int8)  # payload kind per flow
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
        self.quiet: set[int] = set()  # TLS flows of which only alerts are followed now

    def feed(self, chunk, pk=None) -> None:
        """Folds one chunk in; `pk` is its decode() when already done."""
        pk = decode(chunk) if pk is None else pk
        self.packets += len(chunk)
        ipm = pk.ip_ver > 0
        self.ip_packets += int(ipm.sum())
        self.not_ip += int((~ipm).sum())
        self.fragments += int(pk.frag.sum())
        if len(chunk):
            self.first_ts = int(chunk.ts_us[0]) if self.first_ts is None else self.first_ts
            self.last_ts = max(self.last_ts, int(chunk.ts_us.max()))
        idx, gid, d = self.flows.update(pk)
        if len(self.app) < self.flows.n:  # new flows start unknown, however many came
            grown = np.full(max(self.flows.n, 2 * len(self.app)), APP_UNKNOWN, dtype=np.int8)
            grown[: len(self.app)] = self.app
            self.app = grown
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
        frames_a, tss_a = pk.chunk.frame[idx[pick]], pk.chunk.ts_us[idx[pick]]
        handlers = self.handlers
        # WebSocket segments holding one whole text frame (most OCPP messages) are decoded
        # in bulk; the flow takes them if its stream is in the state feed() expects
        ws = np.flatnonzero(kind[pick] == APP_HTTP)
        tpos, texts = text_frames(a, off[pick][ws], ln[pick][ws]) if len(ws) else (ws, None)
        tidx = np.arange(len(tpos))  # each found text's index in texts
        took = None
        if len(tpos) and self.bulk:
            cols = (gid[pick], d[pick], ln[pick], rel, frames_a, tss_a)
            took = self._take_texts(ws, tpos, texts, *(c[ws] for c in cols))
            if took is not None:  # those segments are done: the loop gets the rest
                taken = took[0]
                left = ~taken[tpos]
                tpos, tidx = tpos[left], tidx[left]
                rest = np.ones(len(pick), dtype=bool)
                rest[ws[taken]] = False
                kept = np.flatnonzero(rest)
                pick, rel, frames_a, tss_a = pick[kept], rel[kept], frames_a[kept], tss_a[kept]
                ws = np.searchsorted(kept, ws)  # positions in the new pick (of those kept)
        fast = dict(zip(ws[tpos].tolist(), tidx.tolist(), strict=True))
        frames, tss = frames_a.tolist(), tss_a.tolist()
        firsts, quiet, touched = first_byte[pick].tolist(), self.quiet, self.touched
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
            if g in quiet and firsts[j] != REC_ALERT:
                continue
            h = handlers[g]
            t = fast.get(j)
            try:
                if t is None or not h.take_text(dd, s, n, texts[t], frames[j], tss[j]):
                    h.feed(dd, s, buf[o : o + n], frames[j], tss[j])
            except (IndexError, ValueError, KeyError, struct.error, zlib.error) as exc:
                # payload that breaks the protocol parser: stop following this flow (its
                # TCP state goes on) and say where, in the evidence notes
                self.app[g] = APP_OTHER
                self.malformed.append((frames[j], f"{type(exc).__name__}: {exc}"[:120]))
                continue
            kind = self.app[g]
            if kind == APP_HTTP:
                touched.add(g)
            elif kind == APP_TLS and not h.active:
                self.app[g] = kind = APP_TLS_DONE
            if kind == APP_TLS_DONE and min(h.app_records) >= QUIET_AFTER:
                quiet.add(g)
        self._take_ocpp(took[1] if took is not None else None)

    def _take_texts(self, ws, tpos, texts, g, d, n, seq, frames, tss):
        """Flows whose every WebSocket segment in this chunk is one whole text frame that
        continues its stream in order (nothing buffered): all taken at once, as take_text
        would take them one by one. Arrays are per WebSocket segment (positions in `ws`,
        packet order); `texts` (websocket.Texts) are those of the segments at `tpos`
        (text_frames). A taken flow whose charger is known and which holds no earlier
        message hands its messages on packed (no Python value each); the others keep
        theirs. Returns (mask of the segments taken, the packed messages for
        OcppFrames.add_packed or None), or None when no flow qualifies."""
        has = np.zeros(len(ws), dtype=bool)
        has[tpos] = True
        flows, inv = np.unique(g, return_inverse=True)
        ok_flow = np.bincount(inv, weights=~has, minlength=len(flows)) == 0
        # each direction's segments must follow one another: seq = previous seq + length
        key = inv * 2 + d
        order = np.lexsort((np.arange(len(ws)), key))
        k, s, ln = key[order], seq[order].astype(np.int64), n[order].astype(np.int64)
        first = np.ones(len(k), dtype=bool)
        first[1:] = k[1:] != k[:-1]
        broken = ~first & (s != np.roll(s + ln, 1))
        ok_flow[inv[order][broken]] = False
        # and the first of each direction must be what the stream expects next
        for kk, ss in zip(k[first].tolist(), s[first].tolist(), strict=True):
            fi = kk >> 1
            if not ok_flow[fi]:
                continue
            h = self.handlers[int(flows[fi])]
            st = h.streams[kk & 1]
            if not h.ws or st.next != ss or st.buf or st._pending:
                ok_flow[fi] = False
        taken = ok_flow[inv]
        if not taken.any():
            return None
        pos = np.flatnonzero(taken)
        by_flow = pos[np.argsort(inv[pos], kind="stable")]
        gs, ds, ns = g[by_flow], d[by_flow], n[by_flow]
        starts = np.flatnonzero(np.r_[True, gs[1:] != gs[:-1]])  # each flow's run
        ends = np.r_[starts[1:], len(gs)]
        c2s_n = np.add.reduceat((ds == 0).astype(np.int64), starts).tolist()
        used = [np.add.reduceat(ns * (ds == dd), starts).tolist() for dd in (0, 1)]
        tix = np.searchsorted(tpos, by_flow)  # each taken segment's text
        flow_cp = np.full(len(starts), None, dtype=object)  # per flow: its charger if packed
        flow_version = np.full(len(starts), None, dtype=object)
        for k, (g0, i, j) in enumerate(zip(gs[starts].tolist(), starts.tolist(), ends.tolist(), strict=True)):  # fmt: skip
            h = self.handlers[g0]
            cp, version = h.charger()
            if not h.messages and cp:
                flow_cp[k], flow_version[k] = cp, version
            else:
                seg = by_flow[i:j]
                h.messages.extend(
                    zip(ds[i:j].tolist(), frames[seg].tolist(), tss[seg].tolist(),
                        [texts[t] for t in tix[i:j].tolist()], strict=True)
                )  # fmt: skip
            self.touched.add(g0)
            h.counts["c2s"] += c2s_n[k]
            h.counts["s2c"] += (j - i) - c2s_n[k]
            for dd in (0, 1):
                if used[dd][k]:
                    h.streams[dd].next += used[dd][k]
                    h.streams[dd].consumed += used[dd][k]
        # the packed messages, back in packet order (= frame order within the chunk)
        runs = ends - starts
        cp_at, version_at = (np.empty(len(ws), dtype=object) for _ in range(2))
        cp_at[by_flow], version_at[by_flow] = (
            np.repeat(flow_cp, runs),
            np.repeat(flow_version, runs),
        )
        packed = np.zeros(len(ws), dtype=bool)
        packed[by_flow] = np.repeat(flow_cp.astype(bool), runs)  # a charger: handed on packed
        if not packed.any():
            return taken, None
        sel = np.flatnonzero(packed)
        chosen = np.zeros(len(texts), dtype=bool)
        chosen[np.searchsorted(tpos, sel)] = True
        columns = (tss[sel], cp_at[sel], d[sel], frames[sel], version_at[sel])
        return taken, (*columns, texts.select(chosen))

    def _take_ocpp(self, packed=None) -> None:
        """Moves OCPP text messages of WebSocket flows whose charge point id is in the
        upgrade path out of the flow (memory stays flat on long captures); the others
        wait for attribution at the end. `packed`: the messages _take_texts handed on
        packed in this chunk, if any (OcppFrames.table ranks them all in frame order)."""
        if packed is not None:
            self.ocpp_ready.add_packed(*packed)
        for g in self.touched:
            h = self.handlers[g]
            cp, version = h.charger() if h.messages else (None, None)
            if cp:
                self.ocpp_ready.add_flow(h, cp, version)
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
            # the next chunk read, walked and decoded in a worker thread meanwhile; the heap
            # is trimmed before the OCPP close, not after each chunk (see read_ahead)
            chunks = read_ahead(reader.chunks(), lambda c: (c, decode(c)), READ_AHEAD, trim=False)
            inventory = tables.inventory_ips(sink.con)  # before the stager takes the connection
            # No automatic checkpoint while OCPP frames are staged: it would load the whole
            # stage back from the temp file to compress it (a spike of ~80MB per 340k frames)
            with (
                duckdb_setting(sink.con, "threads", STAGING_THREADS, lower_only=True),
                duckdb_setting(sink.con, "checkpoint_threshold", STAGING_CHECKPOINT),
                _Stager(src, sink, READ_AHEAD) as stager,
            ):
                for chunk, pk in chunks:
                    src.accepted(len(chunk))
                    cap.feed(chunk, pk)
                    del chunk, pk
                    if len(cap.ocpp_ready) >= OCPP_BATCH:
                        stager.add(cap.ocpp_ready)
                        cap.ocpp_ready = OcppFrames()
                # the last batch is staged and parsed while the capture's tables are built;
                # the frames prepare() finds at the end are numbered after it
                if len(cap.ocpp_ready):
                    stager.add(cap.ocpp_ready)
                    cap.ocpp_ready = OcppFrames()
                # the loop's freed heap (chunk buffers, staged batches) back to the OS first:
                # glibc kept 0-50 MB of it, run to run, under prepare's own peak (4M packets:
                # peak 350-377 -> 332-349 MB; 1M unchanged, 4M +2 % time for the faults)
                _release_memory()
                built, late = tables.prepare(src, inventory, cap, reader)
            cap.ocpp_staged = stager.staged
        staged = tables.stage_ocpp(src, sink, late) + cap.ocpp_staged
        # the flows' state goes before the OCPP close, where a big capture's memory peaks
        del cap, late
        _release_memory()
        # The OCPP close is DuckDB work on this connection (its temp tables hold the staged
        # frames); it runs in a worker thread while the capture's own tables are written
        # through a second cursor. Inside a caller's transaction there is no second cursor
        # (its commits would outlive a rollback): one after the other then.
        twin = sink.twin() if READ_AHEAD else None
        try:
            with OneInFlight(twin is not None, "ocpp-close") as closer:
                if staged:
                    closer.submit(_close_ocpp, src, sink)
                tables.finish(twin or sink, built)
                del built
                _release_memory()  # what the tables' writes used, while the close goes on
        finally:
            if twin is not None:
                twin.con.close()


class _Stager(OneInFlight):
    """Stages batches of OCPP frames and parses them (the first step of the OCPP close) in a
    worker thread while the packets are read on: DuckDB runs without the GIL. One batch in
    flight; the connection is the worker's until the batch is done (the packet loop does
    not use it). Errors reach the caller at the next batch or at the end."""

    def __init__(self, src: Source, sink: Sink, threaded: bool):
        super().__init__(threaded, "ocpp-stage")
        self.src, self.sink, self.staged, self.held = src, sink, 0, 0

    def add(self, frames: OcppFrames) -> None:
        self.submit(self._stage, frames)

    def _stage(self, frames: OcppFrames) -> None:
        # the stage goes to the temp file once OCPP_EVICT frames are held, not after every
        # batch: each eviction costs the worker ~30 ms and the close reads it all back
        self.held += len(frames)
        evict = self.held >= OCPP_EVICT
        self.staged += tables.stage_ocpp(self.src, self.sink, frames, parse=True, evict=evict)
        self.held = 0 if evict else self.held


def _close_ocpp(src: Source, sink: Sink) -> None:
    """The OCPP close is where a big capture's memory peaks: its working tables (a copy of
    every message per step) get a smaller DuckDB budget, beyond which DuckDB spills them to
    the case's temp file instead of holding them, so a long capture peaks near a short one."""
    with duckdb_setting(sink.con, "memory_limit", CLOSE_MEMORY, lower_only=True):
        close_frames(src, sink)


def _release_memory() -> None:
    """Hands freed heap back to the OS: glibc's (release_memory) and pyarrow's own pool
    (mimalloc keeps what the Arrow tables of the writes used, ~25-30MB here)."""
    import pyarrow as pa

    release_memory()
    pa.default_memory_pool().release_unused()


@contextmanager
def duckdb_setting(con, name: str, value: str, lower_only: bool = False):
    """A DuckDB setting changed for the block, then set back to what it was; with
    `lower_only` (sizes, thread counts) it is never raised. memory_limit goes back to the
    case's setting (DuckDB shows it rounded), as Sink.evict_cache sets it back."""
    from forensics.store import memory_limit

    was = con.execute("SELECT current_setting(?)", [name]).fetchone()[0]
    if name == "memory_limit":
        was = memory_limit()
    if lower_only and _bytes(value) >= _bytes(str(was)):
        yield
        return
    con.execute(f"SET {name} = ?", [value])
    try:
        yield
    finally:
        con.execute(f"SET {name} = ?", [was])


def _bytes(size: str) -> float:
    """'512MB', '1.5 GiB', '128mb' -> bytes (DuckDB's units); unreadable -> infinity."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)(i?)b?\s*", size.lower())
    if not m:
        return float("inf")
    base = 1024 if m[3] else 1000
    return float(m[1]) * base ** "_kmgt".index(m[2] or "_")
