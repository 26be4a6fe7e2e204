"""Overloaded trucks, 超载超限 (docs/rules.md#overload): 30,000 to the loading district and 30,000
to the owner district, one case per weighing.

A weigh-in-motion station reports each truck that crosses it: plate, axles, gross weight
(docs/contracts.md, "Vehicles"). The legal gross weight is the vehicle's own
(``gross_limit_kg`` in the fleet file) or GB 1589-2016's limit for the axles the station
counted (``gross_limits_kg``, as data here); a weighing above it by more than the city's
``tolerance_pct`` (the scale's error) is an overload. The loading district is that of the
loading site of the truck's current trip, from its own track (streams/muck.py); a truck whose
trip began nowhere the fleet knows pays only the owner district's half, and the case says why.
A plate the fleet does not know is a case without money (no owner to book).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from contract import rules as rule_ids
from contract.cases import OfficerAction
from contract.clock import NEVER, LocalClock
from foundation.cityfile import Section
from registry.fleet import Fleet, empty_fleet
from streams.case import CaseRecord, Context, penalty_entry, reading_evidence

if TYPE_CHECKING:
    from contract.reading import Reading
    from registry.devices import Device

SECTION = "overload"
KIND = "weighstation"
RULE_IDS = (rule_ids.OVERLOAD,)
RULE = rule_ids.OVERLOAD

GB1589_GROSS_LIMITS_KG = {2: 18_000, 3: 25_000, 4: 31_000, 5: 43_000, 6: 49_000}
"""GB 1589-2016, 4.3: the largest permitted gross mass of a goods vehicle (or combination) by
axle count: two axles 18 t, three 25 t, four 31 t, five 43 t, six and more 49 t."""


@dataclass(frozen=True, slots=True)
class OverloadRules:
    """docs/rules.md "overload"."""

    penalty_yuan: int = 30_000
    """Booked to each of the two districts."""
    tolerance_pct: float = 5.0
    """Weighings up to this much over the limit are the scale's error, not an overload."""
    gross_limits_kg: dict[int, int] = field(default_factory=lambda: dict(GB1589_GROSS_LIMITS_KG))

    def limit_kg(self, axles: int) -> int | None:
        """The legal gross mass for ``axles``; beyond the table, its largest axle count's."""
        table = self.gross_limits_kg
        if axles in table:
            return table[axles]
        if table and axles > max(table):
            return table[max(table)]
        return None


Settings = OverloadRules


def parse(m: Section) -> OverloadRules:
    d = OverloadRules()
    limits = dict(d.gross_limits_kg)
    sub = m.sub("gross_limits_kg")
    if sub is not None:
        for key in sub.keys():
            if not key.isdigit() or not 2 <= int(key) <= 12:
                m.doc.fail(
                    sub.key_node(key),
                    f"{sub.key_path(key)}: expected an axle count 2-12 as the key, got {key!r}",
                )
            limits[int(key)] = sub.whole(key, 0, minimum=1, what="weight in kg")
        sub.finish()
    out = OverloadRules(
        penalty_yuan=m.yuan("penalty_yuan", d.penalty_yuan),
        tolerance_pct=m.number("tolerance_pct", d.tolerance_pct, zero_ok=True),
        gross_limits_kg=dict(sorted(limits.items())),
    )
    m.finish()
    return out


@dataclass(slots=True)
class StationState:
    max_ts: int = NEVER


class OverloadRule:
    kind = KIND

    def __init__(self, rules: OverloadRules, fleet: Fleet) -> None:
        self.rules, self.fleet = rules, fleet
        self.tracks: Any = None
        """The muck-truck rule of the same detector (``bind``): the trips' loading sites."""

    def on_registry(self, registry: Any) -> None:
        self.fleet = getattr(registry, "fleet", None) or empty_fleet()

    def bind(self, rules: dict[str, Any]) -> None:
        self.tracks = rules.get("muck_truck")

    def new_state(self, dev: Device) -> StationState:
        return StationState()

    def on_reading(self, st: StationState, r: Reading, dev: Device, ctx: Context) -> bool:
        f = r.fields
        plate, axles, gross = f.get("plate"), f.get("axles"), f.get("gross_kg")
        if r.ts < st.max_ts or not isinstance(plate, str):
            return False
        if not isinstance(axles, int | float) or not isinstance(gross, int | float):
            return False
        st.max_ts = r.ts
        v = self.fleet.by_plate.get(plate)
        limit = v.gross_limit_kg if v is not None and v.gross_limit_kg else None
        if limit is None:
            limit = self.rules.limit_kg(int(axles))
        if limit is None:
            return True
        allowed = limit * (1 + self.rules.tolerance_pct / 100)
        if gross <= allowed:
            return True
        loading = None
        if v is not None and self.tracks is not None:
            loading = self.tracks.loading_of(plate)
        site, district = loading if loading is not None else (None, None)
        ev = reading_evidence(r)
        rec = CaseRecord(
            case_id=f"{RULE}:{dev.device_id}:{plate}:{r.ts}", rule=RULE, opened_at=r.ts,
            severity="major", evidence=[ev],
            extra={"plate": plate, "axles": axles, "gross_kg": gross, "limit_kg": limit,
                   "over_kg": gross - limit, "over_pct": round((gross / limit - 1) * 100, 1),
                   "loading_site": site, "loading_district": district,
                   "owner_district": None if v is None else v.owner_district,
                   "company": None if v is None else v.company},
        )  # fmt: skip
        if v is None:
            rec.extra["unbooked"] = "plate not in the fleet: no owner district to book"
        elif district is None:
            rec.extra["unbooked"] = "no loading site on the truck's track: loading half not booked"
        rec.end("closed", r.ts, "weighing")
        ctx.out.append(rec.event(dev, r.ts))
        amount = self.rules.penalty_yuan
        if amount and v is not None:
            if district is not None:
                ctx.out.append(penalty_entry(dev, rec.case_id, "loading", RULE,
                                             "district_government", amount, r.ts, [ev],
                                             district=district))  # fmt: skip
            ctx.out.append(penalty_entry(dev, rec.case_id, "owner", RULE, "district_government",
                                         amount, r.ts, [ev], district=v.owner_district))  # fmt: skip
        return True

    def next_due(self, st: StationState, dev: Device) -> int | None:
        return None

    def on_clock(self, st: StationState, due: int, dev: Device, ctx: Context) -> None:
        return None

    def on_action(self, st: StationState, a: OfficerAction, dev: Device, ctx: Context) -> bool:
        return False

    def export(self, st: StationState) -> dict[str, Any]:
        return {"max_ts": st.max_ts}

    def restore(self, dev: Device, d: dict[str, Any]) -> StationState:
        return StationState(max_ts=d["max_ts"])


def build(settings: OverloadRules, clock: LocalClock, registry: Any) -> OverloadRule:
    return OverloadRule(settings, getattr(registry, "fleet", None) or empty_fleet())
