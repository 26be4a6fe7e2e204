"""Water rising in a well: overflow risk (冒溢), raised while it keeps rising.

Rules-file section ``rules.water_level`` (docs/rules.md#water_level).
``water_level_cm`` at or above ``level_cm`` opens ``manhole.water_level``
(major); at or above ``critical_cm`` the case is raised to critical (a well
about to overflow onto the road, as in a rainstorm); repaired when the level
is back below ``level_cm - hysteresis_cm``. No money by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contract import rules as rule_ids
from contract.cases import PAYER_TYPES
from contract.clock import LocalClock
from foundation.cityfile import Section
from streams.levels import LevelRule, LevelRules

SECTION = "water_level"
KIND = "manhole"
RULE_IDS = (rule_ids.MANHOLE_WATER_LEVEL,)


@dataclass(frozen=True)
class WaterLevelRules(LevelRules):
    """docs/rules.md "water_level": the city's defaults."""

    field: str = "water_level_cm"
    rule: str = rule_ids.MANHOLE_WATER_LEVEL
    below: bool = False
    level: float = 100.0
    hysteresis: float = 10.0
    severity: str = "major"
    critical_level: float | None = 150.0


Settings = WaterLevelRules
DEFAULT = WaterLevelRules()


def parse(m: Section) -> WaterLevelRules:
    d = DEFAULT
    level = m.number("level_cm", d.level)
    critical = m.number("critical_cm", d.critical_level or 0.0)
    if critical < level:
        m.doc.fail(m.get("critical_cm") or m.node,
                   f"{m.key_path('critical_cm')}: {critical:g} is below level_cm ({level:g})")  # fmt: skip
    out = WaterLevelRules(
        field=d.field,
        rule=d.rule,
        below=False,
        level=level,
        hysteresis=m.number("hysteresis_cm", d.hysteresis, zero_ok=True),
        severity=d.severity,
        critical_level=critical,
        penalty_yuan=m.yuan("penalty_yuan", d.penalty_yuan),
        payer_type=m.choice("payer_type", d.payer_type, PAYER_TYPES),
    )
    m.finish()
    return out


def build(settings: LevelRules, clock: LocalClock, registry: Any) -> LevelRule:
    return LevelRule(settings, KIND)
