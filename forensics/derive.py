"""Facts derived after ingest from more than one file: chargers seen in logs but absent from
the inventory. Idempotent: derived rows are replaced on every run."""

from __future__ import annotations

import duckdb

SOURCES = ("events", "ocpp_messages", "sessions")


def run(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("BEGIN TRANSACTION")
    con.execute("DELETE FROM chargers WHERE inferred")
    seen = " UNION ".join(
        f"SELECT DISTINCT charger_id FROM {t} WHERE charger_id IS NOT NULL" for t in SOURCES
    )
    con.execute(
        f"""INSERT INTO chargers (charger_id, inferred)
            SELECT charger_id, true FROM ({seen})
            WHERE charger_id NOT IN (SELECT charger_id FROM chargers WHERE charger_id IS NOT NULL)
            ORDER BY charger_id"""
    )
    con.execute("COMMIT")
