"""Bus health of one CAN log, computed in SQL over the rows just written: per-second bus
statistics (as Vector's bus statistics show them), error-frame bursts and controller state
changes as `events`, so a chart or a rule sees when the bus went bad, not only that it did.

Tuning keys (manifest, per file): `bitrate` (bit/s, for bus load), `error_burst_gap_ms`
(errors closer than this form one burst; default 1000).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import duckdb

from forensics.parsers.base import Sink

# nominal bits of a classic frame without stuffing: SOF..EOF plus 3 bits intermission
_BITS_SQL = "CASE WHEN flags & 1 <> 0 THEN 67 ELSE 47 END + 8 * CASE WHEN flags & 2 <> 0 THEN 0 ELSE dlc::INTEGER END"

STATE_EVENTS = {
    "error_active": ("can.error_active", "info"),
    "error_warning": ("can.error_warning", "warning"),
    "error_passive": ("can.error_passive", "error"),
    "bus_off": ("can.bus_off", "critical"),
    "restarted": ("can.restart", "warning"),
}


@dataclass
class Context:
    """What the analyses of one file need: the open transaction and the file's context."""

    con: duckdb.DuckDBPyConnection
    sink: Sink
    file_id: int
    charger_id: str | None
    loc_unit: str
    bitrate: int | None
    extra: dict[str, Any] = field(default_factory=dict)

    def run(self, sql: str, params: dict | list):
        """Executes SQL with only the named parameters it uses (DuckDB refuses extras)."""
        if isinstance(params, dict):
            params = {k: v for k, v in params.items() if re.search(rf"\${k}\b", sql)}
        return self.con.execute(sql, params)

    def insert(self, table: str, sql: str, params: dict | list) -> int:
        """Runs an INSERT ... SELECT, counts its rows for the sink, returns the count."""
        row = self.run(sql, params).fetchone()
        n = int(row[0]) if row else 0
        if n:
            self.sink.count(table, n)
        return n


def analyse(ctx: Context) -> None:
    """Fills can_bus_stats and the can.* events for this file."""
    bus_stats(ctx)
    error_bursts(ctx)
    state_changes(ctx)


def bus_stats(ctx: Context) -> int:
    """One row per channel and second that saw traffic or errors."""
    return ctx.insert(
        "can_bus_stats",
        f"""INSERT INTO can_bus_stats
        WITH f AS (
            SELECT channel, time_bucket(INTERVAL 1 second, ts) AS second,
                   count(*) FILTER (WHERE flags & 4 = 0) AS frames,
                   count(*) FILTER (WHERE flags & 4 <> 0) AS error_frames,
                   sum({_BITS_SQL}) FILTER (WHERE flags & 4 = 0) AS bits
            FROM can_frames WHERE file_id = $fid GROUP BY ALL),
        e AS (
            SELECT channel, time_bucket(INTERVAL 1 second, ts) AS second,
                   count(*) FILTER (WHERE list_contains(classes, 'protocol')) AS p,
                   count(*) FILTER (WHERE list_contains(classes, 'ack')) AS a,
                   count(*) FILTER (WHERE list_contains(classes, 'controller')) AS c,
                   count(*) FILTER (WHERE list_contains(classes, 'bus_off')) AS b
            FROM can_errors WHERE file_id = $fid GROUP BY ALL)
        SELECT $fid, coalesce(f.channel, e.channel), coalesce(f.second, e.second),
               coalesce(f.frames, 0), coalesce(f.error_frames, 0),
               coalesce(e.p, 0), coalesce(e.a, 0), coalesce(e.c, 0), coalesce(e.b, 0),
               coalesce(f.bits, 0),
               CASE WHEN $bitrate > 0 THEN 100.0 * coalesce(f.bits, 0) / $bitrate END
        FROM f FULL JOIN e ON f.channel = e.channel AND f.second = e.second""",
        {"fid": ctx.file_id, "bitrate": ctx.bitrate},
    )


def error_bursts(ctx: Context) -> int:
    """One `can.error_frame` event per burst of error frames (gap > error_burst_gap_ms)."""
    gap_ms = int(ctx.extra.get("error_burst_gap_ms", 1000))
    return ctx.insert(
        "events",
        """INSERT INTO events (ts, charger_id, channel, layer, kind, severity, code, detail,
                               file_id, locator)
        WITH e AS (
            SELECT *, CASE WHEN ts - lag(ts) OVER w <= to_milliseconds($gap) THEN 0 ELSE 1
                      END AS starts
            FROM can_errors WHERE file_id = $fid AND source = 'error_frame'
              -- controller-state-only frames are state changes, not bus errors
              AND (state IS NULL OR list_has_any(classes, ['protocol', 'ack', 'bus_error',
                                                           'transceiver', 'lost_arbitration']))
            WINDOW w AS (PARTITION BY channel ORDER BY ts, loc)),
        g AS (SELECT *, sum(starts) OVER (PARTITION BY channel ORDER BY ts, loc) AS burst FROM e),
        b AS (
            SELECT channel, burst, min(ts) AS t0, max(ts) AS t1, count(*) AS n,
                   arg_min(locator, (ts, loc)) AS first_loc, arg_max(locator, (ts, loc)) AS last_loc,
                   count(*) FILTER (WHERE list_contains(classes, 'protocol')) AS protocol,
                   count(*) FILTER (WHERE list_contains(classes, 'ack')) AS ack,
                   count(*) FILTER (WHERE list_contains(classes, 'controller')) AS controller,
                   count(*) FILTER (WHERE list_contains(classes, 'bus_off')) AS bus_off,
                   count(*) FILTER (WHERE len(classes) = 0) AS unspecified,
                   mode(location) AS location
            FROM g GROUP BY channel, burst)
        SELECT t0, $charger, 'internal', 'can', 'can.error_frame',
               CASE WHEN n >= 100 THEN 'error' ELSE 'warning' END,
               CASE WHEN ack >= greatest(protocol, controller, bus_off, unspecified) AND ack > 0
                      THEN 'ack'
                    WHEN bus_off > 0 THEN 'bus_off'
                    WHEN protocol >= greatest(controller, unspecified) AND protocol > 0
                      THEN 'protocol'
                    WHEN controller > 0 THEN 'controller'
                    ELSE 'unspecified' END,
               json_object('can_channel', channel, 'count', n,
                           'duration_ms', epoch_ms(t1) - epoch_ms(t0), 'ts_end', t1::VARCHAR,
                           'last_locator', last_loc, 'location', location,
                           'classes', json_object('protocol', protocol, 'ack', ack,
                                                  'controller', controller, 'bus_off', bus_off,
                                                  'unspecified', unspecified)),
               $fid, first_loc
        FROM b ORDER BY t0""",
        {"fid": ctx.file_id, "gap": gap_ms, "charger": ctx.charger_id},
    )


def state_changes(ctx: Context) -> int:
    """One event per controller state change (active -> warning -> passive -> bus-off)."""
    cases = " ".join(f"WHEN '{s}' THEN '{k}'" for s, (k, _) in STATE_EVENTS.items())
    sev = " ".join(f"WHEN '{s}' THEN '{v}'" for s, (_, v) in STATE_EVENTS.items())
    return ctx.insert(
        "events",
        f"""INSERT INTO events (ts, charger_id, channel, layer, kind, severity, code, detail,
                                file_id, locator)
        WITH s AS (
            SELECT *, lag(state) OVER (PARTITION BY channel ORDER BY ts, loc) AS prev
            FROM can_errors WHERE file_id = $fid AND state IS NOT NULL)
        SELECT ts, $charger, 'internal', 'can', CASE state {cases} END,
               CASE state {sev} END, state,
               json_object('can_channel', channel, 'from', prev, 'tx_errors', tx_errors,
                           'rx_errors', rx_errors, 'source', source, 'text', text),
               $fid, locator
        FROM s
        WHERE (prev IS DISTINCT FROM state OR state = 'restarted')
          AND NOT (prev IS NULL AND state = 'error_active')
        ORDER BY ts, loc""",
        {"fid": ctx.file_id, "charger": ctx.charger_id},
    )
