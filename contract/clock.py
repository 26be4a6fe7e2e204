"""The city's time: its zone and the one set of time formatters (docs/contracts.md, "Time").

Every instant in citywatch is epoch milliseconds (UTC). People see local
time in the city's zone: ``DEFAULT_TIMEZONE`` unless the rules file names
another (``timezone:``, docs/rules.md); pass that name to the formatters.
Machines see ISO 8601 in UTC with milliseconds (``iso_utc``).
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

__all__ = [
    "DEFAULT_TIMEZONE", "NEVER", "city_zone", "iso_local", "iso_utc", "local", "local_datetime",
    "local_minute",
]  # fmt: skip

DEFAULT_TIMEZONE = "Asia/Shanghai"
"""The city's zone when the rules file names none (UTC+8 all year, no DST since 1991)."""

NEVER = -(1 << 62)
"""An instant before any other: "has not happened" in integer state (tables store no None)."""

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000


@lru_cache(maxsize=32)
def city_zone(name: str = DEFAULT_TIMEZONE) -> tzinfo:
    """The ``ZoneInfo`` of an IANA name (cached: formatters run per row of a report)."""
    return ZoneInfo(name)


def local_datetime(ms: int, tz: str = DEFAULT_TIMEZONE) -> datetime:
    return datetime.fromtimestamp(ms / 1000, city_zone(tz))


def iso_utc(ms: int | None) -> str:
    """``2026-11-02T01:02:03.456Z``; ``-`` for None, ``<ms> ms`` for an instant no calendar holds."""
    if ms is None:
        return "-"
    try:
        return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms"


def local(ms: int | None, tz: str = DEFAULT_TIMEZONE, fmt: str = "%Y-%m-%d %H:%M", empty: str = "") -> str:
    """Local wall time for people (``empty`` for None)."""
    if ms is None:
        return empty
    return local_datetime(ms, tz).strftime(fmt)


def iso_local(ms: int | None, tz: str = DEFAULT_TIMEZONE) -> str:
    """``2026-10-31T23:30:00+08:00`` (milliseconds only when not zero; "" for None)."""
    if ms is None:
        return ""
    return local_datetime(ms, tz).isoformat(timespec="milliseconds" if ms % 1000 else "seconds")


def local_minute(ms: int, tz: str = DEFAULT_TIMEZONE) -> int:
    """Minutes after local midnight of an instant."""
    d = local_datetime(ms, tz)
    return d.hour * 60 + d.minute
