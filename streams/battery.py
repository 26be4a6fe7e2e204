"""A cover sensor's battery running low: a maintenance case before the sensor dies.

Rules-file section ``rules.battery`` (docs/rules.md#battery). A cover whose
sensor dies is a cover nobody watches: its theft would book no penalty until
someone notices. ``battery_pct`` at or below ``level`` opens
``manhole.battery_low`` (minor); it is repaired when a reading shows the
battery above ``level + hysteresis`` (a new battery). No money by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contract import rules as rule_ids
from contract.cases import PAYER_TYPES
from contract.clock import LocalClock
from foundation.cityfile import Section
from streams.levels import LevelRule, LevelRules

SECTION = "battery"
KIND = "manhole"
RULE_IDS = (rule_ids.MANHOLE_BATTERY_LOW,)


@dataclass(frozen=True)
class BatteryRules(LevelRules):
    """docs/rules.md "battery": the city's defaults."""

    field: str = "battery_pct"
    rule: str = rule_ids.MANHOLE_BATTERY_LOW
    below: bool = True
    level: float = 20.0
    hysteresis: float = 10.0
    severity: str = "minor"


Settings = BatteryRules
DEFAULT = BatteryRules()


def parse(m: Section) -> BatteryRules:
    d = DEFAULT
    out = BatteryRules(
        field=d.field,
        rule=d.rule,
        below=True,
        level=m.number("level_pct", d.level, zero_ok=True),
        hysteresis=m.number("hysteresis_pct", d.hysteresis, zero_ok=True),
        severity=d.severity,
        penalty_yuan=m.yuan("penalty_yuan", d.penalty_yuan),
        payer_type=m.choice("payer_type", d.payer_type, PAYER_TYPES),
    )
    m.finish()
    return out


def build(settings: LevelRules, clock: LocalClock, registry: Any) -> LevelRule:
    return LevelRule(settings, KIND)
