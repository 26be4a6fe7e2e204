"""The rules file: defaults, the shipped file, and every mistake reported with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.clock import LocalClock, in_daily_window
from foundation.errors import ConfigError
from streams.harness import H, M
from streams.rules import default_rules, load_rules, parse_rules

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_rules_file_equals_defaults() -> None:
    assert load_rules(ROOT / "config" / "rules.yaml") == default_rules()


def test_defaults_are_the_citys_table() -> None:
    r = default_rules()
    assert r.manhole.tilt_threshold_deg == 15
    assert {r.manhole.grace_for(rc) for rc in ("main", "secondary", "other", None)} == {2 * H}
    assert r.manhole.penalty_per_hour_yuan == 10_000 and r.manhole.payer_type == "property_unit"
    assert (r.manhole.accident_district_government_yuan, r.manhole.accident_property_unit_yuan) == (
        500_000,
        1_000_000,
    )
    assert (r.dust.window_ms, r.dust.warning, r.dust.violation, r.dust.recovery_ms) == (
        60 * M,
        150,
        200,
        60 * M,
    )
    assert (r.dust.penalty_yuan, r.dust.payer_type) == (100_000, "district_government")
    assert r.streetlight.leakage_threshold_ma == 30 and r.streetlight.fault_penalty_yuan == 0
    assert r.offline.penalty_yuan == 0 and r.timezone == "Asia/Shanghai"


@pytest.mark.parametrize(
    "text", ["", "# only a comment\n", "version: 1\n", "rules: {}\n", "rules:\n  manhole:\n"]
)
def test_empty_file_means_defaults(text: str) -> None:
    assert parse_rules(text) == default_rules()


def test_grace_per_road_class_huaibei() -> None:
    r = parse_rules("rules:\n  manhole:\n    grace_hours: {main: 3, secondary: 5, other: 5}\n")
    assert (r.manhole.grace_for("main"), r.manhole.grace_for("secondary"), r.manhole.grace_for("other")) == (
        3 * H, 5 * H, 5 * H,
    )  # fmt: skip
    assert r.manhole.grace_for(None) == 2 * H


def test_grace_partial_mapping_follows_default() -> None:
    r = parse_rules("rules:\n  manhole:\n    grace_hours: {default: 6, main: 1.5}\n")
    assert (r.manhole.grace_for("main"), r.manhole.grace_for("other"), r.manhole.grace_for(None)) == (
        90 * M, 6 * H, 6 * H,
    )  # fmt: skip


def test_local_times_may_be_unquoted() -> None:
    r = parse_rules("rules:\n  streetlight:\n    schedule:\n      on: 18:00\n      off: 6:45\n")
    assert (r.streetlight.on_minute, r.streetlight.off_minute) == (18 * 60, 6 * 60 + 45)


BAD = [
    (
        "rules:\n  manhole:\n    grace_hours:\n      main: two\n",
        4,
        "rules.manhole.grace_hours.main: expected a positive number, got 'two'",
    ),
    (
        "rules:\n  manhole:\n    grace_hours: -1\n",
        3,
        "rules.manhole.grace_hours: expected a positive number, got -1",
    ),
    (
        "rules:\n  manhole:\n    penalty_per_hour_yuan: 10000.5\n",
        3,
        "rules.manhole.penalty_per_hour_yuan: expected a non-negative whole number of yuan, got 10000.5",
    ),
    ("rules:\n  manhole:\n    penalty_per_hour_yuan: 1e4\n", 3, "whole number of yuan"),
    (
        "rules:\n  manhole:\n    payer_type: property\n",
        3,
        "rules.manhole.payer_type: expected one of district_government, property_unit, got 'property'; "
        "did you mean 'property_unit'?",
    ),
    (
        "rules:\n  manhole:\n    normal_run: 0\n",
        3,
        "rules.manhole.normal_run: expected a positive whole number, got 0",
    ),
    ("rules:\n  manhole:\n    tilt_threshold_deg: yes\n", 3, "got true (a yes/no value)"),
    (
        "rules:\n\n  dust:\n    window_minutes: [60]\n",
        4,
        "rules.dust.window_minutes: expected a positive number, got a list",
    ),
    ("rules:\n  dust:\n    warning: 250\n", 3, "must not be above the violation level"),
    ("rules:\n  dust:\n    mode: backgrund\n", 3, "did you mean 'background'?"),
    (
        "rules:\n  streetlight:\n    schedule:\n      on: '25:00'\n",
        4,
        'rules.streetlight.schedule.on: expected a local time "HH:MM"',
    ),
    ("rules:\n  streetlight:\n    schedule: {on: '18:00', off: '18:00'}\n", 3, "are the same time"),
    (
        "rules:\n  offline:\n    heartbeat_minutes:\n      dust: 0\n",
        4,
        "rules.offline.heartbeat_minutes.dust",
    ),
    ("timezone: Asia/Zhengzhou\n", 1, "unknown time zone"),
    (
        "clock:\n  live_skew: 2\n",
        2,
        "clock.live_skew: unknown key; did you mean 'live_skew_minutes'?",
    ),
    (
        "clock:\n  live_skew_minutes: -1\n",
        2,
        "clock.live_skew_minutes: expected a non-negative number",
    ),
    ("version: 2\n", 1, "version 1"),
    (
        "rules:\n  manhole:\n    grace_hours: 2\n    grace_hours: 3\n",
        4,
        "given twice (first on line 3)",
    ),
    ("rules:\n  manhole: 5\n", 2, "rules.manhole: expected a mapping"),
    ("rules:\n  manhole:\n    grace_hours: [2\n", 4, "not valid YAML"),
]


@pytest.mark.parametrize("text, line, message", BAD)
def test_bad_value_is_config_error_with_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_rules(text, "city-rules.yaml")
    assert exc.value.file == "city-rules.yaml"
    assert exc.value.line == line
    assert message in exc.value.message


@pytest.mark.parametrize(
    "text, line, message",
    [
        (
            "rules:\n  manhole:\n    grace_hour: 2\n",
            3,
            "rules.manhole.grace_hour: unknown key; did you mean 'grace_hours'?",
        ),
        ("rules:\n  dusts: {}\n", 2, "rules.dusts: unknown key; did you mean 'dust'?"),
        ("rule:\n  dust: {}\n", 1, "rule: unknown key; did you mean 'rules'?"),
        ("rules:\n  dust:\n    background:\n      violaton: 80\n", 4, "did you mean 'violation'?"),
        ("rules:\n  manhole:\n    colour: red\n", 3, "unknown key; allowed: tilt_threshold_deg"),
    ],
)
def test_unknown_key_is_refused_with_a_hint(text: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_rules(text, "r.yaml")
    assert exc.value.line == line
    assert message in exc.value.message


def test_str_of_error_is_file_line_column_message(tmp_path: Path) -> None:
    p = tmp_path / "rules.yaml"
    p.write_text("rules:\n  manhole:\n    grace_hours:\n      main: two\n", encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_rules(p)
    assert (
        str(exc.value)
        == f"{p}:4:13: rules.manhole.grace_hours.main: expected a positive number, got 'two'"
    )


def test_missing_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the rules file"):
        load_rules(tmp_path / "nope.yaml")


def test_background_warning_null_disables_warnings() -> None:
    r = parse_rules("rules:\n  dust:\n    mode: background\n    background:\n      warning: null\n")
    assert r.dust.mode == "background" and r.dust.background_warning is None


@pytest.mark.parametrize(
    "minute, start, end, inside",
    [(1110, 1110, 390, True), (389, 1110, 390, True), (390, 1110, 390, False), (720, 1110, 390, False),
     (420, 420, 1200, True), (1200, 420, 1200, False)],
)  # fmt: skip
def test_daily_window_spanning_midnight(minute: int, start: int, end: int, inside: bool) -> None:
    assert in_daily_window(minute, start, end) is inside


def test_local_clock_shanghai() -> None:
    c = LocalClock("Asia/Shanghai")
    ts = 1763776800000  # 2025-11-22T02:00:00Z = 10:00 in Beijing
    assert c.minute_of_day(ts) == 600
    assert c.next_at(ts, 7 * 60) == ts + 21 * H
    assert c.next_at(ts, 10 * 60) == ts


def test_the_live_clock_skew_is_the_rules_file_s() -> None:
    """docs/rules.md, "The clock"."""
    assert default_rules().live_skew_ms == 2 * 60_000
    assert parse_rules("clock:\n  live_skew_minutes: 0.5\n").live_skew_ms == 30_000


def test_the_late_repair_bound_is_the_rules_file_s() -> None:
    """docs/rules.md, "Late repair claims"."""
    assert default_rules().manhole.late_repair_max_ms == 15 * M
    assert (
        parse_rules(
            "rules:\n  manhole:\n    late_repair_max_minutes: 0\n"
        ).manhole.late_repair_max_ms
        == 0
    )
    with pytest.raises(
        ConfigError, match="rules.manhole.late_repair_max_minutes: expected a non-negative"
    ):
        parse_rules("rules:\n  manhole:\n    late_repair_max_minutes: -5\n")
