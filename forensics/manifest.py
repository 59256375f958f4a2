"""`manifest.toml`: case id and title, timezone for local-time logs, default charger, and
per-file overrides (timezone, charger_id, format). Any other key of `[defaults]` or of a
`[files."<path>"]` entry (bitrate, side, modules ...) reaches the parser as context extra,
the per-file value winning."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from forensics.errors import FormatError
from forensics.parsers.base import FileContext


@dataclass
class Manifest:
    case_id: str | None = None
    title: str | None = None
    timezone: str | None = None
    charger_id: str | None = None
    defaults: dict = field(default_factory=dict)  # other [defaults] keys, e.g. bitrate
    files: dict[str, dict] = field(default_factory=dict)
    source: str | None = None  # the manifest's path in the bundle

    def context_for(self, display: str, tz: str | None = None, charger: str | None = None):
        """FileContext for one file: CLI flags > per-file entry > [defaults] / [case]."""
        entry: dict = {}
        for pattern, values in self.files.items():
            if display == pattern or fnmatch(display, pattern) or display.endswith("/" + pattern):
                entry = values
                break
        return FileContext(
            timezone=tz or entry.get("timezone") or self.timezone,
            charger_id=charger or entry.get("charger_id") or self.charger_id,
            format=entry.get("format"),
            extra={
                k: v
                for k, v in (self.defaults | entry).items()
                if k not in {"timezone", "charger_id", "format"}
            },
        )


def is_manifest(display: str) -> bool:
    return display.rsplit("/", 1)[-1].rsplit("!/", 1)[-1].lower() == "manifest.toml"


def load(path: Path, display: str) -> Manifest:
    """Reads a manifest; FormatError names the file and what is wrong."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        at = re.search(r"line (\d+)", str(exc))
        err = FormatError(
            f"{display}: not valid TOML ({exc})", hint="fix the manifest or remove it"
        )
        err.where, err.line = display, int(at.group(1)) if at else None
        raise err from exc
    case = doc.get("case", {})
    defaults = doc.get("defaults", {})
    m = Manifest(
        case_id=case.get("id"),
        title=case.get("title"),
        timezone=case.get("timezone") or defaults.get("timezone"),
        charger_id=defaults.get("charger_id"),
        defaults=dict(defaults),
        files={str(k): dict(v) for k, v in doc.get("files", {}).items()},
        source=display,
    )
    for tz in [m.timezone] + [v.get("timezone") for v in m.files.values()]:
        check_timezone(tz, display)
    return m


def check_timezone(tz: str | None, where: str) -> None:
    """FormatError for a name that is not an IANA timezone."""
    if tz is None:
        return
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise FormatError(
            f"{where}: unknown timezone {tz!r}", hint="use an IANA name such as Europe/Berlin"
        ) from exc
