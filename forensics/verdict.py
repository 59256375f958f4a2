"""Findings -> the verdict contract (schema charger-forensics.verdict/1, DESIGN.md).

Incidents across chargers (fleet, site) come first and absorb the per-charger findings of
the chargers they cover in their window; each remaining charger with findings or failures
gets its own verdict. Causes are ranked by a noisy-or of their findings' scores. A verdict
whose best cause scores below MIN_SCORE is inconclusive and says what data would decide.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

import duckdb

from forensics import catalogue

SCHEMA = "charger-forensics.verdict/1"
MIN_SCORE = 0.5
MAX_EVIDENCE = 6
SCOPE_RANK = {"fleet": 0, "site": 1, "charger": 2}
SLACK = timedelta(minutes=5)  # a charger finding this close to an incident is part of it
# What counts as a failed exchange when no rule explains it.
FAILURE_SQL = """
    (severity IN ('error', 'critical')
     OR kind IN ('ws.disconnect', 'csms.marked_offline', 'ocpp.status_fault'))
"""


def iso(ts: datetime | None) -> str | None:
    return ts.isoformat(timespec="milliseconds") + "Z" if ts else None


def build(con: duckdb.DuckDBPyConnection, case_id: str, bundle: str) -> dict:
    """The verdict document for the case as analysed (findings must be current)."""
    aliases = charger_aliases(con)
    findings = _findings(con)
    for f in findings:
        f["charger_id"] = aliases.get(f["charger_id"], f["charger_id"])
        if f["scope"] == "charger":
            f["subject"] = aliases.get(f["subject"], f["subject"])
        f["chargers"] = sorted({aliases.get(c, c) for c in (f["chargers"] or [])})
    kinds_present = {
        r[0]
        for r in con.execute("SELECT DISTINCT kind FROM evidence WHERE kind IS NOT NULL").fetchall()
    }
    verdicts: list[dict] = []
    covered: list[tuple[set[str], datetime, datetime, dict]] = []
    incidents = [f for f in findings if f["scope"] != "charger" and not f["against"]]
    for group in _group(incidents, key=lambda f: (f["scope"], f["subject"], f["cause"])):
        v = _verdict(con, group, kinds_present)
        verdicts.append(v)
        start = min(f["ts_start"] for f in group)
        end = max(f["ts_end"] for f in group)
        covered.append((set(v["chargers"]), start, end, v))

    per_charger: dict[str, list[dict]] = defaultdict(list)
    for f in findings:
        if f["scope"] == "charger" and f["charger_id"]:
            per_charger[f["charger_id"]].append(f)
    for cp, group in sorted(per_charger.items()):
        own = []
        for f in group:
            home = _incident_for(covered, cp, f)
            if home is not None and not f["against"]:
                home.setdefault("also_seen", []).append(
                    {"charger": cp, "cause": f["cause"], "score": round(f["score"], 3)}
                )
            else:
                own.append(f)
        if any(not f["against"] for f in own):
            verdicts.append(_verdict(con, own, kinds_present))

    explained = {c for v in verdicts for c in v["chargers"]}
    explained |= {alias for alias, cp in aliases.items() if cp in explained}
    for cp, channel, n, ev in _unexplained_failures(con, explained):
        verdicts.append(_unknown_verdict(con, cp, channel, n, ev, kinds_present))

    verdicts.sort(key=lambda v: (SCOPE_RANK[v["scope"]], -v["causes"][0]["score"], v["subject"]))
    if not verdicts:
        status = "no_failure"
    elif any(v["causes"][0]["score"] >= MIN_SCORE for v in verdicts):
        status = "cause_found"
    else:
        status = "inconclusive"
    return {
        "schema": SCHEMA,
        "status": status,
        "case": _case(con, case_id, bundle),
        "verdicts": verdicts,
        "clocks": clocks(con),
    }


def clocks(con) -> list[dict]:
    """Per-source clock offsets against the reference (extra key of the contract)."""
    rows = con.execute(
        """SELECT v.path, r.path, o.offset_ms, o.pairs, o.method
           FROM clock_offsets o JOIN evidence v ON v.file_id = o.file_id
           LEFT JOIN evidence r ON r.file_id = o.reference_file_id ORDER BY v.path"""
    ).fetchall()
    return [
        {"file": f, "reference": ref, "offset_ms": off, "pairs": n, "method": m}
        for f, ref, off, n, m in rows
    ]


def charger_aliases(con) -> dict[str, str]:
    """Ids seen in logs that differ from an inventory id only by case or whitespace, mapped
    to the inventory id: one charger, one verdict (the mismatch itself is a finding)."""
    return dict(
        con.execute(
            """SELECT s.charger_id, i.charger_id FROM chargers s
               JOIN chargers i ON NOT i.inferred AND s.inferred
                AND lower(trim(i.charger_id)) = lower(trim(s.charger_id))"""
        ).fetchall()
    )


def _findings(con) -> list[dict]:
    cur = con.execute(
        """SELECT finding_id, rule_id, cause, channel, scope, subject, charger_id, chargers,
                  ts_start, ts_end, score, summary, evidence, against
           FROM findings ORDER BY score DESC, finding_id"""
    )
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _group(items, key):
    groups: dict = defaultdict(list)
    for f in items:
        groups[key(f)].append(f)
    return list(groups.values())


def _incident_for(covered, cp, f):
    """The incident verdict that explains a charger finding lying within its window."""
    for chargers, start, end, v in covered:
        if cp in chargers and f["ts_start"] >= start - SLACK and f["ts_end"] <= end + SLACK:
            return v
    return None


def _noisy_or(scores: list[float]) -> float:
    p = 1.0
    for s in scores:
        p *= 1.0 - s
    return min(0.99, 1.0 - p)


def _verdict(con, group: list[dict], kinds_present: set[str]) -> dict:
    first = group[0]
    by_cause: dict[str, list[dict]] = defaultdict(list)
    for f in group:
        by_cause[f["cause"]].append(f)
    causes = []
    for cause_id, fs in by_cause.items():
        support = [f for f in fs if not f["against"]]
        against = [f for f in fs if f["against"]]
        if not support:
            continue
        score = _noisy_or([f["score"] for f in support])
        score = max(0.0, score - 0.5 * max((f["score"] for f in against), default=0.0))
        best = max(support, key=lambda f: f["score"])
        ids = [e for f in sorted(support, key=lambda f: -f["score"]) for e in f["evidence"]]
        entry = {
            "cause": cause_id,
            "title": catalogue.causes()[cause_id].title,
            "score": round(score, 3),
            "summary": best["summary"],
            "evidence": evidence_items(con, ids),
            "fix": catalogue.causes()[cause_id].fix,
            "rules": sorted({f["rule_id"] for f in support}),
        }
        if against:
            entry["against"] = [
                {"summary": f["summary"], "evidence": evidence_items(con, f["evidence"])}
                for f in against
            ]
        causes.append(entry)
    causes.sort(key=lambda c: -c["score"])
    chargers = sorted({c for f in group for c in (f["chargers"] or [])})
    top = catalogue.causes()[causes[0]["cause"]]
    return {
        "scope": first["scope"],
        "subject": first["subject"] or (chargers[0] if chargers else "fleet"),
        "chargers": chargers,
        "channel": top.channel,
        "window": {
            "start": iso(min(f["ts_start"] for f in group)),
            "end": iso(max(f["ts_end"] for f in group)),
        },
        "causes": causes,
        "missing_data": missing_data([c["cause"] for c in causes[:3]], kinds_present),
    }


def evidence_items(con, event_ids: list[int]) -> list[dict]:
    """Evidence references for event ids: file, locator, ts, what (and a Wireshark filter)."""
    ids = list(dict.fromkeys(event_ids))[:MAX_EVIDENCE]
    if not ids:
        return []
    rows = con.execute(
        """SELECT e.event_id, v.path, e.locator, e.ts, e.kind, e.code, e.charger_id,
                  e.detail->>'wireshark_filter'
           FROM events e JOIN evidence v USING (file_id)
           WHERE e.event_id IN (SELECT unnest($ids))""",
        {"ids": ids},
    ).fetchall()
    by_id = {r[0]: r for r in rows}
    items = []
    for eid in ids:
        if eid not in by_id:
            continue
        _, path, locator, ts, kind, code, cp, wfilter = by_id[eid]
        what = kind + (f" {code}" if code else "") + (f" ({cp})" if cp else "")
        item = {"file": path, "locator": locator, "ts": iso(ts), "what": what}
        if wfilter:
            item["wireshark_filter"] = wfilter
        items.append(item)
    return items


def missing_data(cause_ids: list[str], kinds_present: set[str]) -> list[str]:
    """What data the bundle lacks that would confirm or rule out these causes."""
    out: list[str] = []
    for cid in cause_ids:
        cause = catalogue.get(cid)
        if cause is None:
            continue
        for kind, what in cause.needs.items():
            if kind not in kinds_present and what not in out:
                out.append(what)
    return out


def _unexplained_failures(con, explained: set[str]):
    """(charger, channel, count, first event ids) for failures no verdict covers."""
    return con.execute(
        f"""SELECT charger_id, mode(channel), count(*), list(event_id ORDER BY ts)[1:{MAX_EVIDENCE}]
            FROM events
            WHERE {FAILURE_SQL} AND charger_id IS NOT NULL
              AND charger_id NOT IN (SELECT unnest($explained::VARCHAR[]))
            GROUP BY charger_id ORDER BY charger_id""",
        {"explained": sorted(explained)},
    ).fetchall()


_CHANNEL_NEEDS = {
    "backend": ["pcap", "inventory", "ocpp_log"],
    "vehicle": ["sessions", "fault_log"],
    "internal": ["can_log", "fault_log"],
}


def _unknown_verdict(con, cp, channel, n, event_ids, kinds_present) -> dict:
    evidence = evidence_items(con, event_ids)
    causes_of_channel = [c.id for c in catalogue.causes().values() if c.channel == channel]
    missing = missing_data(causes_of_channel, kinds_present)
    ts = [e["ts"] for e in evidence]
    return {
        "scope": "charger",
        "subject": cp,
        "chargers": [cp],
        "channel": channel,
        "window": {"start": min(ts) if ts else None, "end": max(ts) if ts else None},
        "causes": [
            {
                "cause": catalogue.UNKNOWN,
                "title": "No rule explains these failures",
                "score": 0.0,
                "summary": f"{n} failed exchange(s) on the {channel} channel, no cause matched",
                "evidence": evidence,
                "fix": "Collect the missing data listed and run triage again.",
                "rules": [],
            }
        ],
        "missing_data": missing
        or [f"more data on the {channel} channel ({', '.join(_CHANNEL_NEEDS[channel])})"],
    }


def _case(con, case_id: str, bundle: str) -> dict:
    files, records, rejects = con.execute(
        """SELECT count(*), coalesce(sum(records_parsed), 0), coalesce(sum(records_rejected), 0)
           FROM evidence"""
    ).fetchall()[0]
    return {
        "id": case_id,
        "bundle": bundle,
        "evidence_files": int(files),
        "records": int(records),
        "rejects": int(rejects),
    }
