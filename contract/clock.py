"""The city's time: its zone and the one set of time formatters (docs/contracts.md, "Time").

Every instant in citywatch is epoch milliseconds (UTC). People see local
time in the city's zone: ``DEFAULT_TIMEZONE`` unless the rules file names
another (``timezone:``, docs/rules.md); pass that name to the formatters.
Machines see ISO 8601 in UTC with milliseconds (``iso_utc``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

__all__ = [
    "DEFAULT_TIMEZONE", "NEVER", "LocalClock", "city_zone", "in_daily_window", "iso_local", "iso_utc", "local", "local_datetime",
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
        return (
            datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            + f".{ms % 1000:03d}Z"
        )
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms"


def local(
    ms: int | None, tz: str = DEFAULT_TIMEZONE, fmt: str = "%Y-%m-%d %H:%M", empty: str = ""
) -> str:
    """Local wall time for people (``empty`` for None)."""
    if ms is None:
        return empty
    return local_datetime(ms, tz).strftime(fmt)


def iso_local(ms: int | None, tz: str = DEFAULT_TIMEZONE) -> str:
    """``2026-10-31T23:30:00+08:00`` (milliseconds only when not zero; "" for None)."""
    if ms is None:
        return ""
    return local_datetime(ms, tz).isoformat(timespec="milliseconds" if ms % 1000 else "seconds")


def in_daily_window(minute: int, start: int, end: int) -> bool:
    """Is local ``minute`` in ``[start, end)``? ``start > end`` spans midnight."""
    if start <= end:
        return start <= minute < end
    return minute >= start or minute < end


class LocalClock:
    """Local wall-clock arithmetic for the rules' time zone, cheap enough per event.

    ``minute_of_day`` caches the UTC offset per 15-minute bucket (every zone's
    offset changes on a quarter hour), so the hot path is a dict lookup.
    """

    __slots__ = ("tz", "_offsets")

    def __init__(self, tz_name: str) -> None:
        self.tz = ZoneInfo(tz_name)
        self._offsets: dict[int, int] = {}

    def offset_ms(self, ts_ms: int) -> int:
        """The zone's UTC offset at an instant, in ms (local = ts_ms + offset)."""
        bucket = ts_ms // 900_000
        off = self._offsets.get(bucket)
        if off is None:
            delta = datetime.fromtimestamp(bucket * 900, self.tz).utcoffset()
            off = int(delta.total_seconds()) * 1000 if delta is not None else 0
            if len(self._offsets) > 50_000:
                self._offsets.clear()
            self._offsets[bucket] = off
        return off

    def minute_of_day(self, ts_ms: int) -> int:
        return ((ts_ms + self.offset_ms(ts_ms)) // MINUTE_MS) % 1440

    def next_at(self, ts_ms: int, minute: int) -> int:
        """The first instant >= ``ts_ms`` whose local time is ``minute``:00."""
        dt = datetime.fromtimestamp(ts_ms / 1000, self.tz)
        cand = dt.replace(hour=minute // 60, minute=minute % 60, second=0, microsecond=0)
        if cand < dt:
            cand = (cand.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=self.tz)
        return round(cand.timestamp() * 1000)
