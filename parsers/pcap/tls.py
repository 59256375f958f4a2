"""TLS record and handshake parsing for one TCP flow, without decryption (RFC 5246, 8446).

What is in clear is read: ClientHello (SNI, offered versions, ALPN), ServerHello (chosen
version, cipher), Certificate chains of TLS <= 1.2 (via `cryptography`), CertificateRequest,
an empty client Certificate, and alerts sent before ChangeCipherSpec. Anything after
ChangeCipherSpec, and everything after a TLS 1.3 ServerHello, is encrypted: an alert there
is recorded as *encrypted* (its description is unknown without a key log) and a TLS 1.3
record of exactly the size of an encrypted alert that ends a direction is flagged as a
probable one. History letters follow Zeek's ssl.log (upper case = client).
"""

from __future__ import annotations

import datetime as dt
import struct
from array import array
from functools import lru_cache

from forensics.parsers.pcap.stream import Stream

REC_CCS, REC_ALERT, REC_HANDSHAKE, REC_APP = 20, 21, 22, 23
VERSIONS = {
    0x0300: "SSL 3.0",
    0x0301: "TLS 1.0",
    0x0302: "TLS 1.1",
    0x0303: "TLS 1.2",
    0x0304: "TLS 1.3",
}
HS_LETTER = {
    0: "H", 1: "C", 2: "S", 3: "V", 4: "T", 8: "O", 11: "X", 12: "K", 13: "R",
    14: "N", 15: "Y", 16: "G", 20: "F", 21: "W", 22: "U", 24: "P",
}  # fmt: skip
ALERTS = {
    0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 22: "record_overflow",
    40: "handshake_failure", 42: "bad_certificate", 43: "unsupported_certificate",
    44: "certificate_revoked", 45: "certificate_expired", 46: "certificate_unknown",
    47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied", 50: "decode_error",
    51: "decrypt_error", 70: "protocol_version", 71: "insufficient_security",
    80: "internal_error", 86: "inappropriate_fallback", 90: "user_canceled",
    109: "missing_extension", 110: "unsupported_extension", 112: "unrecognized_name",
    113: "bad_certificate_status_response", 115: "unknown_psk_identity",
    116: "certificate_required", 120: "no_application_protocol",
}  # fmt: skip
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
TLS13_ALERT_RECORD = 19  # 2 alert bytes + 1 content type + 16 AEAD tag
ACTIVE_RECORDS_AFTER_HANDSHAKE = 8


def looks_like_tls(data: bytes) -> bool:
    """A TLS record header: handshake/alert content type, major version 3."""
    return (
        len(data) >= 3 and data[0] in (REC_HANDSHAKE, REC_ALERT) and data[1] == 3 and data[2] <= 4
    )


class TlsFlow:
    """Follows the handshake of one flow; `finish()` gives the tls_handshakes row fields."""

    def __init__(self) -> None:
        self.streams = (Stream(), Stream())
        self.hs_buf = [bytearray(), bytearray()]
        self.encrypted = [False, False]
        self.after_hs = [0, 0]  # records seen after this side went encrypted
        self.active = True  # False once the handshake is over: only alerts are looked at
        # history steps as frame * 256 + letter, 8 bytes each: a capture keeps every flow's
        # history to its end (a list of (frame, letter) tuples took ~90 bytes a step)
        self.hist = array("q")
        self.ts = 0
        self.frame = 0
        self.sni: str | None = None
        self.offered: list[str] = []
        self.alpn: list[str] = []
        self.version: str | None = None
        self.cipher: str | None = None
        self.certs: list[dict] = []
        self.cert_frame = 0
        self.cert_ts = 0
        self.cert_requested = False
        self.client_cert_sent: bool | None = None
        self.alerts: list[dict] = []
        self.last_app = [None, None]  # (length, frame, ts) of each side's last app record
        self.app_records = [0, 0]
        self.broken = False

    # ------------------------------------------------------------ input

    def feed(self, d: int, seq: int, data: bytes, frame: int, ts: int) -> None:
        if self.broken:
            return
        if not self.active:
            self._late_record(d, data, frame, ts)
            return
        st = self.streams[d]
        st.feed(seq, data, frame, ts)
        if st.take_gap():
            self.hs_buf[d].clear()
        buf = st.buf
        while len(buf) >= 5 and not self.broken:
            ctype, major, length = buf[0], buf[1], struct.unpack_from(">H", buf, 3)[0]
            if ctype not in (20, 21, 22, 23, 24) or major != 3 or length > 18432:
                self.broken = True  # not TLS (or lost sync after a gap)
                return
            if len(buf) < 5 + length:
                return
            body = bytes(buf[5 : 5 + length])
            frame_r, ts_r = st.consume(5 + length)
            self._record(d, ctype, body, frame_r, ts_r)
        done = self.encrypted[0] and self.encrypted[1] and min(self.after_hs) >= 1
        if done and sum(self.after_hs) >= ACTIVE_RECORDS_AFTER_HANDSHAKE:
            # the streams are not read again (_late_record looks at whole segments): their
            # buffers and frame marks go, as most of a finished handshake's memory
            self.active, self.streams, self.hs_buf = False, None, None

    def _late_record(self, d: int, data: bytes, frame: int, ts: int) -> None:
        """After the handshake only segments that start with a record header are examined
        (the caller passes alert-looking ones): an alert there is encrypted."""
        if len(data) >= 5 and data[0] == REC_ALERT:
            self._alert(d, b"", frame, ts, encrypted=True)
        elif len(data) >= 5 and data[0] == REC_APP:
            self._app(d, struct.unpack_from(">H", data, 3)[0], frame, ts)

    def _letter(self, d: int, ch: str, frame: int) -> None:
        self.hist.append(frame * 256 + ord(ch.upper() if d == 0 else ch.lower()))

    def _record(self, d: int, ctype: int, body: bytes, frame: int, ts: int) -> None:
        if self.encrypted[d] or (self.version == "TLS 1.3" and ctype == REC_APP):
            self.after_hs[d] += 1
        if ctype == REC_CCS:
            self.encrypted[d] = True
            self._letter(d, "I", frame)
        elif ctype == REC_ALERT:
            self._alert(d, body, frame, ts, encrypted=self.encrypted[d] or len(body) != 2)
        elif ctype == REC_HANDSHAKE:
            if self.encrypted[d]:
                self._letter(d, "F", frame)  # encrypted Finished
                return
            self.hs_buf[d] += body
            self._messages(d, frame, ts)
        elif ctype == REC_APP:
            if self.version == "TLS 1.3":
                self.encrypted[d] = True
            self._app(d, len(body), frame, ts)

    def _app(self, d: int, length: int, frame: int, ts: int) -> None:
        if not self.app_records[d]:
            self._letter(d, "D", frame)
        self.app_records[d] += 1
        self.last_app[d] = (length, frame, ts)

    def _alert(self, d: int, body: bytes, frame: int, ts: int, encrypted: bool) -> None:
        self._letter(d, "L", frame)
        if encrypted:
            self.alerts.append(
                {"from": d, "level": None, "description": None, "encrypted": True,
                 "frame": frame, "ts": ts}
            )  # fmt: skip
            return
        level, desc = body[0], body[1]
        self.alerts.append(
            {"from": d, "level": "fatal" if level == 2 else "warning",
             "description": ALERTS.get(desc, f"alert_{desc}"), "encrypted": False,
             "frame": frame, "ts": ts}
        )  # fmt: skip

    # ------------------------------------------------------------ handshake messages

    def _messages(self, d: int, frame: int, ts: int) -> None:
        buf = self.hs_buf[d]
        while len(buf) >= 4:
            mtype = buf[0]
            mlen = int.from_bytes(buf[1:4], "big")
            if len(buf) < 4 + mlen:
                return
            body = bytes(buf[4 : 4 + mlen])
            del buf[: 4 + mlen]
            try:
                self._message(d, mtype, body, frame, ts)
            except (IndexError, struct.error, ValueError):
                self._letter(d, "Q", frame)  # malformed message: keep going
            if not self.frame and mtype == 1:
                self.frame, self.ts = frame, ts

    def _message(self, d: int, mtype: int, body: bytes, frame: int, ts: int) -> None:
        letter = HS_LETTER.get(mtype, "Z")
        if mtype == 2 and body[2:34] == HRR_RANDOM:
            letter = "J"
        self._letter(d, letter, frame)
        if mtype == 1:
            self._client_hello(body)
        elif mtype == 2:
            self._server_hello(body)
        elif mtype == 11:
            self._certificate(d, body, frame, ts)
        elif mtype == 13:
            self.cert_requested = True

    def _client_hello(self, b: bytes) -> None:
        p = 34
        p += 1 + b[p]  # session id
        p += 2 + struct.unpack_from(">H", b, p)[0]  # cipher suites
        p += 1 + b[p]  # compression
        legacy = VERSIONS.get(struct.unpack_from(">H", b, 0)[0])
        self.offered = [legacy] if legacy else []
        for etype, ext in _extensions(b, p):
            if etype == 0 and len(ext) > 5:  # server_name: list len, type, name len, name
                n = struct.unpack_from(">H", ext, 3)[0]
                self.sni = ext[5 : 5 + n].decode("ascii", "replace")
            elif etype == 16:  # ALPN
                q = 2
                while q < len(ext):
                    self.alpn.append(ext[q + 1 : q + 1 + ext[q]].decode("ascii", "replace"))
                    q += 1 + ext[q]
            elif etype == 43:  # supported_versions
                vs = [struct.unpack_from(">H", ext, 1 + 2 * i)[0] for i in range(ext[0] // 2)]
                self.offered = [VERSIONS[v] for v in vs if v in VERSIONS]

    def _server_hello(self, b: bytes) -> None:
        self.version = VERSIONS.get(struct.unpack_from(">H", b, 0)[0], "unknown")
        p = 34
        p += 1 + b[p]
        self.cipher = f"0x{struct.unpack_from('>H', b, p)[0]:04x}"
        p += 3
        for etype, ext in _extensions(b, p):
            if etype == 43 and len(ext) == 2:
                self.version = VERSIONS.get(struct.unpack_from(">H", ext)[0], "unknown")

    def _certificate(self, d: int, b: bytes, frame: int, ts: int) -> None:
        total = int.from_bytes(b[0:3], "big")
        if d == 0:
            self.client_cert_sent = total > 0
            return
        p, certs = 3, []
        while p + 3 <= 3 + total and p + 3 <= len(b):
            n = int.from_bytes(b[p : p + 3], "big")
            certs.append(describe_cert(b[p + 3 : p + 3 + n]))
            p += 3 + n
        self.certs, self.cert_frame, self.cert_ts = certs, frame, ts

    # ------------------------------------------------------------ result

    def finish(self) -> None:
        """Flags a TLS 1.3 alert-sized last record of a direction as a probable alert."""
        if self.version != "TLS 1.3":
            return
        for d in (0, 1):
            last = self.last_app[d]
            alert_sized = last and last[0] == TLS13_ALERT_RECORD and self.app_records[d] <= 2
            if alert_sized and not any(a["frame"] == last[1] for a in self.alerts):
                self.alerts.append(
                        {"from": d, "level": None, "description": None, "encrypted": True,
                         "frame": last[1], "ts": last[2], "probable": True}
                    )  # fmt: skip

    def history(self) -> str:
        """The letters in frame order (stable: one frame's letters as they came)."""
        return "".join(chr(v & 255) for v in sorted(self.hist, key=lambda v: v >> 8))

    def established(self) -> bool:
        if self.version == "TLS 1.3":
            return self.app_records[0] >= 2 and self.app_records[1] >= 2
        return (
            self.encrypted[0]
            and self.encrypted[1]
            and not any(a["level"] == "fatal" for a in self.alerts)
        )


def _extensions(b: bytes, p: int):
    if p + 2 > len(b):
        return
    end = p + 2 + struct.unpack_from(">H", b, p)[0]
    p += 2
    while p + 4 <= min(end, len(b)):
        etype, n = struct.unpack_from(">HH", b, p)
        yield etype, b[p + 4 : p + 4 + n]
        p += 4 + n


def describe_cert(der: bytes) -> dict:
    """Subject, issuer, serial (hex) and validity (naive UTC datetimes) of a DER cert. The
    dict is shared by every handshake that showed the same certificate: read it only."""
    return _describe_cert(bytes(der))


@lru_cache(1024)  # a fleet capture shows the same few certificates in thousands of handshakes
def _describe_cert(der: bytes) -> dict:
    from cryptography import x509

    try:
        c = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        return {"error": str(exc)[:200]}
    return {
        "subject": c.subject.rfc4514_string(),
        "issuer": c.issuer.rfc4514_string(),
        "serial": f"{c.serial_number:x}",
        "not_before": c.not_valid_before_utc.replace(tzinfo=None),
        "not_after": c.not_valid_after_utc.replace(tzinfo=None),
    }


def valid_at(cert: dict, ts_us: int) -> bool | None:
    """Whether the certificate was inside its validity at ts_us (UTC microseconds)."""
    if "not_after" not in cert:
        return None
    t = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=ts_us)
    return cert["not_before"] <= t <= cert["not_after"]
