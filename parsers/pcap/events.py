"""Rows of tcp_flows / tls_handshakes / ws_sessions / dns_answers and the timeline events
each adds. Event kinds (fixed once released): tcp.syn_unanswered, tcp.refused, tcp.rst, tcp.fin,
tcp.retransmissions, tcp.zero_window, tls.handshake, tls.handshake_failed, tls.alert,
tls.encrypted_alert, tls.cert_expired, tls.cert_not_yet_valid, tls.client_cert_missing,
ws.open, ws.upgrade_rejected, ws.subprotocol_mismatch, ws.close, ws.disconnect, dns.error.
Every event carries `wireshark_filter` in its detail and `frame N` as locator.
"""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa

from forensics.parsers.pcap import tcp as T
from forensics.parsers.pcap.tls import TlsFlow, valid_at
from forensics.parsers.pcap.websocket import OcppFrames, WsFlow

EPOCH = dt.datetime(1970, 1, 1)
SIDE = ("client", "server")
RETRANS_EVENT_MIN = 1  # flows with at least this many retransmissions get an event


def ts(us: int) -> dt.datetime:
    """UTC microseconds -> naive UTC datetime."""
    return EPOCH + dt.timedelta(microseconds=int(us))


class Events:
    """Collects events; `table()` gives the Arrow table for the events table."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(self, us, charger, layer, kind, severity, code, frame, detail: dict, flt=None):
        detail = dict(detail)
        detail["wireshark_filter"] = flt or f"frame.number == {frame}"
        if flt:
            detail["frame_filter"] = f"frame.number == {frame}"
        self.rows.append(
            (int(us), charger, layer, kind, severity, code, json.dumps(detail, default=str),
             f"frame {frame}")
        )  # fmt: skip

    def table(self) -> pa.Table:
        cols = list(zip(*self.rows, strict=True))
        return pa.table(
            {
                "ts": pa.array(cols[0], pa.int64()).cast(pa.timestamp("us")),
                "charger_id": pa.array(cols[1], pa.string()),
                "channel": pa.array(["backend"] * len(self.rows), pa.string()),
                "layer": pa.array(cols[2], pa.string()),
                "kind": pa.array(cols[3], pa.string()),
                "severity": pa.array(cols[4], pa.string()),
                "code": pa.array(cols[5], pa.string()),
                "detail": pa.array(cols[6], pa.string()),
                "locator": pa.array(cols[7], pa.string()),
            }
        )


def _side(c2s: int, s2c: int) -> str | None:
    if c2s and s2c:
        return "both"
    return "client" if c2s else ("server" if s2c else None)


def tcp_flows(cap, base: dict, events: Events, flows: range) -> dict:
    """tcp_flows columns (vectorised where it matters) plus the TCP events of `flows` (a
    range of flow ids; `base` holds every flow)."""
    ft, lo, hi = cap.flows, flows.start, flows.stop
    hf, ht = ft.hist_frame[lo:hi], ft.hist_ts[lo:hi]
    syn_seen, synack_seen = hf[:, 0, T.L_SYN] > 0, hf[:, 1, T.L_SYNACK] > 0
    rst_c, rst_s = ft.rst[lo:hi, 0], ft.rst[lo:hi, 1]
    ack_ts = (hf[:, 0, T.L_ACK] > 0) * ht[:, 0, T.L_ACK]
    ack_ts = ack_ts + (ack_ts == 0) * ht[:, 0, T.L_DATA]
    rtt_ok = syn_seen & synack_seen & (ack_ts > 0)
    rtt = ((ack_ts - ht[:, 0, T.L_SYN]) / 1000.0).tolist()
    states, apps, hists = [], [], []
    for g in flows:
        k = g - lo
        if syn_seen[k] and not synack_seen[k]:
            states.append("refused" if rst_s[k] else "syn_unanswered")
        elif ft.partial[g] and not synack_seen[k]:
            states.append("partial")
        else:
            states.append("established")
        h = cap.handlers.get(g)
        apps.append(
            "tls" if isinstance(h, TlsFlow)
            else ("websocket" if h.ws else "http") if isinstance(h, WsFlow)
            else ("other" if cap.app[g] == 4 else None)
        )  # fmt: skip
        hists.append(ft.history(g))
        _tcp_events(ft, g, states[k], base, events)
    out = {name: column[lo:hi] for name, column in base.items() if name != "wireshark_filter"}
    out.update(
        ts_start=pa.array(ft.first_ts[lo:hi]).cast(pa.timestamp("us")),
        ts_end=pa.array(ft.last_ts[lo:hi]).cast(pa.timestamp("us")),
        first_frame=ft.first_frame[lo:hi],
        last_frame=ft.last_frame[lo:hi],
        packets_c2s=ft.pkts[lo:hi, 0],
        packets_s2c=ft.pkts[lo:hi, 1],
        bytes_c2s=ft.bytes[lo:hi, 0],
        bytes_s2c=ft.bytes[lo:hi, 1],
        state=states,
        partial=ft.partial[lo:hi],
        rst_from=[_side(a, b) for a, b in zip(rst_c.tolist(), rst_s.tolist(), strict=True)],
        fin_from=[
            _side(a, b)
            for a, b in zip(ft.fin[lo:hi, 0].tolist(), ft.fin[lo:hi, 1].tolist(), strict=True)
        ],
        retrans_c2s=ft.retrans[lo:hi, 0],
        retrans_s2c=ft.retrans[lo:hi, 1],
        dupack_c2s=ft.dupack[lo:hi, 0],
        dupack_s2c=ft.dupack[lo:hi, 1],
        zerowin_c2s=ft.zerowin[lo:hi, 0],
        zerowin_s2c=ft.zerowin[lo:hi, 1],
        syn_retries=[
            max(int(s) - 1, 0) if ok else None
            for s, ok in zip(ft.syn[lo:hi, 0].tolist(), syn_seen.tolist(), strict=True)
        ],
        handshake_rtt_ms=[r if ok else None for r, ok in zip(rtt, rtt_ok.tolist(), strict=True)],
        app=apps,
        history=hists,
        wireshark_filter=base["wireshark_filter"][lo:hi],
        locator=[f"frame {f}" for f in ft.first_frame[lo:hi].tolist()],
    )
    return out


def _tcp_events(ft, g: int, state: str, base: dict, events: Events) -> None:
    cp, flt = base["charger_id"][g], base["wireshark_filter"][g]
    hf, ht = ft.hist_frame[g], ft.hist_ts[g]
    who = {"client": f"{base['client_ip'][g]}:{base['client_port'][g]}",
           "server": f"{base['server_ip'][g]}:{base['server_port'][g]}"}  # fmt: skip
    if state == "syn_unanswered":
        events.add(ht[0, T.L_SYN], cp, "tcp", "tcp.syn_unanswered", "error",
                   f"{int(ft.syn[g, 0])} SYN", hf[0, T.L_SYN], {**who, "syns": int(ft.syn[g, 0])}, flt)  # fmt: skip
    elif state == "refused":
        events.add(ht[1, T.L_RST], cp, "tcp", "tcp.refused", "error", "RST", hf[1, T.L_RST],
                   {**who, "syn_frame": int(hf[0, T.L_SYN])}, flt)  # fmt: skip
    else:
        fins = [d for d in (0, 1) if hf[d, T.L_FIN]]
        if fins:
            d = min(fins, key=lambda x: hf[x, T.L_FIN])
            events.add(ht[d, T.L_FIN], cp, "tcp", "tcp.fin", "info", SIDE[d], hf[d, T.L_FIN],
                       {**who, "from": SIDE[d]}, flt)  # fmt: skip
        for d in (0, 1):
            if hf[d, T.L_RST] and (not hf[1 - d, T.L_RST] or hf[d, T.L_RST] < hf[1 - d, T.L_RST]):
                events.add(ht[d, T.L_RST], cp, "tcp", "tcp.rst", "warning", SIDE[d],
                           hf[d, T.L_RST], {**who, "from": SIDE[d]}, flt)  # fmt: skip
    retr = int(ft.retrans[g].sum())
    if retr >= RETRANS_EVENT_MIN and state == "established":  # SYN retries: said above
        d = (
            0
            if hf[0, T.L_RETR] and (not hf[1, T.L_RETR] or hf[0, T.L_RETR] < hf[1, T.L_RETR])
            else 1
        )
        pk = int(ft.pkts[g].sum())
        events.add(ht[d, T.L_RETR], cp, "tcp", "tcp.retransmissions", "warning" if retr * 20 > pk else "info",
                   str(retr), hf[d, T.L_RETR],
                   {**who, "retransmissions": retr, "packets": pk, "rate": round(retr / pk, 4),
                    "retrans_c2s": int(ft.retrans[g, 0]), "retrans_s2c": int(ft.retrans[g, 1]),
                    "dupacks": int(ft.dupack[g].sum())}, flt)  # fmt: skip
    for d in (0, 1):
        if hf[d, T.L_ZWIN]:
            events.add(ht[d, T.L_ZWIN], cp, "tcp", "tcp.zero_window", "warning", SIDE[d],
                       hf[d, T.L_ZWIN], {**who, "count": int(ft.zerowin[g, d])}, flt)  # fmt: skip


def tls_rows(cap, base: dict, events: Events, flows: range) -> list[dict]:
    """One tls_handshakes row per TLS flow of `flows`, with its events."""
    ft, rows = cap.flows, []
    for g in flows:
        h = cap.handlers.get(g)
        if not isinstance(h, TlsFlow) or not h.frame:
            continue
        h.finish()
        cp, flt = base["charger_id"][g], base["wireshark_filter"][g]
        leaf = h.certs[0] if h.certs else {}
        valid = valid_at(leaf, h.cert_ts) if leaf else None
        fatal = next((a for a in h.alerts if not a["encrypted"] and a["level"] == "fatal"), None)
        clear = fatal or next((a for a in h.alerts if not a["encrypted"]), None)
        enc = next((a for a in h.alerts if a["encrypted"]), None)
        if h.established() and not fatal:
            outcome = "established"
        elif fatal:
            outcome = "alert"
        elif enc and not h.established():
            outcome = "encrypted_alert"
        elif ft.rst[g].sum():
            outcome = "reset"
        elif ft.fin[g].sum():
            outcome = "closed"
        else:
            outcome = "incomplete"
        row = {k: base[k][g] for k in base}
        row.update(
            ts=ts(h.ts), sni=h.sni, offered_versions=h.offered, alpn=h.alpn,
            version=h.version, cipher=h.cipher,
            cert_subject=leaf.get("subject"), cert_issuer=leaf.get("issuer"),
            cert_serial=leaf.get("serial"), cert_not_before=leaf.get("not_before"),
            cert_not_after=leaf.get("not_after"), cert_valid_at_capture=valid,
            chain_length=len(h.certs) if h.certs else None,
            cert_requested=h.cert_requested, client_cert_sent=h.client_cert_sent,
            alert_level=clear["level"] if clear else None,
            alert_description=clear["description"] if clear else None,
            alert_from=SIDE[clear["from"]] if clear else (SIDE[enc["from"]] if enc else None),
            encrypted_alert=bool(enc), outcome=outcome, history=h.history(),
            locator=f"frame {h.frame}",
        )  # fmt: skip
        rows.append(row)
        info = {"client": f"{row['client_ip']}:{row['client_port']}",
                "server": f"{row['server_ip']}:{row['server_port']}",
                "sni": h.sni, "version": h.version, "history": row["history"], "outcome": outcome}  # fmt: skip
        if outcome == "established":
            events.add(h.ts, cp, "tls", "tls.handshake", "info", h.version, h.frame, info, flt)
        else:
            events.add(
                h.ts, cp, "tls", "tls.handshake_failed", "error", outcome, h.frame, info, flt
            )
        for a in h.alerts:
            side = {"from": SIDE[a["from"]], **info}
            if a["encrypted"]:
                note = (
                    "probable (TLS 1.3 record of alert size)"
                    if a.get("probable")
                    else "after ChangeCipherSpec"
                )
                # after an established handshake this is almost always close_notify
                sev = "info" if outcome == "established" else "warning"
                events.add(a["ts"], cp, "tls", "tls.encrypted_alert", sev, None, a["frame"],
                           {**side, "note": f"description hidden: {note}; a key log (--deep) reveals it"}, flt)  # fmt: skip
            else:
                sev = (
                    "info"
                    if a["description"] == "close_notify"
                    else ("error" if a["level"] == "fatal" else "warning")
                )
                events.add(a["ts"], cp, "tls", "tls.alert", sev, a["description"], a["frame"],
                           {**side, "level": a["level"]}, flt)  # fmt: skip
        if leaf and valid is False:
            kind = (
                "tls.cert_expired"
                if ts(h.cert_ts) > leaf["not_after"]
                else "tls.cert_not_yet_valid"
            )
            events.add(h.cert_ts, cp, "tls", kind, "error", f"not_after={leaf['not_after'].isoformat()}",
                       h.cert_frame, {"client": info["client"], "server": info["server"], "subject": leaf["subject"], "issuer": leaf["issuer"], "serial": leaf["serial"],
                                      "not_before": leaf["not_before"], "not_after": leaf["not_after"]}, flt)  # fmt: skip
        if h.cert_requested and not h.client_cert_sent:
            events.add(h.ts, cp, "tls", "tls.client_cert_missing", "error",
                       "empty" if h.client_cert_sent is False else "absent", h.frame,
                       {**info, "client_certificate": "empty" if h.client_cert_sent is False else "not sent"}, flt)  # fmt: skip
    return rows


def ws_rows(cap, base: dict, events: Events, flows: range) -> tuple[list[dict], OcppFrames]:
    """One ws_sessions row per HTTP exchange on an HTTP/WebSocket flow of `flows`, events,
    and the OCPP frames of the WebSocket text messages not yet staged (appended to
    cap.ocpp_ready, which is returned)."""
    ft, rows, ocpp = cap.flows, [], cap.ocpp_ready
    for g in flows:
        h = cap.handlers.get(g)
        if not isinstance(h, WsFlow):
            continue
        cp, flt = base["charger_id"][g], base["wireshark_filter"][g]
        up = h.upgrade()
        for ex in h.exchanges:
            final = ex is up
            row = {k: base[k][g] for k in base}
            row.update(
                ts=ts(ex.ts), method=ex.method, path=ex.path, charge_point_id=ex.charge_point_id,
                host=ex.host, auth_scheme=ex.auth_scheme, auth_user=ex.auth_user,
                offered_protocols=ex.offered, accepted_protocol=ex.accepted, status=ex.status,
                reason=ex.reason, ts_response=ts(ex.resp_ts) if ex.resp_frame else None,
                close_code=h.close["code"] if final and h.close else None,
                close_reason=h.close["reason"] if final and h.close else None,
                close_from=SIDE[h.close["from"]] if final and h.close else None,
                messages_c2s=h.counts["c2s"] if final else 0,
                messages_s2c=h.counts["s2c"] if final else 0,
                pings=h.counts["ping"] if final else 0, pongs=h.counts["pong"] if final else 0,
                gaps=h.gaps if final else 0, locator=f"frame {ex.frame}",
            )  # fmt: skip
            rows.append(row)
            who = {"client": f"{base['client_ip'][g]}:{base['client_port'][g]}",
                   "server": f"{base['server_ip'][g]}:{base['server_port'][g]}"}  # fmt: skip
            _ws_events(ex, cp, flt, events, who)
        if h.ws:
            ocpp.add_flow(h, cp, up.accepted if up else None)
            for c in h.closes:
                events.add(c["ts"], cp, "websocket", "ws.close", "info" if c["code"] in (1000, 1001) else "warning",
                           str(c["code"]) if c["code"] is not None else None, c["frame"],
                           {"from": SIDE[c["from"]], "reason": c["reason"]}, flt)  # fmt: skip
            end_frame, end_ts, how = _ws_end(ft, g, h)
            # a close handshake with 1000/1001 is an orderly end (its ws.close events say so);
            # anything else ending an open WebSocket is a disconnect
            clean = bool(h.close) and h.close["code"] in (1000, 1001)
            if end_frame and not clean:
                events.add(end_ts, cp, "websocket", "ws.disconnect", "warning", how, end_frame,
                           {"how": how, "messages": h.counts["c2s"] + h.counts["s2c"]}, flt)  # fmt: skip
    return rows, ocpp


def _ws_events(ex, cp, flt, events: Events, who: dict) -> None:
    info = {**who, "path": ex.path, "charge_point_id": ex.charge_point_id, "offered": ex.offered,
            "accepted": ex.accepted, "status": ex.status, "auth_scheme": ex.auth_scheme,
            "auth_user": ex.auth_user, "host": ex.host}  # fmt: skip
    if ex.status is None or not ex.upgrade:
        return
    frame, t = (ex.resp_frame, ex.resp_ts) if ex.resp_frame else (ex.frame, ex.ts)
    if ex.status != 101:
        events.add(t, cp, "websocket", "ws.upgrade_rejected", "error", str(ex.status), frame,
                   {**info, "reason": ex.reason}, flt)  # fmt: skip
        if ex.offered and ex.status in (400, 426) and not ex.accepted:
            events.add(t, cp, "websocket", "ws.subprotocol_mismatch", "error", ",".join(ex.offered),
                       frame, info, flt)  # fmt: skip
        return
    if ex.offered and (not ex.accepted or ex.accepted not in ex.offered):
        events.add(t, cp, "websocket", "ws.subprotocol_mismatch", "error", ex.accepted or "none",
                   frame, info, flt)  # fmt: skip
    else:
        events.add(t, cp, "websocket", "ws.open", "info", ex.accepted, frame, info, flt)


def _ws_end(ft, g: int, h: WsFlow) -> tuple[int, int, str]:
    """Where an open WebSocket ended inside the capture: (frame, ts, how) or (0, 0, '')."""
    hf, ht = ft.hist_frame[g], ft.hist_ts[g]
    cands = []
    if h.close:
        cands.append((h.close["frame"], h.close["ts"], f"close {h.close['code']}"))
    for d in (0, 1):
        if hf[d, T.L_RST]:
            cands.append((int(hf[d, T.L_RST]), int(ht[d, T.L_RST]), f"rst from {SIDE[d]}"))
        if hf[d, T.L_FIN]:
            cands.append((int(hf[d, T.L_FIN]), int(ht[d, T.L_FIN]), f"fin from {SIDE[d]}"))
    return min(cands) if cands else (0, 0, "")


def dns_rows(cap, inventory: dict, default, events: Events) -> list[dict]:
    rows = []
    for r in cap.dns.rows:
        cp = inventory.get(r["client_ip"], default)
        rows.append({"ts": ts(r["ts_us"]), "charger_id": cp, "client_ip": r["client_ip"],
                     "server_ip": r["server_ip"], "qname": r["qname"], "qtype": r["qtype"],
                     "rcode": r["rcode"], "rcode_name": r["rcode_name"], "answers": r["answers"],
                     "locator": f"frame {r['frame']}"})  # fmt: skip
        if r["rcode"] in (2, 3, 5):
            events.add(r["ts_us"], cp, "dns", "dns.error", "error", r["rcode_name"], r["frame"],
                       {"qname": r["qname"], "qtype": r["qtype"], "server": r["server_ip"]})  # fmt: skip
    return rows
