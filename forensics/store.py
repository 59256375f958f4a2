"""The case database: one DuckDB file holding evidence, rejects, domain tables and findings.

Core tables are created here; a parser that fills tables of its own declares their DDL in
`Parser.tables` and they are created on open. Timestamps are TIMESTAMP holding UTC with
microsecond precision (the connection's TimeZone is pinned to UTC).
"""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path

import duckdb

from forensics.errors import CaseError

SCHEMA_VERSION = "2"  # 2: can_frames a view over can_frame_store (payload as an integer)

CORE_DDL = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE SEQUENCE IF NOT EXISTS file_ids START 1;
CREATE SEQUENCE IF NOT EXISTS event_ids START 1;
CREATE SEQUENCE IF NOT EXISTS finding_ids START 1;
CREATE TABLE IF NOT EXISTS evidence (
    file_id INTEGER PRIMARY KEY,
    bundle VARCHAR,            -- the bundle (archive or folder) as the user named it
    path VARCHAR,              -- path inside the bundle, nested archives joined with '!/'
    sha256 VARCHAR,
    size BIGINT,
    kind VARCHAR,              -- detected kind, e.g. ocpp_log, inventory, pcap; NULL if unknown
    parser VARCHAR,
    parser_version VARCHAR,
    records_parsed BIGINT,
    records_rejected BIGINT,
    status VARCHAR,            -- parsed | partial | unrecognised | failed | refused | duplicate
    message VARCHAR,
    notes VARCHAR[],
    ingested_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS rejects (
    file_id INTEGER,
    locator VARCHAR,           -- 'line 45' | 'frame 123' | 'offset 4096'
    reason VARCHAR,            -- dotted layer.what, e.g. ocpp.bad_frame
    excerpt VARCHAR,           -- at most 80 characters of the raw record
    detail VARCHAR
);
CREATE TABLE IF NOT EXISTS chargers (
    charger_id VARCHAR,
    site VARCHAR, vendor VARCHAR, model VARCHAR, firmware VARCHAR,
    connectivity VARCHAR,      -- ethernet | wifi | cellular
    signal_dbm DOUBLE, ip VARCHAR, backend_url VARCHAR, ocpp_version VARCHAR,
    security_profile VARCHAR,
    extra JSON,                -- columns the inventory had beyond the known ones
    inferred BOOLEAN DEFAULT false,  -- true when seen in logs but absent from the inventory
    file_id INTEGER, locator VARCHAR
);
CREATE TABLE IF NOT EXISTS sessions (
    session_id VARCHAR, charger_id VARCHAR, connector_id INTEGER,
    start TIMESTAMP, stop TIMESTAMP,
    vehicle_make VARCHAR, vehicle_model VARCHAR, evccid VARCHAR,
    result VARCHAR,            -- ok | failed
    error_code VARCHAR,
    file_id INTEGER, locator VARCHAR
);
CREATE TABLE IF NOT EXISTS ocpp_messages (
    ts TIMESTAMP, charger_id VARCHAR,
    direction VARCHAR,         -- cp_to_csms | csms_to_cp
    message_type TINYINT,      -- 2 CALL, 3 CALLRESULT, 4 CALLERROR
    unique_id VARCHAR,
    action VARCHAR,            -- for results and errors: the action of the paired CALL
    payload JSON,
    error_code VARCHAR, error_description VARCHAR,
    ocpp_version VARCHAR,      -- 1.6 | 2.0.1 when known
    schema_valid BOOLEAN,      -- NULL when no schema applies (unknown action, unpaired result)
    schema_error VARCHAR,
    response_ms DOUBLE,        -- on the CALL: time until its CALLRESULT/CALLERROR
    seq BIGINT,                -- order of the message within its file
    file_id INTEGER, locator VARCHAR, line BIGINT
);
CREATE TABLE IF NOT EXISTS events (
    event_id BIGINT DEFAULT nextval('event_ids'),
    ts TIMESTAMP,
    charger_id VARCHAR, connector_id INTEGER,
    channel VARCHAR,           -- backend | vehicle | internal
    layer VARCHAR,             -- network tcp tls websocket ocpp can module fault_log pilot slac v2g clock
    kind VARCHAR,              -- dotted: ws.close, ocpp.boot_rejected, clock.jump, ...
    severity VARCHAR,          -- info | warning | error | critical
    code VARCHAR,
    detail JSON,
    file_id INTEGER, locator VARCHAR,
    ts_raw TIMESTAMP           -- the source's own clock when ts was aligned (clock_offsets)
);
CREATE TABLE IF NOT EXISTS clock_offsets (
    file_id INTEGER, reference_file_id INTEGER,
    offset_ms DOUBLE,          -- add to this file's ts to get the reference clock
    pairs INTEGER, method VARCHAR
);
CREATE TABLE IF NOT EXISTS findings (
    finding_id BIGINT DEFAULT nextval('finding_ids'),
    rule_id VARCHAR, cause VARCHAR, channel VARCHAR, severity VARCHAR,
    scope VARCHAR,             -- charger | site | fleet
    subject VARCHAR, charger_id VARCHAR, chargers VARCHAR[],
    ts_start TIMESTAMP, ts_end TIMESTAMP,
    score DOUBLE, summary VARCHAR,
    evidence BIGINT[],         -- event_id list
    against BOOLEAN DEFAULT false  -- true: evidence that argues against the cause
);
CREATE TABLE IF NOT EXISTS rule_runs (
    rule_id VARCHAR, path VARCHAR, status VARCHAR, message VARCHAR, rows INTEGER, ms DOUBLE
);
"""

CORE_TABLES = [
    "evidence",
    "rejects",
    "chargers",
    "sessions",
    "ocpp_messages",
    "events",
    "clock_offsets",
    "findings",
    "rule_runs",
]


def parser_tables() -> dict[str, str]:
    """DDL of the tables registered parsers fill beyond the core schema."""
    from forensics.parsers.base import registry

    ddl: dict[str, str] = {}
    for cls in registry().values():
        ddl.update(cls.tables)
    return ddl


def memory_limit() -> str:
    """DuckDB's memory_limit for a case: FORENSICS_MEMORY_LIMIT, default 512MB."""
    return os.environ.get("FORENSICS_MEMORY_LIMIT", "512MB")


# Rows per row group of a case written by this tool (DuckDB's default is 122,880). DuckDB
# writes the full row groups of a bulk insert straight to the file, compressed by the
# inserting threads; the rest of the insert goes to the WAL and is compressed again by the
# next checkpoint, one row group per thread, while nothing else runs. A file brings 10^4 to
# 10^5 rows per table (a 1M-packet capture: 118k OCPP messages and 129k events), so at the
# default its inserts took the slow road: the close of such a capture spent 0.23 s in one
# single-threaded checkpoint, and the capture's ingest is 15 % faster at this size. The size
# is not kept in the file: each writer attaches with it (connect).
ROW_GROUP_SIZE = 30_720  # 15 vectors of 2048 rows
CASE_ALIAS = "case_db"  # the case's catalog name on a connection opened for writing


def connect(path: Path | str, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Opens (creating if needed) a case database with the schema in place. For writing the
    case is attached to an in-memory instance (ATTACH is where DuckDB takes a row group
    size) and made the default catalog; read-only opens write nothing and open it directly.
    Another thread's connection comes from `cursor`."""
    path = Path(path)
    if read_only and not path.exists():
        raise CaseError(f"{path}: no such case database", hint="run `forensics ingest` first")
    try:
        con = duckdb.connect(str(path), read_only=True) if read_only else _attach(path)
    except duckdb.IOException as exc:
        raise CaseError(
            f"{path}: cannot open the case database ({str(exc).splitlines()[0]})",
            hint="is another forensics process using it?",
        ) from exc
    con.execute("SET TimeZone = 'UTC'")
    # Bounded memory whatever the file size: DuckDB spills to <case>.tmp beyond this.
    con.execute("SET memory_limit = ?", [memory_limit()])
    con.execute("SET preserve_insertion_order = false")
    if read_only:
        check_version(con, path)
        return con
    # one transaction: committed one by one, the ~30 statements cost a WAL sync each
    # (0.13 s for a new case, against 0.035 s together)
    con.execute("BEGIN TRANSACTION")
    try:
        existing = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' "
            "AND table_name = 'meta'"
        ).fetchone()[0]
        if existing:
            check_version(con, path)  # before anything in an older case is changed
        con.execute(CORE_DDL)
        for ddl in parser_tables().values():
            con.execute(ddl)
        if not existing:
            con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [SCHEMA_VERSION])
        con.execute("COMMIT")
    except BaseException:
        with suppress(duckdb.Error):
            con.execute("ROLLBACK")
        con.close()
        raise
    return con


def _attach(path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH ? AS {CASE_ALIAS} (ROW_GROUP_SIZE {ROW_GROUP_SIZE})", [str(path)])
        con.execute(f"USE {CASE_ALIAS}")
        # where DuckDB spills beyond memory_limit: beside the case, as when opened directly
        con.execute("SET temp_directory = ?", [f"{path}.tmp"])
    except BaseException:
        con.close()
        raise
    return con


def cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A second connection to the same case, for another thread (a connection may not be
    used by two at once), with the same default catalog as `con` (USE is per connection)."""
    db = con.execute("SELECT current_database()").fetchone()[0]
    other = con.cursor()
    other.execute(f'USE "{db}"')
    return other


def check_version(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    try:
        rows = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    except duckdb.CatalogException:
        rows = []
    row = rows[0] if rows else None
    if row is None or row[0] != SCHEMA_VERSION:
        found = row[0] if row else "none"
        raise CaseError(
            f"{path}: case schema version {found}, this tool uses {SCHEMA_VERSION}",
            hint="ingest the bundle again into a new case file",
        )


def table_names(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Tables of the case, core first."""
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
        "ORDER BY table_name"
    ).fetchall()
    names = [r[0] for r in rows if r[0] != "meta"]
    return [t for t in CORE_TABLES if t in names] + [t for t in names if t not in CORE_TABLES]
