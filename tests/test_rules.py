"""The rule engine (headers, binding, isolation) and every rule's fire/silent fixtures."""

from __future__ import annotations

import pytest

from conftest import rows
from forensics import fixtures, rules, store
from forensics.errors import RuleError

HEADER = """-- id: test.rule
-- title: A test rule
-- cause: backend.outage
-- channel: backend
-- severity: low
-- status: experimental
-- params: min_n = 2
-- fix: Nothing.
"""
GOOD_SQL = """SELECT charger_id, min(ts) AS ts_start, max(ts) AS ts_end, 0.6 AS score,
       'n=' || count(*) AS summary, list(event_id) AS evidence
FROM events WHERE kind = 'ws.disconnect' GROUP BY charger_id HAVING count(*) >= $min_n
ORDER BY charger_id"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (HEADER.replace("-- cause: backend.outage", "-- cause: made.up"), "not in the catalogue"),
        (HEADER.replace("-- severity: low\n", ""), "header lacks severity"),
        (HEADER.replace("-- status: experimental", "-- colour: red"), "unknown header key"),
        (HEADER + "DELETE FROM events", "exactly one SELECT"),
        (HEADER + "SELECT 1; SELECT 2", "exactly one SELECT"),
        (HEADER + "SELECT $nope AS x", r"\$nope is used but not declared"),
    ],
)
def test_bad_headers_are_named(tmp_path, text, message):
    path = write(tmp_path, "bad.sql", text)
    with pytest.raises(RuleError, match=message) as exc:
        rules.parse_rule(path)
    assert str(path) in str(exc.value)


def test_rule_runs_with_bound_params_and_broken_rule_fails_alone(tmp_path, ingest_files):
    lines = "\n".join(
        f'{{"ts": "2026-06-01T12:0{n}:00Z", "charger_id": "CP-1", "event": "disconnected"}}'
        for n in range(3)
    )
    _, con = ingest_files({"a.jsonl": lines})
    good = rules.parse_rule(write(tmp_path, "good.sql", HEADER + GOOD_SQL))
    broken = rules.parse_rule(
        write(
            tmp_path,
            "broken.sql",
            HEADER.replace("test.rule", "test.broken") + "SELECT * FROM no_such_table",
        )
    )
    shape = rules.parse_rule(
        write(tmp_path, "shape.sql", HEADER.replace("test.rule", "test.shape") + "SELECT 1 AS x")
    )
    runs = rules.analyze(con, [broken, good, shape])
    assert [(r.rule.id, r.status, r.rows) for r in runs] == [
        ("test.broken", "error", 0),
        ("test.rule", "ok", 1),
        ("test.shape", "error", 0),
    ]
    assert "no_such_table" in runs[0].message and "test.broken" in runs[0].message
    assert "result lacks" in runs[2].message
    assert rows(con, "SELECT rule_id, charger_id, summary, len(evidence) FROM findings") == [
        ("test.rule", "CP-1", "n=3", 3)
    ]
    # Parameters are bound: a higher threshold silences it, nothing is pasted into SQL.
    assert rules.run_rule(con, good, {"min_n": 4})[1] == []
    assert rows(con, "SELECT status, count(*) FROM rule_runs GROUP BY 1 ORDER BY 1") == [
        ("error", 2),
        ("ok", 1),
    ]


def test_user_rule_folder_with_duplicate_id_is_reported(tmp_path):
    write(tmp_path, "dup.sql", HEADER.replace("test.rule", "ocpp.boot_rejected") + GOOD_SQL)
    loaded, errors = rules.load_rules([tmp_path])
    assert any("already in" in str(e) for e in errors)
    assert sum(r.id == "ocpp.boot_rejected" for r in loaded) == 1


BUILTIN = rules.load_rules()[0]


@pytest.mark.parametrize("rule", BUILTIN, ids=[r.id for r in BUILTIN])
def test_rule_fixtures(rule):
    found = rule.fixtures()
    assert set(found) == {"fire", "silent"}, f"{rule.id}: fixtures missing in {rule.path.parent}"
    for case, folder in found.items():
        res = fixtures.run_fixture(rule, case, folder)
        assert res.ok, f"{rule.id} {case}: {res.message}"


def test_catalogue_ids_used_by_rules_exist():
    from forensics import catalogue

    assert {r.cause for r in BUILTIN} - {rules.ANY} <= set(catalogue.causes())
    assert len(catalogue.causes()) == 22


def test_store_refuses_other_schema_version(tmp_path):
    db = tmp_path / "c.duckdb"
    con = store.connect(db)
    con.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    con.execute("DROP TABLE can_logs")  # as if made before that table existed
    con.close()
    from forensics.errors import CaseError

    with pytest.raises(CaseError, match="schema version 0"):
        store.connect(db)
    # refused before anything in it changed: the old case keeps its own tables
    import duckdb

    with duckdb.connect(str(db), read_only=True) as old:
        names = {r[0] for r in old.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert "can_logs" not in names and "events" in names
