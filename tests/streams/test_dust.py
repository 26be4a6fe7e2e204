"""Dust rule (docs/rules.md, "Dust"), table-driven like docs/rules.md#dust."""

from __future__ import annotations

import pytest

from streams.harness import T0, M, Run, rules_with

ABSOLUTE = rules_with(dust={"mode": "absolute"})
"""The level machinery on its own (the default, background mode, has the level as its floor)."""


def feed_minutes(run: Run, device: str, start: int, values: list[float]) -> int:
    """One reading a minute from ``start``; returns the ts after the last one."""
    ts = start
    for v in values:
        run.read(device, ts, pm10=v)
        ts += M
    return ts


def test_dust_violation_books_100000_against_district() -> None:
    run = Run(ABSOLUTE)
    feed_minutes(run, "DS-1", T0, [250.0] * 5)
    cases = run.of_rule("dust")
    assert [c.case_id for c in cases] == [f"dust:DS-1:{T0}"]
    assert cases[0].severity == "major" and cases[0].detail["mean_pm10"] == 250.0
    [entry] = run.ledger.entries()
    assert (entry.id, entry.payer_type, entry.payer, entry.amount_yuan, entry.accrued_at) == (
        f"dust:DS-1:{T0}:dust", "district_government", "jinshui", 100_000, T0,
    )  # fmt: skip


@pytest.mark.parametrize(
    "values, warning_cases, violation_cases",
    [
        ([100.0] * 10, 0, 0),
        ([150.0] * 10, 0, 0),  # "above" the warning level: 150 itself is not
        ([150.5] * 10, 1, 0),
        ([200.0] * 10, 1, 0),  # at the violation level: a warning, no violation
        ([200.001] * 10, 1, 1),
        ([100.0] * 9 + [1000.0], 1, 0),  # mean of 10 = 190
        ([100.0] * 9 + [1100.0], 1, 0),  # mean 200.0: not above
        ([100.0] * 9 + [1100.1], 1, 1),  # mean 200.01
    ],
)
def test_dust_levels_judge_the_rolling_mean(
    values: list[float], warning_cases: int, violation_cases: int
) -> None:
    run = Run(ABSOLUTE)
    feed_minutes(run, "DS-1", T0, values)
    assert len(run.of_rule("dust.warning")) == warning_cases
    assert len(run.of_rule("dust")) == violation_cases
    assert run.ledger.net() == 100_000 * violation_cases


def test_dust_window_forgets_readings_older_than_60_minutes() -> None:
    run = Run(ABSOLUTE)
    run.read("DS-1", T0, pm10=1000.0)  # opens a case; mean 1000
    run.read("DS-1", T0 + 60 * M, pm10=100.0)  # the 1000 is exactly 60 min old: out of (t-60m, t]
    # below since T0+60m; closes after 60 more minutes
    run.read("DS-1", T0 + 119 * M, pm10=100.0)
    assert run.of_rule("dust")[0].state == "open"
    run.read("DS-1", T0 + 120 * M, pm10=100.0)
    assert run.of_rule("dust")[0].state == "closed"
    assert run.of_rule("dust")[0].detail["closed_at"] == T0 + 120 * M


def test_dust_oscillation_around_level_makes_one_case() -> None:
    run = Run(
        rules_with(dust={"window_ms": 1 * M, "mode": "absolute"})
    )  # a 1-minute window: the mean is the reading
    ts = T0
    for k in range(120):  # two hours of 195 / 205 alternating every 10 minutes
        run.read("DS-1", ts, pm10=205.0 if (k // 10) % 2 == 0 else 195.0)
        ts += M
    assert len(run.of_rule("dust")) == 1
    assert run.of_rule("dust")[0].state == "open"
    assert run.ledger.net() == 100_000


def test_dust_new_exceedance_after_recovery_is_new_case() -> None:
    run = Run(rules_with(dust={"window_ms": 1 * M, "mode": "absolute"}))
    ts = feed_minutes(run, "DS-1", T0, [250.0] * 10)
    ts = feed_minutes(run, "DS-1", ts, [100.0] * 61)  # 60 minutes at or below the level: closes
    [first] = run.of_rule("dust")
    assert first.state == "closed" and first.detail["closed_by"] == "recovery"
    feed_minutes(run, "DS-1", ts, [300.0] * 3)
    cases = run.of_rule("dust")
    assert len(cases) == 2 and cases[1].opened_at == ts
    assert run.ledger.net() == 200_000
    assert len({e.id for e in run.ledger}) == 2


def test_dust_recovery_on_watermark_when_site_goes_quiet() -> None:
    run = Run(rules_with(dust={"window_ms": 1 * M, "mode": "absolute"}))
    ts = feed_minutes(run, "DS-1", T0, [250.0, 250.0, 50.0])
    below = ts - M
    run.tick(below + 60 * M - 1)
    assert run.of_rule("dust")[0].state == "open"
    run.tick(below + 60 * M)
    assert run.of_rule("dust")[0].state == "closed"
    assert run.of_rule("dust")[0].detail["closed_at"] == below + 60 * M


def test_dust_site_override_from_registry() -> None:
    run = Run(ABSOLUTE)
    feed_minutes(run, "DS-OVR", T0, [130.0] * 3)  # registry: warning 100, violation 120
    feed_minutes(run, "DS-1", T0, [130.0] * 3)
    assert [c.device for c in run.of_rule("dust")] == ["DS-OVR"]
    assert run.of_rule("dust")[0].detail["level"] == 120.0


def test_dust_storm_in_background_mode_fines_no_site() -> None:
    run = Run(rules_with(dust={"mode": "background"}))
    ts = T0
    for minute in range(180):  # all sites climb together from 60 to 600 µg/m³
        level = 60.0 + 3.0 * minute
        for i, dev in enumerate(("DS-1", "DS-2", "DS-3")):
            run.read(dev, ts + i * 1000, pm10=level + i)
        ts += M
    assert run.of_rule("dust") == []
    assert list(run.ledger) == []


def test_dust_background_mode_still_fines_the_one_dusty_site() -> None:
    run = Run(rules_with(dust={"mode": "background"}))
    ts = T0
    for _ in range(30):
        run.read("DS-1", ts, pm10=350.0)
        run.read("DS-2", ts + 1000, pm10=260.0)
        run.read("DS-3", ts + 2000, pm10=250.0)
        ts += M
    # DS-1 is 95 above the mean of the others (255); they are below 80 above ambient
    assert [c.device for c in run.of_rule("dust")] == ["DS-1"]
    assert run.of_rule("dust")[0].detail["mode"] == "background"
    assert run.ledger.net() == 100_000


def test_dust_background_mode_without_peers_judges_absolute_levels() -> None:
    run = Run(rules_with(dust={"mode": "background"}))
    feed_minutes(run, "DS-EQ", T0, [260.0] * 3)  # the only dust site in erqi
    assert [c.detail["mode"] for c in run.of_rule("dust")] == ["absolute"]


def test_dust_duplicate_reading_changes_nothing() -> None:
    run = Run(ABSOLUTE)
    run.read("DS-1", T0, pm10=100.0)
    run.read("DS-1", T0 + M, pm10=300.0)
    state = run.det.export_device("DS-1")
    run.det.take_dirty()
    assert run.read("DS-1", T0, pm10=100.0) == []
    assert run.read("DS-1", T0 + M, pm10=300.0) == []
    assert run.det.export_device("DS-1") == state and run.det.take_dirty() == set()


def test_dust_late_reading_joins_window_and_rejudges() -> None:
    run = Run(ABSOLUTE)
    run.read("DS-1", T0, pm10=190.0)
    run.read("DS-1", T0 + 2 * M, pm10=190.0)
    assert run.of_rule("dust") == []
    run.read("DS-1", T0 + M, received_at=T0 + 3 * M, pm10=400.0)  # mean now 260
    [case] = run.of_rule("dust")
    assert case.opened_at == T0 + 2 * M  # judged at the site's newest event time


def test_dust_flatline_flags_tampering() -> None:
    run = Run(rules_with(dust={"flatline_readings": 5, "mode": "absolute"}))
    ts = feed_minutes(run, "DS-1", T0, [88.0, 42.0, 42.0, 42.0, 42.0])
    assert run.of_rule("dust.flatline") == []
    ts = feed_minutes(run, "DS-1", ts, [42.0])
    [case] = run.of_rule("dust.flatline")
    assert case.detail["suspected_tampering"] is True and case.detail["reason"] == "flatline"
    assert case.severity == "major" and case.state == "open"
    feed_minutes(run, "DS-1", ts, [42.0, 43.0])
    assert run.of_rule("dust.flatline")[0].state == "repaired"
    assert list(run.ledger) == []


def test_dust_officer_close_then_continued_exceedance_opens_new_case() -> None:
    run = Run(ABSOLUTE)
    ts = feed_minutes(run, "DS-1", T0, [300.0] * 3)
    run.act("close", "DS-1", ts)
    feed_minutes(run, "DS-1", ts + M, [300.0])
    assert [c.state for c in run.of_rule("dust")] == ["closed", "open"]


def test_dust_late_reading_after_officer_close_cannot_reuse_case_id() -> None:
    """Found by hypothesis: closed at its own opening instant, then re-judged at that instant."""
    run = Run(ABSOLUTE)
    run.read("DS-1", T0 + M, pm10=400.0)
    run.act("close", "DS-1", T0)  # an officer's close time before the opening: clamped to it
    run.read("DS-1", T0, pm10=50.0)  # late: mean still above, judged at T0 + 1 min
    assert [c.state for c in run.of_rule("dust")] == ["closed"]
    assert run.ledger.net() == 100_000


def test_dust_background_mode_peers_that_never_report_degrade_to_absolute() -> None:
    """E.g. the district's other sites are routed to another worker: judge absolutely after a window."""
    run = Run(rules_with(dust={"mode": "background"}))
    ts = feed_minutes(run, "DS-1", T0, [300.0] * 60)
    assert run.of_rule("dust") == []  # start-up: waiting for peers that may still report
    feed_minutes(run, "DS-1", ts, [300.0])
    assert [c.detail["mode"] for c in run.of_rule("dust")] == ["absolute"]
