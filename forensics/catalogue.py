"""The cause catalogue (queries/causes.toml): ids, channels, fixes, confirming evidence."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files

from forensics.errors import FormatError

CHANNELS = ("backend", "vehicle", "internal")
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Cause:
    id: str
    channel: str
    title: str
    fix: str
    needs: dict[str, str] = field(default_factory=dict)


@cache
def causes() -> dict[str, Cause]:
    """All causes by id; FormatError if the catalogue is malformed."""
    text = (files("forensics.queries") / "causes.toml").read_text(encoding="utf-8")
    doc = tomllib.loads(text)
    out: dict[str, Cause] = {}
    for cid, c in doc.get("causes", {}).items():
        if c.get("channel") not in CHANNELS:
            raise FormatError(f"causes.toml: cause {cid} has channel {c.get('channel')!r}")
        out[cid] = Cause(cid, c["channel"], c["title"], c["fix"], dict(c.get("needs", {})))
    return out


def get(cause_id: str) -> Cause | None:
    return causes().get(cause_id)
