"""Time bases of CAN logs: absolute epoch stamps, dates in headers (local time), and logs
that only carry offsets and must be anchored from outside.

All results are integer microseconds since 1970-01-01 UTC. A header date written in local
time is read in the manifest's timezone; without one it is taken as UTC and the evidence
notes say so, so nobody mistakes a guess for a fact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

US = 1_000_000
OLE_EPOCH = datetime(1899, 12, 30)  # TRC $STARTTIME counts days from here
PLAUSIBLE_EPOCH_S = 315_532_800  # 1980-01-01: smaller stamps are offsets, not epoch time

MONTHS = {
    "jan": 1, "feb": 2, "mar": 3, "mär": 3, "apr": 4, "may": 5, "mai": 5, "jun": 6,
    "jul": 7, "aug": 8, "sep": 9, "oct": 10, "okt": 10, "nov": 11, "dec": 12, "dez": 12,
}  # fmt: skip

# "Tue Nov 14 22:13:20.005 2023", "Wed Apr 16 09:21:13.159 am 2014", German month names
_VECTOR_DATE = re.compile(
    r"(?:\w+\s+)?(?P<mon>[A-Za-zä]{3})\w*\s+(?P<day>\d{1,2})\s+"
    r"(?P<h>\d{1,2}):(?P<m>\d{2}):(?P<s>\d{2})(?:\.(?P<frac>\d+))?\s*"
    r"(?:(?P<ampm>[ap]\.?m\.?)\s+)?(?P<year>\d{4})",
    re.IGNORECASE,
)


def parse_seconds_us(text: str) -> int:
    """'1700000000.123456' -> microseconds, exactly; a 7th digit rounds (float reprs)."""
    whole, _, frac = text.strip().partition(".")
    sign = -1 if whole.startswith("-") else 1
    if frac and not frac.isdigit():
        raise ValueError(f"not a decimal fraction: {text!r}")
    up = 1 if len(frac) > 6 and frac[6] >= "5" else 0
    return sign * (abs(int(whole or "0")) * US + int((frac + "000000")[:6]) + up)


@dataclass
class VectorDate:
    """A header date as Vector writes it, with the raw fraction digits for the caller."""

    naive: datetime
    frac_digits: int


def parse_vector_date(text: str) -> VectorDate | None:
    """Reads ASC `date` / `Begin Triggerblock` dates; the fraction is a decimal fraction."""
    m = _VECTOR_DATE.search(text)
    if not m:
        return None
    mon = MONTHS.get(m["mon"][:3].lower())
    if mon is None:
        return None
    hour = int(m["h"])
    if m["ampm"]:
        pm = m["ampm"].lower().startswith("p")
        hour = (hour % 12) + (12 if pm else 0)
    frac = m["frac"] or ""
    micro = int((frac + "000000")[:6]) if frac else 0
    try:
        naive = datetime(int(m["year"]), mon, int(m["day"]), hour, int(m["m"]), int(m["s"]), micro)
    except ValueError:
        return None
    return VectorDate(naive, len(frac))


def ole_days_to_naive(days: float) -> datetime:
    """TRC $STARTTIME (days since 1899-12-30, local time of the PC) -> naive datetime."""
    return OLE_EPOCH + timedelta(microseconds=round(days * 86_400 * US))


def local_to_us(naive: datetime, tz: str | None) -> int:
    """A naive local datetime in zone `tz` (UTC when None) -> epoch microseconds."""
    aware = naive.replace(tzinfo=ZoneInfo(tz) if tz else UTC)
    delta = aware - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * US + delta.microseconds


def iso_to_us(text: str) -> int:
    """An ISO-8601 time from the manifest (`start_time`) -> epoch microseconds (naive = UTC)."""
    dt = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * US + delta.microseconds


def looks_relative(first_ts_us: int) -> bool:
    """True when a stamp is too small to be epoch time (a log of offsets from its start)."""
    return abs(first_ts_us) < PLAUSIBLE_EPOCH_S * US
