"""A reading's field crossing a level: the shared machinery of the level rule kinds.

``battery`` (a cover sensor's battery running low) and ``water_level`` (a
well about to overflow) are the same rule on different fields: a case opens
when the field crosses its level, stays one case while the field stays past
it (its severity raised once past a second level), and is repaired when the
field is back past the level by a hysteresis margin, so a value wobbling on
the line opens one case, not one a minute (docs/rules.md, "battery",
"water_level"). The kind modules declare the field, the direction and the
defaults; this module interprets them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from contract.cases import OfficerAction
from contract.clock import NEVER
from streams.case import CaseRecord, Context, act_on_case, penalty_entry, reading_evidence

if TYPE_CHECKING:
    from contract.reading import Reading
    from registry.devices import Device

__all__ = ["LevelRule", "LevelRules", "LevelState"]


@dataclass(frozen=True, slots=True)
class LevelRules:
    field: str = ""
    rule: str = ""
    below: bool = False
    """True: the case is about the value falling to the level (battery); False: rising to it."""
    level: float = 0.0
    hysteresis: float = 0.0
    severity: str = "minor"
    critical_level: float | None = None
    """Past this the case is raised to critical (None: never)."""
    penalty_yuan: int = 0
    payer_type: str = "property_unit"


@dataclass(slots=True)
class LevelState:
    max_ts: int = NEVER
    case: CaseRecord | None = None


class LevelRule:
    def __init__(self, rules: LevelRules, kind: str) -> None:
        self.rules = rules
        self.kind = kind

    def _past(self, value: float, level: float) -> bool:
        return value <= level if self.rules.below else value >= level

    def new_state(self, dev: Device) -> LevelState:
        return LevelState()

    def on_reading(self, st: LevelState, r: Reading, dev: Device, ctx: Context) -> bool:
        value = r.fields.get(self.rules.field)
        if r.ts <= st.max_ts or not isinstance(value, int | float) or isinstance(value, bool):
            return False
        st.max_ts = r.ts
        rules = self.rules
        ev = reading_evidence(r)
        if st.case is None:
            if self._past(value, rules.level):
                critical = rules.critical_level is not None and self._past(
                    value, rules.critical_level
                )
                st.case = CaseRecord(
                    case_id=f"{rules.rule}:{dev.device_id}:{r.ts}", rule=rules.rule, opened_at=r.ts,
                    severity="critical" if critical else rules.severity, evidence=[ev],
                    extra={rules.field: value, "level": rules.level, "worst": value},
                )  # fmt: skip
                ctx.out.append(st.case.event(dev, r.ts))
                if rules.penalty_yuan:
                    ctx.out.append(penalty_entry(dev, st.case.case_id, "penalty", rules.rule,
                                                 rules.payer_type, rules.penalty_yuan, r.ts, [ev]))  # fmt: skip
            return True
        case = st.case
        back = rules.level + rules.hysteresis if rules.below else rules.level - rules.hysteresis
        if not self._past(value, back):
            case.end("repaired", r.ts, "reading")
            case.extra[rules.field] = value
            ctx.out.append(case.event(dev, r.ts, [ev]))
            st.case = None
            return True
        worse = value < case.extra["worst"] if rules.below else value > case.extra["worst"]
        if worse:
            case.extra["worst"] = value
            case.extra[rules.field] = value
            if (
                rules.critical_level is not None
                and case.severity != "critical"
                and self._past(value, rules.critical_level)
            ):
                case.severity = "critical"  # rising past the second level: raised, once
                ctx.out.append(case.event(dev, r.ts, [ev]))
        return True

    def next_due(self, st: LevelState, dev: Device) -> int | None:
        return None

    def on_clock(self, st: LevelState, due: int, dev: Device, ctx: Context) -> None:
        return None

    def on_action(self, st: LevelState, a: OfficerAction, dev: Device, ctx: Context) -> bool:
        handled, st.case = act_on_case(st.case, a, dev, ctx)
        return handled

    def export(self, st: LevelState) -> dict[str, Any]:
        return {"max_ts": st.max_ts, "case": None if st.case is None else st.case.to_dict()}

    def restore(self, dev: Device, d: dict[str, Any]) -> LevelState:
        return LevelState(max_ts=d["max_ts"], case=CaseRecord.from_dict(d["case"]))
