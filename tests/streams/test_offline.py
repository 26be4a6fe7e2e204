"""Offline rule and tampering flags (docs/rules.md, "Offline"), like docs/rules.md#offline."""

from __future__ import annotations

import pytest

from streams.harness import T0, H, M, Run, local


@pytest.mark.parametrize(
    "device, allowance",
    [("DS-1", 10 * M), ("MH-MAIN", 2 * H), ("SL-1", 30 * M)],
)
def test_offline_case_after_heartbeat_allowance(device: str, allowance: int) -> None:
    run = Run()
    fields = {"DS-1": {"pm10": 40.0}, "MH-MAIN": {"open": False}, "SL-1": {"on": False}}[device]
    run.read(device, T0, **fields)
    run.tick(T0 + allowance - 1)
    assert run.of_rule("offline") == []
    run.tick(T0 + allowance)
    [case] = run.of_rule("offline")
    assert (case.case_id, case.opened_at, case.state) == (
        f"offline:{device}:{T0 + allowance}",
        T0 + allowance,
        "open",
    )
    assert list(run.ledger) == []
    run.read(device, T0 + allowance + 5 * M, **fields)
    assert run.of_rule("offline")[0].state == "repaired"
    run.tick(T0 + allowance + 5 * M + allowance)
    assert len(run.of_rule("offline")) == 2  # silent again: a new case


def test_offline_dust_monitor_in_working_hours_flags_tampering() -> None:
    run = Run()
    run.read("DS-1", local(14), pm10=80.0)
    run.tick(local(14, 10))
    [case] = run.of_rule("offline")
    assert case.detail["suspected_tampering"] is True
    assert case.detail["reason"] == "offline_in_working_hours"
    assert case.severity == "major"


def test_offline_dust_monitor_at_night_flagged_when_working_hours_start() -> None:
    run = Run()
    run.read("DS-1", local(22), pm10=80.0)
    run.tick(local(23))
    [case] = run.of_rule("offline")
    assert "suspected_tampering" not in case.detail and case.severity == "minor"
    run.tick(local(6, 59, day=23))
    assert "suspected_tampering" not in run.of_rule("offline")[0].detail
    run.tick(local(7, 0, day=23))
    [case] = run.of_rule("offline")
    assert case.detail["suspected_tampering"] is True and case.detail["flagged_at"] == local(
        7, 0, day=23
    )
    assert case.severity == "major"


def test_offline_manhole_is_not_a_tampering_suspect() -> None:
    run = Run()
    run.read("MH-MAIN", local(14), open=False)
    run.tick(local(17))
    [case] = run.of_rule("offline")
    assert "suspected_tampering" not in case.detail


def test_open_manhole_case_keeps_clock_when_offline_case_opens() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    deadline = T0 + 2 * H
    run.tick(deadline + 6 * H)
    offline = run.of_rule("offline")
    assert [c.opened_at for c in offline] == [T0 + 2 * H]
    [manhole] = run.of_rule("manhole")
    assert manhole.state == "escalated"
    assert run.amounts("manhole") == [10_000] * 6


def test_redelivered_old_message_does_not_end_offline_case() -> None:
    run = Run()
    run.read("DS-1", T0, pm10=40.0)
    run.tick(T0 + 30 * M)
    run.read("DS-1", T0, pm10=40.0)  # same message again (same received_at)
    assert run.of_rule("offline")[0].state == "open"


def test_officer_can_close_offline_case_and_it_does_not_reopen_until_next_silence() -> None:
    run = Run()
    run.read("SL-1", T0, on=False)
    run.tick(T0 + H)
    run.act("close", "SL-1", T0 + H)
    run.tick(T0 + 5 * H)
    assert [c.state for c in run.of_rule("offline")] == ["closed"]
