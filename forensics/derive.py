"""Facts derived after ingest from more than one file: chargers seen in logs but absent from
the inventory, and clock offsets between sources that saw the same OCPP messages (events
then carry the reference clock in `ts`, their own in `ts_raw`). Idempotent: derived rows
are replaced on every run."""

from __future__ import annotations

import duckdb

from forensics import clock

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
    align_clocks(con)


def align_clocks(con: duckdb.DuckDBPyConnection) -> None:
    """Estimates per-file clock offsets and moves events onto the reference clock."""
    con.execute("BEGIN TRANSACTION")
    con.execute("UPDATE events SET ts = ts_raw, ts_raw = NULL WHERE ts_raw IS NOT NULL")
    clock.estimate_offsets(con)
    con.execute(
        """UPDATE events SET ts_raw = events.ts,
                  ts = events.ts + to_microseconds((o.offset_ms * 1000)::BIGINT)
           FROM clock_offsets o
           WHERE o.file_id = events.file_id AND o.offset_ms IS NOT NULL AND o.offset_ms <> 0"""
    )
    con.execute("COMMIT")
