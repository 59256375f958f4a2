"""Module health: a node is present while its periodic frames arrive; a silence longer than
a tolerance of its own period is `module.offline` (at the last frame before, with the first
frame after in the detail) and the frame that ends it is `module.online`.

Which ids belong to which module, in order of preference:
  1. the manifest, per file: `modules = { PM1 = ["0x181", "0x281"], PM2 = [0x182] }`
     and optionally `module_period_ms = 100` (or a table per module);
  2. a DBC in the bundle: each sender node's messages that have a cycle time;
  3. CANopen heartbeats (0x700 + node id, one data byte: the NMT state) -> module 'node N'.
Tolerance: `module_gap_factor` x period (default 3), at least `module_min_gap_ms` (200).
A log with none of these gets no module analysis (no guessing from raw ids).
"""

from __future__ import annotations

import pyarrow as pa

from forensics.parsers.can.health import Context

NMT_STATES = {0x00: "boot_up", 0x04: "stopped", 0x05: "operational", 0x7F: "pre_operational"}


def parse_id(value) -> int:
    """0x181, '0x181', '181h', 385 -> int; ValueError otherwise."""
    if isinstance(value, int):
        return value
    text = str(value).strip().lower()
    if text.endswith("h"):
        return int(text[:-1], 16)
    return int(text, 0)


def _manifest_map(ctx: Context) -> list[tuple[str, int, bool, float | None, str]]:
    mods = ctx.extra.get("modules")
    if not isinstance(mods, dict):
        return []
    periods = ctx.extra.get("module_period_ms")
    out = []
    for name, ids in mods.items():
        ids = ids if isinstance(ids, list) else [ids]
        per = periods.get(name) if isinstance(periods, dict) else periods
        for raw in ids:
            can_id = parse_id(raw)
            out.append((str(name), can_id, can_id > 0x7FF, float(per) if per else None, "manifest"))
    return out


def _dbc_map(ctx: Context) -> list[tuple[str, int, bool, float | None, str]]:
    rows = ctx.con.execute(
        """SELECT DISTINCT coalesce(senders[1], name), frame_id, is_extended, cycle_time_ms
           FROM dbc_messages WHERE cycle_time_ms > 0 AND len(senders) > 0
           AND senders[1] NOT IN ('Vector__XXX', '')"""
    ).fetchall()
    return [(r[0], r[1], r[2], float(r[3]), "dbc") for r in rows]


def _canopen_map(ctx: Context) -> list[tuple[str, int, bool, float | None, str]]:
    rows = ctx.con.execute(
        """SELECT arbitration_id, count(*) FROM can_frames
           WHERE file_id = ? AND flags & 7 = 0 AND dlc = 1
             AND arbitration_id BETWEEN 1793 AND 1919  -- 0x701..0x77F
           GROUP BY ALL HAVING count(*) >= 3""",
        [ctx.file_id],
    ).fetchall()
    return [(f"node {r[0] - 0x700}", r[0], False, None, "canopen") for r in rows]


def module_map(ctx: Context) -> list[tuple[str, int, bool, float | None, str]]:
    """(module, arbitration_id, extended, period_ms or None, source) rows for this log."""
    for finder in (_manifest_map, _dbc_map, _canopen_map):
        rows = finder(ctx)
        if rows:
            return rows
    return []


def analyse(ctx: Context) -> int:
    """Writes can_modules rows and module.offline / module.online events; returns events."""
    rows = module_map(ctx)
    if not rows:
        return 0
    factor = float(ctx.extra.get("module_gap_factor", 3))
    min_gap = float(ctx.extra.get("module_min_gap_ms", 200))
    ctx.con.register(
        "_can_modmap",
        pa.table(
            {
                "module": [r[0] for r in rows],
                "can_id": pa.array([r[1] for r in rows], pa.uint32()),
                "ext": [r[2] for r in rows],
                "period_ms": pa.array([r[3] for r in rows], pa.float64()),
                "source": [r[4] for r in rows],
            }
        ),
    )
    try:
        return _analyse_sql(ctx, factor, min_gap)
    finally:
        ctx.con.unregister("_can_modmap")


def _analyse_sql(ctx: Context, factor: float, min_gap: float) -> int:
    con = ctx.con
    params = {"fid": ctx.file_id, "factor": factor, "min_gap": min_gap}
    ctx.run(
        """CREATE OR REPLACE TEMP TABLE _can_modframes AS
        SELECT m.module, f.ts, f.loc, f.arbitration_id, f.data
        FROM can_frames f JOIN _can_modmap m
          ON f.arbitration_id = m.can_id AND (f.flags & 1 <> 0) = m.ext
        WHERE f.file_id = $fid AND f.flags & 4 = 0""",
        params,
    )
    ctx.run(
        """CREATE OR REPLACE TEMP TABLE _can_modinfo AS
        WITH d AS (
            SELECT module, arbitration_id,
                   epoch_ms(ts) - epoch_ms(lag(ts) OVER (PARTITION BY module, arbitration_id
                                                         ORDER BY ts, loc)) AS dt
            FROM _can_modframes),
        obs AS (SELECT module, arbitration_id, median(dt) AS p FROM d WHERE dt > 0 GROUP BY ALL),
        per AS (
            SELECT m.module, any_value(m.source) AS source, list(DISTINCT m.can_id) AS ids,
                   coalesce(min(m.period_ms), min(o.p)) AS period_ms
            FROM _can_modmap m LEFT JOIN obs o
              ON o.module = m.module AND o.arbitration_id = m.can_id
            GROUP BY m.module)
        SELECT per.*, greatest($factor * period_ms, $min_gap) AS tol_ms
        FROM per""",
        params,
    )
    unit = ctx.loc_unit
    ctx.run(
        f"""CREATE OR REPLACE TEMP TABLE _can_modgaps AS
        WITH s AS (
            SELECT module, ts, loc, data,
                   lead(ts) OVER w AS next_ts, lead(loc) OVER w AS next_loc,
                   lead(data) OVER w AS next_data,
                   row_number() OVER w AS seq
            FROM _can_modframes WINDOW w AS (PARTITION BY module ORDER BY ts, loc)),
        log_end AS (SELECT max(ts) AS t FROM can_frames WHERE file_id = $fid)
        SELECT s.module, i.period_ms, i.tol_ms, s.ts, s.loc, s.next_ts, s.next_loc,
               s.next_data, s.seq,
               epoch_ms(coalesce(s.next_ts, log_end.t)) - epoch_ms(s.ts) AS gap_ms,
               '{unit} ' || s.loc AS locator, '{unit} ' || s.next_loc AS next_locator
        FROM s JOIN _can_modinfo i USING (module), log_end
        WHERE i.period_ms IS NOT NULL AND s.seq >= 2
          AND epoch_ms(coalesce(s.next_ts, log_end.t)) - epoch_ms(s.ts) > i.tol_ms""",
        params,
    )
    ctx.insert(
        "can_modules",
        """INSERT INTO can_modules
        SELECT $fid, i.module, i.source, i.ids, i.period_ms, i.tol_ms, count(f.ts), min(f.ts),
               max(f.ts), (SELECT count(*) FROM _can_modgaps g WHERE g.module = i.module)
        FROM _can_modinfo i LEFT JOIN _can_modframes f USING (module)
        GROUP BY ALL ORDER BY i.module""",
        params,
    )
    nmt = " ".join(f"WHEN {k} THEN '{v}'" for k, v in NMT_STATES.items())
    n = ctx.insert(
        "events",
        """INSERT INTO events (ts, charger_id, channel, layer, kind, severity, code, detail,
                               file_id, locator)
        SELECT ts, $charger, 'internal', 'module', 'module.offline', 'error', module,
               json_object('module', module, 'period_ms', period_ms, 'tolerance_ms', tol_ms,
                           'gap_ms', gap_ms, 'last_seen', ts::VARCHAR,
                           'first_after', next_ts::VARCHAR, 'first_after_locator', next_locator,
                           'returned', next_ts IS NOT NULL),
               $fid, locator
        FROM _can_modgaps ORDER BY ts""",
        {"fid": ctx.file_id, "charger": ctx.charger_id},
    )
    n += ctx.insert(
        "events",
        f"""INSERT INTO events (ts, charger_id, channel, layer, kind, severity, code, detail,
                                file_id, locator)
        SELECT next_ts, $charger, 'internal', 'module', 'module.online', 'info', module,
               json_object('module', module, 'gap_ms', gap_ms, 'last_seen', ts::VARCHAR,
                           'last_seen_locator', locator,
                           'nmt_state', CASE WHEN module LIKE 'node %' THEN
                               CASE TRY_CAST('0x' || left(hex(next_data), 2) AS INTEGER) {nmt} END END),
               $fid, next_locator
        FROM _can_modgaps WHERE next_ts IS NOT NULL ORDER BY next_ts""",
        {"fid": ctx.file_id, "charger": ctx.charger_id},
    )
    for t in ("_can_modframes", "_can_modinfo", "_can_modgaps"):
        con.execute(f"DROP TABLE IF EXISTS {t}")
    return n
