"""Construction noise at a site boundary, by GB 12523-2011 (噪声扰民).

Rules-file section ``rules.noise`` (docs/rules.md#noise). Site monitors send
``noise_db`` (A-weighted). GB 12523-2011 limits a construction site's
boundary to 70 dB(A) by day and 55 dB(A) at night (22:00-06:00), judged as
the equivalent continuous level over 20 minutes, and at night no single
maximum more than 15 dB(A) above the limit. So:

* ``Leq`` over the last ``window`` (20 min) -- ``10·log10(mean(10^(L/10)))``
  of the readings in it, judged once the readings span at least three
  quarters of the window -- above the limit of the period the newest reading
  falls in opens a ``noise`` case (major at night, minor by day);
* at night, a reading above ``night_limit_db + night_peak_over_db`` opens one
  at once (a pour of concrete at 2 a.m. is heard before 20 minutes pass);
* it is repaired when a judged ``Leq`` is back at or below the limit and no
  night peak is in the window. No money by default (``penalty_yuan``).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from contract import rules as rule_ids
from contract.cases import PAYER_TYPES, OfficerAction
from contract.clock import MINUTE_MS, NEVER, LocalClock, in_daily_window
from foundation.cityfile import Section
from streams.case import CaseRecord, Context, act_on_case, penalty_entry, reading_evidence

if TYPE_CHECKING:
    from contract.reading import Reading
    from registry.devices import Device

RULE = rule_ids.NOISE

SECTION = "noise"
KIND = "dust"
"""The site monitors (they measure dust and noise)."""
RULE_IDS = (rule_ids.NOISE,)


@dataclass(frozen=True, slots=True)
class NoiseRules:
    """docs/rules.md "noise" (GB 12523-2011)."""

    day_limit_db: float = 70.0
    night_limit_db: float = 55.0
    night_start: int = 22 * 60
    night_end: int = 6 * 60
    night_peak_over_db: float = 15.0
    window_ms: int = 20 * MINUTE_MS
    penalty_yuan: int = 0
    payer_type: str = "property_unit"


Settings = NoiseRules


def parse(m: Section) -> NoiseRules:
    d = NoiseRules()
    out = NoiseRules(
        day_limit_db=m.number("day_limit_db", d.day_limit_db),
        night_limit_db=m.number("night_limit_db", d.night_limit_db),
        night_start=m.time_of_day("night_start", d.night_start),
        night_end=m.time_of_day("night_end", d.night_end),
        night_peak_over_db=m.number("night_peak_over_db", d.night_peak_over_db, zero_ok=True),
        window_ms=m.duration_ms("window", d.window_ms) or d.window_ms,
        penalty_yuan=m.yuan("penalty_yuan", d.penalty_yuan),
        payer_type=m.choice("payer_type", d.payer_type, PAYER_TYPES),
    )
    m.finish()
    return out


@dataclass(slots=True)
class NoiseState:
    max_ts: int = NEVER
    window: deque[tuple[int, float]] = field(default_factory=deque)
    case: CaseRecord | None = None


def leq(levels: list[float]) -> float:
    """The equivalent continuous level of equally spaced readings, dB."""
    return 10 * math.log10(sum(10 ** (x / 10) for x in levels) / len(levels))


class NoiseRule:
    kind = "dust"

    def __init__(self, rules: NoiseRules, clock: LocalClock) -> None:
        self.rules, self.clock = rules, clock

    def new_state(self, dev: Device) -> NoiseState:
        return NoiseState()

    def _night(self, ts: int) -> bool:
        r = self.rules
        return in_daily_window(self.clock.minute_of_day(ts), r.night_start, r.night_end)

    def on_reading(self, st: NoiseState, r: Reading, dev: Device, ctx: Context) -> bool:
        db = r.fields.get("noise_db")
        if r.ts <= st.max_ts or not isinstance(db, int | float) or isinstance(db, bool):
            return False
        st.max_ts = r.ts
        rules = self.rules
        st.window.append((r.ts, float(db)))
        while st.window and st.window[0][0] <= r.ts - rules.window_ms:
            st.window.popleft()
        night = self._night(r.ts)
        limit = rules.night_limit_db if night else rules.day_limit_db
        peak_at = rules.night_limit_db + rules.night_peak_over_db
        peak = night and db > peak_at
        full = st.window[0][0] <= r.ts - rules.window_ms * 3 // 4
        level = round(leq([x for _, x in st.window]), 1)
        detail = {"period": "night" if night else "day", "leq_db": level if full else None,
                  "limit_db": limit, "window_ms": rules.window_ms, "peak_db": db if peak else None}  # fmt: skip
        if st.case is None:
            if peak or (full and level > limit):
                ev = reading_evidence(r)
                st.case = CaseRecord(
                    case_id=f"{RULE}:{dev.device_id}:{r.ts}", rule=RULE, opened_at=r.ts,
                    severity="major" if night else "minor", evidence=[ev], extra=detail,
                )  # fmt: skip
                ctx.out.append(st.case.event(dev, r.ts))
                if rules.penalty_yuan:
                    ctx.out.append(penalty_entry(dev, st.case.case_id, "penalty", RULE,
                                                 rules.payer_type, rules.penalty_yuan, r.ts, [ev]))  # fmt: skip
            return True
        peaks = night and any(x > peak_at for _, x in st.window)
        if full and level <= limit and not peaks:
            st.case.extra.update(detail)
            st.case.end("repaired", r.ts, "reading")
            ctx.out.append(st.case.event(dev, r.ts, [reading_evidence(r)]))
            st.case = None
        return True

    def next_due(self, st: NoiseState, dev: Device) -> int | None:
        return None

    def on_clock(self, st: NoiseState, due: int, dev: Device, ctx: Context) -> None:
        return None

    def on_action(self, st: NoiseState, a: OfficerAction, dev: Device, ctx: Context) -> bool:
        handled, st.case = act_on_case(st.case, a, dev, ctx)
        return handled

    def export(self, st: NoiseState) -> dict[str, Any]:
        return {"max_ts": st.max_ts, "window": list(map(list, st.window)),
                "case": None if st.case is None else st.case.to_dict()}  # fmt: skip

    def restore(self, dev: Device, d: dict[str, Any]) -> NoiseState:
        return NoiseState(max_ts=d["max_ts"], window=deque((int(t), float(x)) for t, x in d["window"]),
                          case=CaseRecord.from_dict(d["case"]))  # fmt: skip


def build(settings: NoiseRules, clock: LocalClock, registry: Any) -> NoiseRule:
    return NoiseRule(settings, clock)
