"""The one code path for OCPP-J frames, whatever carried them (JSON Lines log, text log,
WebSocket frames in a capture).

A parser calls `store_frames` with Arrow batches of raw frames; ingest calls `close_frames`
once at the end of the file (a parser need not). Closing validates the frame shape (message type 2/3/4), pairs each
CALL with its CALLRESULT/CALLERROR by unique id (latency in ms), checks payloads against
the official JSON schemas, and writes `ocpp_messages`, the `events` timeline (one event per
message, most specific kind) and rejects. All of it runs as columnar SQL in DuckDB.
"""

from __future__ import annotations

from contextlib import suppress

import duckdb
import pyarrow as pa

from forensics.parsers import _ocpp_schemas as schemas
from forensics.parsers.base import OneInFlight, Sink, Source, registered

STAGE = "_ocpp_stage"
PARSED = "_ocpp_parsed"
# The close's own tables live in a scratch in-memory database, attached for the close and
# detached after it: unlike temp tables, a second cursor sees them, so the two big inserts
# (messages, events) run at once, each on its own connection. Inside a caller's transaction
# (which may write to one database only, temp aside) they are temp tables instead (_in).
WORK = "_ocpp_work"
FINAL, FORMS, VERDICT = f"{WORK}._ocpp_final", f"{WORK}._ocpp_forms", f"{WORK}._ocpp_verdict"
VALID, VALID_EXACT = f"{WORK}._ocpp_valid", f"{WORK}._ocpp_valid_exact"
# A year before this on a charger clock means an RTC that lost its time (1970, 2000 ...).
SANE_YEAR = 2015
BACKWARDS_TOLERANCE_S = 2


def store_frames(src: Source, sink: Sink, table: pa.Table) -> None:
    """Stages frames for this file. Columns: ts timestamp[us] UTC, charger_id, direction
    ('cp_to_csms'|'csms_to_cp'|NULL to infer), frame (OCPP-J array text), locator, line
    (int64), optionally ocpp_version ('1.6'|'2.0.1') and seq (int64, unique in the file,
    ordering its frames as they were sent, when the carrier knows it better than the order
    of the batches: a capture's frame numbers)."""
    con = sink.con
    _create_stage(con)
    if "ocpp_version" not in table.column_names:
        table = table.append_column("ocpp_version", pa.nulls(table.num_rows, pa.string()))
    # else seq is the order of the frames as given; numbered here because SQL row order is
    # not kept (preserve_insertion_order is off for memory).
    if "seq" not in table.column_names:
        last = f"SELECT max(seq) FROM {STAGE}"
        if _temp_exists(con, PARSED):  # frames parsed early (parse_staged) keep their numbers
            last = f"SELECT greatest(({last}), (SELECT max(seq) FROM {PARSED}))"
        start = con.execute(f"SELECT coalesce(({last}) + 1, 0)").fetchall()[0][0]
        seq = pa.array(range(start, start + table.num_rows), pa.int64())
        table = table.append_column("seq", seq)
    with registered(con, "_frames_in", table):
        con.execute(
            f"""INSERT INTO {STAGE}
                SELECT seq, ts, nullif(charger_id, ''), direction, frame, locator, line,
                       ocpp_version
                FROM _frames_in"""
        )


def store_frames_sql(sink: Sink, query: str, params: dict | None = None) -> None:
    """Like store_frames, for frames already in DuckDB: `query` selects the same columns
    (ts, charger_id, direction, frame, locator, line) with one frame per line (logs), so the
    line number orders them and no sort or Arrow round trip is needed."""
    con = sink.con
    _create_stage(con)
    con.execute(
        f"""INSERT INTO {STAGE}
            SELECT line, ts, nullif(charger_id, ''), direction, frame, locator, line, NULL
            FROM ({query})""",
        params or {},
    )


def _create_stage(con) -> None:
    con.execute(
        f"""CREATE TEMP TABLE IF NOT EXISTS {STAGE} (
            seq BIGINT, ts TIMESTAMP, charger_id VARCHAR, direction VARCHAR, frame VARCHAR,
            locator VARCHAR, line BIGINT, ocpp_version VARCHAR)"""
    )


def close_frames(src: Source, sink: Sink) -> int:
    """Validates, pairs and writes the staged frames of this file; returns messages stored."""
    con = sink.con
    if not (_temp_exists(con, STAGE) or _temp_exists(con, PARSED)):
        return 0
    try:
        return _close(src, sink, con)
    finally:
        # After a failure the transaction is aborted and these fail too: keep the first error.
        with suppress(duckdb.Error):
            for t in (STAGE, PARSED, FINAL, FORMS, VERDICT, VALID, VALID_EXACT):
                con.execute(f"DROP TABLE IF EXISTS {_in('temp', t)}")
            con.execute(f"DETACH DATABASE IF EXISTS {WORK}")


def parse_staged(sink: Sink) -> None:
    """Parses the frames staged so far (the first step of close_frames; per frame, so the
    result is the same whenever it runs): a parser may call it between batches, e.g. from
    a worker thread while it reads on; close_frames then parses only the rest."""
    if _temp_exists(sink.con, STAGE):
        _parse(sink.con)


def _parse(con) -> None:
    """Staged frames -> _ocpp_parsed (appended to frames parsed earlier); the stage goes."""
    if _temp_exists(con, PARSED):
        con.execute(f"INSERT INTO {PARSED} {_PARSE_SELECT}")
    else:
        con.execute(f"CREATE TEMP TABLE {PARSED} AS {_PARSE_SELECT}")
    con.execute(f"DROP TABLE {STAGE}")  # each step frees the one before: bounded memory


def _temp_exists(con, name: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name = ?", [name]
        ).fetchone()[0]
    )


def _close(src: Source, sink: Sink, con) -> int:
    if _temp_exists(con, STAGE):
        _parse(con)
    bad = con.execute(
        """SELECT locator, reject, left(frame, 80), reject_detail FROM _ocpp_parsed
           WHERE reject IS NOT NULL ORDER BY seq"""
    ).fetchall()
    good = con.execute("SELECT count(*) FROM _ocpp_parsed WHERE reject IS NULL").fetchone()[0]
    src.accepted(good)
    src.reject_bulk(bad)
    if not good:
        return 0
    versions = _charger_versions(con)
    versions_table = pa.table(
        {"charger_id": list(versions), "version": list(versions.values())},
        schema=pa.schema([("charger_id", pa.string()), ("version", pa.string())]),
    )
    # The events go in on a second cursor while the messages go in on this one: each insert
    # (and the compression of its rows) runs on one thread, so two at once use both cores.
    # Inside a caller's transaction there is no second cursor: one after the other then.
    other = sink.twin()
    work = WORK if other is not None else "temp"
    try:
        if other is not None:
            con.execute(f"DETACH DATABASE IF EXISTS {WORK}")
            con.execute(f"ATTACH ':memory:' AS {WORK}")
        with registered(con, "_versions", versions_table):
            con.execute(_in(work, _PAIR_SQL))
        con.execute(f"DROP TABLE {PARSED}")
        _validate(con, work)
        with OneInFlight(other is not None, "ocpp-events") as side:
            side.submit(_insert_events, other or sink, work)
            con.execute(_in(work, _INSERT_SQL), {"fid": sink.file_id})
    finally:
        if other is not None:
            other.con.close()
    sink.count("ocpp_messages", good)
    return good


def _in(work: str, sql: str) -> str:
    """`sql` with the close's tables in database `work` (WORK, or 'temp')."""
    if work == WORK:
        return sql
    sql = sql.replace(f"CREATE OR REPLACE TABLE {WORK}.", "CREATE OR REPLACE TEMP TABLE ")
    return sql.replace(f"{WORK}.", f"{work}.")


def _insert_events(sink: Sink, work: str) -> None:
    """Every event of the close in one insert: a second, small one after it would make the
    next checkpoint compress the table's last row group (all of this one) again."""
    params = {"fid": sink.file_id, "sane": SANE_YEAR, "back": BACKWARDS_TOLERANCE_S}
    sink.count("events", sink.con.execute(_in(work, _EVENTS_SQL), params).fetchone()[0])


def _charger_versions(con) -> dict[str, str | None]:
    """OCPP version per charger: given by the carrier (subprotocol), the inventory, or the
    version-specific actions and BootNotification shape seen in this file."""
    v16 = sorted(schemas.only_in("1.6"))
    v201 = sorted(schemas.only_in("2.0.1"))
    rows = con.execute(
        """SELECT p.charger_id, max(p.ocpp_version),
                  max(c.ocpp_version),
                  bool_or(p.action IN (SELECT unnest($v16))),
                  bool_or(p.action IN (SELECT unnest($v201))),
                  bool_or(p.action = 'BootNotification'
                          AND json_exists(p.payload, '$.chargePointVendor')),
                  bool_or(p.action = 'BootNotification'
                          AND json_exists(p.payload, '$.chargingStation'))
           FROM _ocpp_parsed p
           LEFT JOIN chargers c ON c.charger_id = p.charger_id AND NOT c.inferred
           WHERE p.reject IS NULL GROUP BY p.charger_id""",
        {"v16": v16, "v201": v201},
    ).fetchall()
    out: dict[str, str | None] = {}
    for cp, carried, inventory, a16, a201, b16, b201 in rows:
        version = normalise_version(carried) or normalise_version(inventory)
        if version is None and (a16 or b16) != (a201 or b201):
            version = "1.6" if (a16 or b16) else "2.0.1"
        out[cp] = version
    return out


def normalise_version(text: str | None) -> str | None:
    """'ocpp1.6', '1.6J', 'OCPP 2.0.1' -> '1.6' / '2.0.1'; anything else -> None."""
    if not text:
        return None
    t = text.lower().replace("ocpp", "").replace(" ", "").rstrip("j")
    if t.startswith("1.6"):
        return "1.6"
    if t.startswith("2.0.1") or t == "2.0":
        return "2.0.1"
    return None


EXACT_CHECKS_PER_FORM = 2000  # originals re-validated per failing canonical form


def _validate(con, work: str) -> None:
    """Fills VERDICT: the schema verdict of each distinct payload text of a CALL or
    CALLRESULT (with its version and action). Payloads repeat (Heartbeat, status replies,
    StatusNotification), so the canonical form (timestamps and numbers replaced by fixed
    values, four regex passes) is made once per distinct text, and the schemas run once per
    canonical form; the forms that fail are re-checked on their originals, which prevail."""
    sql = f"""CREATE OR REPLACE TABLE {FORMS} AS
            SELECT *, {schemas.canonical_sql("text")} AS canon FROM (
              SELECT DISTINCT version, action, message_type = 3 AS response,
                     payload::VARCHAR AS text
              FROM {FINAL} WHERE message_type IN (2, 3) AND action IS NOT NULL)"""
    con.execute(_in(work, sql))
    keys = con.execute(_in(work, f"SELECT DISTINCT version, action, response, canon FROM {FORMS}"))
    rows = [(*k, *schemas.validate(k[0], k[1], k[2], k[3])) for k in keys.fetchall()]
    _table(con, work, VALID, ["version", "action", "response", "canon"], rows)
    failing = [r[:4] for r in rows if r[4] is False]
    originals = []
    if failing:
        with registered(con, "_failing", _key_table(failing)):
            sql = f"""SELECT fm.version, fm.action, fm.response, fm.canon, fm.text
                    FROM {FORMS} fm JOIN _failing k
                      ON k.version IS NOT DISTINCT FROM fm.version AND k.action = fm.action
                     AND k.response = fm.response AND k.canon = fm.canon
                    QUALIFY row_number() OVER (PARTITION BY fm.version, fm.action,
                                               fm.response, fm.canon) <= {EXACT_CHECKS_PER_FORM}"""
            originals = con.execute(_in(work, sql)).fetchall()
    exact = [(v, a, r, text, *schemas.validate(v, a, r, text)) for v, a, r, _c, text in originals]
    _table(con, work, VALID_EXACT, ["version", "action", "response", "payload"], exact)
    con.execute(_in(work, _VERDICT_SQL))


_VERDICT_SQL = f"""
CREATE OR REPLACE TABLE {VERDICT} AS
SELECT fm.version, fm.action, fm.response, fm.text,
       coalesce(x.valid, v.valid) AS valid,
       CASE WHEN x.valid IS NOT NULL THEN x.err ELSE v.err END AS err,
       coalesce(x.version_used, v.version_used) AS version_used
FROM {FORMS} fm
JOIN {VALID} v
  ON v.version IS NOT DISTINCT FROM fm.version AND v.action = fm.action
 AND v.response = fm.response AND v.canon = fm.canon
LEFT JOIN {VALID_EXACT} x
  ON v.valid = false AND x.version IS NOT DISTINCT FROM fm.version AND x.action = fm.action
 AND x.response = fm.response AND x.payload = fm.text
"""


def _key_table(keys) -> pa.Table:
    cols = list(zip(*keys, strict=True))
    return pa.table(
        {"version": pa.array(cols[0], pa.string()), "action": pa.array(cols[1], pa.string()),
         "response": pa.array(cols[2], pa.bool_()), "canon": pa.array(cols[3], pa.string())}
    )  # fmt: skip


def _table(con, work: str, name: str, key_cols: list[str], rows) -> None:
    """Table of validation results: key columns, then valid, err, version_used."""
    names = [*key_cols, "valid", "err", "version_used"]
    types = {"response": pa.bool_(), "valid": pa.bool_()}
    cols = list(zip(*rows, strict=True)) if rows else [[] for _ in names]
    table = pa.table(
        {n: pa.array(list(c), types.get(n, pa.string())) for n, c in zip(names, cols, strict=True)}
    )
    with registered(con, "_valid_in", table):
        con.execute(_in(work, f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM _valid_in"))


# An element's JSON type from its first character: json_extract hands each element back
# as compact JSON text, so a string starts with '"' and an object with '{'. json_type would
# parse each again, the payload object whole (-10 % of the parse).
_SHAPE = """
  CASE
    WHEN x IS NULL THEN 'ocpp.not_json'
    WHEN x[1] IS NULL THEN 'ocpp.not_array'
    WHEN mt IS NULL THEN 'ocpp.bad_message_type'
    WHEN NOT coalesce(starts_with(x[2], '"'), false) THEN 'ocpp.bad_frame'
    WHEN mt = 2 AND NOT (n = 4 AND starts_with(x[3], '"') AND starts_with(x[4], '{'))
      THEN 'ocpp.bad_frame'
    WHEN mt = 3 AND NOT (n = 3 AND starts_with(x[3], '{')) THEN 'ocpp.bad_frame'
    WHEN mt = 4 AND NOT (n = 5 AND starts_with(x[3], '"') AND starts_with(x[4], '"')
                         AND starts_with(x[5], '{')) THEN 'ocpp.bad_frame'
    WHEN ts IS NULL THEN 'ocpp.bad_timestamp'
    WHEN charger_id IS NULL THEN 'ocpp.no_charger'
  END"""

# The frame text is parsed once: all six positions in one multi-path extraction (a sixth
# element means too many), then only the small elements are looked at.
_PARSE_SELECT = f"""
WITH t AS (
  SELECT *, try(json_extract(frame, ['$[0]', '$[1]', '$[2]', '$[3]', '$[4]', '$[5]'])) AS x
  FROM {STAGE}
), u AS (
  -- the message type is the JSON integer 2, 3 or 4 (a cast would take "3", 2.5, true)
  SELECT *, CASE WHEN x[1] IN ('2', '3', '4') THEN x[1]::INTEGER END AS mt,
    -- n: elements present (a prefix: a missing index is NULL)
    (x[1] IS NOT NULL)::INT + (x[2] IS NOT NULL)::INT + (x[3] IS NOT NULL)::INT
    + (x[4] IS NOT NULL)::INT + (x[5] IS NOT NULL)::INT + (x[6] IS NOT NULL)::INT AS n
  FROM t
), c AS (SELECT *, {_SHAPE} AS reject FROM u)
SELECT seq, ts, charger_id, direction, locator, line, ocpp_version, reject,
  CASE WHEN reject IS NOT NULL THEN left(frame, 80) END AS frame,  -- kept for rejects only
  CASE reject
    WHEN 'ocpp.bad_message_type' THEN 'message type must be 2, 3 or 4'
    WHEN 'ocpp.bad_frame' THEN 'wrong element count or types for message type ' || mt
    WHEN 'ocpp.no_charger' THEN 'no charge point id; set [defaults] charger_id in manifest.toml'
    ELSE NULL END AS reject_detail,
  CASE WHEN reject IS NULL THEN mt END AS message_type,
  CASE WHEN reject IS NULL THEN x[2] ->> '$' END AS unique_id,
  CASE WHEN reject IS NULL AND mt = 2 THEN x[3] ->> '$' END AS action,
  CASE WHEN reject IS NULL THEN CASE mt WHEN 2 THEN x[4] WHEN 3 THEN x[3] ELSE x[5] END END
    AS payload,
  CASE WHEN reject IS NULL AND mt = 4 THEN x[3] ->> '$' END AS error_code,
  CASE WHEN reject IS NULL AND mt = 4 THEN x[4] ->> '$' END AS error_description
FROM c
"""
# The payload fields the events need (status, connector status, connector id,
# StatusNotification error) are read here as well, per frame, so a parser that parses while
# it reads on (parse_staged) takes them off the close.
_PARSE_SELECT = f"""
SELECT *,
  json_extract_string(payload, ['$.status', '$.connectorStatus', '$.connectorId', '$.errorCode'])
    AS pf
FROM ({_PARSE_SELECT})
"""

# A CALL's direction follows from its action where OCPP fixes the initiator.
_CALL_DIRECTION = """coalesce(p.direction,
  CASE WHEN p.message_type = 2 AND p.action <> 'DataTransfer' THEN
    CASE WHEN p.action IN (SELECT unnest($cp)) THEN 'cp_to_csms' ELSE 'csms_to_cp' END END)"""

# Each result belongs to the latest earlier CALL of its charger and unique id, and a CALL's
# latency is to its first result: the next message of its charger and unique id, when that
# is a result (a later CALL takes over the id). Both come from one window over the messages,
# partitioned by charger and unique id (linear even when a charger reuses ids), so the wide
# rows meet no join: with the facts joined back by seq, one hash table per fact, a close of
# ~1M messages (an 8M-packet capture) ran out of its 128MB budget; this one closes it in
# 64MB. The CALL's facts travel as one struct, so a CALL of unknown direction still counts.
_PAIR_SQL = f"""
CREATE OR REPLACE TABLE {FINAL} AS
WITH d AS (
  SELECT p.*, {_CALL_DIRECTION} AS own_dir FROM _ocpp_parsed p WHERE p.reject IS NULL
), w AS (
  SELECT d.*,
    last_value(CASE WHEN message_type = 2 THEN {{'action': action, 'dir': own_dir}} END
               IGNORE NULLS) OVER (k ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS call,
    lead(message_type) OVER k AS next_type, lead(ts) OVER k AS next_ts
  FROM d
  WINDOW k AS (PARTITION BY charger_id, unique_id ORDER BY seq)
)
SELECT w.seq, w.ts, w.charger_id, w.message_type, w.unique_id,
       coalesce(w.action, w.call.action) AS action, w.payload, w.error_code,
       w.error_description, v.version, w.locator, w.line, w.pf,
       coalesce(w.own_dir, CASE WHEN w.message_type IN (3, 4) THEN
                             CASE w.call.dir WHEN 'cp_to_csms' THEN 'csms_to_cp'
                                             WHEN 'csms_to_cp' THEN 'cp_to_csms' END END)
         AS direction,
       CASE WHEN w.message_type = 2 AND w.next_type IN (3, 4)
            THEN date_diff('microsecond', w.ts, w.next_ts) / 1000.0 END AS response_ms
FROM w LEFT JOIN _versions v USING (charger_id)
""".replace("$cp", "[" + ",".join(f"'{a}'" for a in sorted(schemas.CP_INITIATED)) + "]")

# A message's schema verdict: CALLs and CALLRESULTs, by version, action and payload text.
_VERDICT_JOIN = f"""
LEFT JOIN {VERDICT} vd
  ON f.message_type IN (2, 3) AND vd.version IS NOT DISTINCT FROM f.version
 AND vd.action = f.action AND vd.response = (f.message_type = 3)
 AND vd.text = f.payload::VARCHAR"""

_INSERT_SQL = f"""
INSERT INTO ocpp_messages BY NAME
SELECT f.ts, f.charger_id, f.direction, f.message_type, f.unique_id, f.action, f.payload,
       f.error_code, f.error_description,
       coalesce(f.version, vd.version_used) AS ocpp_version,
       vd.valid AS schema_valid, vd.err AS schema_error,
       f.response_ms, f.seq, $fid AS file_id, f.locator, f.line
FROM {FINAL} f {_VERDICT_JOIN}
"""

# One event per message, with the most specific kind; pf = [status, connectorStatus,
# connectorId, errorCode] read from the payload once, when the frames were parsed.
_EVENTS_SQL = f"""
INSERT INTO events BY NAME
WITH m AS (
  SELECT *, coalesce(pf[1], pf[2]) AS status,
         action = 'StatusNotification' AND coalesce(pf[1], pf[2]) = 'Faulted' AS faulted
  FROM {FINAL}
)
SELECT m.ts, m.charger_id, TRY_CAST(m.pf[3] AS INTEGER) AS connector_id,
  'backend' AS channel, 'ocpp' AS layer,
  CASE
    WHEN m.message_type = 4 THEN 'ocpp.callerror'
    WHEN m.message_type = 2 AND m.action = 'BootNotification' THEN 'ocpp.boot'
    WHEN m.message_type = 3 AND m.action = 'BootNotification' THEN
      CASE m.status WHEN 'Accepted' THEN 'ocpp.boot_accepted'
                    WHEN 'Pending' THEN 'ocpp.boot_pending'
                    WHEN 'Rejected' THEN 'ocpp.boot_rejected' ELSE 'ocpp.result' END
    WHEN m.message_type = 2 AND m.faulted THEN 'ocpp.status_fault'
    WHEN m.message_type = 2 THEN 'ocpp.call'
    ELSE 'ocpp.result' END AS kind,
  CASE
    WHEN m.message_type = 4 THEN 'error'
    WHEN m.message_type = 3 AND m.action = 'BootNotification' AND m.status = 'Rejected'
      THEN 'error'
    WHEN m.message_type = 3 AND m.action = 'BootNotification' AND m.status = 'Pending'
      THEN 'warning'
    WHEN m.message_type = 2 AND m.faulted THEN 'warning'
    ELSE 'info' END AS severity,
  CASE WHEN m.message_type = 4 THEN m.error_code
       WHEN m.action = 'StatusNotification' AND m.message_type = 2 THEN m.pf[4]
       WHEN m.message_type = 3 AND m.action = 'BootNotification' THEN m.status
       ELSE m.action END AS code,
  json_object('action', m.action, 'unique_id', m.unique_id, 'direction', m.direction,
              'response_ms', m.response_ms) AS detail,
  $fid AS file_id, m.locator
FROM m
UNION ALL
SELECT f.ts, f.charger_id, NULL, 'backend', 'ocpp', 'ocpp.schema_violation', 'warning',
  coalesce(f.action, 'unknown'),
  json_object('action', f.action, 'error', vd.err, 'unique_id', f.unique_id),
  $fid, f.locator
FROM {FINAL} f {_VERDICT_JOIN}
WHERE vd.valid = false
UNION ALL
-- A clock that jumps (RTC reset to 1970/2000, or going backwards) is an event of its own, so
-- gap rules do not mistake the hole it leaves for an outage.
SELECT ts, charger_id, NULL, 'backend', 'clock', 'clock.jump', 'warning',
  CASE WHEN year(ts) < $sane OR year(prev_ts) < $sane THEN 'rtc_reset' ELSE 'backwards' END,
  json_object('previous_ts', prev_ts, 'previous_locator', prev_loc,
              'jump_s', date_diff('millisecond', prev_ts, ts) / 1000.0),
  $fid, locator
FROM (
  SELECT ts, charger_id, locator, lag(ts) OVER w AS prev_ts, lag(locator) OVER w AS prev_loc
  FROM {FINAL}
  WINDOW w AS (PARTITION BY charger_id ORDER BY seq)
)
WHERE prev_ts IS NOT NULL
  AND ((year(ts) < $sane) <> (year(prev_ts) < $sane)
       OR ts < prev_ts - to_seconds($back))
"""
