"""NSS key log files (SSLKEYLOGFILE of browsers, curl, OpenSSL, Python): TLS secrets the
capture parser's deep path uses to decrypt wss:// traffic. Recorded as evidence (its lines
are counted; secrets never enter the case database)."""

from __future__ import annotations

from forensics.parsers.base import FirstLines, Parser, Sink, Source, register
from forensics.parsers.pcap.deep import KEYLOG_LINE


@register
class TlsKeyLog(Parser):
    name = "tls_keylog"
    version = "1"
    kind = "tls_keylog"
    description = "NSS key log (TLS secrets) for decrypting captures with tshark (deep path)"
    signature = FirstLines(
        r"^(#|CLIENT_RANDOM |CLIENT_HANDSHAKE_TRAFFIC_SECRET |SERVER_HANDSHAKE_TRAFFIC_SECRET "
        r"|CLIENT_TRAFFIC_SECRET_0 |SERVER_TRAFFIC_SECRET_0 |EXPORTER_SECRET |EARLY_EXPORTER_SECRET "
        r"|CLIENT_EARLY_TRAFFIC_SECRET )",
        min_hits=3,
        certainty=90,
    )

    def parse(self, src: Source, sink: Sink) -> None:
        for first, lines in src.lines():
            for i, line in enumerate(lines):
                if not line.strip() or line.startswith("#"):
                    continue
                if KEYLOG_LINE.match(line.encode() + b"\n"):
                    src.accepted()
                else:
                    src.reject(f"line {first + i}", "tls_keylog.bad_line", line[:20] + "...",
                               "not an NSS key log entry")  # fmt: skip
