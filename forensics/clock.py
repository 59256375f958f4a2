"""Clock offsets between evidence files that saw the same OCPP messages.

A capture and the OCPP logs of one bundle (charger log, CSMS log) carry the same messages:
same unique id, same message type, same charger. For each file the offset to a reference
file is the median of (reference ts - file ts) over those shared messages, in ms, with the
number of pairs behind it. The reference is the capture with the most shared messages
(its clock is the capture host's, usually NTP-disciplined), else the file with the most
OCPP messages. The median includes the one-way transit between the two observation points
(milliseconds on a LAN, up to seconds on a cellular link), which is why `pairs` is stored:
a handful of pairs means a rough estimate.

`estimate_offsets(con)` replaces the contents of `clock_offsets`; files holding OCPP
messages that share none with the reference get a row with offset NULL and method
'unaligned', so the verdict can say which sources it could not align.
"""

from __future__ import annotations

import duckdb

METHOD = "ocpp_unique_id_median"


def estimate_offsets(con: duckdb.DuckDBPyConnection) -> list[dict]:
    """Fills clock_offsets; returns its rows (file_id, reference_file_id, offset_ms, pairs,
    method). offset_ms: add it to the file's timestamps to get the reference clock."""
    files = con.execute(
        """SELECT m.file_id, any_value(e.kind) AS kind, count(*) AS n
           FROM ocpp_messages m JOIN evidence e USING (file_id)
           WHERE m.unique_id IS NOT NULL AND m.ts IS NOT NULL
           GROUP BY m.file_id ORDER BY m.file_id"""
    ).fetchall()
    con.execute("DELETE FROM clock_offsets")
    if len(files) < 2:
        return []
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _clock_pairs AS
           SELECT a.file_id AS a_file, b.file_id AS b_file,
                  epoch_ms(a.ts) - epoch_ms(b.ts) AS diff_ms
           FROM ocpp_messages a
           JOIN ocpp_messages b
             ON a.unique_id = b.unique_id AND a.message_type = b.message_type
            AND a.file_id <> b.file_id
            AND (a.charger_id IS NULL OR b.charger_id IS NULL
                 OR lower(a.charger_id) = lower(b.charger_id))
            AND (a.direction IS NULL OR b.direction IS NULL OR a.direction = b.direction)
           WHERE a.ts IS NOT NULL AND b.ts IS NOT NULL"""
    )
    try:
        shared = dict(
            con.execute("SELECT a_file, count(*) FROM _clock_pairs GROUP BY a_file").fetchall()
        )
        captures = [f for f, kind, _n in files if kind == "pcap" and shared.get(f)]
        if captures:
            ref = max(captures, key=lambda f: (shared[f], -f))
        else:
            ref = max(files, key=lambda r: (r[2], -r[0]))[0]
        rows = [{"file_id": ref, "reference_file_id": ref, "offset_ms": 0.0,
                 "pairs": shared.get(ref, 0), "method": "reference"}]  # fmt: skip
        est = dict(
            (f, (off, n))
            for f, off, n in con.execute(
                """SELECT b_file, median(diff_ms), count(*) FROM _clock_pairs
                   WHERE a_file = ? GROUP BY b_file""",
                [ref],
            ).fetchall()
        )
        for f, _kind, _n in files:
            if f == ref:
                continue
            off, n = est.get(f, (None, 0))
            rows.append({"file_id": f, "reference_file_id": ref,
                         "offset_ms": float(off) if off is not None else None, "pairs": n,
                         "method": METHOD if n else "unaligned"})  # fmt: skip
    finally:
        con.execute("DROP TABLE IF EXISTS _clock_pairs")
    con.executemany(
        "INSERT INTO clock_offsets VALUES (?, ?, ?, ?, ?)",
        [
            [r["file_id"], r["reference_file_id"], r["offset_ms"], r["pairs"], r["method"]]
            for r in rows
        ],
    )
    return rows


def corrected_ts_sql(alias: str = "e") -> str:
    """SQL expression of `<alias>.ts` on the reference clock (unchanged when unaligned), for
    rules and the timeline: joins nothing, reads clock_offsets by file_id."""
    return (
        f"({alias}.ts + to_milliseconds(coalesce((SELECT o.offset_ms FROM clock_offsets o "
        f"WHERE o.file_id = {alias}.file_id), 0)::BIGINT))"
    )
