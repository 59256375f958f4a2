"""Batch triage over a folder of bundles with parallel workers; results as Parquet."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import duckdb

from conftest import SAMPLES


def test_batch_folder_of_bundles(tmp_path):
    src = tmp_path / "escalations"
    src.mkdir()
    shutil.copytree(SAMPLES / "healthy", src / "healthy")
    with zipfile.ZipFile(src / "site-outage.zip", "w") as zf:
        for f in (SAMPLES / "site-outage").iterdir():
            zf.write(f, f.name)
    (src / "broken.zip").write_bytes(b"PK\x03\x04 not really a zip")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "forensics", "batch", str(src), "-o", str(out), "-j", "2"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr  # one bundle could not be read
    con = duckdb.connect()
    bundles = con.execute(
        f"SELECT case_id, status FROM '{out}/bundles.parquet' ORDER BY bundle"
    ).fetchall()
    assert bundles == [(None, "error"), ("healthy", "no_failure"), ("site-outage", "cause_found")]
    verdicts = con.execute(
        f"SELECT case_id, scope, subject, cause FROM '{out}/verdicts.parquet'"
    ).fetchall()
    assert verdicts == [("site-outage", "site", "depot-south", "network.site_outage")]
    assert (out / "site-outage" / "findings.json").is_file()
    assert "no readable evidence" in proc.stdout
