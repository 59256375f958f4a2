"""The rule engine: load `.sql` rules with their comment headers, validate them, run each as
one read-only SELECT with bound parameters, and store what they return as `findings`.

A rule file:

    -- id: ocpp.boot_rejected
    -- title: Backend rejects the charger's BootNotification
    -- cause: ocpp.identity_mismatch
    -- channel: backend
    -- severity: high
    -- status: test
    -- params: min_rejections = 1
    -- fix: ...
    -- falsepositives: ...
    SELECT charger_id, ts_start, ts_end, score, summary, evidence FROM ... ORDER BY ...;

Required result columns: charger_id, ts_start, ts_end, score (0..1), summary, evidence
(BIGINT[] of events.event_id). Optional: cause (another catalogue id; required per row when
the header says `cause: any`), scope
(charger|site|fleet), subject, chargers (VARCHAR[]), against (BOOLEAN: evidence against).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import duckdb

from forensics import catalogue, stats
from forensics.errors import RuleError

REQUIRED_KEYS = ("id", "title", "cause", "channel", "severity", "status", "fix")
OPTIONAL_KEYS = ("params", "falsepositives", "references", "aliases", "description")
SEVERITIES = ("low", "medium", "high", "critical")
STATUSES = ("experimental", "test", "stable", "deprecated")
REQUIRED_COLUMNS = ("charger_id", "ts_start", "ts_end", "score", "summary", "evidence")
OPTIONAL_COLUMNS = ("cause", "scope", "subject", "chargers", "against")
SCOPES = ("charger", "site", "fleet")
ANY = "any"  # cause/channel chosen per row by the rule's `cause` column
_HEADER_RE = re.compile(r"^--\s*([a-z_]+)\s*:\s*(.*)$")
_PARAM_RE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass
class Rule:
    id: str
    title: str
    cause: str
    channel: str
    severity: str
    status: str
    fix: str
    sql: str
    path: Path
    params: dict[str, object] = field(default_factory=dict)
    falsepositives: str = ""
    references: str = ""
    aliases: list[str] = field(default_factory=list)
    description: str = ""

    @property
    def pack(self) -> str:
        return self.path.parent.name

    def fixtures(self) -> dict[str, Path]:
        """{'fire': dir, 'silent': dir} of this rule's fixture bundles that exist."""
        base = self.path.parent / "fixtures" / self.id
        return {k: base / k for k in ("fire", "silent") if (base / k).is_dir()}


@dataclass
class RuleRun:
    rule: Rule
    status: str  # ok | error
    rows: int = 0
    ms: float = 0.0
    message: str = ""


def _value(text: str) -> object:
    text = text.strip()
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text.strip("'\"")


def parse_rule(path: Path) -> Rule:
    """Reads one rule file; RuleError names the file and what is wrong with it."""
    text = path.read_text(encoding="utf-8")
    meta: dict[str, str] = {}
    body: list[str] = []
    in_header = True
    for line in text.splitlines():
        m = _HEADER_RE.match(line.strip()) if in_header else None
        if m:
            key, value = m.groups()
            if key not in REQUIRED_KEYS + OPTIONAL_KEYS:
                raise RuleError(f"{path}: unknown header key {key!r}", hint=_KEYS_HINT)
            meta[key] = value.strip()
        elif in_header and line.strip().startswith("--"):
            continue  # a free comment in the header
        else:
            if line.strip():
                in_header = False
            body.append(line)
    missing = [k for k in REQUIRED_KEYS if not meta.get(k)]
    if missing:
        raise RuleError(f"{path}: header lacks {', '.join(missing)}", hint=_KEYS_HINT)
    if meta["cause"] != ANY and meta["cause"] not in catalogue.causes():
        raise RuleError(
            f"{path}: cause {meta['cause']!r} is not in the catalogue",
            hint="use an id from queries/causes.toml (`forensics rules list` shows them)",
        )
    if meta["channel"] != ANY and meta["channel"] not in catalogue.CHANNELS:
        raise RuleError(f"{path}: channel {meta['channel']!r}", hint="backend, vehicle, internal")
    if meta["severity"] not in SEVERITIES:
        raise RuleError(f"{path}: severity {meta['severity']!r}", hint=", ".join(SEVERITIES))
    if meta["status"] not in STATUSES:
        raise RuleError(f"{path}: status {meta['status']!r}", hint=", ".join(STATUSES))
    params: dict[str, object] = {}
    for item in filter(None, (p.strip() for p in meta.get("params", "").split(","))):
        name, eq, default = item.partition("=")
        if not eq or not name.strip().isidentifier():
            raise RuleError(f"{path}: bad params item {item!r}", hint="params: name = default, ...")
        params[name.strip()] = _value(default)
    sql = "\n".join(body).strip().rstrip(";")
    statements = duckdb.extract_statements(sql) if sql else []
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise RuleError(
            f"{path}: the body must be exactly one SELECT statement",
            hint="rules only read the case; put helper logic in CTEs",
        )
    unknown = sorted(set(_PARAM_RE.findall(sql)) - set(params))
    if unknown:
        raise RuleError(
            f"{path}: ${unknown[0]} is used but not declared in params",
            hint="declare it: -- params: name = default",
        )
    return Rule(
        id=meta["id"],
        title=meta["title"],
        cause=meta["cause"],
        channel=meta["channel"],
        severity=meta["severity"],
        status=meta["status"],
        fix=meta["fix"],
        sql=sql,
        path=path,
        params=params,
        falsepositives=meta.get("falsepositives", ""),
        references=meta.get("references", ""),
        aliases=[a.strip() for a in meta.get("aliases", "").split(",") if a.strip()],
        description=meta.get("description", ""),
    )


_KEYS_HINT = "header keys: " + ", ".join(REQUIRED_KEYS + OPTIONAL_KEYS)


def builtin_dir() -> Path:
    return Path(str(files("forensics.queries")))


def load_rules(extra_dirs: list[Path] | None = None) -> tuple[list[Rule], list[RuleError]]:
    """Rules of the built-in packs and of any user directory; broken files come back as
    errors, never stop the others. A duplicate id is an error for the later file."""
    rules: list[Rule] = []
    errors: list[RuleError] = []
    seen: dict[str, Path] = {}
    for root in [builtin_dir(), *(extra_dirs or [])]:
        for path in sorted(Path(root).rglob("*.sql")):
            if "fixtures" in path.relative_to(root).parts:
                continue
            try:
                rule = parse_rule(path)
            except (RuleError, duckdb.Error, UnicodeDecodeError) as exc:
                errors.append(exc if isinstance(exc, RuleError) else RuleError(f"{path}: {exc}"))
                continue
            if rule.id in seen:
                errors.append(RuleError(f"{path}: rule id {rule.id} already in {seen[rule.id]}"))
                continue
            seen[rule.id] = path
            rules.append(rule)
    return rules, errors


def run_rule(con: duckdb.DuckDBPyConnection, rule: Rule, overrides: dict | None = None):
    """Runs one rule read-only (inside a transaction that is rolled back).

    Returns (columns, rows); raises RuleError naming the rule on any SQL or shape error.
    """
    stats.register(con)
    values = {**rule.params, **{k: v for k, v in (overrides or {}).items() if k in rule.params}}
    used = {k: values[k] for k in set(_PARAM_RE.findall(rule.sql))}
    con.execute("BEGIN TRANSACTION")
    try:
        cur = con.execute(rule.sql, used)
        columns = [d[0] for d in cur.description]
        rows = cur.fetchall()
    except duckdb.Error as exc:
        raise RuleError(f"rule {rule.id} ({rule.path.name}): {str(exc).splitlines()[0]}") from exc
    finally:
        con.execute("ROLLBACK")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise RuleError(f"rule {rule.id} ({rule.path.name}): result lacks {', '.join(missing)}")
    return columns, rows


def analyze(con: duckdb.DuckDBPyConnection, rules: list[Rule], overrides=None) -> list[RuleRun]:
    """Runs every rule, replacing the case's findings; one failing rule fails alone."""
    con.execute("BEGIN TRANSACTION")
    con.execute("DELETE FROM findings")
    con.execute("DELETE FROM rule_runs")
    con.execute("COMMIT")
    runs: list[RuleRun] = []
    for rule in rules:
        t0 = time.perf_counter()
        try:
            columns, rows = run_rule(con, rule, overrides)
            records = [_finding(rule, dict(zip(columns, r, strict=True))) for r in rows]
        except RuleError as exc:
            runs.append(RuleRun(rule, "error", 0, _ms(t0), str(exc)))
            continue
        _store(con, records)
        runs.append(RuleRun(rule, "ok", len(records), _ms(t0)))
    con.executemany(
        "INSERT INTO rule_runs VALUES (?, ?, ?, ?, ?, ?)",
        [[r.rule.id, str(r.rule.path), r.status, r.message, r.rows, r.ms] for r in runs],
    )
    return runs


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)


def _finding(rule: Rule, row: dict) -> dict:
    cause = row.get("cause") or rule.cause
    if cause == ANY:
        raise RuleError(f"rule {rule.id}: declares cause 'any' but returned no cause column")
    if cause not in catalogue.causes():
        raise RuleError(f"rule {rule.id}: returned cause {cause!r}, not in the catalogue")
    scope = row.get("scope") or "charger"
    if scope not in SCOPES:
        raise RuleError(f"rule {rule.id}: returned scope {scope!r}")
    score = row["score"]
    if score is None or not 0 <= float(score) <= 1:
        raise RuleError(f"rule {rule.id}: score {score!r} outside 0..1")
    charger = row["charger_id"]
    chargers = row.get("chargers") or ([charger] if charger else [])
    return {
        "rule_id": rule.id,
        "cause": cause,
        "channel": catalogue.causes()[cause].channel,
        "severity": rule.severity,
        "scope": scope,
        "subject": row.get("subject") or charger,
        "charger_id": charger,
        "chargers": list(chargers),
        "ts_start": row["ts_start"],
        "ts_end": row["ts_end"] or row["ts_start"],
        "score": float(score),
        "summary": row["summary"] or f"{rule.title} (the rule gave no summary)",
        "evidence": [int(e) for e in (row["evidence"] or []) if e is not None],
        "against": bool(row.get("against") or False),
    }


def _store(con: duckdb.DuckDBPyConnection, records: list[dict]) -> None:
    if not records:
        return
    import pyarrow as pa

    cols = list(records[0])
    table = pa.Table.from_pylist(records).select(cols)
    con.complete()
    con.register("_findings_in", table)
    try:
        con.execute(f"INSERT INTO findings BY NAME SELECT {', '.join(cols)} FROM _findings_in")
    finally:
        con.unregister("_findings_in")
