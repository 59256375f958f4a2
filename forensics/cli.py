"""The `forensics` command line. Errors are one line plus a hint (exit 2); --verbose shows
the traceback. Progress goes to stderr so `--format json` output stays one document."""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.exceptions import TyperException

from forensics import __version__, pipeline, render, store, verdict
from forensics.errors import ForensicsError, UsageError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Name why an EV charger lost communication, from an escalation bundle.",
)
rules_app = typer.Typer(no_args_is_help=True, help="Rule packs: list, show, test.")
app.add_typer(rules_app, name="rules")
# soft_wrap: long lines are not cut into pieces when piped (greps, tickets, CI logs).
# Piped output gets a wide fixed width so tables keep ids whole.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 220)
err = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 220)
STATE = {"verbose": False}


MaxMembers = Annotated[
    int, typer.Option("--max-members", help="Cap on files unpacked from one bundle.")
]
MaxGb = Annotated[float, typer.Option("--max-gb", help="Cap on bytes unpacked from one bundle.")]
Deep = Annotated[
    bool,
    typer.Option("--deep", help="Dissect captures with tshark too (automatic with a key log)."),
]


def _limits(max_members: int, max_gb: float):
    from forensics.intake import Limits

    return Limits(max_members=max_members, max_total_bytes=int(max_gb * (1 << 30)))


class Fmt(StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"


class TableFmt(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def _version(value: bool) -> None:
    if value:
        out.print(f"forensics {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Tracebacks and debug logs.")
    ] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True)] = False,
) -> None:
    STATE["verbose"] = verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@contextmanager
def progress_bar(label: str):
    """Yields an update(what, done, total) callback drawing a rich progress bar on stderr,
    or None when stderr is not a terminal (CI logs, pipes)."""
    if not err.is_terminal:
        yield None
        return
    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    task = bar.add_task(label, total=1)

    def update(what: str, done: int, total: int) -> None:
        bar.update(task, description=f"{label} {what[-40:]}", completed=done, total=max(total, 1))

    with bar:
        yield update


def _ingest_summary(report) -> None:
    for display, why in report.refused:
        err.print(f"[yellow]refused[/] {escape(display)}: {escape(why)}")
    for display, why in report.failed:
        err.print(f"[red]failed[/] {escape(display)}: {escape(why)}")
    for display in report.unrecognised:
        err.print(f"[dim]unrecognised[/] {escape(display)}")


@app.command()
def triage(
    bundle: Annotated[list[Path], typer.Argument(help="Bundle: zip, tar(.gz), folder or files.")],
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder.")] = None,
    fmt: Annotated[Fmt, typer.Option("--format", "-f")] = Fmt.text,
    timezone: Annotated[str | None, typer.Option(help="IANA zone of local-time logs.")] = None,
    charger: Annotated[
        str | None, typer.Option(help="Charger id for single-charger files.")
    ] = None,
    rules_dir: Annotated[
        list[Path] | None, typer.Option("--rules", help="Extra rule folder.")
    ] = None,
    max_members: MaxMembers = 20_000,
    max_gb: MaxGb = 32.0,
    deep: Deep = False,
) -> None:
    """Ingest, analyze and print the verdict, in one command."""
    limits = _limits(max_members, max_gb)
    with progress_bar("ingest") as update:
        res = pipeline.triage(bundle, out_dir, timezone, charger, rules_dir, update, limits, deep)
    _ingest_summary(res.report)
    for run in res.runs:
        if run.status != "ok":
            err.print(f"[red]rule failed[/] {escape(run.message)}")
    if fmt is Fmt.json:
        sys.stdout.write(json.dumps(res.doc, indent=2) + "\n")
    elif fmt is Fmt.markdown:
        sys.stdout.write(render.markdown(res.doc))
    else:
        render.print_verdict(res.doc, out, str(res.out_dir))
    raise typer.Exit(pipeline.exit_code(res.doc))


@app.command()
def batch(
    bundles: Annotated[list[Path], typer.Argument(help="Bundles, or folders of bundles.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path(
        "forensics-batch"
    ),
    workers: Annotated[int, typer.Option("--workers", "-j", help="Parallel bundles.")] = 2,
    timezone: Annotated[str | None, typer.Option(help="IANA zone of local-time logs.")] = None,
) -> None:
    """Triage many bundles in parallel; verdicts of all in verdicts.parquet."""
    from collections import Counter

    from forensics import batch as batch_mod

    with progress_bar("triage") as update:
        tick = (lambda n, t: update("bundles", n, t)) if update else None
        results = batch_mod.run(bundles, out_dir, workers, timezone, tick)
    t = Table(title=f"{len(results)} bundles → {out_dir}")
    for c in ("bundle", "status", "top verdict"):
        t.add_column(c)
    for r in results:
        top = ""
        if r.doc and r.doc["verdicts"]:
            v = r.doc["verdicts"][0]
            top = f"{v['subject']}: {v['causes'][0]['cause']} ({v['causes'][0]['score']:.2f})"
        t.add_row(escape(Path(r.bundle).name), r.status, escape(top or r.error))
    out.print(t)
    causes = Counter(v["causes"][0]["cause"] for r in results if r.doc for v in r.doc["verdicts"])
    for cause, n in causes.most_common():
        out.print(f"  {n:4} × {cause}")
    out.print(
        f"query them with DuckDB: SELECT cause, count(*) FROM '{out_dir}/verdicts.parquet' GROUP BY 1"
    )
    raise typer.Exit(2 if any(r.status == "error" for r in results) else 0)


@app.command()
def ingest(
    bundle: Annotated[list[Path], typer.Argument(help="Bundles or files to add.")],
    case: Annotated[Path, typer.Option("--case", "-c", help="Case database (created if new).")],
    timezone: Annotated[str | None, typer.Option(help="IANA zone of local-time logs.")] = None,
    charger: Annotated[
        str | None, typer.Option(help="Charger id for single-charger files.")
    ] = None,
    max_members: MaxMembers = 20_000,
    max_gb: MaxGb = 32.0,
    deep: Deep = False,
) -> None:
    """Add evidence to a case database (files already in it are skipped)."""
    from forensics import ingest as ingest_mod

    with progress_bar("ingest") as update:
        work = case.with_suffix(".work")
        limits = _limits(max_members, max_gb)
        options = {"deep": True} if deep else None
        report = ingest_mod.ingest(bundle, case, work, timezone, charger, limits, update, options)
    _ingest_summary(report)
    out.print(
        f"{report.files} files: {report.parsed} parsed, {report.records} records, "
        f"{report.rejects} rejects, {report.already_in_case} already in the case, "
        f"{report.duplicates} duplicates, "
        f"{len(report.unrecognised)} unrecognised, {len(report.refused)} refused, "
        f"{len(report.failed)} failed → {case}"
    )


@app.command()
def analyze(
    case: Annotated[Path, typer.Option("--case", "-c")],
    rules_dir: Annotated[list[Path] | None, typer.Option("--rules")] = None,
    fmt: Annotated[Fmt, typer.Option("--format", "-f")] = Fmt.text,
) -> None:
    """Run the rule packs over a case and print the verdict."""
    con = store.connect(case)
    try:
        runs, errors = pipeline.analyze(con, rules_dir)
        doc = verdict.build(con, pipeline.case_id_for([case]), case.name)
    finally:
        con.close()
    for e in errors:
        err.print(f"[red]rule not loaded[/] {escape(str(e))}")
    for run in runs:
        if run.status != "ok":
            err.print(f"[red]rule failed[/] {escape(run.message)}")
    pipeline.write_outputs(doc, case.parent)
    if fmt is Fmt.json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    elif fmt is Fmt.markdown:
        sys.stdout.write(render.markdown(doc))
    else:
        render.print_verdict(doc, out)
    raise typer.Exit(pipeline.exit_code(doc))


def _print_rows(columns: list[str], rows: list[tuple], fmt: TableFmt, title: str = "") -> None:
    if fmt is TableFmt.json:
        docs = [dict(zip(columns, r, strict=True)) for r in rows]
        sys.stdout.write(json.dumps(docs, indent=2, default=str) + "\n")
    elif fmt is TableFmt.csv:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(columns)
        w.writerows(rows)
        sys.stdout.write(buf.getvalue())
    else:
        t = Table(title=title or None)
        for c in columns:
            t.add_column(c, overflow="fold")
        for r in rows:
            t.add_row(*[escape("" if v is None else str(v)) for v in r])
        out.print(t)


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="SQL over the case (read-only).")],
    case: Annotated[Path, typer.Option("--case", "-c")],
    fmt: Annotated[TableFmt, typer.Option("--format", "-f")] = TableFmt.table,
) -> None:
    """SQL over the case database: table, csv or json."""
    import duckdb

    con = store.connect(case, read_only=True)
    try:
        cur = con.execute(sql)
        if cur.description is None:
            raise UsageError("the statement returned no rows", hint="use a SELECT")
        columns = [d[0] for d in cur.description]
        rows = cur.fetchall()
    except duckdb.Error as exc:
        raise UsageError(
            f"query failed: {str(exc).splitlines()[0]}",
            hint="tables: " + ", ".join(store.table_names(con)),
        ) from exc
    finally:
        con.close()
    _print_rows(columns, rows, fmt)


@app.command()
def timeline(
    case: Annotated[Path, typer.Option("--case", "-c")],
    charger: Annotated[str | None, typer.Option(help="Charger id (all when omitted).")] = None,
    start: Annotated[str | None, typer.Option("--from", help="UTC start, ISO-8601.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="UTC end, ISO-8601.")] = None,
    kind: Annotated[
        str | None, typer.Option(help="Event kind prefix, e.g. ws. or ocpp.boot")
    ] = None,
    limit: Annotated[int, typer.Option(help="Most rows shown.")] = 200,
    fmt: Annotated[TableFmt, typer.Option("--format", "-f")] = TableFmt.table,
) -> None:
    """The cross-layer timeline of one charger (or all), with file and line/frame."""
    con = store.connect(case, read_only=True)
    try:
        cur = con.execute(
            """SELECT e.ts, e.charger_id, e.channel, e.layer, e.kind, e.severity, e.code,
                      v.path AS file, e.locator
               FROM events e LEFT JOIN evidence v USING (file_id)
               WHERE ($cp IS NULL OR e.charger_id = $cp)
                 AND ($t0 IS NULL OR e.ts >= $t0::TIMESTAMPTZ::TIMESTAMP)
                 AND ($t1 IS NULL OR e.ts <= $t1::TIMESTAMPTZ::TIMESTAMP)
                 AND ($kind IS NULL OR starts_with(e.kind, $kind))
               ORDER BY e.ts, e.event_id LIMIT $limit""",
            {"cp": charger, "t0": start, "t1": end, "kind": kind, "limit": limit},
        )
        columns = [d[0] for d in cur.description]
        rows = cur.fetchall()
    finally:
        con.close()
    _print_rows(columns, rows, fmt, title=f"timeline {charger or 'all chargers'}")


@app.command()
def formats() -> None:
    """What inputs are recognised, and how."""
    from forensics.parsers import LOAD_ERRORS
    from forensics.parsers.base import registry

    t = Table(title="recognised inputs (detected by content; names are only hints)")
    for c in ("parser", "kind", "priority", "what"):
        t.add_column(c)
    for name, cls in sorted(registry().items(), key=lambda kv: (kv[1].kind, kv[0])):
        t.add_row(name, cls.kind, str(cls.priority), cls.description)
    t.add_row("manifest", "manifest", "-", "manifest.toml: case id, timezone, per-file overrides")
    out.print(t)
    for name, why in LOAD_ERRORS.items():
        err.print(f"[red]parser module not loaded[/] {name}: {escape(why)}")


@rules_app.command("list")
def rules_list(rules_dir: Annotated[list[Path] | None, typer.Option("--rules")] = None) -> None:
    """Every rule with its cause, channel, severity and status."""
    from forensics import rules

    loaded, errors = rules.load_rules(rules_dir)
    t = Table()
    for c in ("id", "pack", "cause", "severity", "status", "title"):
        t.add_column(c)
    for r in loaded:
        t.add_row(r.id, r.pack, r.cause, r.severity, r.status, r.title)
    out.print(t)
    for e in errors:
        err.print(f"[red]rule not loaded[/] {escape(str(e))}")


@rules_app.command("show")
def rules_show(
    rule_id: str, rules_dir: Annotated[list[Path] | None, typer.Option("--rules")] = None
) -> None:
    """One rule's header, parameters, fixtures and SQL."""
    from forensics import rules

    loaded, _ = rules.load_rules(rules_dir)
    match = [r for r in loaded if r.id == rule_id or rule_id in r.aliases]
    if not match:
        raise UsageError(f"no rule {rule_id!r}", hint="`forensics rules list` shows the ids")
    r = match[0]
    out.print(
        f"[bold]{r.id}[/] — {escape(r.title)}\n  file: {r.path}\n  cause: {r.cause} "
        f"({r.channel}), severity {r.severity}, status {r.status}"
    )
    out.print(f"  params: {r.params or '-'}\n  fix: {escape(r.fix)}")
    if r.falsepositives:
        out.print(f"  false positives: {escape(r.falsepositives)}")
    out.print(f"  fixtures: {', '.join(r.fixtures()) or 'none'}\n")
    out.print(r.sql, markup=False, highlight=False)


@rules_app.command("test")
def rules_test(
    rules_dir: Annotated[
        Path | None, typer.Argument(help="Rule folder (default: built-in).")
    ] = None,
) -> None:
    """Run every rule's fire/silent fixtures; exit 1 if one misbehaves."""
    from forensics import fixtures

    results = fixtures.run_all([rules_dir] if rules_dir else None)
    bad = 0
    for res in results:
        mark = "[green]ok[/]" if res.ok else "[red]FAIL[/]"
        bad += not res.ok
        out.print(f"{mark} {res.rule_id} {res.case}: {escape(res.message)}")
    out.print(f"{len(results) - bad} passed, {bad} failed")
    raise typer.Exit(1 if bad else 0)


def _register_slice() -> None:
    """`forensics slice` comes with the capture support (forensics.slice)."""
    try:
        from forensics import slice as slicer
    except ImportError:
        return

    @app.command("slice")
    def slice_cmd(
        case: Annotated[Path, typer.Option("--case", "-c")],
        output: Annotated[Path, typer.Option("--output", "-o", help="pcap file to write.")],
        finding: Annotated[int | None, typer.Option(help="Finding id.")] = None,
        flow: Annotated[
            str | None, typer.Option(help="Flow, e.g. 10.0.0.7:51234-10.0.0.1:443")
        ] = None,
        start: Annotated[str | None, typer.Option("--from")] = None,
        end: Annotated[str | None, typer.Option("--to")] = None,
    ) -> None:
        """Write the packets behind a finding, flow or window to a capture for Wireshark."""
        n = slicer.slice_packets(case, output, finding_id=finding, flow=flow, start=start, end=end)
        out.print(f"{n} packets → {output}")


_register_slice()


def main() -> None:
    """Console entry point: typed errors become one line and a hint, exit code 2."""
    try:
        # Without standalone mode click returns the code of typer.Exit instead of exiting.
        code = app(standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except ForensicsError as exc:
        if STATE["verbose"]:
            raise
        err.print(f"[red]error:[/] {escape(str(exc))}")
        if exc.hint:
            err.print(f"  hint: {escape(exc.hint)}")
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except TyperException as exc:  # typer's own click: wrong option, missing argument
        exc.show()
        sys.exit(2)
    except Exception as exc:
        if STATE["verbose"]:
            raise
        err.print(f"[red]error:[/] internal error: {type(exc).__name__}: {escape(str(exc))}")
        err.print("  hint: run again with --verbose and report the traceback")
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
