"""Domain tables of captures and the events they add to the timeline; written in bulk
at the end of a capture (`prepare`, then `finish`). Attribution of flows to chargers
happens here (see `attribute`).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from forensics.parsers.pcap import deep
from forensics.parsers.pcap import events as ev
from forensics.parsers.pcap.decode import addr_text
from forensics.parsers.pcap.websocket import OcppFrames

PREPARE_BLOCK = 4096  # flows whose rows are built (and made Arrow) at a time

_FLOW_COLS = """flow_id INTEGER, charger_id VARCHAR, attributed_by VARCHAR,
    client_ip VARCHAR, client_port INTEGER, server_ip VARCHAR, server_port INTEGER,
    ip_version TINYINT, vlan INTEGER"""
DDL = {
    "tcp_flows": f"""CREATE TABLE IF NOT EXISTS tcp_flows ({_FLOW_COLS},
        ts_start TIMESTAMP, ts_end TIMESTAMP, first_frame BIGINT, last_frame BIGINT,
        packets_c2s BIGINT, packets_s2c BIGINT, bytes_c2s BIGINT, bytes_s2c BIGINT,
        state VARCHAR,            -- established | refused | syn_unanswered | partial
        partial BOOLEAN,          -- began before the capture (no SYN seen)
        rst_from VARCHAR, fin_from VARCHAR,   -- client | server | both
        retrans_c2s BIGINT, retrans_s2c BIGINT, dupack_c2s BIGINT, dupack_s2c BIGINT,
        zerowin_c2s BIGINT, zerowin_s2c BIGINT, syn_retries INTEGER,
        handshake_rtt_ms DOUBLE,  -- SYN -> client ACK of SYN-ACK, at the capture point
        app VARCHAR,              -- tls | http | websocket | other
        history VARCHAR,          -- Zeek conn history, client upper case
        wireshark_filter VARCHAR, file_id INTEGER, locator VARCHAR)""",
    "tls_handshakes": f"""CREATE TABLE IF NOT EXISTS tls_handshakes ({_FLOW_COLS},
        ts TIMESTAMP, sni VARCHAR, offered_versions VARCHAR[], alpn VARCHAR[],
        version VARCHAR, cipher VARCHAR,
        cert_subject VARCHAR, cert_issuer VARCHAR, cert_serial VARCHAR,
        cert_not_before TIMESTAMP, cert_not_after TIMESTAMP,
        cert_valid_at_capture BOOLEAN, chain_length INTEGER,
        cert_requested BOOLEAN, client_cert_sent BOOLEAN,
        alert_level VARCHAR, alert_description VARCHAR, alert_from VARCHAR,
        encrypted_alert BOOLEAN,
        outcome VARCHAR,          -- established | alert | encrypted_alert | reset | closed | incomplete
        history VARCHAR,          -- Zeek ssl history, client upper case
        wireshark_filter VARCHAR, file_id INTEGER, locator VARCHAR)""",
    "ws_sessions": f"""CREATE TABLE IF NOT EXISTS ws_sessions ({_FLOW_COLS},
        ts TIMESTAMP, method VARCHAR, path VARCHAR, charge_point_id VARCHAR, host VARCHAR,
        auth_scheme VARCHAR, auth_user VARCHAR,
        offered_protocols VARCHAR[], accepted_protocol VARCHAR,
        status INTEGER, reason VARCHAR, ts_response TIMESTAMP,
        close_code INTEGER, close_reason VARCHAR, close_from VARCHAR,
        messages_c2s BIGINT, messages_s2c BIGINT, pings BIGINT, pongs BIGINT, gaps INTEGER,
        wireshark_filter VARCHAR, file_id INTEGER, locator VARCHAR)""",
    "dns_answers": """CREATE TABLE IF NOT EXISTS dns_answers (
        ts TIMESTAMP, charger_id VARCHAR, client_ip VARCHAR, server_ip VARCHAR,
        qname VARCHAR, qtype VARCHAR, rcode INTEGER, rcode_name VARCHAR, answers VARCHAR[],
        file_id INTEGER, locator VARCHAR)""",
    "capture_info": """CREATE TABLE IF NOT EXISTS capture_info (
        file_id INTEGER, format VARCHAR, linktypes INTEGER[], packets BIGINT,
        ip_packets BIGINT, fragments BIGINT, not_ip BIGINT, tcp_flows BIGINT,
        ts_first TIMESTAMP, ts_last TIMESTAMP, skipped_bytes BIGINT,
        tls_keylog BOOLEAN,      -- a Decryption Secrets Block with a TLS key log is present
        source_path VARCHAR, locator VARCHAR)""",
}


def flow_filter(cip: str, cport: int, sip: str, sport: int) -> str:
    """Wireshark display filter selecting one TCP connection (tcp.stream is not stable)."""
    f = "ipv6.addr" if ":" in cip else "ip.addr"
    return f"{f} == {cip} && tcp.port == {cport} && {f} == {sip} && tcp.port == {sport}"


def inventory_ips(con) -> dict[str, str]:
    """ip -> charger_id from the inventory (one charger per address)."""
    rows = con.execute(
        "SELECT trim(ip), min(charger_id), count(DISTINCT charger_id) FROM chargers "
        "WHERE ip IS NOT NULL AND trim(ip) <> '' AND NOT coalesce(inferred, false) GROUP BY 1"
    ).fetchall()
    return {ip: cp for ip, cp, n in rows if n == 1}


def prepare(src, inventory: dict[str, str], cap, reader) -> tuple[dict[str, pa.Table], OcppFrames]:
    """Everything of the capture's tables that needs its state, built in memory without
    the case (`inventory` is inventory_ips, read before): {table: Arrow rows} for tcp_flows,
    tls_handshakes, ws_sessions, dns_answers, events and capture_info, and the OCPP frames
    not staged yet (staging them is the caller's). Once this returns, the capture's state
    may go before the OCPP close, the step where a big capture's memory peaks; `finish`
    writes the tables, on another cursor if the close runs meanwhile."""
    ft = cap.flows
    n = ft.n
    text_cache: dict[tuple[int, int], str] = {}

    def text(hi, lo) -> str:
        k = (int(hi), int(lo))
        if k not in text_cache:
            text_cache[k] = addr_text(*k)
        return text_cache[k]

    cip = [text(ft.c_hi[g], ft.c_lo[g]) for g in range(n)]
    sip = [text(ft.s_hi[g], ft.s_lo[g]) for g in range(n)]
    cport, sport = ft.c_port[:n].tolist(), ft.s_port[:n].tolist()
    filters = [flow_filter(cip[g], cport[g], sip[g], sport[g]) for g in range(n)]
    dec = _deep(src, cap, reader, cip, cport, sip, sport)
    flow_of = {(cip[g], cport[g], sip[g], sport[g]): g for g in range(n)}
    charger, how = attribute(inventory, src.context.charger_id, cap, cip, sip)
    if dec is not None:
        for g, cp in deep.charge_point_ids(dec, flow_of).items():
            if how[g] != "ws_path":
                charger[g], how[g] = cp, "ws_path_decrypted"
    base = {
        "flow_id": list(range(1, n + 1)),
        "charger_id": charger,
        "attributed_by": how,
        "client_ip": cip,
        "client_port": cport,
        "server_ip": sip,
        "server_port": sport,
        "ip_version": ft.ip_ver[:n].tolist(),
        "vlan": [v if v >= 0 else None for v in ft.vlan[:n].tolist()],
        "wireshark_filter": filters,
    }
    # Rows are built PREPARE_BLOCK flows at a time and made Arrow at once: Python rows of
    # every flow at the same moment were most of the peak of a long capture (+100 MB at 8M
    # packets). The deep path's merge looks across all flows: one block then.
    parts: dict[str, list[pa.Table]] = {}
    block = max(n, 1) if dec is not None else PREPARE_BLOCK
    ocpp = cap.ocpp_ready  # ws_rows appends the frames of flows attributed only now
    for lo in range(0, max(n, 1), block):
        flows = range(lo, min(n, lo + block))
        events = ev.Events()
        parts.setdefault("tcp_flows", []).append(pa.table(ev.tcp_flows(cap, base, events, flows)))
        hs = ev.tls_rows(cap, base, events, flows)
        ws, _ = ev.ws_rows(cap, base, events, flows)
        if dec is not None:
            deep.merge(dec, flow_of, base, events, hs, ws, ocpp)
        if lo + block >= n:  # DNS is no flow's: with the last block
            dns = ev.dns_rows(cap, inventory, src.context.charger_id, events)
            if dns:
                parts["dns_answers"] = [_table(dns)]
        for table, rows in (("tls_handshakes", hs), ("ws_sessions", ws)):
            if rows:
                parts.setdefault(table, []).append(_table(rows))
        if events.rows:
            parts.setdefault("events", []).append(events.table())
        del hs, ws, events
    # a column all NULL in one block is typed null there: promoted to the others' type
    out = {t: pa.concat_tables(p, promote_options="default") for t, p in parts.items()}
    linktypes = sorted({i.linktype for i in reader.interfaces})
    info = {
        "format": [reader.format],
        "linktypes": [linktypes],
        "packets": [cap.packets],
        "ip_packets": [cap.ip_packets],
        "fragments": [cap.fragments],
        "not_ip": [cap.not_ip],
        "tcp_flows": [n],
        "ts_first": [ev.ts(cap.first_ts) if cap.first_ts is not None else None],
        "ts_last": [ev.ts(cap.last_ts) if cap.first_ts is not None else None],
        "skipped_bytes": [reader.stats.skipped_bytes],
        "tls_keylog": [bool(reader.secrets)],
        "source_path": [str(src.path.resolve())],
        "locator": ["frame 1"],
    }
    out["capture_info"] = pa.table(info)
    if cap.fragments:
        src.notes.append(f"{cap.fragments} IP fragments (not reassembled)")
    if cap.malformed:
        frame, err = cap.malformed[0]
        src.notes.append(
            f"payload parsing stopped on {len(cap.malformed)} flow(s) with malformed TLS/HTTP/"
            f"WebSocket data (first at frame {frame}: {err})"
        )
    if cap.dns.malformed:
        src.notes.append(f"{cap.dns.malformed} DNS responses could not be decoded")
    return out, ocpp


def finish(sink, tables: dict[str, pa.Table]) -> None:
    """Writes what `prepare` built. Reads nothing from the case, so it may run on a twin
    Sink while the OCPP close runs on the parser's connection."""
    for table, rows in tables.items():
        sink.append(table, rows)


def stage_ocpp(src, sink, frames, parse: bool = False, evict: bool = True) -> int:
    """Hands OCPP frames (websocket.OcppFrames) to the one OCPP code path (validated and
    paired at close); with `parse`, the frames staged so far are parsed now as well. The
    stage is a DuckDB temp table, held in memory up to memory_limit unless evicted (to the
    case's temp file), which would make RSS grow with the capture: `evict` does it now."""
    if not len(frames):
        return 0
    from forensics.parsers.ocpp_frames import parse_staged, store_frames

    store_frames(src, sink, frames.table())
    if parse:
        parse_staged(sink)
    if evict:
        sink.evict_cache()
    return len(frames)


def _deep(src, cap, reader, cip, cport, sip, sport):
    """Runs the tshark deep path when a key log is present (or `deep` is asked for in the
    file's context); None when it does not run."""
    from forensics.parsers.pcap.tls import TlsFlow

    tls_flows = [g for g, h in cap.handlers.items() if isinstance(h, TlsFlow)]
    if not tls_flows:
        return None
    keylog = deep.find_keylog(src.path, reader.secrets)
    if not keylog:
        if src.context.extra.get("deep"):
            src.notes.append("deep path asked for, but no TLS key log in the capture or beside it")
        return None
    ports = {sport[g] for g in tls_flows}
    dec = deep.decrypt(src.path, keylog, ports)
    if dec.error:
        src.notes.append(f"deep path: {dec.error}")
        return None
    src.notes.append(
        f"deep path: TLS decrypted with a key log ({len(dec.texts)} WebSocket messages, "
        f"{len(dec.alerts)} alerts, {len(dec.upgrades)} upgrades inside TLS)"
    )
    return dec


def attribute(inv: dict[str, str], default: str | None, cap, cip: list[str], sip: list[str]):
    """charger_id and how it was found, per flow: the charge point id in the flow's own
    WebSocket path; else the inventory's ip (client side, then server side); else the
    one charge point id the same client address announced in other flows; else the
    manifest's charger for this file; else NULL (addresses stay in the row)."""
    from forensics.parsers.pcap.websocket import WsFlow

    n = cap.flows.n
    charger: list[str | None] = [None] * n
    how: list[str | None] = [None] * n
    by_ip: dict[str, set[str]] = {}
    for g, h in cap.handlers.items():
        if isinstance(h, WsFlow) and (up := h.upgrade()) and up.charge_point_id:
            charger[g], how[g] = up.charge_point_id, "ws_path"
            by_ip.setdefault(cip[g], set()).add(up.charge_point_id)
    for g in range(n):
        if charger[g]:
            continue
        if cip[g] in inv:
            charger[g], how[g] = inv[cip[g]], "inventory_ip"
        elif sip[g] in inv:
            charger[g], how[g] = inv[sip[g]], "inventory_ip"
        elif len(by_ip.get(cip[g], ())) == 1:
            charger[g], how[g] = next(iter(by_ip[cip[g]])), "ws_path_same_ip"
        elif default:
            charger[g], how[g] = default, "manifest"
    return charger, how


def _table(rows: list[dict]) -> pa.Table:
    cols = {k: [r.get(k) for r in rows] for k in rows[0]}
    return pa.table(cols)


def dumps(d: dict) -> str:
    return json.dumps(d, default=str, separators=(",", ":"))


__all__ = ["DDL", "attribute", "dumps", "finish", "flow_filter", "np", "prepare"]
