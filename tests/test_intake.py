"""Safe bundle intake: archives, nesting, hostile members, caps. Real zip/tar files."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile

import pytest

from forensics import intake
from forensics.errors import IntakeError

LOG = b'{"ts": "2026-06-01T12:00:00Z", "charger_id": "CP-1", "frame": [2, "1", "Heartbeat", {}]}\n'


def tar_bytes(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_nested_archives_are_unpacked_with_bundle_paths(tmp_path):
    inner = tar_bytes({"logs/cp1.jsonl": LOG})
    outer = tmp_path / "bundle.zip"
    with zipfile.ZipFile(outer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("chargers.csv", "charger_id,site\nCP-1,a\n")
        zf.writestr("site/logs.tar.gz", inner)
    files = intake.collect([outer], tmp_path / "work")
    assert sorted(f.display for f in files) == ["chargers.csv", "site/logs.tar.gz!/logs/cp1.jsonl"]
    nested = next(f for f in files if f.display.endswith("cp1.jsonl"))
    assert nested.path.read_bytes() == LOG
    assert nested.path.resolve().is_relative_to((tmp_path / "work").resolve())


def test_traversal_and_links_are_refused_and_listed(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name in ("../../etc/passwd", "/abs/file", "ok.jsonl"):
            info = tarfile.TarInfo(name)
            info.size = len(LOG)
            tf.addfile(info, io.BytesIO(LOG))
        link = tarfile.TarInfo("link")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/shadow"
        tf.addfile(link)
    bundle = tmp_path / "evil.tar"
    bundle.write_bytes(buf.getvalue())
    files = {f.display: f for f in intake.collect([bundle], tmp_path / "work")}
    assert files["ok.jsonl"].path is not None
    assert "outside the case folder" in files["../../etc/passwd"].refused
    assert "outside the case folder" in files["/abs/file"].refused
    assert "link" in files["link"].refused
    assert not (tmp_path / "etc").exists()


def test_zip_bomb_ratio_is_refused(tmp_path):
    bundle = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", b"\0" * (8 << 20))
        zf.writestr("ok.jsonl", LOG)
    files = {f.display: f for f in intake.collect([bundle], tmp_path / "work")}
    assert "compression ratio" in files["zeros.bin"].refused
    assert files["ok.jsonl"].path is not None


def test_member_cap_and_depth_cap(tmp_path):
    bundle = tmp_path / "many.zip"
    with zipfile.ZipFile(bundle, "w") as zf:
        for n in range(5):
            zf.writestr(f"f{n}.txt", "x")
    with pytest.raises(IntakeError, match="more than 3 members"):
        intake.collect([bundle], tmp_path / "w1", intake.Limits(max_members=3))
    data = LOG
    for level in range(4):
        data = tar_bytes({f"level{level}.tar.gz" if level else "deep.jsonl": data})
    deep = tmp_path / "deep.tar.gz"
    deep.write_bytes(data)
    files = intake.collect([deep], tmp_path / "w2", intake.Limits(max_depth=2))
    assert len(files) == 1 and "nested deeper than 2" in files[0].refused


def test_folder_symlinks_are_not_followed(tmp_path):
    root = tmp_path / "dir"
    root.mkdir()
    (root / "a.jsonl").write_bytes(LOG)
    os.symlink("/etc/hostname", root / "host")
    files = {f.display: f for f in intake.collect([root], tmp_path / "work")}
    assert files["a.jsonl"].path == root / "a.jsonl"
    assert files["host"].path is None and "not followed" in files["host"].refused


def test_corrupt_archive_is_one_refusal(tmp_path):
    bundle = tmp_path / "cut.zip"
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.jsonl", LOG * 200)
    bundle.write_bytes(bundle.read_bytes()[:-60])  # central directory cut off
    files = intake.collect([bundle], tmp_path / "work")
    assert len(files) == 1 and files[0].refused.startswith("unreadable zip archive")


def test_missing_input_is_an_intake_error(tmp_path):
    with pytest.raises(IntakeError, match="no such file"):
        intake.collect([tmp_path / "nope.zip"], tmp_path / "work")


def test_ingest_leaves_the_python_runtime_as_it_found_it(tmp_path, monkeypatch):
    """Ingest tunes Python's collector (objects of the imports frozen, rare young
    collections) and thread switching for bulk work only while it runs: a long-lived caller
    (batch over hundreds of bundles) gets its own settings back, after a good ingest and
    after one that failed."""
    import gc
    import sys
    from pathlib import Path

    from forensics import ingest

    before = (gc.get_threshold(), sys.getswitchinterval())
    seen = []
    orig = ingest._ingest

    def spy(*a, **k):
        seen.append((gc.get_threshold()[0], gc.get_freeze_count(), sys.getswitchinterval()))
        if len(seen) == 2:
            raise RuntimeError("parser blew up")
        return orig(*a, **k)

    monkeypatch.setattr(ingest, "_ingest", spy)
    bundle = Path(__file__).resolve().parent.parent / "sample_traces" / "healthy"
    ingest.ingest([bundle], tmp_path / "case.duckdb", tmp_path / "work")
    assert (gc.get_threshold(), sys.getswitchinterval()) == before and not gc.get_freeze_count()
    with pytest.raises(RuntimeError):
        ingest.ingest([bundle], tmp_path / "case2.duckdb", tmp_path / "w2")
    assert (gc.get_threshold(), sys.getswitchinterval()) == before and not gc.get_freeze_count()
    assert [s[0] for s in seen] == [ingest.GC_YOUNG_THRESHOLD] * 2 and all(s[1] for s in seen)
    assert all(abs(s[2] - ingest.SWITCH_INTERVAL_S) < 1e-9 for s in seen)
