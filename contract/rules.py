"""Rule ids and their names: the values of the ``rule`` tag everywhere (docs/contracts.md, "Rules").

A case, a ledger entry, an alert and a dashboard panel all name their rule by
one of these ids, and people see the rule by the one Chinese and English name
given here -- in pushes, statements, case statistics and dashboards alike, so
the finance office and the duty officer read the same words for the same money.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BROKER_DROPPED", "PLATFORM_RULES",
    "DUST", "DUST_FLATLINE", "DUST_WARNING", "MANHOLE", "MANHOLE_ACCIDENT",
    "MANHOLE_BATTERY_LOW", "MANHOLE_WATER_LEVEL", "NOISE", "NOTICE_RULES",
    "OFFLINE", "RULES", "STREETLIGHT_CIRCUIT", "STREETLIGHT_DAY_BURNER", "STREETLIGHT_FAULT",
    "STREETLIGHT_LEAKAGE",
    "RuleName", "rule_name",
]  # fmt: skip

MANHOLE = "manhole"
"""A cover open, tilted or gone; its clock books per hour past the grace period."""
MANHOLE_ACCIDENT = "manhole.accident"
"""An accident an officer reported on a manhole case (a ledger rule only)."""
MANHOLE_BATTERY_LOW = "manhole.battery_low"
"""A cover sensor's battery low: maintenance before the sensor dies."""
MANHOLE_WATER_LEVEL = "manhole.water_level"
"""Water high in a well: overflow risk (冒溢)."""
DUST = "dust"
"""A site's 60-minute PM10 mean above its violation level."""
NOISE = "noise"
"""A site's 20-minute equivalent noise level above GB 12523-2011's limit, or a night peak."""
DUST_WARNING = "dust.warning"
"""The same mean above the warning level: a notice, never money."""
DUST_FLATLINE = "dust.flatline"
"""A dust monitor repeating one value: its data is suspect (tampering)."""
STREETLIGHT_FAULT = "streetlight.fault"
"""A lamp dark when it should be lit."""
STREETLIGHT_LEAKAGE = "streetlight.leakage"
"""A lamp leaking current: an electric-shock risk."""
STREETLIGHT_CIRCUIT = "streetlight.circuit"
"""Most lamps of one circuit dark together: a tripped feeder or a cabinet fault, one case."""
STREETLIGHT_DAY_BURNER = "streetlight.day_burner"
"""A lamp lit in daylight for longer than allowed: wasted energy (白天亮灯)."""
OFFLINE = "offline"
"""A device silent past its limit (with the ``suspected_tampering`` flag when it looks deliberate)."""


@dataclass(frozen=True, slots=True)
class RuleName:
    zh: str
    en: str
    kind: str
    """The device kind whose rule module emits it."""


RULES: dict[str, RuleName] = {
    MANHOLE: RuleName("窨井盖异常", "Manhole cover open, tilted or missing", "manhole"),
    MANHOLE_ACCIDENT: RuleName("窨井盖致事故", "Manhole cover accident", "manhole"),
    MANHOLE_BATTERY_LOW: RuleName("井盖传感器电量低", "Cover sensor battery low", "manhole"),
    MANHOLE_WATER_LEVEL: RuleName(
        "窨井水位过高（冒溢风险）", "Manhole water level high (overflow risk)", "manhole"
    ),
    DUST: RuleName("工地扬尘超标", "Construction-site dust violation", "dust"),
    NOISE: RuleName("工地噪声超标", "Construction noise above the limit", "dust"),
    DUST_WARNING: RuleName("工地扬尘预警", "Construction-site dust warning", "dust"),
    DUST_FLATLINE: RuleName("扬尘监测数据异常", "Dust monitor flatline (data suspect)", "dust"),
    STREETLIGHT_FAULT: RuleName("路灯故障", "Streetlight fault", "streetlight"),
    STREETLIGHT_LEAKAGE: RuleName(
        "路灯漏电", "Streetlight leakage (electric-shock risk)", "streetlight"
    ),
    STREETLIGHT_DAY_BURNER: RuleName("路灯白天亮灯", "Streetlight lit in daylight", "streetlight"),
    STREETLIGHT_CIRCUIT: RuleName("路灯回路故障", "Streetlight circuit dark", "streetlight"),
    OFFLINE: RuleName("设备离线", "Device offline", "*"),
}

BROKER_DROPPED = "broker.dropped"
"""The MQTT broker dropped readings it had acknowledged (a platform case, opened by a bridge
from the broker's counters: ingest/broker_stats.py), never money."""

PLATFORM_RULES: dict[str, RuleName] = {
    BROKER_DROPPED: RuleName(
        "消息代理丢弃已确认数据", "MQTT broker dropped acknowledged readings", "broker"
    ),
}
"""Cases about citywatch itself, not a device: no rule kind emits them (kind ``broker``)."""

NOTICE_RULES = frozenset({DUST_WARNING})
"""Notices beside a case (a dust warning next to its violation): never money, not a recurrence."""


def rule_name(rule: str, lang: str = "zh") -> str:
    """The people's name of ``rule``; an id this release does not know shows as itself."""
    name = RULES.get(rule) or PLATFORM_RULES.get(rule)
    if name is None:
        return rule
    return name.zh if lang == "zh" else name.en
