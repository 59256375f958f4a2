"""DNS responses over UDP port 53 (dpkt decodes the few packets that are DNS).

Every response is kept (query name, type, rcode, answers) so rules can see what the
charger's backend host resolved to; errors (NXDOMAIN, SERVFAIL, REFUSED) become events.
"""

from __future__ import annotations

import dpkt
import numpy as np

from forensics.parsers.pcap.decode import PROTO_UDP, Packets, addr_text

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
ERRORS = {2, 3, 5}
QTYPES = {1: "A", 28: "AAAA", 5: "CNAME", 33: "SRV", 16: "TXT", 12: "PTR"}


class DnsLog:
    """Collects DNS responses of a capture; rows() gives the dns_answers columns."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.malformed = 0

    def feed(self, pk: Packets) -> None:
        m = pk.l4ok & (pk.proto == PROTO_UDP) & (pk.sport == 53) & (pk.pay_len >= 12)
        idx = np.flatnonzero(m)
        if not len(idx):
            return
        c = pk.chunk
        for i in idx.tolist():
            raw = c.buf[pk.pay_off[i] : pk.pay_off[i] + pk.pay_len[i]]
            try:
                msg = dpkt.dns.DNS(raw)
            except (dpkt.UnpackError, IndexError, ValueError):
                self.malformed += 1
                continue
            if msg.qr != dpkt.dns.DNS_R:
                continue
            q = msg.qd[0] if msg.qd else None
            answers = []
            for an in msg.an:
                if an.type == 1 and len(an.rdata) == 4:
                    answers.append(".".join(str(x) for x in an.rdata))
                elif an.type == 28 and len(an.rdata) == 16:
                    answers.append(
                        addr_text(
                            int.from_bytes(an.rdata[:8], "big"), int.from_bytes(an.rdata[8:], "big")
                        )
                    )
                elif an.type == 5:
                    answers.append(getattr(an, "cname", ""))
            self.rows.append(
                {
                    "ts_us": int(c.ts_us[i]),
                    "frame": int(c.frame[i]),
                    "client_ip": addr_text(pk.dst_hi[i], pk.dst_lo[i]),
                    "server_ip": addr_text(pk.src_hi[i], pk.src_lo[i]),
                    "qname": q.name if q is not None else None,
                    "qtype": QTYPES.get(q.type, str(q.type)) if q is not None else None,
                    "rcode": int(msg.rcode),
                    "rcode_name": RCODES.get(msg.rcode, str(msg.rcode)),
                    "answers": answers,
                }
            )
