"""Reckless muck trucks, 野蛮渣土车 (docs/rules.md#muck_truck): 20,000 yuan to the company per case.

A truck's terminal reports its position, speed and body status (docs/contracts.md,
"Vehicles"); the fleet file (registry/fleet.py) says which truck it is, its permit and the
city's places. Five violations, each judged on the truck's own track in event time:

- ``muck.speeding``: faster than the limit where it is (the lowest of its zones' limits,
  else ``default_speed_limit_kmh``) by more than ``speed_tolerance_kmh``, for ``speeding_for``;
- ``muck.off_hours``: moving outside its permit's hours for longer than ``off_hours_tolerance``;
- ``muck.off_route``: moving outside every corridor of its permit's routes, and outside every
  site, for longer than ``off_route_tolerance``;
- ``muck.cover_open``: moving loaded with the load cover open for ``cover_open_for``;
- ``muck.dumping``: the body lifted outside an approved disposal site (tipping by the road).

One case per trip and kind of violation (decision 013): a trip begins when the truck enters a
loading site, and a violation that stops and starts again within the trip is the same case.
A case is booked when it opens and is over (``repaired``) when its condition ends; the next
trip's violation is a new case. The trip's loading site and district are what an overload
weighing books against (streams/overload.py reads them through ``loading_of``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from contract import rules as rule_ids
from contract.cases import PAYER_TYPES, OfficerAction
from contract.clock import MINUTE_MS, NEVER, LocalClock, in_daily_window
from foundation.cityfile import Section
from registry.fleet import Fleet, Vehicle, empty_fleet
from streams.case import CaseRecord, Context, act_on_case, penalty_entry

if TYPE_CHECKING:
    from contract.reading import Reading
    from registry.devices import Device

SECTION = "muck_truck"
KIND = "vehicle"
RULE_IDS = (
    rule_ids.MUCK_SPEEDING, rule_ids.MUCK_OFF_HOURS, rule_ids.MUCK_OFF_ROUTE,
    rule_ids.MUCK_COVER_OPEN, rule_ids.MUCK_DUMPING,
)  # fmt: skip
VIOLATIONS = ("speeding", "off_hours", "off_route", "cover_open", "dumping")
"""The violation kinds, in judging order; the rule id is ``muck.<violation>``."""
_RULE = dict(zip(VIOLATIONS, RULE_IDS, strict=True))
DAY_MS = 86_400_000
S = 1000


@dataclass(frozen=True, slots=True)
class MuckRules:
    """docs/rules.md "muck_truck"."""

    penalty_yuan: int = 20_000
    payer_type: str = "property_unit"
    default_speed_limit_kmh: float = 60.0
    speed_tolerance_kmh: float = 5.0
    speeding_for_ms: int = 30 * S
    moving_kmh: float = 5.0
    off_hours_tolerance_ms: int = 10 * MINUTE_MS
    off_route_tolerance_ms: int = 5 * MINUTE_MS
    cover_open_for_ms: int = 1 * MINUTE_MS
    loaded_kg: float = 1000.0


Settings = MuckRules


def parse(m: Section) -> MuckRules:
    d = MuckRules()
    out = MuckRules(
        penalty_yuan=m.yuan("penalty_yuan", d.penalty_yuan),
        payer_type=m.choice("payer_type", d.payer_type, PAYER_TYPES),
        default_speed_limit_kmh=m.number("default_speed_limit_kmh", d.default_speed_limit_kmh),
        speed_tolerance_kmh=m.number("speed_tolerance_kmh", d.speed_tolerance_kmh, zero_ok=True),
        speeding_for_ms=_dur(m, "speeding_for", d.speeding_for_ms),
        moving_kmh=m.number("moving_kmh", d.moving_kmh),
        off_hours_tolerance_ms=_dur(m, "off_hours_tolerance", d.off_hours_tolerance_ms),
        off_route_tolerance_ms=_dur(m, "off_route_tolerance", d.off_route_tolerance_ms),
        cover_open_for_ms=_dur(m, "cover_open_for", d.cover_open_for_ms),
        loaded_kg=m.number("loaded_kg", d.loaded_kg),
    )
    m.finish()
    return out


def _dur(m: Section, key: str, default: int) -> int:
    v = m.duration_ms(key, default, zero_ok=True)
    return default if v is None else v


class LocalDays:
    """The city's local date of an instant, ``YYYY-MM-DD`` (permits are valid per day; an
    illegal-operation case is one per day). Cached per day: the hot path is a dict lookup."""

    __slots__ = ("clock", "_days")

    def __init__(self, clock: LocalClock) -> None:
        self.clock = clock
        self._days: dict[int, str] = {}

    def __call__(self, ts: int) -> str:
        idx = (ts + self.clock.offset_ms(ts)) // DAY_MS
        day = self._days.get(idx)
        if day is None:
            day = date.fromordinal(719_163 + idx).isoformat()
            if len(self._days) > 10_000:
                self._days.clear()
            self._days[idx] = day
        return day


def point_evidence(r: Reading) -> dict[str, Any]:
    """A track point as evidence: where, when, how fast, and what the truck's body said."""
    f = r.fields
    ev: dict[str, Any] = {
        "type": "track",
        "device": r.device,
        "ts": r.ts,
        "received_at": r.received_at,
    }
    for k in ("lat", "lon", "speed_kmh", "heading_deg", "cover_closed", "body_lifted", "load_kg"):
        if k in f:
            ev[k] = f[k]
    return ev


@dataclass(slots=True)
class TruckState:
    max_ts: int = NEVER
    trip: int = NEVER
    """The trip's start: when the truck entered its loading site (or its first report)."""
    site: str | None = None
    """The site the truck is in now."""
    loading_site: str | None = None
    loading_district: str | None = None
    loaded: bool = False
    since: dict[str, int] = field(default_factory=dict)
    """Violation -> the start of its current run (its condition true since)."""
    first: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Violation -> the track point that started the run (evidence)."""
    booked: list[str] = field(default_factory=list)
    """Violations already a case in this trip."""
    cases: dict[str, CaseRecord] = field(default_factory=dict)
    """Violation -> its open case."""


class MuckRule:
    kind = KIND

    def __init__(self, rules: MuckRules, clock: LocalClock, fleet: Fleet) -> None:
        self.rules, self.clock, self.fleet = rules, clock, fleet
        self.loading: dict[str, tuple[str | None, str | None]] = {}
        """Plate -> (loading site, its district) of the truck's current trip: for overload."""
        r = rules
        self._for = {
            "speeding": r.speeding_for_ms, "off_hours": r.off_hours_tolerance_ms,
            "off_route": r.off_route_tolerance_ms, "cover_open": r.cover_open_for_ms, "dumping": 0,
        }  # fmt: skip

    def on_registry(self, registry: Any) -> None:
        self.fleet = getattr(registry, "fleet", None) or empty_fleet()

    def loading_of(self, plate: str) -> tuple[str | None, str | None] | None:
        """The loading site and district of ``plate``'s current trip, None when not seen."""
        return self.loading.get(plate)

    def new_state(self, dev: Device) -> TruckState:
        return TruckState()

    def on_reading(self, st: TruckState, r: Reading, dev: Device, ctx: Context) -> bool:
        v = self.fleet.by_terminal.get(dev.device_id)
        if v is None or r.ts <= st.max_ts:
            return False
        st.max_ts = r.ts
        f = r.fields
        lat, lon = f.get("lat"), f.get("lon")
        if not isinstance(lat, int | float) or not isinstance(lon, int | float):
            return True
        rules = self.rules
        speed = f.get("speed_kmh", 0.0)
        if not isinstance(speed, int | float) or isinstance(speed, bool):
            speed = 0.0
        places = self.fleet.places(lat, lon)
        site = places.site
        sid = None if site is None else site.id
        if site is not None and site.kind == "loading" and st.site != sid:
            self._new_trip(st, v, r.ts, site.id, site.district)
        elif st.trip == NEVER:
            self._new_trip(st, v, r.ts, None, None)
        was = None if st.site is None else self.fleet.sites.get(st.site)
        if was is not None and was.kind == "loading" and sid != st.site:
            st.loaded = True  # left the loading site
        load = f.get("load_kg")
        if isinstance(load, int | float) and not isinstance(load, bool):
            st.loaded = load >= rules.loaded_kg
        lifted = f.get("body_lifted") is True
        permit = v.permit
        approved_dump = (
            site is not None
            and site.kind == "disposal"
            and (permit is None or not permit.sites or site.id in permit.sites)
        )
        st.site = sid
        moving = speed >= rules.moving_kmh
        limit = places.speed_limit(rules.default_speed_limit_kmh)
        now = {
            "speeding": speed > limit + rules.speed_tolerance_kmh,
            "off_hours": moving and permit is not None and permit.hours is not None
            and not in_daily_window(self.clock.minute_of_day(r.ts), *permit.hours),
            "off_route": moving and site is None and permit is not None and bool(permit.routes)
            and not self.fleet.on_route(permit, lat, lon),
            "cover_open": moving and st.loaded and f.get("cover_closed") is False,
            "dumping": lifted and not approved_dump,
        }  # fmt: skip
        if lifted and approved_dump:
            st.loaded = False  # dumped where it should
        for what in VIOLATIONS:
            if now[what]:
                self._violating(st, what, r, dev, v, ctx, speed=speed, limit=limit, site=sid)
            elif what in st.since:
                del st.since[what]
                st.first.pop(what, None)
                rec = st.cases.pop(what, None)
                if rec is not None:
                    rec.end("repaired", r.ts, "reading")
                    ctx.out.append(rec.event(dev, r.ts, [point_evidence(r)]))
        return True

    def _new_trip(
        self, st: TruckState, v: Vehicle, ts: int, site: str | None, district: str | None
    ) -> None:
        st.trip = ts
        st.loading_site, st.loading_district = site, district
        st.loaded = False
        st.booked = []
        self.loading[v.plate] = (site, district)

    def _violating(
        self, st: TruckState, what: str, r: Reading, dev: Device, v: Vehicle, ctx: Context,
        **detail: Any,
    ) -> None:  # fmt: skip
        since = st.since.setdefault(what, r.ts)
        if since == r.ts:
            st.first[what] = point_evidence(r)
        if what in st.booked or r.ts - since < self._for[what]:
            return
        rule = _RULE[what]
        evidence = [st.first[what]] if since != r.ts else []
        evidence.append(point_evidence(r))
        rec = CaseRecord(
            case_id=f"{rule}:{v.plate}:{st.trip}", rule=rule, opened_at=r.ts, severity="major",
            evidence=evidence,
            extra={"plate": v.plate, "company": v.company, "violation": what, "trip": st.trip,
                   "since": since, "loading_site": st.loading_site, **detail},
        )  # fmt: skip
        st.booked.append(what)
        st.cases[what] = rec
        ctx.out.append(rec.event(dev, r.ts))
        if self.rules.penalty_yuan:
            ctx.out.append(
                penalty_entry(
                    dev,
                    rec.case_id,
                    "penalty",
                    rule,
                    self.rules.payer_type,
                    self.rules.penalty_yuan,
                    r.ts,
                    evidence,
                    unit=v.company,
                )  # fmt: skip
            )

    def next_due(self, st: TruckState, dev: Device) -> int | None:
        return None

    def on_clock(self, st: TruckState, due: int, dev: Device, ctx: Context) -> None:
        return None

    def on_action(self, st: TruckState, a: OfficerAction, dev: Device, ctx: Context) -> bool:
        for what, rec in list(st.cases.items()):
            handled, still = act_on_case(rec, a, dev, ctx)
            if handled:
                if still is None:
                    del st.cases[what]
                return True
        return False

    def export(self, st: TruckState) -> dict[str, Any]:
        return {
            "max_ts": st.max_ts, "trip": st.trip, "site": st.site,
            "loading_site": st.loading_site, "loading_district": st.loading_district,
            "loaded": st.loaded, "since": dict(st.since), "first": dict(st.first),
            "booked": list(st.booked), "cases": {k: c.to_dict() for k, c in st.cases.items()},
        }  # fmt: skip

    def restore(self, dev: Device, d: dict[str, Any]) -> TruckState:
        st = TruckState(
            max_ts=d["max_ts"], trip=d["trip"], site=d["site"], loading_site=d["loading_site"],
            loading_district=d["loading_district"], loaded=d["loaded"], since=dict(d["since"]),
            first=dict(d["first"]), booked=list(d["booked"]),
            cases={k: c for k, c in ((k, CaseRecord.from_dict(x)) for k, x in d["cases"].items())
                   if c is not None},
        )  # fmt: skip
        v = self.fleet.by_terminal.get(dev.device_id)
        if v is not None and st.trip != NEVER:
            self.loading[v.plate] = (st.loading_site, st.loading_district)
        return st


def build(settings: MuckRules, clock: LocalClock, registry: Any) -> MuckRule:
    return MuckRule(settings, clock, getattr(registry, "fleet", None) or empty_fleet())
