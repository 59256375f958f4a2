"""The per-bundle job, shared by the CLI and batch runs: ingest -> analyze -> verdict ->
outputs. Pure function of its inputs and options; no printing."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from forensics import ingest, intake, report_html, rules, store, verdict
from forensics.errors import IntakeError
from forensics.render import markdown


@dataclass
class TriageResult:
    doc: dict
    out_dir: Path
    case_path: Path
    report: ingest.IngestReport
    runs: list[rules.RuleRun]


def case_id_for(inputs: list[Path], manifest_id: str | None = None) -> str:
    if manifest_id:
        return manifest_id
    name = inputs[0].name if inputs else "case"
    for suffix in (".zip", ".tar.gz", ".tgz", ".tar"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def analyze(con, rule_dirs: list[Path] | None, params: dict | None = None):
    """Runs the rule packs on an open case; returns (runs, load errors)."""
    loaded, errors = rules.load_rules(rule_dirs)
    runs = rules.analyze(con, loaded, params)
    return runs, errors


def triage(
    inputs: list[Path],
    out_dir: Path | None = None,
    timezone: str | None = None,
    charger_id: str | None = None,
    rule_dirs: list[Path] | None = None,
    progress=None,
    limits: intake.Limits | None = None,
    deep: bool = False,
) -> TriageResult:
    """Ingests the inputs into a fresh case in `out_dir`, analyses, writes findings.json
    and report.md there, and returns the verdict document."""
    provisional = case_id_for(inputs)
    out_dir = out_dir or Path("forensics-out") / provisional
    out_dir.mkdir(parents=True, exist_ok=True)
    case_path = out_dir / "case.duckdb"
    for stale in (case_path, case_path.with_suffix(".duckdb.wal")):
        stale.unlink(missing_ok=True)
    work = out_dir / "work"
    shutil.rmtree(work, ignore_errors=True)
    options = {"deep": True} if deep else None
    report = ingest.ingest(inputs, case_path, work, timezone, charger_id, limits, progress, options)
    if report.records == 0:
        raise IntakeError(
            f"{', '.join(p.name for p in inputs)}: no readable evidence "
            f"({report.files} files: {len(report.refused)} refused, "
            f"{len(report.unrecognised)} unrecognised, {len(report.failed)} failed)",
            hint="`forensics formats` lists what is recognised; check the export",
        )
    case_id = case_id_for(inputs, report.manifest.case_id if report.manifest else None)
    con = store.connect(case_path)
    try:
        runs, _errors = analyze(con, rule_dirs)
        doc = verdict.build(con, case_id, ", ".join(p.name for p in inputs))
        write_outputs(doc, out_dir)
        report_html.write(con, doc, out_dir / "report.html")
    finally:
        con.close()
    return TriageResult(doc, out_dir, case_path, report, runs)


def write_outputs(doc: dict, out_dir: Path) -> None:
    (out_dir / "findings.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    (out_dir / "report.md").write_text(markdown(doc), encoding="utf-8")


def exit_code(doc: dict) -> int:
    """0 cause found or no failure, 1 inconclusive (DESIGN.md)."""
    return 1 if doc["status"] == "inconclusive" else 0
