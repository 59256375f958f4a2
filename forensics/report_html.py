"""report.html: the verdict and a plotly timeline that makes the correlation visible.

The timeline shows every non-routine event (warnings, errors, connection changes) per
charger, coloured by kind, over per-charger activity (events per minute); each verdict's
window is shaded. Routine messages are aggregated, so a case with millions of messages
still renders. plotly.js is embedded: the report opens offline.
"""

from __future__ import annotations

import html
from pathlib import Path

import duckdb

MAX_POINTS = 20_000


def write(con: duckdb.DuckDBPyConnection, doc: dict, path: Path) -> None:
    import plotly.graph_objects as go

    fig = go.Figure()
    activity = con.execute(
        """SELECT charger_id, time_bucket(INTERVAL 1 MINUTE, ts) AS minute, count(*) AS n
           FROM events WHERE charger_id IS NOT NULL AND ts IS NOT NULL AND year(ts) >= 2000
           GROUP BY ALL ORDER BY charger_id, minute"""
    ).fetchall()
    chargers = sorted({r[0] for r in activity})
    if activity:
        fig.add_trace(
            go.Scatter(
                x=[r[1] for r in activity],
                y=[r[0] for r in activity],
                mode="markers",
                marker={"symbol": "line-ns-open", "size": 6, "color": "lightgray"},
                name="activity (events/min)",
                text=[f"{r[2]} events" for r in activity],
                hoverinfo="x+y+text",
            )
        )
    notable = con.execute(
        f"""SELECT e.kind, e.charger_id, e.ts, e.code, v.path, e.locator
            FROM events e LEFT JOIN evidence v USING (file_id)
            WHERE e.charger_id IS NOT NULL AND year(e.ts) >= 2000
              AND (e.severity <> 'info' OR e.kind LIKE 'ws.%' OR e.kind LIKE 'ocpp.boot%')
            ORDER BY e.ts LIMIT {MAX_POINTS}"""
    ).fetchall()
    for kind in sorted({r[0] for r in notable}):
        rows = [r for r in notable if r[0] == kind]
        fig.add_trace(
            go.Scatter(
                x=[r[2] for r in rows],
                y=[r[1] for r in rows],
                mode="markers",
                name=kind,
                text=[f"{kind} {r[3] or ''}<br>{r[4]} {r[5]}" for r in rows],
                hoverinfo="x+y+text",
            )
        )
    for n, v in enumerate(doc["verdicts"], 1):
        if v["window"]["start"]:
            fig.add_vrect(
                x0=v["window"]["start"].rstrip("Z"),
                x1=v["window"]["end"].rstrip("Z"),
                fillcolor="red",
                opacity=0.12,
                line_width=0,
                annotation_text=f"[{n}] {v['causes'][0]['cause']}",
                annotation_position="top left",
            )
    fig.update_layout(
        title="Cross-layer timeline (UTC)",
        height=max(380, 28 * len(chargers) + 160),
        yaxis={"type": "category", "categoryorder": "category descending"},
        legend={"orientation": "h", "y": -0.15},
        margin={"l": 90, "r": 20, "t": 60, "b": 40},
    )
    chart = fig.to_html(full_html=False, include_plotlyjs=True)
    path.write_text(_page(doc, chart), encoding="utf-8")


def _who(v: dict) -> str:
    return v["subject"] if v["scope"] in ("charger", "fleet") else f"site {v['subject']}"


def _page(doc: dict, chart: str) -> str:
    e = html.escape
    case = doc["case"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>charger-forensics {e(case['id'])}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
        "td,th{padding:2px 8px;text-align:left;vertical-align:top}"
        ".score{font-variant-numeric:tabular-nums}.muted{color:#666}</style></head><body>",
        f"<h1>charger-forensics: {e(doc['status'].replace('_', ' '))}</h1>",
        f"<p class='muted'>case {e(case['id'])} · bundle {e(case['bundle'])} · "
        f"{case['evidence_files']} files, {case['records']} records, {case['rejects']} rejects</p>",
    ]
    if not doc["verdicts"]:
        parts.append("<p id='no-failure'>No failed exchange in this bundle.</p>")
    for n, v in enumerate(doc["verdicts"], 1):
        parts.append(
            f"<section class='verdict'><h2>[{n}] {e(_who(v))} · "
            f"{e(v['channel'])} channel</h2><p class='muted'>{e(v['window']['start'] or '')} → "
            f"{e(v['window']['end'] or '')} · chargers {e(', '.join(v['chargers']))}</p><table>"
            "<tr><th>cause</th><th>score</th><th>summary</th></tr>"
        )
        for c in v["causes"]:
            parts.append(
                f"<tr><td><code>{e(c['cause'])}</code></td><td class='score'>{c['score']:.2f}</td>"
                f"<td>{e(c['summary'])}</td></tr>"
            )
        top = v["causes"][0]
        parts.append(f"</table><p><b>Fix:</b> {e(top['fix'])}</p><ul>")
        parts += [
            f"<li><code>{e(i['file'])}</code> {e(i['locator'])} {e(i['ts'] or '')}: {e(i['what'])}</li>"
            for i in top["evidence"]
        ]
        parts.append("</ul>")
        if v["missing_data"]:
            parts.append("<p><b>Missing data:</b></p><ul>")
            parts += [f"<li>{e(m)}</li>" for m in v["missing_data"]]
            parts.append("</ul>")
        parts.append("</section>")
    parts += ["<div id='timeline'>", chart, "</div></body></html>"]
    return "\n".join(parts)
