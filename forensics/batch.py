"""Batch triage: the per-bundle job mapped over many bundles with parallel workers.

Each bundle gets its own case folder under the output folder; the verdicts of all of them
land in `verdicts.parquet` (one row per verdict) and `bundles.parquet` (one row per bundle,
with its status or the error that stopped it), which DuckDB or any engine queries together.
Beyond one machine the same `triage_one` can be mapped by an existing distributed engine.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from forensics import pipeline
from forensics.errors import ForensicsError, UsageError
from forensics.intake import archive_kind


@dataclass
class BundleResult:
    bundle: str
    out_dir: str
    status: str  # cause_found | no_failure | inconclusive | error
    error: str = ""
    doc: dict | None = None


def find_bundles(inputs: list[Path]) -> list[Path]:
    """Bundles named directly (archives, folders holding evidence), or the archives and
    folders inside a folder of bundles."""
    bundles: list[Path] = []
    for p in inputs:
        if not p.exists():
            raise UsageError(f"{p}: no such file or folder", hint="check the path")
        if p.is_dir() and not _holds_evidence(p):
            bundles += sorted(c for c in p.iterdir() if c.is_dir() or archive_kind(c))
        else:
            bundles.append(p)
    if not bundles:
        raise UsageError("no bundles found", hint="give archives, folders, or a folder of them")
    return bundles


def _holds_evidence(folder: Path) -> bool:
    """A folder is one bundle when it has files of its own that are not archives."""
    return any(c.is_file() and not archive_kind(c) for c in folder.iterdir())


def triage_one(bundle: Path, out_root: Path, timezone: str | None = None) -> BundleResult:
    """One bundle, isolated: every error becomes a result, never an exception."""
    out_dir = out_root / _name(bundle)
    try:
        res = pipeline.triage([bundle], out_dir, timezone=timezone)
    except ForensicsError as exc:
        return BundleResult(str(bundle), str(out_dir), "error", f"{exc} ({exc.hint})")
    except Exception as exc:  # a bug must not stop the other bundles; it is reported
        detail = "".join(traceback.format_exception_only(exc)).strip()
        return BundleResult(str(bundle), str(out_dir), "error", f"internal error: {detail}")
    return BundleResult(str(bundle), str(out_dir), res.doc["status"], doc=res.doc)


def _name(bundle: Path) -> str:
    return pipeline.case_id_for([bundle])


def run(
    inputs: list[Path],
    out_root: Path,
    workers: int = 2,
    timezone: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[BundleResult]:
    """Triages every bundle with `workers` processes; writes the Parquet tables."""
    bundles = find_bundles(inputs)
    names = [_name(b) for b in bundles]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise UsageError(
            f"two bundles share the name {sorted(dupes)[0]!r}", hint="rename or batch them apart"
        )
    out_root.mkdir(parents=True, exist_ok=True)
    results: list[BundleResult] = []
    if workers <= 1:
        for n, b in enumerate(bundles, 1):
            results.append(triage_one(b, out_root, timezone))
            if progress:
                progress(n, len(bundles))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(triage_one, b, out_root, timezone) for b in bundles]
            for n, fut in enumerate(as_completed(futures), 1):
                results.append(fut.result())
                if progress:
                    progress(n, len(bundles))
    results.sort(key=lambda r: r.bundle)
    write_tables(results, out_root)
    return results


def write_tables(results: list[BundleResult], out_root: Path) -> None:
    """bundles.parquet and verdicts.parquet (top cause per verdict, causes as JSON)."""
    bundles = pa.Table.from_pylist(
        [
            {
                "bundle": r.bundle,
                "case_id": r.doc["case"]["id"] if r.doc else None,
                "status": r.status,
                "error": r.error or None,
                "evidence_files": r.doc["case"]["evidence_files"] if r.doc else None,
                "records": r.doc["case"]["records"] if r.doc else None,
                "rejects": r.doc["case"]["rejects"] if r.doc else None,
                "out_dir": r.out_dir,
            }
            for r in results
        ]
    )
    pq.write_table(bundles, out_root / "bundles.parquet")
    rows = []
    for r in results:
        for v in (r.doc or {}).get("verdicts", []):
            top = v["causes"][0]
            rows.append(
                {
                    "bundle": r.bundle,
                    "case_id": r.doc["case"]["id"],
                    "scope": v["scope"],
                    "subject": v["subject"],
                    "channel": v["channel"],
                    "cause": top["cause"],
                    "score": top["score"],
                    "summary": top["summary"],
                    "window_start": v["window"]["start"],
                    "window_end": v["window"]["end"],
                    "chargers": v["chargers"],
                    "causes_json": json.dumps(v["causes"]),
                }
            )
    schema = pa.schema(
        [("bundle", pa.string()), ("case_id", pa.string()), ("scope", pa.string()),
         ("subject", pa.string()), ("channel", pa.string()), ("cause", pa.string()),
         ("score", pa.float64()), ("summary", pa.string()), ("window_start", pa.string()),
         ("window_end", pa.string()), ("chargers", pa.list_(pa.string())),
         ("causes_json", pa.string())]
    )  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), out_root / "verdicts.parquet")
