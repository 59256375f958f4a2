"""Ingest: bundle files -> detected parser -> one transaction per file in the case database.

Order matters only for context: the manifest is read first, then inventory and session
tables (higher parser priority), then logs and captures, so attribution can use the
inventory. A file already in the case (same sha256) is skipped: re-ingesting adds nothing.
"""

from __future__ import annotations

import gc
import gzip
import hashlib
import importlib.abc
import logging
import os
import sys
import threading
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from forensics import derive, intake, manifest, store
from forensics.errors import FormatError, ParserGaveUp
from forensics.parsers.base import HEAD_BYTES, FileContext, FileHead, Parser, Sink, Source, detect
from forensics.parsers.ocpp_frames import close_frames

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (what, done, total)


@dataclass
class IngestReport:
    """What one ingest did, for the CLI summary."""

    files: int = 0
    parsed: int = 0
    records: int = 0
    rejects: int = 0
    already_in_case: int = 0
    duplicates: int = 0  # same bytes as another file of this ingest
    unrecognised: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    manifest: manifest.Manifest | None = None


# Files at least this big whose size no other file has are hashed in a thread while they
# are parsed: a file of a size nothing else has cannot be a duplicate, so the hash is not
# needed before parsing (hashlib releases the GIL).
HASH_BESIDE_BYTES = 1 << 20


@dataclass
class _Planned:
    bf: intake.BundleFile
    sha256: str | Future  # Future[(sha, size)] while hashed beside parsing
    size: int
    parser: type[Parser] | None
    context: FileContext


def ingest(
    inputs: list[Path],
    case_path: Path,
    workdir: Path,
    timezone: str | None = None,
    charger_id: str | None = None,
    limits: intake.Limits | None = None,
    progress: Progress | None = None,
    options: dict | None = None,
) -> IngestReport:
    """Adds the inputs' files to the case at `case_path`; returns counts and refusals.

    `options` reach every parser as context extra (e.g. {"deep": True} for tshark)."""
    manifest.check_timezone(timezone, "--timezone")
    arrow_without_pandas()
    con = store.connect(case_path)
    try:
        with bulk_runtime():
            return _ingest(con, inputs, workdir, timezone, charger_id, limits, progress, options)
    finally:
        con.close()


GC_YOUNG_THRESHOLD = 50_000  # allocations between young-generation collections (Python: 700)
SWITCH_INTERVAL_S = 0.0002  # longest a thread holds the GIL while another waits (Python: 5 ms)


@contextmanager
def bulk_runtime():
    """Python's garbage collector and thread switching set for bulk work for the block, then
    as they were.

    - The collector ran ~400 times per 1M-packet capture with its defaults, 0.2 s in all,
      holding the GIL each time (stalling the worker threads' Python too); nearly all of it
      walking the hundreds of thousands of objects the imports leave (pyarrow, DuckDB,
      numpy), which never become garbage. Those are frozen (set aside) for the block, and
      young collections come every 50k allocations instead of every 700: 0.07 s. Parsers
      make almost no reference cycles (refcounting frees their objects).
    - Parsers read ahead and write in worker threads that need the GIL for a moment between
      their C calls; with the 5 ms switch interval each such moment could wait up to 5 ms
      behind the main thread's Python. At 0.2 ms the capture's main thread waited ~0.1 s
      less for its next chunk per 1M packets.

    Both are process-wide: ingests run at once in threads of one process would restore them
    under each other (batch runs its bundles in processes)."""
    was, switch = gc.get_threshold(), sys.getswitchinterval()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        yield
    finally:
        sys.setswitchinterval(switch)
        gc.set_threshold(*was)
        gc.unfreeze()


def _ingest(con, inputs, workdir, timezone, charger_id, limits, progress, options):
    report = IngestReport()
    recover(con)
    files = intake.collect(inputs, workdir, limits)
    known = {
        r[0] for r in con.execute("SELECT sha256 FROM evidence WHERE sha256 IS NOT NULL").fetchall()
    }
    refused_known = set(
        con.execute("SELECT bundle, path FROM evidence WHERE status = 'refused'").fetchall()
    )
    sizes = Counter(bf.path.stat().st_size for bf in files if bf.path is not None)
    sizes.update(
        r[0] for r in con.execute("SELECT size FROM evidence WHERE sha256 IS NOT NULL").fetchall()
    )
    hasher = ThreadPoolExecutor(1, thread_name_prefix="sha256", initializer=_lower_priority)

    mf = manifest.Manifest()
    manifest_error: FormatError | None = None
    for bf in sorted(files, key=lambda b: b.display.count("/")):
        if bf.path is not None and manifest.is_manifest(bf.display):
            try:
                mf = manifest.load(bf.path, bf.display)
            except FormatError as exc:  # a broken manifest must not stop the bundle
                manifest_error = exc
                report.failed.append((bf.display, str(exc)))
            break
    report.manifest = mf

    plan: list[_Planned] = []
    seen_now: dict[str, str] = {}
    for bf in files:
        report.files += 1
        if bf.path is None:
            report.refused.append((bf.display, bf.refused))
            if (bf.bundle, bf.display) not in refused_known:
                _evidence_only(con, bf, None, 0, None, "refused", bf.refused)
            continue
        size = bf.path.stat().st_size
        if size >= HASH_BESIDE_BYTES and sizes[size] == 1 and not manifest.is_manifest(bf.display):
            ctx = mf.context_for(bf.display, timezone, charger_id)
            ctx.extra.update(options or {})
            cls = detect(FileHead(bf.display, read_head(bf.path)), ctx.format)
            plan.append(_Planned(bf, hasher.submit(hash_file, bf.path), size, cls, ctx))
            continue
        sha, size = hash_file(bf.path)
        if sha in known:
            report.already_in_case += 1
            continue
        if sha in seen_now:
            _evidence_only(con, bf, sha, size, None, "duplicate", f"same bytes as {seen_now[sha]}")
            report.duplicates += 1
            continue
        seen_now[sha] = bf.display
        if manifest.is_manifest(bf.display):
            if manifest_error is not None and bf.display == manifest_error.where:
                _manifest_rejected(con, bf, sha, size, manifest_error)
                continue
            _evidence_only(con, bf, sha, size, "manifest", "parsed", "")
            report.parsed += 1
            continue
        ctx = mf.context_for(bf.display, timezone, charger_id)
        ctx.extra.update(options or {})
        cls = detect(FileHead(bf.display, read_head(bf.path)), ctx.format)
        plan.append(_Planned(bf, sha, size, cls, ctx))

    plan.sort(key=lambda p: -(p.parser.priority if p.parser else -1))
    total = sum(p.size for p in plan)
    done = 0
    for p in plan:
        if progress:
            progress(p.bf.display, done, total)
        if p.parser is None:
            report.unrecognised.append(p.bf.display)
            _evidence_only(
                con, p.bf, _sha(p), p.size, None, "unrecognised", "no parser recognises it"
            )
        else:
            ingest_file(con, p, report)
            if isinstance(p.sha256, Future):
                con.execute(
                    "UPDATE evidence SET sha256 = ? WHERE file_id = "
                    "(SELECT max(file_id) FROM evidence WHERE bundle = ? AND path = ?)",
                    [_sha(p), p.bf.bundle, p.bf.display],
                )
        done += p.size
    hasher.shutdown()
    if progress:
        progress("", total, total)
    derive.run(con)
    return report


def ingest_file(con: duckdb.DuckDBPyConnection, p: _Planned, report: IngestReport) -> None:
    """Parses one file; on failure the case is left as it was.

    The parser's inserts commit as they go (DuckDB keeps a transaction's uncommitted data
    in memory, so one transaction per file would make memory grow with the file). All of a
    file's rows carry its file_id, and the evidence row says 'parsing' until the end: a
    failure deletes the file's rows in one transaction (discard_file), and an ingest that
    was killed mid-file is cleaned up the same way by the next one (recover).
    """
    parser = p.parser()
    src = Source(p.bf.path, p.bf.display, p.context)
    con.execute("BEGIN TRANSACTION")
    sha = p.sha256 if isinstance(p.sha256, str) else None  # filled in after parsing
    fid = _evidence_row(con, p.bf, sha, p.size, parser.kind, "parsing", "", parser)
    con.execute("COMMIT")
    sink = Sink(con, fid, set(store.table_names(con)))
    try:
        parser.parse(src, sink)
        close_frames(src, sink)  # OCPP frames staged by any parser (log or capture)
    except ParserGaveUp as exc:
        discard_file(con, fid, "unrecognised", str(exc))
        report.unrecognised.append(p.bf.display)
        return
    except (FormatError, ValueError, OSError, EOFError, duckdb.Error) as exc:
        # Input we could not read at all (e.g. an inventory without a header).
        msg = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        discard_file(con, fid, "failed", msg)
        report.failed.append((p.bf.display, msg))
        log.debug("parse of %s failed", p.bf.display, exc_info=True)
        return
    except Exception as exc:  # a bug in our parser: keep going, say so loudly
        msg = f"internal error in parser {parser.name}: {type(exc).__name__}: {exc}"
        discard_file(con, fid, "failed", msg[:300])
        report.failed.append((p.bf.display, msg.splitlines()[0][:300]))
        log.warning("%s: %s\n%s", p.bf.display, msg, traceback.format_exc())
        return
    if src.rejects:
        rej = pa.table(
            {
                "locator": [r.locator for r in src.rejects],
                "reason": [r.reason for r in src.rejects],
                "excerpt": [r.excerpt for r in src.rejects],
                "detail": [r.detail for r in src.rejects],
            }
        )
        sink.append("rejects", rej)
    status = "partial" if src.rejects else "parsed"
    con.execute(
        "UPDATE evidence SET records_parsed = ?, records_rejected = ?, status = ?, notes = ? "
        "WHERE file_id = ?",
        [src.records_seen, len(src.rejects), status, src.notes, fid],
    )
    report.parsed += 1
    report.records += src.records_seen
    report.rejects += len(src.rejects)


def discard_file(con: duckdb.DuckDBPyConnection, fid: int, status: str, message: str) -> None:
    """Deletes every row a file contributed (all tables with a file_id column) and its
    parser's scratch tables, and records why, in one transaction."""
    with suppress(duckdb.Error):
        con.execute("ROLLBACK")  # a parser may have left a transaction open
    for (name,) in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE starts_with(table_name, '_')"
    ).fetchall():
        con.execute(f'DROP TABLE IF EXISTS "{name}"')
    tables = con.execute(
        """SELECT DISTINCT table_name FROM duckdb_columns()
           WHERE column_name = 'file_id' AND NOT internal AND table_name <> 'evidence'
             AND schema_name = 'main'
             AND table_name IN (SELECT table_name FROM duckdb_tables())  -- not views"""
    ).fetchall()
    con.execute("BEGIN TRANSACTION")
    for (table,) in tables:
        con.execute(f'DELETE FROM "{table}" WHERE file_id = ?', [fid])
    con.execute(
        "UPDATE evidence SET status = ?, message = ?, records_parsed = 0, records_rejected = 0 "
        "WHERE file_id = ?",
        [status, message, fid],
    )
    con.execute("COMMIT")


def recover(con: duckdb.DuckDBPyConnection) -> None:
    """Cleans up files an earlier ingest left half-done (killed mid-file)."""
    for (fid,) in con.execute("SELECT file_id FROM evidence WHERE status = 'parsing'").fetchall():
        discard_file(con, fid, "failed", "ingest was interrupted; ingest the bundle again")
        con.execute("UPDATE evidence SET sha256 = NULL WHERE file_id = ?", [fid])


def _evidence_row(con, bf, sha, size, kind, status, message, parser=None) -> int:
    fid = con.execute("SELECT nextval('file_ids')").fetchone()[0]
    con.execute(
        "INSERT INTO evidence VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, ?, [], ?)",
        [
            fid,
            bf.bundle,
            bf.display,
            sha,
            size,
            kind,
            parser.name if parser else None,
            parser.version if parser else None,
            status,
            message,
            datetime.now(UTC).replace(tzinfo=None),
        ],
    )
    return fid


def _manifest_rejected(con, bf, sha, size, exc: FormatError) -> None:
    """A manifest that does not load: evidence 'failed' plus a reject at its line; the
    bundle is read with no manifest (UTC, no default charger)."""
    con.execute("BEGIN TRANSACTION")
    fid = _evidence_row(con, bf, sha, size, "manifest", "failed", str(exc))
    line = exc.line or 1
    con.execute(
        "INSERT INTO rejects VALUES (?, ?, 'manifest.invalid', ?, ?)",
        [fid, f"line {line}", _line_of(bf.path, line), str(exc)],
    )
    con.execute("UPDATE evidence SET records_rejected = 1 WHERE file_id = ?", [fid])
    con.execute("COMMIT")


def _line_of(path: Path, n: int) -> str:
    lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    return lines[n - 1][:80] if 0 < n <= len(lines) else ""


def _evidence_only(con, bf, sha, size, kind, status, message, parser=None) -> None:
    con.execute("BEGIN TRANSACTION")
    _evidence_row(con, bf, sha, size, kind, status, message, parser)
    con.execute("COMMIT")


class _NoPandas(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "pandas":
            raise ImportError("not needed by pyarrow's first look")
        return None


def arrow_without_pandas() -> None:
    """pyarrow imports pandas (0.3-0.4 s) the first time pa.array meets a Python list, only
    to ask whether it is a pandas object; ingest never hands it one. That first look is made
    here while pandas cannot be imported, so pyarrow settles on "no pandas" for it
    (to_pandas / from_pandas still import pandas when called)."""
    if "pandas" in sys.modules:
        return
    blocker = _NoPandas()
    sys.meta_path.insert(0, blocker)
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(blocker)


def _sha(p: _Planned) -> str:
    return p.sha256 if isinstance(p.sha256, str) else p.sha256.result()[0]


def hash_file(path: Path) -> tuple[str, int]:
    """sha256 hex and size in bytes, streamed (chain of custody) through one buffer."""
    h = hashlib.sha256()
    size = 0
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with open(path, "rb") as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
            size += n
    return h.hexdigest(), size


def _lower_priority() -> None:
    """Runs the calling thread at the lowest CPU priority (Linux schedules threads on their
    own, so this is per thread): a big file's sha256 is computed beside its parse and should
    take only the CPU the parser leaves idle (the parser's single-threaded stretches leave a
    core free long enough), not slow the parse down. Elsewhere a no-op."""
    with suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def read_head(path: Path) -> bytes:
    """First bytes for detection; gzip-compressed files are looked at decompressed."""
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    if head.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(path, "rb") as gz:
                return gz.read(HEAD_BYTES)
        except (OSError, EOFError):
            return head
    return head
