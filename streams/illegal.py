"""Illegal operation (非法营运, docs/rules.md#illegal_operation): 10,000 to the responsible unit,
one case per vehicle and day.

A vehicle of the fleet without a permit valid that day (none, expired, not yet valid) is
operating illegally when it is seen in a control zone (a zone with ``control: true``, e.g.
inside the Fourth Ring): by its own terminal, moving at ``moving_kmh`` or more inside the
zone, or by a plate camera standing in the zone. Either gives the day's one case; the second
sighting of the day books nothing (the case id is ``illegal_operation:<plate>:<day>``, the
day in the city's time zone). A plate the fleet does not know is not judged: a camera sees
every car, and the fleet file is the list of trucks.

The kind judges two device kinds (``KIND``), and the days already booked are partition
state (``export_clock``), so a camera and a terminal in the same detector -- the fleet's
records share one journal key, decision 013 -- book one case between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from contract import rules as rule_ids
from contract.cases import PAYER_TYPES, OfficerAction
from contract.clock import NEVER, LocalClock
from foundation.cityfile import Section
from registry.fleet import Fleet, Vehicle, Zone, empty_fleet
from streams.case import CaseRecord, Context, penalty_entry, reading_evidence
from streams.muck import LocalDays, point_evidence

if TYPE_CHECKING:
    from contract.reading import Reading
    from registry.devices import Device

SECTION = "illegal_operation"
KIND = ("vehicle", "platecam")
RULE_IDS = (rule_ids.ILLEGAL_OPERATION,)
RULE = rule_ids.ILLEGAL_OPERATION
KEEP_DAYS = 3
"""Days booked per plate kept in the partition state (older readings are too late anyway)."""


@dataclass(frozen=True, slots=True)
class IllegalRules:
    """docs/rules.md "illegal_operation"."""

    penalty_yuan: int = 10_000
    payer_type: str = "property_unit"
    moving_kmh: float = 5.0


Settings = IllegalRules


def parse(m: Section) -> IllegalRules:
    d = IllegalRules()
    out = IllegalRules(
        penalty_yuan=m.yuan("penalty_yuan", d.penalty_yuan),
        payer_type=m.choice("payer_type", d.payer_type, PAYER_TYPES),
        moving_kmh=m.number("moving_kmh", d.moving_kmh),
    )
    m.finish()
    return out


@dataclass(slots=True)
class SeenState:
    max_ts: int = NEVER


class IllegalRule:
    kind = "vehicle"

    def __init__(self, rules: IllegalRules, clock: LocalClock, fleet: Fleet) -> None:
        self.rules, self.fleet = rules, fleet
        self.day = LocalDays(clock)
        self.booked: dict[str, list[str]] = {}
        """Plate -> the days it already has a case (the latest ``KEEP_DAYS``)."""
        self._camera_zone: dict[str, Zone | None] = {}

    def on_registry(self, registry: Any) -> None:
        self.fleet = getattr(registry, "fleet", None) or empty_fleet()
        self._camera_zone.clear()

    def new_state(self, dev: Device) -> SeenState:
        return SeenState()

    def _zone_of_camera(self, dev: Device) -> Zone | None:
        if dev.device_id not in self._camera_zone:
            zone = None
            if dev.lat is not None and dev.lon is not None:
                zone = self.fleet.places(dev.lat, dev.lon).control
            self._camera_zone[dev.device_id] = zone
        return self._camera_zone[dev.device_id]

    def on_reading(self, st: SeenState, r: Reading, dev: Device, ctx: Context) -> bool:
        if r.ts < st.max_ts:
            return False  # out of order (two plates at one instant are both judged)
        st.max_ts = r.ts
        f = r.fields
        if dev.kind == "platecam":
            plate = f.get("plate")
            v = self.fleet.by_plate.get(plate) if isinstance(plate, str) else None
        else:
            v = self.fleet.by_terminal.get(dev.device_id)
        if v is None:
            return False
        day = self.day(r.ts)
        if v.permit is not None and v.permit.valid_on(day):
            return False
        if day in self.booked.get(v.plate, ()):
            return False
        if dev.kind == "platecam":
            zone = self._zone_of_camera(dev)
            how, ev = "camera", reading_evidence(r)
        else:
            speed = f.get("speed_kmh", 0)
            lat, lon = f.get("lat"), f.get("lon")
            if not isinstance(speed, int | float) or speed < self.rules.moving_kmh:
                return True
            if not isinstance(lat, int | float) or not isinstance(lon, int | float):
                return True
            zone = self.fleet.places(lat, lon).control
            how, ev = "track", point_evidence(r)
        if zone is None:
            return True
        self._book(v, day, zone, how, ev, r, dev, ctx)
        return True

    def _book(
        self, v: Vehicle, day: str, zone: Zone, how: str, ev: dict[str, Any], r: Reading,
        dev: Device, ctx: Context,
    ) -> None:  # fmt: skip
        days = self.booked.setdefault(v.plate, [])
        days.append(day)
        days.sort()
        del days[:-KEEP_DAYS]
        p = v.permit
        rec = CaseRecord(
            case_id=f"{RULE}:{v.plate}:{day}", rule=RULE, opened_at=r.ts, severity="major",
            evidence=[ev],
            extra={"plate": v.plate, "company": v.company, "day": day, "zone": zone.id,
                   "seen_by": how, "permit": None if p is None else p.number,
                   "permit_valid": None if p is None else [p.valid_from, p.valid_until]},
        )  # fmt: skip
        rec.end("closed", r.ts, how)
        ctx.out.append(rec.event(dev, r.ts))
        if self.rules.penalty_yuan:
            ctx.out.append(
                penalty_entry(
                    dev,
                    rec.case_id,
                    "penalty",
                    RULE,
                    self.rules.payer_type,
                    self.rules.penalty_yuan,
                    r.ts,
                    [ev],
                    district=v.owner_district,
                    unit=v.company,
                )  # fmt: skip
            )

    def next_due(self, st: SeenState, dev: Device) -> int | None:
        return None

    def on_clock(self, st: SeenState, due: int, dev: Device, ctx: Context) -> None:
        return None

    def on_action(self, st: SeenState, a: OfficerAction, dev: Device, ctx: Context) -> bool:
        return False

    def export(self, st: SeenState) -> dict[str, Any]:
        return {"max_ts": st.max_ts}

    def restore(self, dev: Device, d: dict[str, Any]) -> SeenState:
        return SeenState(max_ts=d["max_ts"])

    def export_clock(self) -> dict[str, Any]:
        return {"illegal_operation_days": {p: list(d) for p, d in self.booked.items()}}

    def import_clock(self, d: dict[str, Any]) -> None:
        for plate, days in (d.get("illegal_operation_days") or {}).items():
            merged = sorted(set(self.booked.get(plate, [])) | set(days))
            self.booked[plate] = merged[-KEEP_DAYS:]


def build(settings: IllegalRules, clock: LocalClock, registry: Any) -> IllegalRule:
    return IllegalRule(settings, clock, getattr(registry, "fleet", None) or empty_fleet())
