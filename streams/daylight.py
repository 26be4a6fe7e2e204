"""When a streetlight should be lit: after sunset to before sunrise at the lamp, or a timetable.

Real lamps are switched by photocells or astronomical clocks, so the default
"should be lit" window follows the sun at the lamp's own coordinates
(docs/rules.md, "Streetlight"): from sunset + ``after_sunset`` to sunrise −
``before_sunrise``. Sunrise and sunset come from ``astral`` (NOAA's solar
equations, within a minute at city latitudes) and are cached per ~5 km cell
and local date, so the detector pays a dict lookup per reading. A city that
runs fixed timetables keeps them: ``fixed`` mode with ``on``/``off`` and,
optionally, per month.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from astral import Observer
from astral.sun import sunrise, sunset

from contract.clock import MINUTE_MS, LocalClock, in_daily_window

__all__ = ["MODES", "Schedule", "SunTable"]

MODES = ("sun", "fixed")
_EPOCH = date(1970, 1, 1)
_EPOCH_ORDINAL = _EPOCH.toordinal()
CELL_DEG = 0.05
"""Cache cell (~5 km): sunset moves by about 10 s per 5 km east-west here."""


@dataclass(frozen=True, slots=True)
class Schedule:
    mode: str = "sun"
    after_sunset_ms: int = 15 * MINUTE_MS
    before_sunrise_ms: int = 15 * MINUTE_MS
    on_minute: int = 18 * 60 + 30
    """Fixed mode: local minute the lamps switch on."""
    off_minute: int = 6 * 60 + 30
    months: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Fixed mode: (on, off) per month 1-12 where the timetable changes with the season."""
    latitude: float = 34.7466
    longitude: float = 113.6254
    """Where the sun is reckoned for a lamp the registry gives no coordinates (the city's or
    the district's centre; the default is Zhengzhou's, docs/rules.md)."""

    def describe(self) -> str:
        if self.mode == "sun":
            return (
                f"sunset+{self.after_sunset_ms // MINUTE_MS}min to "
                f"sunrise-{self.before_sunrise_ms // MINUTE_MS}min"
            )

        def hm(m: int) -> str:
            return f"{m // 60:02d}:{m % 60:02d}"

        text = f"{hm(self.on_minute)}-{hm(self.off_minute)}"
        if self.months:
            text += (
                " (by month: "
                + ", ".join(f"{k}: {hm(a)}-{hm(b)}" for k, (a, b) in sorted(self.months.items()))
                + ")"
            )
        return text


class SunTable:
    """Sunrise and sunset (epoch ms) per location cell and local date, computed once.

    The hot path (``should_be_lit`` on a known cell and day) is two dict lookups
    and integer arithmetic: no date object is made unless the day is new.
    """

    def __init__(self, clock: LocalClock) -> None:
        self.clock = clock
        self._cells: dict[tuple[float, float], tuple[int, int]] = {}
        self._cache: dict[tuple[tuple[int, int], int], tuple[int, int]] = {}

    def _cell(self, lat: float, lon: float) -> tuple[int, int]:
        cell = self._cells.get((lat, lon))
        if cell is None:
            cell = self._cells[(lat, lon)] = (round(lat / CELL_DEG), round(lon / CELL_DEG))
        return cell

    def rise_set(self, lat: float, lon: float, day: date) -> tuple[int, int]:
        return self._rise_set(self._cell(lat, lon), day.toordinal() - _EPOCH_ORDINAL)

    def _rise_set(self, cell: tuple[int, int], day_no: int) -> tuple[int, int]:
        key = (cell, day_no)
        hit = self._cache.get(key)
        if hit is None:
            day = date.fromordinal(day_no + _EPOCH_ORDINAL)
            obs = Observer(cell[0] * CELL_DEG, cell[1] * CELL_DEG)
            tz = self.clock.tz
            try:
                rise = sunrise(obs, day, tzinfo=tz)
                down = sunset(obs, day, tzinfo=tz)
                hit = (round(rise.timestamp() * 1000), round(down.timestamp() * 1000))
            except ValueError:  # polar day or night: no sunrise or sunset that date
                noon = datetime(day.year, day.month, day.day, 12, tzinfo=tz)
                mid = round(noon.timestamp() * 1000)
                hit = (mid, mid)  # lit all day: the timetable mode is for such places
            if len(self._cache) > 200_000:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def local_date(self, ts: int) -> date:
        """The lamp's local calendar date at ``ts`` (the city's zone)."""
        return _EPOCH + timedelta(days=(ts + self.clock.offset_ms(ts)) // 86_400_000)

    def should_be_lit(self, s: Schedule, lat: float | None, lon: float | None, ts: int) -> bool:
        """Whether a lamp at (lat, lon) under schedule ``s`` should be lit at ``ts``."""
        if s.mode == "fixed":
            on, off = s.on_minute, s.off_minute
            if s.months:
                on, off = s.months.get(self.local_date(ts).month, (on, off))
            return in_daily_window(self.clock.minute_of_day(ts), on, off)
        if lat is None or lon is None:
            lat, lon = s.latitude, s.longitude
        day_no = (ts + self.clock.offset_ms(ts)) // 86_400_000
        rise, down = self._rise_set(self._cell(lat, lon), day_no)
        return ts < rise - s.before_sunrise_ms or ts >= down + s.after_sunset_ms
