"""Rule fixtures: every rule has a bundle where it must fire and one where it must stay
silent (queries/<pack>/fixtures/<rule id>/{fire,silent}/). Each is ingested into a fresh
case and the rule alone is run on it, through real parsers and real DuckDB.

A fire folder may hold `expect.toml` with `chargers = [...]` (the charger ids or subjects the
rule must name) and `min_rows`.
"""

from __future__ import annotations

import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from forensics import ingest, rules, store

EXPECT = "expect.toml"


@dataclass
class FixtureResult:
    rule_id: str
    case: str  # fire | silent | missing
    ok: bool
    message: str


def run_fixture(rule: rules.Rule, case: str, folder: Path) -> FixtureResult:
    """Ingests `folder` and checks that `rule` fires (case 'fire') or stays silent."""
    with tempfile.TemporaryDirectory(prefix="fixture-") as tmp:
        db = Path(tmp) / "case.duckdb"
        files = [p for p in sorted(folder.iterdir()) if p.name != EXPECT]
        report = ingest.ingest(files, db, Path(tmp) / "work")
        if report.failed:
            return FixtureResult(rule.id, case, False, f"ingest failed: {report.failed}")
        con = store.connect(db)
        try:
            columns, rows = rules.run_rule(con, rule)
        except Exception as exc:  # a fixture run reports every failure as a result
            return FixtureResult(rule.id, case, False, f"{type(exc).__name__}: {exc}")
        finally:
            con.close()
    named = set()
    for row in rows:
        rec = dict(zip(columns, row, strict=True))
        named.update(filter(None, [rec.get("charger_id"), rec.get("subject")]))
        named.update(rec.get("chargers") or [])
    if case == "silent":
        ok = not rows
        return FixtureResult(rule.id, case, ok, f"{len(rows)} finding(s), expected none")
    expect = {}
    if (folder / EXPECT).is_file():
        expect = tomllib.loads((folder / EXPECT).read_text(encoding="utf-8"))
    need = int(expect.get("min_rows", 1))
    if len(rows) < need:
        return FixtureResult(rule.id, case, False, f"{len(rows)} finding(s), expected >= {need}")
    missing = sorted(set(expect.get("chargers", [])) - named)
    if missing:
        return FixtureResult(rule.id, case, False, f"did not name {', '.join(missing)}")
    return FixtureResult(rule.id, case, True, f"{len(rows)} finding(s) naming {sorted(named)}")


def run_all(dirs: list[Path] | None = None) -> list[FixtureResult]:
    """Runs the fixtures of every rule (built-in packs, or the given folders only)."""
    if dirs:
        loaded = [r for r in rules.load_rules(dirs)[0] if any(_under(r.path, d) for d in dirs)]
    else:
        loaded = rules.load_rules()[0]
    results: list[FixtureResult] = []
    for rule in loaded:
        found = rule.fixtures()
        for case in ("fire", "silent"):
            if case not in found:
                results.append(FixtureResult(rule.id, case, False, "fixture folder missing"))
            else:
                results.append(run_fixture(rule, case, found[case]))
    return results


def _under(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True
