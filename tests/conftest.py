"""Shared test helpers: build a bundle folder from real file contents, ingest it into a
real case database, and query it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from forensics import ingest, store

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_traces"


def write_bundle(root: Path, files: dict[str, str | bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
    return root


@pytest.fixture
def ingest_files(tmp_path) -> Callable:
    """ingest_files({name: content}, **opts) -> (IngestReport, open case connection)."""
    opened = []

    def run(files: dict[str, str | bytes], **opts):
        bundle = write_bundle(tmp_path / f"bundle{len(opened)}", files)
        db = tmp_path / f"case{len(opened)}.duckdb"
        report = ingest.ingest([bundle], db, tmp_path / f"work{len(opened)}", **opts)
        con = store.connect(db)
        opened.append(con)
        return report, con

    yield run
    for con in opened:
        con.close()


def rows(con, sql: str, params=None) -> list[tuple]:
    return con.execute(sql, params or {}).fetchall()
