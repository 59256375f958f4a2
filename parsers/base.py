"""The parser contract: detect a file by content, stream its records into the case.

A parser sees one `Source` (the file, its bundle path, the manifest context) and one `Sink`
(the open transaction of that file in the case database). It appends Arrow data to tables
and records every record it cannot use as a reject with a locator. It never writes findings.
Parsers register by name at import (`@register`); a duplicate name is an error.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

BATCH_ROWS = 65_536
MAX_CONSECUTIVE_FAILURES = 20
EXCERPT_CHARS = 80
HEAD_BYTES = 8192


# ---------------------------------------------------------------- detection


@dataclass(frozen=True)
class FileHead:
    """What detection sees: the first bytes of a file (decompressed if gzip) and its name."""

    name: str
    head: bytes

    def text_lines(self, limit: int = 20) -> list[str]:
        """First lines as text (UTF-8 with replacement; a UTF-16 BOM is honoured)."""
        data = self.head
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            text = data.decode("utf-16", errors="replace")
        else:
            text = data.decode("utf-8", errors="replace").lstrip("\ufeff")
        lines = [ln.strip("\r") for ln in text.split("\n")]
        if len(data) >= HEAD_BYTES and len(lines) > 1:
            lines = lines[:-1]  # the last line may be cut by the head limit
        return [ln for ln in lines if ln.strip()][:limit]


class Signature:
    """Scores how well a file matches (0 = not this kind, 100 = certain)."""

    def score(self, fh: FileHead) -> int:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class Magic(Signature):
    """Fixed bytes at an offset (pcap magic, BLF 'LOGG', gzip...)."""

    magics: tuple[bytes, ...]
    offset: int = 0
    certainty: int = 100

    def score(self, fh: FileHead) -> int:
        window = fh.head[self.offset :]
        return self.certainty if any(window.startswith(m) for m in self.magics) else 0


@dataclass(frozen=True)
class FirstLines(Signature):
    """A regex that must match at least `min_hits` of the first non-empty lines.

    Files shorter than `min_hits` lines match when every line matches.
    """

    pattern: str
    min_hits: int = 3
    certainty: int = 80
    flags: int = 0

    def score(self, fh: FileHead) -> int:
        lines = fh.text_lines()
        if not lines:
            return 0
        rx = re.compile(self.pattern, self.flags)
        hits = sum(1 for ln in lines if rx.search(ln))
        need = min(self.min_hits, len(lines))
        return self.certainty if hits >= need else 0


@dataclass(frozen=True)
class NameHint(Signature):
    """A file-name regex; adds a little to another signature, never decides alone."""

    pattern: str
    bonus: int = 10

    def score(self, fh: FileHead) -> int:
        return self.bonus if re.search(self.pattern, fh.name, re.IGNORECASE) else 0


@dataclass(frozen=True)
class AllOf(Signature):
    """Content signature that must match, plus optional name hints that add to its score."""

    content: Signature
    hints: tuple[Signature, ...] = ()

    def score(self, fh: FileHead) -> int:
        base = self.content.score(fh)
        if not base:
            return 0
        return min(100, base + sum(h.score(fh) for h in self.hints))


@dataclass(frozen=True)
class Predicate(Signature):
    """Any callable `FileHead -> int`, for detections a regex cannot express."""

    fn: Callable[[FileHead], int]

    def score(self, fh: FileHead) -> int:
        return self.fn(fh)


# ---------------------------------------------------------------- context


@dataclass
class FileContext:
    """What the manifest and the rest of the bundle say about one file."""

    timezone: str | None = None  # IANA name for logs written in local time
    charger_id: str | None = None  # default charger for single-charger files
    format: str | None = None  # forced parser name
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- source and sink


EVICT_FLOOR = "4MB"  # see Sink.evict_cache


class Sink:
    """Where a parser puts records: tables of the case, inside this file's transaction.

    `append` adds `file_id` to each row; missing columns take their defaults (event_id).
    `con` is the open DuckDB connection, for parsers that transform their data in SQL.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, file_id: int, tables: set[str]):
        self.con = con
        self.file_id = file_id
        self._tables = tables
        self.rows: dict[str, int] = {}
        self._count_lock = threading.Lock()

    def append(self, table: str, data: pa.Table | pa.RecordBatch) -> None:
        """Bulk-inserts Arrow data into `table` by column name (never row by row)."""
        if table not in self._tables:
            raise KeyError(f"no table {table!r} in the case schema")
        if data.num_rows == 0:
            return
        with registered(self.con, "_sink_batch", data):
            self.con.execute(
                f"INSERT INTO {table} BY NAME SELECT *, $fid AS file_id FROM _sink_batch",
                {"fid": self.file_id},
            )
        self.count(table, data.num_rows)

    def evict_cache(self) -> None:
        """Lets DuckDB drop the blocks it keeps cached after a big insert. They are already
        in the case file, but DuckDB evicts only when it reaches memory_limit, so without
        this RSS grows with the file up to that limit. Lowering the limit for a moment makes
        it evict now; setting it back restores the headroom the analyses need.

        The floor is 4MB, not 64MB: at 64MB about 10MB of table blocks stayed per 1M rows
        inserted until the floor was reached, which was most of the growth of peak RSS from
        2M to 10M CAN frames. Temp tables open at that moment are spilled to the case's temp
        file: a cost between a parser's own inserts, and what the capture path wants for its
        staged OCPP frames (it calls this to push the stage out of RAM).
        """
        from forensics.store import memory_limit

        self.con.execute(f"SET memory_limit = '{EVICT_FLOOR}'")
        self.con.execute("SET memory_limit = ?", [memory_limit()])

    def count(self, table: str, n: int) -> None:
        """Records `n` rows written to `table` by SQL the parser ran itself."""
        with self._count_lock:  # a twin() may count from its own thread
            self.rows[table] = self.rows.get(table, 0) + n

    def twin(self) -> Sink | None:
        """A Sink for another thread: its own DuckDB cursor (a connection may not be used
        by two threads at once; a cursor is a second connection to the same database), the
        same file and the same row counts. Close its `con` when done.

        None while this connection holds an open transaction: the twin's inserts would
        commit on their own and outlive the caller's rollback, so the caller must write on
        this connection itself then."""
        from forensics import store

        if in_transaction(self.con):
            return None
        other = Sink(store.cursor(self.con), self.file_id, self._tables)
        other.rows, other._count_lock = self.rows, self._count_lock
        return other


def in_transaction(con: duckdb.DuckDBPyConnection) -> bool:
    """True while `con` holds an explicit transaction (BEGIN without COMMIT yet): outside
    one every statement is a transaction of its own, so two statements see two ids."""
    ids = [con.execute("SELECT txid_current()").fetchone()[0] for _ in range(2)]
    return ids[0] == ids[1]


def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


_TRIM = _malloc_trim()


def release_memory() -> None:
    """Hands freed heap back to the OS between chunks of a big file: DuckDB's, polars' and
    the chunk buffers otherwise leave glibc's arenas fragmented and RSS creeping up with the
    file size. A no-op off glibc."""
    if _TRIM is not None:
        _TRIM(0)


def read_ahead(
    items: Iterable,
    prepare: Callable = lambda item: item,
    threaded: bool = True,
    trim: bool = True,
):
    """Yields prepare(item) for each item in order. With `threaded`, the next item is fetched
    and prepared in a worker thread while the caller works on this one (file reads, numpy,
    polars, DuckDB and the CAN scanner release the GIL); errors reach the caller in order
    all the same. The heap is trimmed after each item (release_memory): memory stays flat.
    `trim=False` leaves that to the caller (the capture: its chunk buffers are page-faulted
    in again after each trim, ~0.3 s of system time per 1M packets, and its peak is not in
    the loop)."""
    items = iter(items)

    def fetch():
        item = next(items, None)
        return None if item is None else prepare(item)

    if not threaded:
        while (item := fetch()) is not None:
            yield item
            del item
            if trim:
                release_memory()
        return
    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as pool:
        ahead = pool.submit(fetch)
        while (item := ahead.result()) is not None:
            ahead = pool.submit(fetch)
            yield item
            del item
            if trim:
                release_memory()


class OneInFlight:
    """Runs jobs one at a time in a worker thread while the caller goes on (DuckDB, numpy,
    file reads and our C scanners release the GIL). `submit` first waits for the job before
    and raises its error, so at most one job is in flight and memory stays bounded; with
    `threaded=False` a job runs at once in the caller's thread. As a context manager it
    waits for the last job on the way out, also when the block failed (the block's error is
    the one raised): no job may run on after the caller moved on, e.g. to delete the rows
    of a file that failed."""

    def __init__(self, threaded: bool = True, name: str = "one-in-flight"):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name) if threaded else None
        self._job: Future | None = None

    def submit(self, fn: Callable, *args) -> None:
        self.wait()
        if self._pool is None:
            fn(*args)
        else:
            self._job = self._pool.submit(fn, *args)

    def wait(self) -> None:
        """Waits for the job in flight, if any, and raises its error."""
        job, self._job = self._job, None
        if job is not None:
            job.result()

    def close(self) -> None:
        """Waits for the last job (raising its error) and stops the thread."""
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None

    def __enter__(self) -> OneInFlight:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
            return
        with suppress(Exception):  # the block's own error is the one to report
            self.close()


@contextmanager
def registered(con: duckdb.DuckDBPyConnection, name: str, data: Any):
    """Makes Arrow `data` visible to SQL as `name` for the block.

    If the block fails, the transaction is aborted and unregistering would raise too; that
    second error must not hide the first.
    """
    con.complete()  # DuckDB >= 2 refuses register() while a fetchone() result is open
    con.register(name, data)
    try:
        yield
    except BaseException:
        with suppress(Exception):
            con.unregister(name)
        raise
    con.unregister(name)


@dataclass
class Reject:
    locator: str
    reason: str
    excerpt: str
    detail: str = ""


class Source:
    """One input file as a parser sees it: bytes, lines, context, and the reject ledger."""

    def __init__(self, path: Path, display: str, context: FileContext | None = None):
        self.path = path
        self.display = display  # path inside the bundle, as users name it
        self.context = context or FileContext()
        self.rejects: list[Reject] = []
        self.notes: list[str] = []
        self.records_seen = 0
        self._consecutive = 0

    # -- reading

    def open(self):
        """Binary stream of the file; gzip-compressed files are decompressed transparently."""
        import gzip

        with open(self.path, "rb") as fh:
            magic = fh.read(2)
        if magic == b"\x1f\x8b":
            return gzip.open(self.path, "rb")
        return open(self.path, "rb")

    def line_chunks(self, chunk_bytes: int = 16 << 20) -> Iterator[tuple[int, bytes]]:
        """Yields (first_line_number, bytes) chunks cut at line ends (without the final
        newline); numbers are 1-based. A UTF-8 BOM is dropped; a UTF-16 file (BOM) is
        transcoded to UTF-8 and noted. Memory stays at about two chunks."""
        import numpy as np

        with self.open() as fh:
            first = fh.read(2)
            if first in (b"\xff\xfe", b"\xfe\xff"):
                text = (first + fh.read()).decode("utf-16", errors="replace")
                stream, lead = io.BytesIO(text.encode("utf-8")), b""
                self.notes.append("decoded from UTF-16")
            else:
                stream, lead = fh, first  # the probe's bytes open the first chunk
            line_no, pending = 1, b""
            while True:
                chunk = stream.read(chunk_bytes)
                if lead:
                    chunk, lead = lead + chunk, b""
                if not chunk:
                    data, pending = pending, b""
                    if not data:
                        break
                else:
                    cut = chunk.rfind(b"\n")
                    if cut < 0:
                        pending += chunk
                        continue
                    # one copy of the chunk (a slice of it would be a second)
                    data, pending = pending + memoryview(chunk)[:cut], chunk[cut + 1 :]
                if line_no == 1 and data.startswith(b"\xef\xbb\xbf"):
                    data = data[3:]
                yield line_no, data
                # numpy counts 2.5x faster than bytes.count (0.2 s over a 460 MB log)
                line_no += int(np.count_nonzero(np.frombuffer(data, np.uint8) == 10)) + 1

    def decode_lines(self, data: bytes, first: int) -> list[str]:
        """Lines of a chunk as str (CR before LF dropped). A line that is not valid UTF-8 is
        decoded with U+FFFD replacements and noted, so one stray Latin-1 byte never costs
        the record."""
        try:
            parts = data.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            parts, bad = [], []
            for i, raw in enumerate(data.split(b"\n")):
                try:
                    parts.append(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    parts.append(raw.decode("utf-8", errors="replace"))
                    bad.append(first + i)
            self.notes.append(
                f"{len(bad)} line(s) not UTF-8, read with replacement characters "
                f"(first at line {bad[0]})"
            )
        if parts and (parts[0].endswith("\r") or parts[-1].endswith("\r")):
            parts = [p[:-1] if p.endswith("\r") else p for p in parts]
        return parts

    def lines(self, chunk_bytes: int = 16 << 20) -> Iterator[tuple[int, list[str]]]:
        """Yields (first_line_number, [str]) chunks: line_chunks decoded by decode_lines."""
        for first, data in self.line_chunks(chunk_bytes):
            yield first, self.decode_lines(data, first)

    # -- the ledger

    def reject(self, locator: str, reason: str, excerpt: str | bytes = "", detail: str = ""):
        """Records one unusable record. Raises ParserGaveUp after too many in a row."""
        from forensics.errors import ParserGaveUp

        if isinstance(excerpt, bytes):
            excerpt = excerpt[:EXCERPT_CHARS].decode("utf-8", errors="backslashreplace")
        self.rejects.append(Reject(locator, reason, excerpt[:EXCERPT_CHARS], detail[:500]))
        self._consecutive += 1
        if self._consecutive >= MAX_CONSECUTIVE_FAILURES and self.records_seen <= len(self.rejects):
            raise ParserGaveUp(
                f"{MAX_CONSECUTIVE_FAILURES} consecutive bad records up to {locator}; "
                "the file does not look like this format"
            )

    def reject_bulk(self, rows) -> None:
        """Records many rejects at once (vectorised parsers): rows of
        (locator, reason, excerpt, detail). Gives up when nothing at all parsed and
        at least MAX_CONSECUTIVE_FAILURES records failed."""
        from forensics.errors import ParserGaveUp

        for locator, reason, excerpt, detail in rows:
            if isinstance(excerpt, bytes):
                excerpt = excerpt[:EXCERPT_CHARS].decode("utf-8", errors="backslashreplace")
            self.rejects.append(
                Reject(locator, reason, (excerpt or "")[:EXCERPT_CHARS], (detail or "")[:500])
            )
        if self.records_seen == 0 and len(self.rejects) >= MAX_CONSECUTIVE_FAILURES:
            first = self.rejects[0].locator
            raise ParserGaveUp(
                f"no record readable, {len(self.rejects)} bad from {first} on; "
                "the file does not look like this format"
            )

    def accepted(self, n: int = 1) -> None:
        """Counts n good records (resets the consecutive-failure run)."""
        self.records_seen += n
        self._consecutive = 0


# ---------------------------------------------------------------- parsers and registry


class Parser:
    """Base of every parser. Subclasses set name/version/kind/signature and write `parse`.

    `tables` maps table names to DDL the parser needs beyond the core schema; the case
    creates them on open. `kind` is the evidence kind users see (e.g. `ocpp_log`, `pcap`).
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    kind: ClassVar[str]
    description: ClassVar[str] = ""
    signature: ClassVar[Signature]
    tables: ClassVar[dict[str, str]] = {}
    # Non-record files (inventory, manifest) are small and parsed whole.
    priority: ClassVar[int] = 0  # higher wins a tie in detection; inventory before logs

    def parse(self, src: Source, sink: Sink) -> None:  # pragma: no cover - interface
        raise NotImplementedError


_REGISTRY: dict[str, type[Parser]] = {}


def register(cls: type[Parser]) -> type[Parser]:
    """Class decorator: adds a parser to the registry; a duplicate name is a bug."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"parser name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def registry() -> dict[str, type[Parser]]:
    """All registered parsers (importing forensics.parsers loads the built-in ones)."""
    import forensics.parsers  # noqa: F401  (side effect: registration)

    return dict(_REGISTRY)


def detect(fh: FileHead, forced: str | None = None) -> type[Parser] | None:
    """Best-scoring parser for a file head, or the forced one; None when nothing matches."""
    parsers = registry()
    if forced:
        if forced not in parsers:
            from forensics.errors import UsageError

            raise UsageError(
                f"unknown format {forced!r} for {fh.name}",
                hint="`forensics formats` lists the names",
            )
        return parsers[forced]
    best: tuple[int, int, str] | None = None
    for name, cls in parsers.items():
        s = cls.signature.score(fh)
        if s > 0 and (best is None or (s, cls.priority) > best[:2]):
            best = (s, cls.priority, name)
    return parsers[best[2]] if best else None
