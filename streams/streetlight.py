"""Streetlights: dark lamps at night (fault) and leakage current (safety).

Rules-file section ``rules.streetlight`` (docs/rules.md#streetlight). docs/rules.md:

* Lamp fault (``streetlight.fault``, severity minor): a reading whose event
  time is inside the district's lamp-on period (local time; an on-time after
  the off-time spans midnight, the default 18:30 -> 06:30) and that shows no
  light: ``on: false``, or ``current_a`` below ``current_threshold_a``. It is
  repaired by the first reading that shows current again (``current_a`` at or
  above the threshold, or ``on: true`` when the lamp reports no current). A
  dark lamp in the daytime is no fault (and no repair either).
* Leakage (``streetlight.leakage``, severity critical: electric-shock risk):
  ``leakage_ma`` at or above ``leakage_threshold_ma`` opens it at once;
  repaired by a reading below the threshold.
* No money unless the rules file sets ``fault.penalty_yuan`` /
  ``leakage.penalty_yuan``: then ``<case_id>:penalty`` is booked once, when the
  case opens.
* Only readings newer than everything seen from the lamp are judged (the lamp's
  state now is what matters); older ones and redeliveries change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from contract import rules as rule_ids
from contract.cases import COMMON_ACTIONS, PAYER_TYPES, OfficerAction
from contract.clock import NEVER, LocalClock, in_daily_window
from foundation.cityfile import Section
from streams.case import CaseRecord, Context, action_evidence, penalty_entry, reading_evidence

if TYPE_CHECKING:
    from contract.reading import Reading
    from registry.devices import Device

FAULT_RULE = rule_ids.STREETLIGHT_FAULT
LEAKAGE_RULE = rule_ids.STREETLIGHT_LEAKAGE

# --------------------------------------------------------------------------- the plugin (docs/extending.md)

SECTION = "streetlight"
"""This kind's key under ``rules:`` in the rules file (docs/rules.md)."""
KIND = "streetlight"
"""The device kind it judges (``"*"``: every device)."""
RULE_IDS = (rule_ids.STREETLIGHT_FAULT, rule_ids.STREETLIGHT_LEAKAGE)
"""The rule ids its cases and ledger entries carry (contract.rules)."""


@dataclass(frozen=True, slots=True)
class StreetlightRules:
    """docs/rules.md "Streetlight"."""

    on_minute: int = 18 * 60 + 30
    """Local time (minutes after midnight) the lamps should switch on."""
    off_minute: int = 6 * 60 + 30
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


Settings = StreetlightRules


def parse(m: Section) -> StreetlightRules:
    """This kind's section of the rules file (docs/rules.md); every key optional."""
    d = StreetlightRules()
    doc = m.doc
    on, off, per = d.on_minute, d.off_minute, {}
    sched = m.sub("schedule")
    if sched is not None:
        on = sched.time_of_day("on", on)
        off = sched.time_of_day("off", off)
        if on == off:
            doc.fail(
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
                    doc.fail(dm.node, f"{dm.path}: 'on' and 'off' are the same time")
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


@dataclass(slots=True)
class LampState:
    max_ts: int = NEVER
    fault: CaseRecord | None = None
    leakage: CaseRecord | None = None


class StreetlightRule:
    """Dispatch target of the detector for ``streetlight`` devices."""

    kind = "streetlight"

    def __init__(self, rules: StreetlightRules, clock: LocalClock) -> None:
        self.rules = rules
        self.clock = clock
        self.current_threshold = rules.current_threshold_a
        self.leak_threshold = rules.leakage_threshold_ma

    def new_state(self, dev: Device) -> LampState:
        return LampState()

    def should_be_on(self, district: str, ts: int) -> bool:
        on, off = self.rules.schedule_for(district)
        return in_daily_window(self.clock.minute_of_day(ts), on, off)

    def on_reading(self, st: LampState, r: Reading, dev: Device, ctx: Context) -> bool:
        ts = r.ts
        if ts <= st.max_ts:
            return False
        st.max_ts = ts
        f = r.fields
        cur = f.get("current_a")
        on = f.get("on")
        if cur is not None:
            lit = cur >= self.current_threshold and on is not False
        else:
            lit = on is True
        dark = on is False or (cur is not None and cur < self.current_threshold)
        if st.fault is not None:
            if lit:
                st.fault.end("repaired", ts, "reading")
                ctx.out.append(st.fault.event(dev, ts, [reading_evidence(r)]))
                st.fault = None
        elif dark and self.should_be_on(dev.district, ts):
            st.fault = self._open(FAULT_RULE, "minor", r, dev, ctx, self.rules.fault_penalty_yuan,
                                  self.rules.fault_payer_type, {"schedule": self._schedule_text(dev)})  # fmt: skip
        leak = f.get("leakage_ma")
        if leak is not None:
            if leak >= self.leak_threshold:
                if st.leakage is None:
                    st.leakage = self._open(
                        LEAKAGE_RULE,
                        "critical",
                        r,
                        dev,
                        ctx,
                        self.rules.leakage_penalty_yuan,
                        self.rules.leakage_payer_type,
                        {"leakage_ma": leak, "threshold_ma": self.leak_threshold},
                    )
            elif st.leakage is not None:
                st.leakage.end("repaired", ts, "reading")
                ctx.out.append(st.leakage.event(dev, ts, [reading_evidence(r)]))
                st.leakage = None
        return True

    def _schedule_text(self, dev: Device) -> str:
        on, off = self.rules.schedule_for(dev.district)
        return f"{on // 60:02d}:{on % 60:02d}-{off // 60:02d}:{off % 60:02d}"

    def _open(
        self, rule: str, severity: str, r: Reading, dev: Device, ctx: Context,
        penalty: int, payer_type: str, extra: dict[str, Any],
    ) -> CaseRecord:  # fmt: skip
        ev = reading_evidence(r)
        rec = CaseRecord(
            case_id=f"{rule}:{dev.device_id}:{r.ts}", rule=rule, opened_at=r.ts,
            severity=severity, evidence=[ev], extra=extra,
        )  # fmt: skip
        ctx.out.append(rec.event(dev, r.ts))
        if penalty:
            ctx.out.append(
                penalty_entry(dev, rec.case_id, "penalty", rule, payer_type, penalty, r.ts, [ev])
            )
        return rec

    def next_due(self, st: LampState, dev: Device) -> int | None:
        return None

    def on_clock(self, st: LampState, due: int, dev: Device, ctx: Context) -> None:
        return None

    def on_action(self, st: LampState, a: OfficerAction, dev: Device, ctx: Context) -> bool:
        """ack/close/note on the leakage case first (it is the dangerous one), else the fault."""
        if a.action not in COMMON_ACTIONS:
            return False
        for attr in ("leakage", "fault"):
            rec: CaseRecord | None = getattr(st, attr)
            if rec is not None and (a.case_id is None or a.case_id == rec.case_id):
                if rec.apply(a):
                    ctx.out.append(rec.event(dev, a.at, [action_evidence(a)]))
                    if not rec.is_open:
                        setattr(st, attr, None)
                return True
        return False

    def export(self, st: LampState) -> dict[str, Any]:
        return {
            "max_ts": st.max_ts,
            "fault": None if st.fault is None else st.fault.to_dict(),
            "leakage": None if st.leakage is None else st.leakage.to_dict(),
        }

    def restore(self, dev: Device, d: dict[str, Any]) -> LampState:
        return LampState(
            max_ts=d["max_ts"],
            fault=CaseRecord.from_dict(d["fault"]),
            leakage=CaseRecord.from_dict(d["leakage"]),
        )


def build(settings: StreetlightRules, clock: LocalClock, registry: Any) -> StreetlightRule:
    """The rule object the detector runs for one partition."""
    return StreetlightRule(settings, clock)
