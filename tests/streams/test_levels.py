"""The level rule kinds (docs/rules.md "battery", "water_level"; streams/levels.py)."""

from __future__ import annotations

from streams.harness import T0, M, Run, rules_with


def test_a_low_battery_opens_one_maintenance_case_until_a_new_battery() -> None:
    run = Run()
    for k, pct in enumerate((35.0, 21.0, 20.0, 19.5, 20.5, 18.0, 25.0)):
        run.read("MH-MAIN", T0 + k * M, battery_pct=pct)
    [case] = run.of_rule("manhole.battery_low")
    assert (
        case.opened_at == T0 + 2 * M and case.state == "open"
    )  # 20 % is the level; 20.5/25 wobble
    assert case.severity == "minor" and list(run.ledger) == []
    run.read("MH-MAIN", T0 + 10 * M, battery_pct=98.0)  # replaced
    assert run.of_rule("manhole.battery_low")[0].state == "repaired"


def test_water_rising_in_a_well_opens_a_case_raised_to_critical_while_it_rises() -> None:
    run = Run()
    for k, cm in enumerate((40.0, 99.9, 100.0, 120.0, 151.0, 160.0, 95.0, 85.0)):
        run.read("MH-MAIN", T0 + k * M, water_level_cm=cm)
    [case] = run.of_rule("manhole.water_level")
    assert case.opened_at == T0 + 2 * M
    assert case.state == "repaired" and case.at == T0 + 7 * M  # below 100 - 10
    assert case.severity == "critical" and case.detail["worst"] == 160.0
    severities = [e.severity for e in run.events if e.rule == "manhole.water_level"]
    assert severities == ["major", "critical", "critical"]  # opened, raised once, repaired


def test_a_level_rule_can_book_money_when_the_city_sets_it() -> None:
    run = Run(rules_with(water_level={"penalty_yuan": 2000}))
    run.read("MH-MAIN", T0, water_level_cm=130.0)
    assert [(e.rule, e.amount_yuan) for e in run.ledger] == [("manhole.water_level", 2000)]
