"""Bundle intake: turn what the user named (zip, tar, tar.gz, folder, single file, archives
nested in archives) into a flat list of files inside the case's work folder, safely.

Safety: no member lands outside the work folder (absolute names, `..`, drive letters are
refused), links and device files are never followed or created, and caps bound member count,
total bytes, compression ratio and nesting depth. Each refusal is one readable line kept as
a `BundleFile` with `refused` set, so the evidence table lists it; nothing is dropped silently.
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from forensics.errors import IntakeError


@dataclass(frozen=True)
class Limits:
    """Caps on what one bundle may unpack to. Defaults suit field bundles of a few GB."""

    max_members: int = 20_000
    max_total_bytes: int = 32 << 30
    max_ratio: float = 200.0  # uncompressed / compressed, per member, above 1 MiB
    max_depth: int = 4


@dataclass
class BundleFile:
    """One file of a bundle: where it is on disk and how users name it."""

    bundle: str  # the bundle as the user gave it (file or folder name)
    display: str  # path inside the bundle; nested archives joined with '!/'
    path: Path | None  # local file to read; None when refused
    refused: str = ""  # why it was not unpacked
    depth: int = 0


@dataclass
class _Budget:
    limits: Limits
    members: int = 0
    total: int = 0
    used_names: set[str] = field(default_factory=set)

    def take(self, where: str, size: int) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise IntakeError(
                f"{where}: more than {self.limits.max_members} members in the bundle",
                hint="split the bundle, or raise the cap with --max-members",
            )
        self.total += size
        if self.total > self.limits.max_total_bytes:
            raise IntakeError(
                f"{where}: bundle unpacks to more than {self.limits.max_total_bytes >> 20} MiB",
                hint="the archive may be a decompression bomb; check it, then raise --max-gb",
            )


def collect(inputs: list[Path], workdir: Path, limits: Limits | None = None) -> list[BundleFile]:
    """Lists every file of the inputs, unpacking archives into `workdir` (created if needed).

    Raises IntakeError only for a missing input or a blown bundle-wide cap; a refused member
    comes back as a BundleFile with `refused` set.
    """
    limits = limits or Limits()
    workdir.mkdir(parents=True, exist_ok=True)
    out: list[BundleFile] = []
    for n, inp in enumerate(inputs):
        if not inp.exists():
            raise IntakeError(f"{inp}: no such file or folder", hint="check the path")
        budget = _Budget(limits)
        bundle = inp.name
        if inp.is_dir():
            out.extend(_walk_dir(inp, bundle, workdir / f"{n}-{_safe(bundle)}", budget, 0))
        else:
            out.extend(_expand(inp, bundle, "", workdir / f"{n}-{_safe(bundle)}", budget, 0))
    return out


def archive_kind(path: Path) -> str | None:
    """'zip', 'tar', 'tar.gz' or None, by content."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if head.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(path, "rb") as gz:
                inner = gz.read(512)
        except (OSError, EOFError):
            return None
        if len(inner) >= 262 and inner[257:262] == b"ustar":
            return "tar.gz"
    return None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:80] or "_"


def _member_target(dest: Path, name: str) -> Path:
    """Local path for an archive member, or IntakeError if it would escape `dest`."""
    pure = PurePosixPath(name.replace("\\", "/"))
    parts = [p for p in pure.parts if p not in ("", ".")]
    if pure.is_absolute() or any(p == ".." for p in parts) or (parts and ":" in parts[0]):
        raise IntakeError(f"member '{name}' would land outside the case folder")
    target = dest.joinpath(*parts) if parts else dest / "_"
    root = dest.resolve()
    if not str(target.resolve()).startswith(str(root) + os.sep):
        raise IntakeError(f"member '{name}' would land outside the case folder")
    return target


def _expand(
    path: Path, bundle: str, display: str, dest: Path, budget: _Budget, depth: int
) -> Iterator[BundleFile]:
    """Yields the file itself, or the members of the archive it is (recursively).

    `display` is the file's name inside the bundle ("" for the bundle itself).
    """
    kind = archive_kind(path)
    if kind is None:
        yield BundleFile(bundle, display or path.name, path, depth=depth)
        return
    if depth > budget.limits.max_depth:
        reason = f"archives nested deeper than {budget.limits.max_depth} levels"
        yield BundleFile(bundle, display or path.name, None, reason, depth)
        return
    prefix = f"{display}!/" if display else ""
    dest.mkdir(parents=True, exist_ok=True)
    unpack = _unzip if kind == "zip" else _untar
    try:
        members = list(unpack(path, dest, budget, bundle, prefix))
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        reason = f"unreadable {kind} archive: {exc}"
        yield BundleFile(bundle, display or path.name, None, reason, depth)
        return
    for bf in members:
        if bf.path is None:
            bf.depth = depth + 1
            yield bf
        else:
            sub = bf.path.with_name(bf.path.name + ".d")
            yield from _expand(bf.path, bundle, bf.display, sub, budget, depth + 1)


def _unzip(path: Path, dest: Path, budget: _Budget, bundle: str, prefix: str):
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            display = prefix + info.filename
            if info.is_dir():
                continue
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                yield BundleFile(bundle, display, None, "symbolic link, not followed")
                continue
            if info.flag_bits & 0x1:
                yield BundleFile(bundle, display, None, "encrypted member")
                continue
            try:
                target = _member_target(dest, info.filename)
            except IntakeError as exc:
                yield BundleFile(bundle, display, None, str(exc))
                continue
            if (
                info.file_size > (1 << 20)
                and info.compress_size
                and info.file_size / info.compress_size > budget.limits.max_ratio
            ):
                yield BundleFile(
                    bundle,
                    display,
                    None,
                    f"compression ratio {info.file_size / info.compress_size:.0f}:1 "
                    f"above {budget.limits.max_ratio:.0f}:1 (decompression bomb?)",
                )
                continue
            budget.take(f"{bundle}: {display}", info.file_size)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "wb") as dst:
                    _copy_capped(src, dst, info.file_size, f"{bundle}: {display}")
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                yield BundleFile(bundle, display, None, f"corrupt member: {exc}")
                continue
            yield BundleFile(bundle, display, target)


def _untar(path: Path, dest: Path, budget: _Budget, bundle: str, prefix: str):
    with tarfile.open(path, "r:*") as tf:
        for info in tf:
            display = prefix + info.name
            if info.isdir():
                continue
            if info.issym() or info.islnk():
                yield BundleFile(bundle, display, None, "link, not followed")
                continue
            if not info.isfile():
                yield BundleFile(bundle, display, None, "device or special file, not extracted")
                continue
            try:
                target = _member_target(dest, info.name)
            except IntakeError as exc:
                yield BundleFile(bundle, display, None, str(exc))
                continue
            budget.take(f"{bundle}: {display}", info.size)
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(info)
            if src is None:
                yield BundleFile(bundle, display, None, "unreadable member")
                continue
            try:
                with src, open(target, "wb") as dst:
                    _copy_capped(src, dst, info.size, f"{bundle}: {display}")
            except (tarfile.TarError, OSError, EOFError) as exc:
                yield BundleFile(bundle, display, None, f"corrupt member: {exc}")
                continue
            yield BundleFile(bundle, display, target)


def _copy_capped(src, dst, declared: int, where: str) -> None:
    """Copies at most the declared size (+1 byte to notice a lie) of a member."""
    written = 0
    while True:
        chunk = src.read(1 << 20)
        if not chunk:
            break
        written += len(chunk)
        if written > declared + 1:
            raise IntakeError(f"{where}: member larger than its header says")
        dst.write(chunk)


def _walk_dir(root: Path, bundle: str, dest: Path, budget: _Budget, depth: int):
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                yield BundleFile(bundle, rel, None, "symbolic link, not followed")
                continue
            if not full.is_file():
                yield BundleFile(bundle, rel, None, "special file, not read")
                continue
            if archive_kind(full) is None:
                budget.take(f"{bundle}: {rel}", 0)
                yield BundleFile(bundle, rel, full, depth=depth)
            else:
                yield from _expand(full, bundle, rel, dest / _safe(rel), budget, depth + 1)


def clean(workdir: Path) -> None:
    """Removes an unpacked work folder."""
    shutil.rmtree(workdir, ignore_errors=True)
