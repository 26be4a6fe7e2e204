"""Streetlight rule (docs/rules.md, "Streetlight"), table-driven like docs/rules.md#streetlight."""

from __future__ import annotations

from datetime import datetime

import pytest

from streams.daylight import Schedule
from streams.harness import SH, M, Run, local, rules_with

DARK = {"on": True, "current_a": 0.0, "voltage_v": 228.0}
LIT = {"on": True, "current_a": 0.42, "voltage_v": 228.0}
H = 60 * M
FIXED = rules_with(streetlight={"schedule": Schedule("fixed"), "dark_for_ms": 0})
"""The fixed 18:30 -> 06:30 timetable, a case at the first dark reading (the old default)."""


@pytest.mark.parametrize(
    "hour, minute, fields, fault",
    [
        (20, 0, DARK, True),  # night, no current
        (20, 0, {"on": False}, True),  # night, switched off
        (20, 0, {"on": True, "current_a": 0.049}, True),  # below 0.05 A counts as none
        (20, 0, LIT, False),
        (18, 29, DARK, False),  # one minute before the on time
        (18, 30, DARK, True),  # from the on time
        (2, 0, DARK, True),  # after midnight, still inside 18:30 -> 06:30
        (6, 29, DARK, True),
        (6, 30, DARK, False),  # the off time itself is day
        (12, 0, DARK, False),  # dark at noon: as it should be
        (12, 0, LIT, False),  # lit at noon: wasteful, but not this rule
    ],
)
def test_fixed_timetable_fault_only_when_dark_in_on_period(
    hour: int, minute: int, fields: dict, fault: bool
) -> None:
    run = Run(FIXED)
    run.read("SL-1", local(hour, minute), **fields)
    assert len(run.of_rule("streetlight.fault")) == int(fault)
    assert list(run.ledger) == []  # no money by default


def test_streetlight_dark_at_night_opens_fault() -> None:
    run = Run()
    t = local(21)
    run.read("SL-1", t, **DARK)
    run.read("SL-1", t + 20 * M, **DARK)  # dark for 20 min > dark_for (15 min)
    [case] = run.of_rule("streetlight.fault")
    assert (case.case_id, case.severity, case.state, case.component_code) == (
        f"streetlight.fault:SL-1:{t}", "minor", "open", "0118",
    )  # fmt: skip
    run.read("SL-1", t + 40 * M, **LIT)
    assert run.of_rule("streetlight.fault")[0].state == "repaired"


def test_streetlight_lit_in_day_no_fault() -> None:
    run = Run()
    for h in range(7, 18):
        run.read("SL-1", local(h), **LIT)
        run.read("SL-1", local(h, 30), on=False)
    assert run.cases == {}


def test_dark_daytime_reading_does_not_repair_fault() -> None:
    run = Run()
    run.read("SL-1", local(23), **DARK)
    run.read("SL-1", local(9, day=23), on=False)  # switched off by day: proves nothing
    assert run.of_rule("streetlight.fault")[0].state == "open"
    run.read("SL-1", local(19, day=23), **LIT)
    assert run.of_rule("streetlight.fault")[0].state == "repaired"


def test_district_schedule_override() -> None:
    erqi = Schedule("fixed", on_minute=17 * 60, off_minute=7 * 60)
    rules = rules_with(streetlight={"schedule": Schedule("fixed"), "dark_for_ms": 0,
                                    "district_schedule": {"erqi": erqi}})  # fmt: skip
    run = Run(rules)
    run.read("SL-1", local(17, 30), **DARK)  # jinshui: default 18:30, not yet on
    run.read("SL-EQ", local(17, 30), **DARK)  # erqi: on from 17:00
    assert [c.device for c in run.of_rule("streetlight.fault")] == ["SL-EQ"]


@pytest.mark.parametrize("leakage_ma, critical", [(29.9, False), (30.0, True), (120.0, True)])
def test_leakage_30ma_is_critical_case(leakage_ma: float, critical: bool) -> None:
    run = Run()
    run.read("SL-1", local(12), on=False, leakage_ma=leakage_ma)  # any time of day
    cases = run.of_rule("streetlight.leakage")
    assert len(cases) == int(critical)
    if critical:
        assert cases[0].severity == "critical" and cases[0].detail["leakage_ma"] == leakage_ma


def test_leakage_repaired_when_below_threshold() -> None:
    run = Run()
    run.read("SL-1", local(12), leakage_ma=45.0)
    run.read("SL-1", local(12, 5), leakage_ma=48.0)  # still leaking: same case
    run.read("SL-1", local(13), leakage_ma=2.0)
    [case] = run.of_rule("streetlight.leakage")
    assert case.state == "repaired"


def test_streetlight_penalty_when_rules_set_one() -> None:
    rules = rules_with(streetlight={"fault_penalty_yuan": 500, "leakage_penalty_yuan": 2000,
                                    "leakage_payer_type": "district_government", "dark_for_ms": 0})  # fmt: skip
    run = Run(rules)
    t = local(22)
    run.read("SL-1", t, on=True, current_a=0.0, leakage_ma=31.0)
    entries = {e.id: (e.amount_yuan, e.payer_type, e.payer) for e in run.ledger}
    assert entries == {
        f"streetlight.fault:SL-1:{t}:penalty": (500, "property_unit", "路灯管理处"),
        f"streetlight.leakage:SL-1:{t}:penalty": (2000, "district_government", "jinshui"),
    }


def test_action_goes_to_leakage_case_first() -> None:
    run = Run(FIXED)
    t = local(22)
    run.read("SL-1", t, on=True, current_a=0.0, leakage_ma=31.0)
    run.act("ack", "SL-1", t + M)
    assert run.cases[f"streetlight.leakage:SL-1:{t}"].state == "acknowledged"
    assert run.cases[f"streetlight.fault:SL-1:{t}"].state == "open"


# ------------------------------------------------------------------ the sun (docs/rules.md, "Streetlight")


def _at(y: int, mo: int, d: int, h: int, mi: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=SH).timestamp() * 1000)


def _night(run: Run, lamp: str, y: int, mo: int, d: int, on: tuple[int, int], off: tuple[int, int],
           every_min: int = 5) -> None:  # fmt: skip
    """A photocell lamp's readings from noon to noon: lit from ``on`` to ``off`` (local)."""
    t, end = _at(y, mo, d, 12), _at(y, mo, d + 1, 12)
    lit_from, lit_to = _at(y, mo, d, *on), _at(y, mo, d + 1, *off)
    while t < end:
        run.read(lamp, t, **(LIT if lit_from <= t < lit_to else DARK))
        t += every_min * M


def test_a_june_lamp_lit_a_few_minutes_after_sunset_opens_no_case() -> None:
    # Zhengzhou, 21 June: sunset ~19:41, sunrise ~05:12; the fixed 18:30 window faulted it nightly
    run = Run()
    for day in range(18, 25):
        _night(run, "SL-1", 2026, 6, day, on=(19, 45), off=(5, 5))
    assert run.cases == {}


def test_the_fixed_window_would_have_faulted_that_june_lamp_every_evening() -> None:
    run = Run(rules_with(streetlight={"schedule": Schedule("fixed")}))
    for day in range(18, 21):
        _night(run, "SL-1", 2026, 6, day, on=(19, 45), off=(5, 5))
    # dark from 18:30 the first evening, then every morning from 05:05 (to 06:30), each case
    # open until the lamp lights again at 19:45 (so it swallows that evening's dark)
    opened = [c.opened_at for c in run.of_rule("streetlight.fault")]
    assert opened == [_at(2026, 6, 18, 18, 30)] + [_at(2026, 6, d, 5, 5) for d in (19, 20, 21)]


def test_a_december_lamp_dark_all_night_opens_one_fault_case_after_dark_for() -> None:
    # 21 December: sunset ~17:17 -> lit from ~17:32
    run = Run()
    _night(run, "SL-1", 2026, 12, 20, on=(17, 25), off=(7, 35))  # a healthy night first
    assert run.cases == {}
    t = _at(2026, 12, 21, 17, 40)
    for k in range(0, 12 * 12):  # dark all night, every 5 min
        run.read("SL-1", t + k * 5 * M, **DARK)
    [case] = run.of_rule("streetlight.fault")
    assert case.opened_at == t and case.at == t + 15 * M and case.detail["dark_since"] == t


def test_a_lamp_slow_to_light_by_less_than_dark_for_is_no_case() -> None:
    run = Run()
    t = _at(2026, 12, 21, 17, 35)
    run.read("SL-1", t, **DARK)
    run.read("SL-1", t + 10 * M, **DARK)
    run.read("SL-1", t + 14 * M, **LIT)
    assert run.cases == {}


def test_a_dark_lamp_opens_its_fault_on_the_clock_without_another_reading() -> None:
    run = Run()
    t = _at(2026, 12, 21, 22)
    run.read("SL-1", t, **DARK)
    assert run.cases == {}
    run.tick(t + 15 * M)
    [case] = run.of_rule("streetlight.fault")
    assert case.at == t + 15 * M


def test_a_lamp_burning_all_day_opens_a_day_burner_case_after_lit_for() -> None:
    run = Run()
    t = _at(2026, 6, 21, 8)
    for k in range(0, 10 * 12):  # lit 08:00 -> 18:00 in June daylight
        run.read("SL-1", t + k * 5 * M, **LIT)
    [case] = run.of_rule("streetlight.day_burner")
    assert case.opened_at == t and case.at == t + 2 * H and case.state == "open"
    assert list(run.ledger) == []  # an energy case: no money by default
    run.read("SL-1", _at(2026, 6, 21, 18, 30), on=False)
    assert run.of_rule("streetlight.day_burner")[0].state == "repaired"


def test_a_lamp_switching_off_a_little_after_sunrise_is_no_day_burner() -> None:
    run = Run()
    _night(run, "SL-1", 2026, 6, 21, on=(19, 45), off=(5, 40))  # 30 min after sunrise
    assert run.cases == {}


def test_fixed_timetable_by_month(tmp_path) -> None:  # noqa: ANN001
    from streams.rules import load_rules

    p = tmp_path / "rules.yaml"
    p.write_text(
        "rules:\n  streetlight:\n    schedule:\n      mode: fixed\n      on: '18:30'\n      off: '06:30'\n"
        "      months: {12: {on: '17:20', off: '07:20'}}\n    fault: {dark_for: 0s}\n",
        encoding="utf-8",
    )
    run = Run(load_rules(p))
    run.read("SL-1", _at(2026, 12, 21, 17, 30), **DARK)  # December: on from 17:20
    run.read("SL-EQ", _at(2026, 11, 21, 17, 30), **DARK)  # November: the year's 18:30
    assert [c.device for c in run.of_rule("streetlight.fault")] == ["SL-1"]
