"""Streetlight rule (docs/rules.md, "Streetlight"), table-driven like docs/rules.md#streetlight."""

from __future__ import annotations

import pytest

from streams.harness import M, Run, local, rules_with

DARK = {"on": True, "current_a": 0.0, "voltage_v": 228.0}
LIT = {"on": True, "current_a": 0.42, "voltage_v": 228.0}


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
def test_streetlight_fault_only_when_dark_in_on_period(
    hour: int, minute: int, fields: dict, fault: bool
) -> None:
    run = Run()
    run.read("SL-1", local(hour, minute), **fields)
    assert len(run.of_rule("streetlight.fault")) == int(fault)
    assert list(run.ledger) == []  # no money by default


def test_streetlight_dark_at_night_opens_fault() -> None:
    run = Run()
    t = local(21)
    run.read("SL-1", t, **DARK)
    run.read("SL-1", t + 10 * M, **DARK)
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
    rules = rules_with(streetlight={"district_schedule": {"erqi": (17 * 60, 7 * 60)}})
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
                                    "leakage_payer_type": "district_government"})  # fmt: skip
    run = Run(rules)
    t = local(22)
    run.read("SL-1", t, on=True, current_a=0.0, leakage_ma=31.0)
    entries = {e.id: (e.amount_yuan, e.payer_type, e.payer) for e in run.ledger}
    assert entries == {
        f"streetlight.fault:SL-1:{t}:penalty": (500, "property_unit", "路灯管理处"),
        f"streetlight.leakage:SL-1:{t}:penalty": (2000, "district_government", "jinshui"),
    }


def test_action_goes_to_leakage_case_first() -> None:
    run = Run()
    t = local(22)
    run.read("SL-1", t, on=True, current_a=0.0, leakage_ma=31.0)
    run.act("ack", "SL-1", t + M)
    assert run.cases[f"streetlight.leakage:SL-1:{t}"].state == "acknowledged"
    assert run.cases[f"streetlight.fault:SL-1:{t}"].state == "open"
