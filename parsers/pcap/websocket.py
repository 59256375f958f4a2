"""HTTP/1.1 WebSocket upgrade (RFC 6455 section 4) and WebSocket frames for one TCP flow.

The request gives method, path (the charge point id is its last segment, as OCPP-J puts
it), Host, the Authorization scheme (for Basic: the user name, never the password) and the
offered Sec-WebSocket-Protocol; the response gives the status and the accepted protocol.
After a 101 the frames are parsed in both directions: masking, fragmentation, ping/pong,
close code and reason; complete text messages are handed on (OCPP-J arrays).
A connection may carry several request/response exchanges (e.g. a 401, then a retry).
"""

from __future__ import annotations

import base64
import binascii
import struct
import zlib
from collections.abc import Sequence
from itertools import compress
from urllib.parse import unquote, urlsplit

import numpy as np

from forensics.parsers.pcap.stream import Stream

try:  # parsers/pcap/_pcapscan.c, built at install; optional: the Python loop does the same
    from forensics.parsers.pcap import _pcapscan
except ImportError:
    _pcapscan = None

MAX_HEADER = 16384
METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"OPTIONS ", b"DELETE ", b"PATCH ", b"CONNECT ")


def looks_like_http(data: bytes) -> bool:
    return data.startswith(METHODS) or data.startswith(b"HTTP/1.")


class Exchange:
    """One HTTP request on the flow and its response."""

    # a capture keeps every flow's exchanges to its end: with slots they take half the memory
    __slots__ = ("accepted", "auth_scheme", "auth_user", "frame", "host", "method", "offered",
                 "path", "reason", "resp_frame", "resp_ts", "status", "ts", "upgrade")  # fmt: skip

    def __init__(self, frame: int, ts: int):
        self.frame, self.ts = frame, ts
        self.method = self.path = self.host = None
        self.auth_scheme = self.auth_user = None
        self.offered: list[str] = []
        self.upgrade = False
        self.status: int | None = None
        self.reason: str | None = None
        self.accepted: str | None = None
        self.resp_frame = 0
        self.resp_ts = 0

    @property
    def charge_point_id(self) -> str | None:
        if not self.path:
            return None
        segs = [s for s in urlsplit(self.path).path.split("/") if s]
        return unquote(segs[-1]) if segs else None


class WsFlow:
    """Follows HTTP then WebSocket on one flow. `messages` collects (dir, frame, ts, text)."""

    def __init__(self) -> None:
        self.streams = (Stream(), Stream())
        self.exchanges: list[Exchange] = []
        self._resp_i = 0
        self.ws = False
        self.frag = [None, None]  # (opcode, bytearray) of a fragmented message per side
        self.messages: list[tuple[int, int, int, str]] = []
        self.counts = {"c2s": 0, "s2c": 0, "ping": 0, "pong": 0, "binary": 0}
        self.close: dict | None = None
        self.closes: list[dict] = []
        self.gaps = 0
        self.bad_frames = 0
        self.deflate: list | None = None  # permessage-deflate (RFC 7692): per-side inflaters
        self.no_takeover = (False, False)
        self._charger: tuple[str | None, str | None] | None = None  # charger(), once known

    def feed(self, d: int, seq: int, data: bytes, frame: int, ts: int) -> None:
        st = self.streams[d]
        if self.ws and st.next == seq and not st.buf and not st._pending:
            # in order with nothing buffered (the common case): frames straight from the
            # segment; only a trailing partial frame goes through the reassembler
            used = self._frames_direct(d, data, frame, ts)
            st.next += used
            st.consumed += used
            if used == len(data):
                return
            seq, data = seq + used, data[used:]
        st.feed(seq, data, frame, ts)
        if st.take_gap():
            self.gaps += 1
            self.frag[d] = None
        if self.ws:
            self._frames(d, st)
        elif d == 0:
            self._request(st)
        else:
            self._response(st)
            if self.ws:  # frames may follow the 101 in the same segment
                self._frames(1, st)
                self._frames(0, self.streams[0])

    # ------------------------------------------------------------ HTTP

    def _head(self, st: Stream) -> tuple[list[str], dict[str, str]] | None:
        end = st.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(st.buf) > MAX_HEADER:
                st.consume(len(st.buf))
            return None
        text = bytes(st.buf[:end]).decode("latin-1")
        st.consume(end + 4)
        first, *rest = text.split("\r\n")
        headers: dict[str, str] = {}
        for line in rest:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        return first.split(" ", 2), headers

    def _request(self, st: Stream) -> None:
        while True:
            frame, ts = st.where(0)
            head = self._head(st)
            if head is None:
                return
            parts, h = head
            ex = Exchange(frame, ts)
            ex.method = parts[0]
            ex.path = parts[1] if len(parts) > 1 else ""
            ex.host = h.get("host")
            ex.upgrade = "websocket" in h.get("upgrade", "").lower()
            ex.offered = [
                p.strip() for p in h.get("sec-websocket-protocol", "").split(",") if p.strip()
            ]
            auth = h.get("authorization", "")
            if auth:
                scheme, _, cred = auth.partition(" ")
                ex.auth_scheme = scheme
                if scheme.lower() == "basic":
                    try:
                        ex.auth_user = (
                            base64.b64decode(cred).decode("utf-8", "replace").split(":")[0]
                        )
                    except (binascii.Error, ValueError):
                        ex.auth_user = None
            self.exchanges.append(ex)
            skip = int(h.get("content-length", "0") or 0)
            st.consume(min(skip, len(st.buf))) if skip else None

    def _response(self, st: Stream) -> None:
        while not self.ws:
            frame, ts = st.where(len(st.buf) - 1) if st.buf else (0, 0)
            head = self._head(st)
            if head is None:
                return
            parts, h = head
            ex = self.exchanges[self._resp_i] if self._resp_i < len(self.exchanges) else None
            self._resp_i += 1
            if ex is None:
                ex = Exchange(frame, ts)
                self.exchanges.append(ex)
            try:
                ex.status = int(parts[1])
            except (IndexError, ValueError):
                ex.status = None
            ex.reason = parts[2] if len(parts) > 2 else ""
            ex.accepted = h.get("sec-websocket-protocol") or None
            ex.resp_frame, ex.resp_ts = frame, ts
            length = int(h.get("content-length", "0") or 0)
            if length:
                st.consume(min(length, len(st.buf)))
            if ex.status == 101:
                self.ws = True
                ext = h.get("sec-websocket-extensions", "").lower()
                if "permessage-deflate" in ext:
                    self.deflate = [zlib.decompressobj(-15), zlib.decompressobj(-15)]
                    self.no_takeover = (
                        "client_no_context_takeover" in ext,
                        "server_no_context_takeover" in ext,
                    )

    # ------------------------------------------------------------ WebSocket frames

    def take_text(self, d: int, seq: int, n: int, text: str, frame: int, ts: int) -> bool:
        """A segment of n bytes that is exactly one unfragmented text frame, decoded in
        bulk by `text_frames`: taken as `feed` would take it (in order, nothing
        buffered) and True; False when the stream is not in that state (then `feed`)."""
        st = self.streams[d]
        if not self.ws or st.next != seq or st.buf or st._pending:
            return False
        st.next += n
        st.consumed += n
        self.counts["c2s" if d == 0 else "s2c"] += 1
        self.messages.append((d, frame, ts, text))
        return True

    def _frames(self, d: int, st: Stream) -> None:
        buf = st.buf
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            opcode, fin, masked, n = b0 & 0x0F, b0 & 0x80, b1 & 0x80, b1 & 0x7F
            rsv = b0 & (0x30 if self.deflate else 0x70)
            if rsv or opcode not in (0, 1, 2, 8, 9, 10):
                self.bad_frames += 1  # lost sync (after a gap): drop what is buffered
                st.consume(len(buf))
                return
            p = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, p = struct.unpack_from(">H", buf, 2)[0], 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, p = struct.unpack_from(">Q", buf, 2)[0], 10
            key = b""
            if masked:
                if len(buf) < p + 4:
                    return
                key, p = bytes(buf[p : p + 4]), p + 4
            if len(buf) < p + n:
                return
            payload = bytes(buf[p : p + n])
            if key:
                payload = unmask(payload, key)
            frame, ts = st.consume(p + n)
            self._frame(d, opcode, bool(fin), bool(b0 & 0x40), payload, frame, ts)

    def _frames_direct(self, d: int, data: bytes, frame: int, ts: int) -> int:
        """Parses the complete frames at the start of `data`; returns bytes used."""
        p0, n_all = 0, len(data)
        while n_all - p0 >= 2:
            b0, b1 = data[p0], data[p0 + 1]
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if b0 & (0x30 if self.deflate else 0x70) or opcode not in (0, 1, 2, 8, 9, 10):
                return p0  # let the reassembling path judge (and count) it
            p = p0 + 2
            if n == 126:
                if n_all < p0 + 4:
                    return p0
                n, p = struct.unpack_from(">H", data, p0 + 2)[0], p0 + 4
            elif n == 127:
                if n_all < p0 + 10:
                    return p0
                n, p = struct.unpack_from(">Q", data, p0 + 2)[0], p0 + 10
            key = b""
            if b1 & 0x80:
                if n_all < p + 4:
                    return p0
                key, p = data[p : p + 4], p + 4
            if n_all < p + n:
                return p0
            payload = data[p : p + n]
            if key:
                payload = unmask(payload, key)
            self._frame(d, opcode, bool(b0 & 0x80), bool(b0 & 0x40), payload, frame, ts)
            p0 = p + n
        return p0

    def _frame(self, d: int, opcode: int, fin: bool, rsv1: bool, payload: bytes, frame, ts):
        if opcode == 9:
            self.counts["ping"] += 1
            return
        if opcode == 10:
            self.counts["pong"] += 1
            return
        if opcode == 8:
            code = struct.unpack_from(">H", payload)[0] if len(payload) >= 2 else None
            reason = payload[2:].decode("utf-8", "replace")
            info = {"from": d, "code": code, "reason": reason, "frame": frame, "ts": ts}
            self.closes.append(info)
            if self.close is None:
                self.close = info
            return
        if opcode == 0:
            if self.frag[d] is None:
                return  # continuation of a message begun before a gap
            self.frag[d][1].extend(payload)
            if not fin:
                return
            opcode, payload, rsv1 = self.frag[d][0], bytes(self.frag[d][1]), self.frag[d][2]
            self.frag[d] = None
        elif not fin:
            self.frag[d] = (opcode, bytearray(payload), rsv1)
            return
        if rsv1 and self.deflate:
            payload = self._inflate(d, payload)
        self.counts["c2s" if d == 0 else "s2c"] += 1
        if opcode == 1:
            self.messages.append((d, frame, ts, payload.decode("utf-8", "replace")))
        else:
            self.counts["binary"] += 1

    def _inflate(self, d: int, payload: bytes) -> bytes:
        """Decompresses one message (RFC 7692 7.2.2: append 00 00 ff ff, raw deflate)."""
        try:
            out = self.deflate[d].decompress(payload + b"\x00\x00\xff\xff")
        except zlib.error:
            self.bad_frames += 1
            self.deflate[d] = zlib.decompressobj(-15)
            return b""
        if self.no_takeover[d]:
            self.deflate[d] = zlib.decompressobj(-15)
        return out

    def upgrade(self) -> Exchange | None:
        """The WebSocket upgrade exchange (the last one asking for it)."""
        ups = [e for e in self.exchanges if e.upgrade]
        return ups[-1] if ups else (self.exchanges[-1] if self.exchanges else None)

    def charger(self) -> tuple[str | None, str | None]:
        """(charge point id in the upgrade path, accepted subprotocol), (None, None) before
        any exchange; kept once the flow speaks WebSocket (no HTTP follows then)."""
        if self._charger is not None:
            return self._charger
        up = self.upgrade()
        got = (up.charge_point_id, up.accepted) if up is not None else (None, None)
        if self.ws:
            self._charger = got
        return got


def text_frames(a: np.ndarray, off: np.ndarray, ln: np.ndarray) -> tuple[np.ndarray, Texts]:
    """Segments (payload at a[off : off + ln]) that hold exactly one complete unfragmented
    text frame (FIN, opcode 1, no RSV bits, length below 64 KiB) of well-formed UTF-8,
    unmasked and packed in bulk: their positions in off (ascending) and their texts. What
    `_frames_direct` would make of them, byte for byte; a frame that is not UTF-8 is left
    to it (it decodes with replacement characters). The native scanner unmasks, packs and
    checks them when built; the loop below is its reference."""
    n_all = len(a)
    ok = ln >= 2
    if not ok.any():
        return _NO_POSITIONS, Texts.empty()
    o = np.where(ok, off, 0)
    b0 = np.where(ok, a[np.minimum(o, n_all - 1)], 0)
    b1 = np.where(ok, a[np.minimum(o + 1, n_all - 1)], 0)
    len7, masked = b1 & 0x7F, (b1 >> 7).astype(np.int64)
    ext = len7 == 126
    ok &= (b0 == 0x81) & (len7 != 127) & (~ext | (ln >= 4))
    hi = np.where(ok & ext, a[np.minimum(o + 2, n_all - 1)], 0).astype(np.int64)
    lo = np.where(ok & ext, a[np.minimum(o + 3, n_all - 1)], 0).astype(np.int64)
    plen = np.where(ext, (hi << 8) | lo, len7.astype(np.int64))
    hdr = 2 + 2 * ext + 4 * masked
    ok &= hdr + plen == ln
    pos = np.flatnonzero(ok)
    if not len(pos):
        return _NO_POSITIONS, Texts.empty()
    start, end = o[pos] + hdr[pos], o[pos] + ln[pos]
    if _pcapscan is not None:
        bounds = Texts.bounds_of(end - start)
        data, good = np.empty(int(bounds[-1]), dtype=np.uint8), np.empty(len(pos), np.uint8)
        args = (np.ascontiguousarray(x, np.int64) for x in (start, end, masked[pos]))
        _pcapscan.pack_texts(a, *args, data, good)
        texts = Texts(data, bounds)
        if not good.all():
            keep = good.astype(bool)
            pos, texts = pos[keep], texts.select(keep)
        return pos, texts
    buf = a.data  # the chunk's bytes, sliced without a copy of the whole
    kept, out = [], []
    for i, s, e, m in zip(pos.tolist(), start.tolist(), end.tolist(), masked[pos].tolist(), strict=True):  # fmt: skip
        payload = bytes(buf[s:e])
        if m:
            payload = unmask(payload, bytes(buf[s - 4 : s]))
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            continue
        kept.append(i)
        out.append(payload)
    return np.array(kept, dtype=np.int64), Texts.pack(out)


_NO_POSITIONS = np.zeros(0, dtype=np.int64)


class Texts:
    """Well-formed UTF-8 texts packed end to end, text i at data[bounds[i] : bounds[i + 1]]:
    Arrow's layout of a string column, so the messages of a capture reach DuckDB without
    a Python str each. Indexing gives the str, for the flows that need one."""

    __slots__ = ("bounds", "data")

    def __init__(self, data: np.ndarray, bounds: np.ndarray):
        self.data, self.bounds = data, bounds  # uint8[total], int64[n + 1]

    @classmethod
    def empty(cls) -> Texts:
        return cls(np.zeros(0, np.uint8), np.zeros(1, np.int64))

    @classmethod
    def pack(cls, texts: Sequence[bytes]) -> Texts:
        bounds = cls.bounds_of([len(t) for t in texts])
        return cls(np.frombuffer(b"".join(texts), dtype=np.uint8), bounds)

    @staticmethod
    def bounds_of(lengths) -> np.ndarray:
        """Where each text starts (and the last ends) when texts of these lengths are packed."""
        bounds = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=bounds[1:])
        return bounds

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __getitem__(self, i: int) -> str:
        return self.data[self.bounds[i] : self.bounds[i + 1]].tobytes().decode("utf-8")

    def select(self, keep: np.ndarray) -> Texts:
        """The texts where the boolean mask `keep` is set, in their order."""
        lengths = np.diff(self.bounds)
        return Texts(self.data[np.repeat(keep, lengths)], self.bounds_of(lengths[keep]))

    def starts_array(self) -> np.ndarray:
        """Whether each text begins with '[' (an empty one does not)."""
        if not len(self.data):
            return np.zeros(len(self), dtype=bool)
        first = self.data[np.minimum(self.bounds[:-1], len(self.data) - 1)]
        return (np.diff(self.bounds) > 0) & (first == ord("["))

    def arrow(self):
        import pyarrow as pa

        return pa.LargeStringArray.from_buffers(
            len(self), pa.py_buffer(self.bounds), pa.py_buffer(self.data)
        )


def unmask(payload: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte masking key (RFC 6455 5.3), whole-buffer integer XOR."""
    n = len(payload)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


class OcppFrames:
    """OCPP-J frames bound for `ocpp_frames.store_frames`, kept as columns (no row dicts):
    text messages that look like JSON arrays, with time (UTC us), charger, direction and
    the frame number that completed them. Messages come as Python values (a flow's own
    list) or as packed batches (`add_packed`, the bulk path), which stay numpy and Texts
    until they become Arrow."""

    def __init__(self) -> None:
        self.ts: list[int] = []
        self.charger: list[str | None] = []
        self.direction: list[str] = []
        self.text: list[str] = []
        self.line: list[int] = []
        self.version: list[str | None] = []
        self.packed: list[tuple] = []  # (ts, charger, side, frame, version, Texts)
        self._packed_n = 0

    def __len__(self) -> int:
        return len(self.ts) + self._packed_n

    def add(self, ts: int, charger: str | None, from_client: bool, text: str, frame: int,
            version: str | None) -> None:  # fmt: skip
        if _is_array(text):
            self.ts.append(ts)
            self.charger.append(charger)
            self.direction.append(CP_TO_CSMS if from_client else CSMS_TO_CP)
            self.text.append(text)
            self.line.append(frame)
            self.version.append(version)

    def add_flow(self, h: WsFlow, charger_id: str | None, version: str | None) -> None:
        """The flow's text messages (then cleared from the flow)."""
        if h.messages:
            self.add_columns(charger_id, version, *zip(*h.messages, strict=True))
            h.messages.clear()

    def add_columns(self, charger_id: str | None, version: str | None, d: Sequence[int],
                    frame: Sequence[int], ts: Sequence[int], text: Sequence[str]) -> None:  # fmt: skip
        """Text messages of one flow as columns: side (0 client, 1 server), frame, time,
        text; those that are not JSON arrays are left out."""
        # _is_array inline: this runs once per OCPP message of a flow
        keep = [t[:1] == "[" or t.lstrip()[:1] == "[" for t in text]
        if not all(keep):
            d, frame, ts, text = (list(compress(c, keep)) for c in (d, frame, ts, text))
        self.ts.extend(ts)
        self.charger.extend([charger_id] * len(ts))
        self.direction.extend(map(_DIRECTION.__getitem__, d))
        self.text.extend(text)
        self.line.extend(frame)
        self.version.extend([version] * len(ts))

    def add_packed(self, ts: np.ndarray, charger: np.ndarray, side: np.ndarray,
                   frame: np.ndarray, version: np.ndarray, texts: Texts) -> None:  # fmt: skip
        """Messages as arrays, one entry each (charger and version: object arrays), with
        their texts packed; those that are not JSON arrays are left out."""
        keep = texts.starts_array()
        if not keep.all():  # leading white space, or no array: as _is_array sees it
            for i in np.flatnonzero(~keep).tolist():
                keep[i] = _is_array(texts[i])
            ts, charger, side, frame, version = (
                x[keep] for x in (ts, charger, side, frame, version)
            )
            texts = texts.select(keep)
        if len(ts):
            self.packed.append((ts, charger, side, frame, version, texts))
            self._packed_n += len(ts)

    def table(self):
        """The store_frames table (ts timestamp[us] UTC, locator 'frame N') with each
        message's `seq`: its frame number times 2^SEQ_FRAME_BITS plus its place among the
        messages that frame completed. A file's seq is the order its messages were sent
        in, and messages are collected flow by flow, in batches, some only at the end (a
        flow attributed then): numbered as they came, one charger's flows would interleave
        wrongly, e.g. into clock jumps that never were. All of a frame's messages come in
        one batch (one flow, one chunk), so the numbers are unique in the file. The rows
        themselves are not moved, which would copy every staged text once more."""
        import pyarrow as pa
        import pyarrow.compute as pc

        parts = [
            (
                pa.array(self.ts, pa.int64()),
                pa.array(self.charger, pa.string()),
                pa.array(self.direction, pa.string()),
                pa.array(self.text, pa.large_string()),
                pa.array(self.line, pa.int64()),
                pa.array(self.version, pa.string()),
            )
        ]
        for ts, charger, side, frame, version, texts in self.packed:
            direction = np.array(_DIRECTION, dtype=object)[side]
            parts.append(
                (
                    pa.array(ts, pa.int64()),
                    pa.array(charger, pa.string()),
                    pa.array(direction, pa.string()),
                    texts.arrow(),
                    pa.array(frame, pa.int64()),
                    pa.array(version, pa.string()),
                )
            )
        ts, charger, direction, text, line, version = (
            pa.chunked_array([p[k] for p in parts]) for k in range(6)
        )
        frames = np.concatenate([c.to_numpy() for c in line.chunks])
        by_frame = np.argsort(frames, kind="stable")  # a frame's messages as they came
        f = frames[by_frame]
        at = np.arange(len(f))
        first = np.maximum.accumulate(np.where(np.r_[True, f[1:] != f[:-1]], at, 0))
        seq = np.empty(len(f), dtype=np.int64)
        seq[by_frame] = (f << SEQ_FRAME_BITS) | (at - first)
        return pa.table(
            {
                "ts": ts.cast(pa.timestamp("us", tz="UTC")),
                "charger_id": charger,
                "direction": direction,
                "frame": text,
                "locator": pc.binary_join_element_wise("frame ", line.cast(pa.string()), ""),
                "line": line,
                "ocpp_version": version,
                "seq": pa.array(seq),
            }
        )


CP_TO_CSMS, CSMS_TO_CP = "cp_to_csms", "csms_to_cp"
# messages one frame may complete (a reassembled segment of 64 KiB holds < 2^15 frames);
# frame numbers stay below 2^43
SEQ_FRAME_BITS = 20
_DIRECTION = (CP_TO_CSMS, CSMS_TO_CP)  # by a message's side: 0 client, 1 server


def _is_array(text: str) -> bool:
    return text[:1] == "[" or text.lstrip()[:1] == "["
