"""The rules file: every amount, threshold, grace period and payer as data.

A city edits ``config/rules.yaml`` without touching Python (docs/rules.md). This
module turns it into a frozen ``Rules`` tree and refuses every mistake with
``ConfigError(file, line, message)`` naming the key path and what is allowed,
e.g. ``rules.manhole.grace_hours.main: expected a positive number, got 'two'``.
Unknown keys are refused too (a misspelt key that silently falls back to a
default would quietly change who pays what), with a "did you mean" hint.

Every key is optional; a missing key takes the default, and the defaults are
the city's table in docs/rules.md -- so ``load_rules`` of an empty file equals
``default_rules()``. The schema is documented in ``docs/rules.md`` and, line by
line, in the shipped ``config/rules.yaml``.

Durations are given in the unit their key names (``grace_hours``,
``window_minutes``); they are stored as integer milliseconds. Amounts are
whole yuan (ints: a float amount is an error, not a rounding).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from yaml.nodes import MappingNode, Node

from contract.cases import PAYER_TYPES, ROAD_CLASSES
from contract.clock import DEFAULT_TIMEZONE, HOUR_MS, MINUTE_MS
from contract.kinds import KINDS
from foundation.cityfile import Document, Section
from foundation.errors import read_config_text

__all__ = [
    "HOUR_MS",
    "MINUTE_MS",
    "DustRules",
    "LocalClock",
    "ManholeRules",
    "OfflineRules",
    "Rules",
    "StreetlightRules",
    "default_rules",
    "in_daily_window",
    "load_rules",
    "parse_rules",
]



def _hm(h: int, m: int) -> int:
    return h * 60 + m


@dataclass(frozen=True, slots=True)
class ManholeRules:
    """docs/rules.md "Manhole" and "Accident"."""

    tilt_threshold_deg: float = 15.0
    """A cover is abnormal at or above this tilt (or when it reports ``open: true``)."""
    grace_ms: dict[str, int] = field(
        default_factory=lambda: {"default": 2 * HOUR_MS, "main": 2 * HOUR_MS,
                                 "secondary": 2 * HOUR_MS, "other": 2 * HOUR_MS}
    )  # fmt: skip
    """Repair grace per road class; ``default`` for a device without road class."""
    penalty_per_hour_yuan: int = 10_000
    payer_type: str = "property_unit"
    normal_run: int = 1
    """How many consecutive normal readings prove a repair (repair time = the first)."""
    accident_district_government_yuan: int = 500_000
    accident_property_unit_yuan: int = 1_000_000

    def grace_for(self, road_class: str | None) -> int:
        g = self.grace_ms
        return g.get(road_class, g["default"]) if road_class else g["default"]


@dataclass(frozen=True, slots=True)
class DustRules:
    """docs/rules.md "Dust"."""

    window_ms: int = 60 * MINUTE_MS
    warning: float = 150.0
    violation: float = 200.0
    recovery_ms: int = 60 * MINUTE_MS
    penalty_yuan: int = 100_000
    payer_type: str = "district_government"
    mode: str = "absolute"
    """``absolute``: judge the site's mean; ``background``: judge site minus district ambient."""
    background_violation: float = 80.0
    background_warning: float | None = 50.0
    background_min_sites: int = 1
    """Other sites of the district with a current mean needed to judge against ambient;
    with fewer, the site is judged on the absolute levels."""
    flatline_readings: int = 30
    """This many identical PM10 readings in a row flag suspected tampering; 0 = off."""


@dataclass(frozen=True, slots=True)
class StreetlightRules:
    """docs/rules.md "Streetlight"."""

    on_minute: int = _hm(18, 30)
    """Local time (minutes after midnight) the lamps should switch on."""
    off_minute: int = _hm(6, 30)
    district_schedule: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Per-district ``(on_minute, off_minute)`` overrides."""
    current_threshold_a: float = 0.05
    """Below this current a lamp counts as drawing no current."""
    leakage_threshold_ma: float = 30.0
    fault_penalty_yuan: int = 0
    fault_payer_type: str = "property_unit"
    leakage_penalty_yuan: int = 0
    leakage_payer_type: str = "property_unit"

    def schedule_for(self, district: str) -> tuple[int, int]:
        s = self.district_schedule.get(district)
        return s if s is not None else (self.on_minute, self.off_minute)


@dataclass(frozen=True, slots=True)
class OfflineRules:
    """docs/rules.md "Offline"."""

    heartbeat_ms: dict[str, int] = field(
        default_factory=lambda: {"dust": 10 * MINUTE_MS, "manhole": 120 * MINUTE_MS,
                                 "streetlight": 30 * MINUTE_MS}
    )  # fmt: skip
    penalty_yuan: int = 0
    payer_type: str = "property_unit"
    dust_working_start: int = _hm(7, 0)
    dust_working_end: int = _hm(20, 0)


@dataclass(frozen=True, slots=True)
class Rules:
    """The whole rules file. Frozen: share one instance; build a new one to change it."""

    timezone: str = DEFAULT_TIMEZONE
    """IANA zone for every local-time rule (lamp schedules, working hours)."""
    manhole: ManholeRules = field(default_factory=ManholeRules)
    dust: DustRules = field(default_factory=DustRules)
    streetlight: StreetlightRules = field(default_factory=StreetlightRules)
    offline: OfflineRules = field(default_factory=OfflineRules)
    source: str | None = field(default=None, compare=False)
    """The file it was loaded from (not part of equality)."""


def default_rules() -> Rules:
    """The city's table of docs/rules.md."""
    return Rules()


# --------------------------------------------------------------------------- local time


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

    def minute_of_day(self, ts_ms: int) -> int:
        bucket = ts_ms // 900_000
        off = self._offsets.get(bucket)
        if off is None:
            delta = datetime.fromtimestamp(bucket * 900, self.tz).utcoffset()
            off = int(delta.total_seconds()) * 1000 if delta is not None else 0
            if len(self._offsets) > 50_000:
                self._offsets.clear()
            self._offsets[bucket] = off
        return ((ts_ms + off) // MINUTE_MS) % 1440

    def next_at(self, ts_ms: int, minute: int) -> int:
        """The first instant >= ``ts_ms`` whose local time is ``minute``:00."""
        dt = datetime.fromtimestamp(ts_ms / 1000, self.tz)
        cand = dt.replace(hour=minute // 60, minute=minute % 60, second=0, microsecond=0)
        if cand < dt:
            cand = (cand.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=self.tz)
        return round(cand.timestamp() * 1000)


# --------------------------------------------------------------------------- loading


def load_rules(path: str | os.PathLike[str]) -> Rules:
    """Load and validate a rules file; ``ConfigError`` with the line on any mistake."""
    name, text = read_config_text(path, "rules file")
    return parse_rules(text, name)


def parse_rules(text: str, file: str = "<rules>") -> Rules:
    """Validate rules YAML given as text (``file`` only names it in errors)."""
    doc = _Parser.parse(text, file)
    if doc.root is None:
        return Rules(source=file)
    return doc.rules(doc.root)


class _Parser(Document):
    """The rules file's schema, section by section (docs/rules.md)."""

    # sections --------------------------------------------------------------

    def rules(self, root: Node) -> Rules:
        top = Section(self, root, "")
        v = top.get("version")
        if v is not None and self.scalar(v) != 1:
            self.fail(
                v, f"version: this citywatch reads rules files of version 1, got {self.describe(v)}"
            )
        tz = DEFAULT_TIMEZONE
        tzn = top.get("timezone")
        if tzn is not None:
            tz = str(self.scalar(tzn))
            try:
                ZoneInfo(tz)
            except (ZoneInfoNotFoundError, ValueError):
                self.fail(
                    tzn,
                    f"timezone: unknown time zone {tz!r}; use an IANA name like 'Asia/Shanghai'",
                )
        body = top.sub("rules")
        top.finish()
        if body is None:
            return Rules(timezone=tz, source=self.file)
        manhole = self.manhole(body.sub("manhole"))
        dust = self.dust(body.sub("dust"))
        street = self.streetlight(body.sub("streetlight"))
        offline = self.offline(body.sub("offline"))
        body.finish()
        return Rules(timezone=tz, manhole=manhole, dust=dust, streetlight=street, offline=offline,
                     source=self.file)  # fmt: skip

    def manhole(self, m: Section | None) -> ManholeRules:
        d = ManholeRules()
        if m is None:
            return d
        tilt = m.number("tilt_threshold_deg", d.tilt_threshold_deg)
        if tilt > 90:
            self.fail(
                m.get("tilt_threshold_deg") or m.node,
                "rules.manhole.tilt_threshold_deg: expected at most 90 degrees",
            )
        grace = dict(d.grace_ms)
        g = m.get("grace_hours")
        if g is not None:
            path = m.key_path("grace_hours")
            if isinstance(g, MappingNode):
                gm = Section(self, g, path)
                for rc in ("default", *ROAD_CLASSES):
                    gv = gm.get(rc)
                    if gv is not None:
                        grace[rc] = round(self.number(gv, gm.key_path(rc)) * HOUR_MS)
                gm.finish()
                for rc in ROAD_CLASSES:  # unspecified classes follow the default
                    if gm.items.get(rc) is None:
                        grace[rc] = grace["default"]
            else:
                ms = round(self.number(g, path) * HOUR_MS)
                grace = dict.fromkeys(("default", *ROAD_CLASSES), ms)
        accident = m.sub("accident")
        acc_d, acc_p = d.accident_district_government_yuan, d.accident_property_unit_yuan
        if accident is not None:
            acc_d = accident.yuan("district_government_yuan", acc_d)
            acc_p = accident.yuan("property_unit_yuan", acc_p)
            accident.finish()
        out = ManholeRules(
            tilt_threshold_deg=tilt,
            grace_ms=grace,
            penalty_per_hour_yuan=m.yuan("penalty_per_hour_yuan", d.penalty_per_hour_yuan),
            payer_type=m.choice("payer_type", d.payer_type, PAYER_TYPES),
            normal_run=m.whole("normal_run", d.normal_run, minimum=1),
            accident_district_government_yuan=acc_d,
            accident_property_unit_yuan=acc_p,
        )
        m.finish()
        return out

    def dust(self, m: Section | None) -> DustRules:
        d = DustRules()
        if m is None:
            return d
        warning = m.number("warning", d.warning)
        violation = m.number("violation", d.violation)
        if warning > violation:
            self.fail(m.get("warning") or m.node,
                      f"rules.dust.warning: the warning level ({warning:g}) must not be above "
                      f"the violation level ({violation:g})")  # fmt: skip
        bg_v, bg_w, bg_min = d.background_violation, d.background_warning, d.background_min_sites
        bg = m.sub("background")
        if bg is not None:
            bg_v = bg.number("violation", bg_v)
            bg_w_node = bg.get("warning")
            if bg_w_node is not None:
                bg_w = self.number(bg_w_node, bg.key_path("warning"))
            elif "warning" in bg.items:  # explicitly null: no warnings in background mode
                bg_w = None
            bg_min = bg.whole("min_sites", bg_min, minimum=1)
            bg.finish()
        out = DustRules(
            window_ms=round(m.number("window_minutes", d.window_ms / MINUTE_MS) * MINUTE_MS),
            warning=warning,
            violation=violation,
            recovery_ms=round(m.number("recovery_minutes", d.recovery_ms / MINUTE_MS) * MINUTE_MS),
            penalty_yuan=m.yuan("penalty_yuan", d.penalty_yuan),
            payer_type=m.choice("payer_type", d.payer_type, PAYER_TYPES),
            mode=m.choice("mode", d.mode, ("absolute", "background")),
            background_violation=bg_v,
            background_warning=bg_w,
            background_min_sites=bg_min,
            flatline_readings=m.whole("flatline_readings", d.flatline_readings),
        )
        m.finish()
        return out

    def streetlight(self, m: Section | None) -> StreetlightRules:
        d = StreetlightRules()
        if m is None:
            return d
        on, off, per = d.on_minute, d.off_minute, {}
        sched = m.sub("schedule")
        if sched is not None:
            on = sched.time_of_day("on", on)
            off = sched.time_of_day("off", off)
            if on == off:
                self.fail(
                    sched.get("off") or sched.node,
                    "rules.streetlight.schedule: 'on' and 'off' are the same time",
                )
            districts = sched.sub("districts")
            if districts is not None:
                for name in list(districts.items):
                    dm = districts.sub(name)
                    assert dm is not None
                    d_on = dm.time_of_day("on", on)
                    d_off = dm.time_of_day("off", off)
                    if d_on == d_off:
                        self.fail(dm.node, f"{dm.path}: 'on' and 'off' are the same time")
                    dm.finish()
                    per[name] = (d_on, d_off)
                districts.finish()
            sched.finish()
        fault = m.sub("fault")
        f_pen, f_pay = d.fault_penalty_yuan, d.fault_payer_type
        if fault is not None:
            f_pen = fault.yuan("penalty_yuan", f_pen)
            f_pay = fault.choice("payer_type", f_pay, PAYER_TYPES)
            fault.finish()
        leak = m.sub("leakage")
        l_pen, l_pay = d.leakage_penalty_yuan, d.leakage_payer_type
        if leak is not None:
            l_pen = leak.yuan("penalty_yuan", l_pen)
            l_pay = leak.choice("payer_type", l_pay, PAYER_TYPES)
            leak.finish()
        out = StreetlightRules(
            on_minute=on,
            off_minute=off,
            district_schedule=per,
            current_threshold_a=m.number("current_threshold_a", d.current_threshold_a),
            leakage_threshold_ma=m.number("leakage_threshold_ma", d.leakage_threshold_ma),
            fault_penalty_yuan=f_pen,
            fault_payer_type=f_pay,
            leakage_penalty_yuan=l_pen,
            leakage_payer_type=l_pay,
        )
        m.finish()
        return out

    def offline(self, m: Section | None) -> OfflineRules:
        d = OfflineRules()
        if m is None:
            return d
        hb = dict(d.heartbeat_ms)
        hbm = m.sub("heartbeat_minutes")
        if hbm is not None:
            for kind in KINDS:
                hb[kind] = round(hbm.number(kind, hb[kind] / MINUTE_MS) * MINUTE_MS)
            hbm.finish()
        start, end = d.dust_working_start, d.dust_working_end
        wh = m.sub("dust_working_hours")
        if wh is not None:
            start = wh.time_of_day("start", start)
            end = wh.time_of_day("end", end)
            if start == end:
                self.fail(
                    wh.node, "rules.offline.dust_working_hours: 'start' and 'end' are the same time"
                )
            wh.finish()
        out = OfflineRules(
            heartbeat_ms=hb,
            penalty_yuan=m.yuan("penalty_yuan", d.penalty_yuan),
            payer_type=m.choice("payer_type", d.payer_type, PAYER_TYPES),
            dust_working_start=start,
            dust_working_end=end,
        )
        m.finish()
        return out
