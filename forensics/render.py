"""Human renderings of a verdict: the terminal summary (rich) and Markdown for tickets."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

STATUS_TEXT = {
    "cause_found": "[bold red]cause found[/]",
    "no_failure": "[bold green]no failure[/]",
    "inconclusive": "[bold yellow]inconclusive[/]",
}


def _when(v: dict) -> str:
    w = v["window"]
    if not w["start"]:
        return ""
    start = w["start"].replace("T", " ")[:19]
    end = (w["end"] or w["start"]).replace("T", " ")[:19]
    if end[:10] == start[:10]:
        end = end[11:]
    return f"{start} → {end} UTC"


def _evidence_line(e: dict) -> str:
    where = f"{e['file']} {e['locator']}"
    extra = f"  [dim]{e['wireshark_filter']}[/]" if e.get("wireshark_filter") else ""
    return f"{escape(where)} [dim]{e['ts'] or ''}[/] {escape(e['what'])}{extra}"


def print_verdict(doc: dict, console: Console, out_dir: str | None = None) -> None:
    """Short readable verdict: channel, top causes with scores, evidence, fix, missing data."""
    case = doc["case"]
    console.print(
        f"[bold]charger-forensics[/] · case {escape(case['id'])} · {case['evidence_files']} "
        f"files, {case['records']} records, {case['rejects']} rejects"
    )
    console.print(f"status: {STATUS_TEXT[doc['status']]}")
    if not doc["verdicts"]:
        console.print("No failed exchange in this bundle: every charger looks healthy.")
    for n, v in enumerate(doc["verdicts"], 1):
        who = v["subject"] if v["scope"] in ("charger", "fleet") else f"site {v['subject']}"
        console.print()
        console.print(
            f"[bold][{n}] {escape(who)}[/] · {v['channel']} channel · {_when(v)}"
            + (
                f" · chargers {escape(', '.join(v['chargers'][:8]))}"
                + (" …" if len(v["chargers"]) > 8 else "")
                if v["scope"] != "charger"
                else ""
            )
        )
        for i, c in enumerate(v["causes"][:3]):
            style = "bold" if i == 0 else "dim"
            console.print(
                f"  [{style}]{c['cause']}[/] ({c['score']:.2f}) {escape(c.get('title', ''))}"
            )
            console.print(f"    {escape(c['summary'])}")
            if i == 0:
                for e in c["evidence"][:3]:
                    console.print("    evidence: " + _evidence_line(e))
                console.print(f"    [green]fix:[/] {escape(c['fix'])}")
        for m in v["missing_data"][:4]:
            console.print(f"  [yellow]missing:[/] {escape(m)}")
    for c in doc.get("clocks", []):
        if c["method"] == "unaligned":
            console.print(
                f"[yellow]clock:[/] {escape(c['file'])} shares no OCPP message with "
                f"{escape(c['reference'] or '?')}: its times are its own clock's"
            )
        elif c["method"] != "reference" and c["offset_ms"]:
            console.print(
                f"[dim]clock: {escape(c['file'])} is {c['offset_ms']:+.0f} ms off "
                f"{escape(c['reference'])} ({c['pairs']} shared messages)[/]"
            )
    if out_dir:
        console.print(f"\n[dim]case and reports in {escape(out_dir)}[/]")


def markdown(doc: dict) -> str:
    """The verdict as Markdown, to paste into a ticket."""
    case = doc["case"]
    lines = [
        f"## charger-forensics: {doc['status'].replace('_', ' ')}",
        "",
        f"Case `{case['id']}` (bundle `{case['bundle']}`): {case['evidence_files']} files, "
        f"{case['records']} records, {case['rejects']} rejects.",
    ]
    if not doc["verdicts"]:
        lines += ["", "No failed exchange in this bundle."]
    for n, v in enumerate(doc["verdicts"], 1):
        lines += [
            "",
            f"### {n}. {v['scope']} {v['subject']} — {v['channel']} channel",
            "",
            f"Window: {v['window']['start']} → {v['window']['end']}; "
            f"chargers: {', '.join(v['chargers']) or '-'}",
            "",
            "| cause | score | summary |",
            "|---|---|---|",
        ]
        for c in v["causes"]:
            lines.append(f"| `{c['cause']}` | {c['score']:.2f} | {c['summary']} |")
        top = v["causes"][0]
        lines += ["", f"**Fix:** {top['fix']}", "", "**Evidence:**", ""]
        lines += [
            f"- `{e['file']}` {e['locator']} ({e['ts']}): {e['what']}"
            + (f" — Wireshark: `{e['wireshark_filter']}`" if e.get("wireshark_filter") else "")
            for e in top["evidence"]
        ]
        if v["missing_data"]:
            lines += ["", "**Missing data:**", ""] + [f"- {m}" for m in v["missing_data"]]
    return "\n".join(lines) + "\n"
