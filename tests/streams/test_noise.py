"""Construction noise by GB 12523-2011 (docs/rules.md "noise"; streams/noise.py)."""

from __future__ import annotations

import pytest

from streams.harness import M, Run, local
from streams.noise import leq


def _site(run: Run, start: int, levels: list[float]) -> None:
    for k, db in enumerate(levels):
        run.read("DS-1", start + k * M, pm10=50.0, noise_db=db)


def test_leq_is_the_energy_mean() -> None:
    assert leq([60.0] * 20) == pytest.approx(60.0)
    assert leq([50.0, 70.0]) == pytest.approx(67.03, abs=0.01)  # loud minutes dominate


def test_a_site_at_60_db_at_23_00_for_the_window_opens_a_night_case() -> None:
    run = Run()
    _site(run, local(23), [60.0] * 21)
    [case] = run.of_rule("noise")
    assert case.severity == "major" and case.detail["period"] == "night"
    assert case.detail["limit_db"] == 55.0 and case.detail["leq_db"] == 60.0
    assert case.opened_at == local(23) + 15 * M  # judged once the readings span 3/4 of 20 min


def test_the_same_60_db_at_15_00_is_no_case() -> None:
    run = Run()
    _site(run, local(15), [60.0] * 30)
    assert run.of_rule("noise") == []


def test_a_single_night_peak_of_75_db_opens_a_case_at_once() -> None:
    run = Run()
    _site(run, local(2), [50.0, 50.0, 75.0])
    [case] = run.of_rule("noise")
    assert case.opened_at == local(2) + 2 * M and case.detail["peak_db"] == 75.0


def test_a_day_above_70_db_is_a_minor_case_repaired_when_the_level_is_back() -> None:
    run = Run()
    _site(run, local(10), [74.0] * 20 + [60.0] * 25)
    [case] = run.of_rule("noise")
    assert case.severity == "minor" and case.state == "repaired"


def test_a_quiet_night_with_the_simulators_levels_opens_nothing() -> None:
    run = Run()
    _site(run, local(22), [52.0, 53.5, 51.0, 54.0, 52.5] * 24)
    assert run.of_rule("noise") == []  # (a constant pm10 is the flatline rule's business)
