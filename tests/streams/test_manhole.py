"""Manhole rule (docs/rules.md, "Manhole", "Accident"), table-driven like docs/rules.md#manhole."""

from __future__ import annotations

import pytest

from streams.harness import T0, H, M, Run, rules_with

CASE = f"manhole:MH-MAIN:{T0}"
DEADLINE = T0 + 2 * H


def hours_owed(repair_at: int, deadline: int = DEADLINE) -> int:
    return max(0, (repair_at - deadline) // H)


@pytest.mark.parametrize(
    "repair_at, expected_entries",
    [
        (T0 + 30 * M, 0),  # before the deadline
        (DEADLINE, 0),  # at the deadline
        (DEADLINE + H - 1, 0),  # one ms before the first full hour
        (DEADLINE + H, 1),  # exactly at the first full hour: "closed before that instant" is false
        (DEADLINE + 2 * H - 1, 1),  # one ms before the second full hour
        (DEADLINE + 5 * H + 17 * M, 5),
    ],
)
def test_repair_by_normal_reading_owes_floor_hours_after_deadline(
    repair_at: int, expected_entries: int
) -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.read("MH-MAIN", repair_at, open=False, tilt_deg=0.5)
    run.tick(repair_at + 10 * H)  # long after: nothing more may accrue
    hourly = [e for e in run.ledger if e.rule == "manhole"]
    assert len(hourly) == expected_entries == hours_owed(repair_at)
    assert [e.id for e in hourly] == [f"{CASE}:hour:{k}" for k in range(1, expected_entries + 1)]
    assert [e.accrued_at for e in hourly] == [
        DEADLINE + k * H for k in range(1, expected_entries + 1)
    ]
    assert all(e.amount_yuan == 10_000 and type(e.amount_yuan) is int for e in hourly)
    assert all(e.payer == "市政工程管理处" and e.payer_type == "property_unit" for e in hourly)
    case = run.cases[CASE]
    assert case.state == "repaired" and case.detail["repair_at"] == repair_at


def test_repair_before_deadline_owes_nothing() -> None:
    run = Run()
    run.read("MH-MAIN", T0, tilt_deg=40.0)
    run.read("MH-MAIN", T0 + H, tilt_deg=2.0)
    run.tick(T0 + 48 * H)
    assert list(run.ledger) == []
    assert run.cases[CASE].state == "repaired"
    assert run.cases[CASE].detail["escalated"] is False


def test_repair_one_ms_before_full_hour_owes_previous_hours_only() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.tick(DEADLINE + 2 * H - 1)  # watermark just before hour 2
    assert run.amounts() == [10_000]
    run.read("MH-MAIN", DEADLINE + 2 * H - 1, open=False)
    run.tick(DEADLINE + 9 * H)
    assert run.amounts() == [10_000]


def test_cover_silent_after_theft_keeps_accruing() -> None:
    """The cover (with its sensor) is stolen: no more readings, only watermarks."""
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    for k in range(1, 8):  # the rest of the city keeps the watermark moving
        run.tick(DEADLINE + k * H)
        assert len([e for e in run.ledger if e.rule == "manhole"]) == k
    closed = DEADLINE + 7 * H + 59 * M
    run.act("close", "MH-MAIN", closed)
    run.tick(closed + 24 * H)
    hourly = [e for e in run.ledger if e.rule == "manhole"]
    assert len(hourly) == (closed - DEADLINE) // H == 7
    assert sum(e.amount_yuan for e in hourly) == 70_000
    assert run.cases[CASE].state == "closed"
    assert run.cases[CASE].detail["repaired_by"] == "officer"
    # the offline case was opened beside it and the manhole clock never paused
    assert [c.state for c in run.of_rule("offline")] == ["open"]


def test_officer_close_before_watermark_books_hours_up_to_close() -> None:
    """An officer's close lies ahead of the watermark: hours before it still book as time passes."""
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.act("close", "MH-MAIN", DEADLINE + 3 * H)
    assert run.amounts() == []
    run.tick(DEADLINE + 10 * H)
    assert run.amounts() == [10_000] * 3


@pytest.mark.parametrize(
    "device, grace_hours",
    [("MH-MAIN", 3), ("MH-SEC", 5), ("MH-OTHER", 6), ("MH-NONE", 4)],
)
def test_grace_per_road_class(device: str, grace_hours: int) -> None:
    rules = rules_with(
        manhole={"grace_ms": {"main": 3 * H, "secondary": 5 * H, "other": 6 * H, "default": 4 * H}}
    )
    run = Run(rules)
    run.read(device, T0, open=True)
    case = run.cases[f"manhole:{device}:{T0}"]
    assert case.deadline == T0 + grace_hours * H
    run.tick(T0 + grace_hours * H + H - 1)
    assert run.amounts() == []
    run.tick(T0 + grace_hours * H + H)
    assert run.amounts() == [10_000]


def test_default_grace_is_two_hours_for_every_road_class() -> None:
    run = Run()
    for device in ("MH-MAIN", "MH-SEC", "MH-OTHER", "MH-NONE"):
        run.read(device, T0, open=True)
    assert {c.deadline for c in run.cases.values()} == {T0 + 2 * H}


@pytest.mark.parametrize(
    "fields, abnormal",
    [
        ({"open": True}, True),
        ({"open": False}, False),
        ({"tilt_deg": 15.0}, True),  # "at or above the threshold"
        ({"tilt_deg": 14.99}, False),
        ({"open": False, "tilt_deg": 80.0}, True),
        ({"open": True, "tilt_deg": 0.0}, True),
        ({"water_level_cm": 30}, False),
    ],
)
def test_abnormal_is_open_or_tilt_at_threshold(fields: dict, abnormal: bool) -> None:
    run = Run()
    run.read("MH-MAIN", T0, **fields)
    assert bool(run.of_rule("manhole")) is abnormal


def test_escalated_at_deadline_then_acknowledged_state_kept() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.act("ack", "MH-MAIN", T0 + 10 * M)
    assert run.cases[CASE].state == "acknowledged"
    run.tick(DEADLINE)
    assert run.cases[CASE].state == "escalated"
    assert run.cases[CASE].detail["acknowledged_by"] == "grid-07"


def test_accident_reported_by_one_officer_books_nothing_until_a_second_confirms() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.act("accident", "MH-MAIN", T0 + 20 * M, officer="sup-jinshui")
    assert run.amounts("manhole.accident") == []
    report = run.cases[CASE].detail["accident_report"]
    assert report["officer"] == "sup-jinshui" and report["at"] == T0 + 20 * M
    assert run.cases[CASE].severity == "major"  # not an accident until four eyes saw it


def test_accident_reporter_cannot_confirm_their_own_report() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.act("accident", "MH-MAIN", T0 + 20 * M, officer="sup-jinshui")
    run.act("accident", "MH-MAIN", T0 + 30 * M, officer="sup-jinshui")
    assert run.amounts("manhole.accident") == []


def test_accident_booked_once_when_a_second_officer_confirms() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.act("accident", "MH-MAIN", T0 + 20 * M, officer="grid-07")
    run.act("accident", "MH-MAIN", T0 + 25 * M, officer="grid-09")  # a second officer confirms
    run.act("accident", "MH-MAIN", T0 + 25 * M, officer="grid-09")  # the API retries it
    run.act("accident", "MH-MAIN", T0 + 40 * M, officer="city-01")  # and a third says it too
    acc = [e for e in run.ledger if e.rule == "manhole.accident"]
    assert [(e.id, e.payer_type, e.payer, e.amount_yuan, e.accrued_at) for e in acc] == [
        (
            f"{CASE}:accident:district_government",
            "district_government",
            "jinshui",
            500_000,
            T0 + 25 * M,
        ),
        (
            f"{CASE}:accident:property_unit",
            "property_unit",
            "市政工程管理处",
            1_000_000,
            T0 + 25 * M,
        ),
    ]
    officers = [e.get("officer") for e in acc[0].evidence if e.get("type") == "action"]
    assert officers == ["grid-07", "grid-09"]  # both pairs of eyes are in the evidence
    assert run.cases[CASE].severity == "critical"
    assert run.rejected == []


def test_accident_on_repaired_case_goes_to_most_recent_case() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.read("MH-MAIN", T0 + H, open=False)
    run.act("accident", "MH-MAIN", T0 + 2 * H, officer="grid-07")
    run.act("accident", "MH-MAIN", T0 + 2 * H + M, officer="grid-09")
    assert sum(run.amounts("manhole.accident")) == 1_500_000


def test_accident_without_case_is_rejected() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=False)
    run.act("accident", "MH-MAIN", T0 + H)
    assert list(run.ledger) == []
    assert len(run.rejected) == 1 and "no manhole case" in run.rejected[0].reason


TRUSTING = rules_with(manhole={"late_repair_max_ms": 24 * H})
"""A city that lets any late reading reverse hours at once (the bound set to a day)."""


def test_late_normal_reading_reverses_hours_after_repair() -> None:
    run = Run(TRUSTING)
    run.read("MH-MAIN", T0, open=True)
    run.tick(DEADLINE + 4 * H)  # 4 hours booked while the repair reading was stuck somewhere
    assert run.amounts() == [10_000] * 4
    late_ts = DEADLINE + H + 30 * M
    run.read("MH-MAIN", late_ts, received_at=DEADLINE + 4 * H + 5 * M, open=False)
    entries = run.ledger.entries()
    reversals = [e for e in entries if e.reverses]
    assert [e.id for e in reversals] == [f"{CASE}:hour:{k}:reversal" for k in (2, 3, 4)]
    assert [e.reverses for e in reversals] == [f"{CASE}:hour:{k}" for k in (2, 3, 4)]
    assert all(e.amount_yuan == -10_000 for e in reversals)
    assert all(e.accrued_at == DEADLINE + 4 * H for e in reversals)  # the watermark when booked
    assert all(e.evidence[0]["ts"] == late_ts for e in reversals)
    assert run.ledger.net() == 10_000 * hours_owed(late_ts)
    # the originals are untouched
    assert [e.amount_yuan for e in entries if e.reverses is None] == [10_000] * 4
    run.tick(DEADLINE + 20 * H)
    assert run.ledger.net() == 10_000
    assert run.cases[CASE].detail["repair_at"] == late_ts


def test_late_normal_before_officer_close_moves_repair_earlier() -> None:
    run = Run(TRUSTING)
    run.read("MH-MAIN", T0, open=True)
    run.act("close", "MH-MAIN", DEADLINE + 3 * H)
    run.tick(DEADLINE + 3 * H)
    assert run.ledger.net() == 30_000
    run.read("MH-MAIN", DEADLINE + 30 * M, received_at=DEADLINE + 3 * H + M, open=False)
    assert run.ledger.net() == 0
    assert run.cases[CASE].state == "repaired"


def test_late_abnormal_reading_superseded_by_newer_normal_opens_no_case() -> None:
    run = Run()
    run.read("MH-MAIN", T0 + 10 * M, open=False)
    run.read(
        "MH-MAIN", T0, received_at=T0 + 11 * M, open=True
    )  # late, and a newer reading says normal
    run.tick(T0 + 24 * H)
    assert run.of_rule("manhole") == [] and list(run.ledger) == []


def test_late_normal_reading_after_repair_changes_nothing() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.read("MH-MAIN", DEADLINE + 2 * H, open=False)
    run.read("MH-MAIN", DEADLINE + 5 * H, open=False)
    before = run.ledger.entries()
    run.read("MH-MAIN", DEADLINE + 3 * H, received_at=DEADLINE + 6 * H, open=False)
    assert run.ledger.entries() == before


def test_normal_run_repair_time_is_first_of_run() -> None:
    run = Run(rules_with(manhole={"normal_run": 3}))
    run.read("MH-MAIN", T0, open=True)
    run.read("MH-MAIN", DEADLINE + 30 * M, open=False)
    run.read("MH-MAIN", DEADLINE + 40 * M, open=True)  # the run breaks
    run.read("MH-MAIN", DEADLINE + 50 * M, open=False)  # run starts here
    run.read("MH-MAIN", DEADLINE + 3 * H, open=False)
    run.tick(DEADLINE + 4 * H)
    assert run.cases[CASE].state == "escalated"  # only two normal readings so far
    run.read("MH-MAIN", DEADLINE + 5 * H, open=False)  # third: repaired at the first of the run
    assert run.cases[CASE].detail["repair_at"] == DEADLINE + 50 * M
    assert run.ledger.net() == 0  # hours 1..4 were booked and are now reversed
    assert len([e for e in run.ledger if e.reverses]) == 4


def test_duplicate_reading_changes_nothing() -> None:
    run = Run()
    first = run.read("MH-MAIN", T0, open=True)
    assert run.det.take_dirty() == {"MH-MAIN"}
    state = run.det.export_device("MH-MAIN")
    assert run.read("MH-MAIN", T0, open=True) == []
    assert run.det.export_device("MH-MAIN") == state and run.det.take_dirty() == set()
    run.read("MH-MAIN", DEADLINE + 2 * H, open=False)
    # late redelivery of the opening reading and of the repair
    assert run.read("MH-MAIN", T0, received_at=T0, open=True) == []
    assert run.read("MH-MAIN", DEADLINE + 2 * H, open=False) == []
    assert len(first) == 1 and run.ledger.net() == 20_000


def test_repeated_close_and_ack_change_nothing() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.act("ack", "MH-MAIN", T0 + M)
    assert run.act("ack", "MH-MAIN", T0 + 2 * M) == []
    run.act("close", "MH-MAIN", DEADLINE + 90 * M)
    run.tick(DEADLINE + 5 * H)
    assert run.act("close", "MH-MAIN", DEADLINE + 3 * H, case_id=CASE) == []
    assert run.ledger.net() == 10_000


def test_new_abnormality_after_repair_is_new_case_with_new_grace() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.read("MH-MAIN", T0 + H, open=False)
    run.read("MH-MAIN", T0 + 5 * H, tilt_deg=30.0)
    cases = run.of_rule("manhole")
    assert [c.case_id for c in cases] == [CASE, f"manhole:MH-MAIN:{T0 + 5 * H}"]
    assert cases[1].deadline == T0 + 7 * H


def test_abnormal_reading_before_officer_close_opens_no_new_case() -> None:
    """Sensor readings lag behind an officer's close: they belong to the closed case."""
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.act("close", "MH-MAIN", T0 + H)
    run.read("MH-MAIN", T0 + 50 * M, open=True)
    assert len(run.of_rule("manhole")) == 1
    run.read("MH-MAIN", T0 + 2 * H, open=True)
    assert len(run.of_rule("manhole")) == 2


def test_new_case_before_clock_caught_up_still_books_old_hours() -> None:
    """Found by hypothesis: closed at deadline+1h ahead of the watermark, then a new case opens."""
    run = Run()
    run.read("MH-SEC", T0, open=True)
    run.act("close", "MH-SEC", T0 + 3 * H)  # the watermark is still at T0
    run.read("MH-SEC", T0 + 3 * H + M, received_at=T0 + M, open=True)  # a new case
    run.tick(T0 + 24 * H)
    by_case = run.ledger.net_by_case()
    assert by_case == {
        f"manhole:MH-SEC:{T0}": 10_000,  # floor((3h - 2h) / 1h)
        f"manhole:MH-SEC:{T0 + 3 * H + M}": 10_000 * ((24 * H - (3 * H + M) - 2 * H) // H),
    }


# ------------------------------------------------------------------ late repair claims (docs/rules.md)

S = 1000


def test_a_reading_12h_late_claiming_a_repair_changes_nothing_until_an_officer_confirms() -> None:
    """The issue's attack: ``{"ts": opened + 1 s, "open": false}`` sent 12 hours late."""
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.tick(T0 + 12 * H)  # deadline T0 + 2 h: hours 1..10 booked
    booked = run.ledger.entries()
    assert len(booked) == 10
    run.read("MH-MAIN", T0 + S, received_at=T0 + 12 * H + M, open=False)
    assert run.ledger.entries() == booked, "a late reading may not reverse on its own"
    case = run.cases[CASE]
    claim = case.detail["late_repair_claim"]
    assert claim["status"] == "pending" and claim["repair_at"] == T0 + S
    assert claim["lateness_ms"] == 12 * H + M - S and claim["readings"] == [T0 + S]
    assert case.state == "escalated" and case.detail["repair_at"] is None
    assert case.evidence[-1]["ts"] == T0 + S  # the reading is kept as evidence
    # the clock keeps running while the claim waits
    run.tick(T0 + 14 * H)
    assert len(run.ledger.entries()) == 12 and run.ledger.net() == 120_000
    # an officer confirms: exactly the hours after the claimed repair are reversed
    run.act("confirm_repair", "MH-MAIN", T0 + 14 * H + 5 * M, officer="grid-09")
    reversals = [e for e in run.ledger.entries() if e.reverses]
    assert [e.reverses for e in reversals] == [f"{CASE}:hour:{k}" for k in range(1, 13)]
    assert all(e.accrued_at == T0 + 14 * H for e in reversals)  # the watermark when booked
    assert all(
        [ev["type"] for ev in e.evidence] == ["reading", "action"]
        and e.evidence[0]["ts"] == T0 + S
        and e.evidence[1] == {"type": "action", "action": "confirm_repair", "officer": "grid-09",
                              "at": T0 + 14 * H + 5 * M}
        for e in reversals
    )  # fmt: skip
    assert run.ledger.net() == 0
    case = run.cases[CASE]
    assert case.state == "repaired" and case.detail["repair_at"] == T0 + S
    claim = case.detail["late_repair_claim"]
    assert (claim["status"], claim["decided_by"]) == ("confirmed", "grid-09")
    # nothing more accrues; a repeated confirmation changes nothing and is not refused
    before = run.ledger.entries()
    run.act("confirm_repair", "MH-MAIN", T0 + 15 * H, officer="grid-09")
    run.tick(T0 + 30 * H)
    assert run.ledger.entries() == before and run.rejected == []


def test_a_silent_partition_cannot_hide_the_hours_a_late_claim_would_erase() -> None:
    """No watermark between the opening and the late reading: the hours due by its arrival count."""
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.read("MH-MAIN", T0 + S, received_at=T0 + 12 * H + M, open=False)
    assert run.cases[CASE].detail["late_repair_claim"]["status"] == "pending"
    assert len(run.ledger.entries()) == 10  # booked as the reading's arrival moved the watermark
    run.act("confirm_repair", "MH-MAIN", T0 + 12 * H + 2 * M)
    assert run.ledger.net() == 0 and len(run.ledger.entries()) == 20


@pytest.mark.parametrize(
    "lateness_min, automatic", [(1, True), (14, True), (15, True), (16, False), (60, False)]
)
def test_within_the_bound_a_late_reading_reverses_at_once(
    lateness_min: int, automatic: bool
) -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.tick(DEADLINE + 4 * H)
    repair = DEADLINE + 4 * H - lateness_min * M  # hour 4 (at DEADLINE + 4 h) is after it
    run.read("MH-MAIN", repair, received_at=DEADLINE + 4 * H, open=False)
    reversed_ = [e.reverses for e in run.ledger if e.reverses]
    if automatic:
        assert reversed_ == [f"{CASE}:hour:4"]
        assert "late_repair_claim" not in run.cases[CASE].detail
        assert run.cases[CASE].state == "repaired"
    else:
        assert reversed_ == []
        assert run.cases[CASE].detail["late_repair_claim"]["status"] == "pending"


def test_the_bound_is_the_rules_file_s() -> None:
    run = Run(rules_with(manhole={"late_repair_max_ms": 0}))
    run.read("MH-MAIN", T0, open=True)
    run.tick(DEADLINE + 4 * H)
    run.read("MH-MAIN", DEADLINE + 4 * H - S, received_at=DEADLINE + 4 * H, open=False)
    assert run.cases[CASE].detail["late_repair_claim"]["status"] == "pending"


def test_a_rejected_claim_keeps_the_ledger_and_its_readings_never_count_again() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.tick(T0 + 6 * H)
    run.read("MH-MAIN", T0 + S, received_at=T0 + 6 * H, open=False)
    run.act("reject_repair", "MH-MAIN", T0 + 6 * H + M, officer="grid-03")
    claim = run.cases[CASE].detail["late_repair_claim"]
    assert (claim["status"], claim["decided_by"]) == ("rejected", "grid-03")
    run.tick(T0 + 8 * H)
    assert run.amounts() == [10_000] * 6  # the clock ran on
    # the rejected reading is no evidence any more: a redelivery or a later confirm changes nothing
    run.read("MH-MAIN", T0 + S, received_at=T0 + 8 * H, open=False)
    run.act("confirm_repair", "MH-MAIN", T0 + 8 * H)
    assert len(run.rejected) == 1 and "no pending late repair claim" in run.rejected[0].reason
    assert run.amounts() == [10_000] * 6
    # the device's own on-time reading repairs the case as always
    run.read("MH-MAIN", T0 + 8 * H + 30 * M, open=False)
    run.tick(T0 + 20 * H)
    assert run.ledger.net() == 60_000 and run.cases[CASE].state == "repaired"


def test_a_late_reading_that_erases_nothing_is_taken_as_it_is() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.tick(DEADLINE + 30 * M)  # escalated, no hour booked or due yet
    run.read("MH-MAIN", T0 + 10 * M, received_at=DEADLINE + 40 * M, open=False)
    case = run.cases[CASE]
    assert case.state == "repaired" and case.detail["repair_at"] == T0 + 10 * M
    assert "late_repair_claim" not in case.detail
    run.tick(T0 + 24 * H)
    assert list(run.ledger) == []


def test_an_on_time_repair_stops_the_clock_and_a_later_confirmation_reverses_the_rest() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.tick(T0 + 6 * H)  # hours 1..4
    run.read("MH-MAIN", T0 + S, received_at=T0 + 6 * H, open=False)  # a claim
    run.read("MH-MAIN", T0 + 6 * H + 10 * M, open=False)  # the device itself, on time
    run.tick(T0 + 10 * H)
    assert run.cases[CASE].state == "repaired" and run.ledger.net() == 40_000
    assert run.cases[CASE].detail["late_repair_claim"]["status"] == "pending"
    run.act("confirm_repair", "MH-MAIN", T0 + 10 * H, officer="grid-09")
    assert run.ledger.net() == 0
    assert run.cases[CASE].detail["repair_at"] == T0 + S


def test_a_claim_waits_on_an_older_case_when_the_cover_opens_again() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.tick(T0 + 6 * H)
    run.read("MH-MAIN", T0 + S, received_at=T0 + 6 * H, open=False)  # claim on the first case
    run.read("MH-MAIN", T0 + 6 * H + M, open=False)  # repaired on time
    run.read("MH-MAIN", T0 + 7 * H, open=True)  # a new case
    second = f"manhole:MH-MAIN:{T0 + 7 * H}"
    run.tick(T0 + 7 * H + 30 * M)
    run.act("confirm_repair", "MH-MAIN", T0 + 7 * H + 30 * M, officer="grid-09")
    assert [e.reverses for e in run.ledger if e.reverses] == [
        f"{CASE}:hour:{k}" for k in range(1, 5)
    ]
    assert run.cases[second].state == "open" and "late_repair_claim" not in run.cases[second].detail


def test_confirm_without_a_claim_is_refused() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.act("confirm_repair", "MH-MAIN", T0 + M)
    run.act("reject_repair", "DS-1", T0 + M)
    assert [r.reason for r in run.rejected] == [
        "MH-MAIN has no pending late repair claim",
        "the device has no case",
    ]


def test_claims_survive_a_restore() -> None:
    from streams.detector import Detector
    from streams.harness import REG, action, reading
    from streams.rules import default_rules

    det = Detector(default_rules(), REG)
    det.on_reading(reading("MH-MAIN", T0, open=True))
    det.on_watermark(T0 + 6 * H)
    det.on_reading(reading("MH-MAIN", T0 + S, T0 + 6 * H, open=False))
    saved = det.export_device("MH-MAIN")
    clock = det.export_clock()
    again = Detector(default_rules(), REG)
    again.import_clock(clock)
    assert saved is not None and again.import_device("MH-MAIN", saved)
    outs = again.on_action(action("confirm_repair", "MH-MAIN", T0 + 6 * H))
    assert [o.reverses for o in outs if getattr(o, "reverses", None)] == [
        f"{CASE}:hour:{k}" for k in range(1, 5)
    ]


# ------------------------------------------------------------------ backdated closes (docs/rules.md)


def backdated_close(run: Run, at: int, said: int, officer: str = "sup-jinshui") -> list:
    """A supervisor's close dated ``at``, recorded by the gate at ``said``, with its reason."""
    return run.act(
        "close", "MH-MAIN", at, officer=officer, role="district_supervisor", channel="cli",
        credential="token:t1", reason="巡查记录：早已修复", recorded_at=said,
    )  # fmt: skip


def test_a_close_backdated_beyond_the_bound_reverses_nothing_until_a_second_officer_confirms() -> (
    None
):
    """The issue's attack: a close backdated to the opening instant wiped a case (net 100,000 -> 0)."""
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.tick(T0 + 12 * H)  # hours 1..10
    booked = run.ledger.entries()
    assert run.ledger.net() == 100_000
    said = T0 + 12 * H + M
    backdated_close(run, T0, said)
    assert run.ledger.entries() == booked, "a backdated close may not reverse on its own"
    case = run.cases[CASE]
    assert (
        case.state == "closed" and case.detail["repair_at"] == said
    )  # the clock stopped when said
    claim = case.detail["backdated_close_claim"]
    assert claim == {
        "status": "pending", "repair_at": T0, "claimed_by": "sup-jinshui",
        "role": "district_supervisor", "reason": "巡查记录：早已修复", "recorded_at": said,
        "lateness_ms": 12 * H + M, "at": said, "hours_at_stake": 10, "yuan_at_stake": 100_000,
        "decided_by": None, "decided_at": None,
    }  # fmt: skip
    close_ev = case.evidence[-1]
    assert close_ev["action"] == "close" and close_ev["at"] == T0
    assert close_ev["reason"] == "巡查记录：早已修复" and close_ev["recorded_at"] == said
    run.tick(T0 + 30 * H)
    assert run.ledger.entries() == booked, "no hour accrues after the officer said it is repaired"
    # a second officer confirms: every hour after the claimed repair is reversed, once
    run.act("confirm_repair", "MH-MAIN", T0 + 30 * H, officer="sup-city")
    reversals = [e for e in run.ledger.entries() if e.reverses]
    assert [e.reverses for e in reversals] == [f"{CASE}:hour:{k}" for k in range(1, 11)]
    assert all(e.accrued_at == T0 + 30 * H for e in reversals)  # the watermark when confirmed
    assert all(
        [(ev["action"], ev["officer"]) for ev in e.evidence]
        == [("close", "sup-jinshui"), ("confirm_repair", "sup-city")]
        for e in reversals
    )
    assert run.ledger.net() == 0
    case = run.cases[CASE]
    assert case.state == "closed" and case.detail["repair_at"] == T0
    claim = case.detail["backdated_close_claim"]
    assert (claim["status"], claim["decided_by"], claim["decided_at"]) == (
        "confirmed", "sup-city", T0 + 30 * H,
    )  # fmt: skip
    before = run.ledger.entries()
    run.act("confirm_repair", "MH-MAIN", T0 + 31 * H, officer="sup-city")  # the link used again
    backdated_close(run, T0, T0 + 31 * H)  # and the close redelivered
    run.tick(T0 + 40 * H)
    assert run.ledger.entries() == before and run.rejected == []


def test_the_claimant_cannot_confirm_their_own_backdated_close() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.tick(T0 + 6 * H)
    backdated_close(run, T0 + H, T0 + 6 * H)
    snapshot = run.cases[CASE]
    assert run.act("confirm_repair", "MH-MAIN", T0 + 6 * H + M, officer="sup-jinshui") == []
    assert run.cases[CASE] == snapshot and run.ledger.net() == 40_000
    assert run.rejected == []  # accepted as an act, but it decides nothing
    assert run.cases[CASE].detail["backdated_close_claim"]["status"] == "pending"
    run.act("confirm_repair", "MH-MAIN", T0 + 6 * H + 2 * M, officer="sup-city")
    assert run.ledger.net() == 0
    assert run.cases[CASE].detail["backdated_close_claim"]["decided_by"] == "sup-city"


def test_a_rejected_backdated_close_keeps_the_ledger_and_the_clock_stopped_when_it_was_said() -> (
    None
):
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.tick(T0 + 6 * H)  # hours 1..4
    backdated_close(run, T0, T0 + 6 * H + 30 * M)
    run.act("reject_repair", "MH-MAIN", T0 + 7 * H, officer="sup-city")
    claim = run.cases[CASE].detail["backdated_close_claim"]
    assert (claim["status"], claim["decided_by"]) == ("rejected", "sup-city")
    run.tick(T0 + 20 * H)
    assert run.amounts() == [10_000] * 4  # nothing reversed, nothing more accrued
    assert run.cases[CASE].state == "closed"
    assert run.cases[CASE].detail["repair_at"] == T0 + 6 * H + 30 * M
    run.act("confirm_repair", "MH-MAIN", T0 + 20 * H, officer="sup-other")
    assert [r.reason for r in run.rejected] == ["MH-MAIN has no pending late repair claim"]
    assert run.amounts() == [10_000] * 4


def test_the_claimant_may_withdraw_a_backdated_close() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.tick(T0 + 6 * H)
    backdated_close(run, T0, T0 + 6 * H)
    run.act("reject_repair", "MH-MAIN", T0 + 6 * H + M, officer="sup-jinshui")
    claim = run.cases[CASE].detail["backdated_close_claim"]
    assert (claim["status"], claim["decided_by"]) == ("rejected", "sup-jinshui")
    assert run.ledger.net() == 40_000


@pytest.mark.parametrize(
    "backdated_min, at_once", [(0, True), (1, True), (15, True), (16, False), (120, False)]
)
def test_a_close_backdated_within_the_bound_repairs_at_once(
    backdated_min: int, at_once: bool
) -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.tick(DEADLINE + 4 * H)  # hours 1..4
    at = DEADLINE + 4 * H - backdated_min * M
    backdated_close(run, at, DEADLINE + 4 * H)
    run.tick(DEADLINE + 10 * H)
    case = run.cases[CASE]
    if at_once:
        assert "backdated_close_claim" not in case.detail
        assert case.detail["repair_at"] == at and run.ledger.net() == 10_000 * hours_owed(at)
    else:
        assert case.detail["backdated_close_claim"]["status"] == "pending"
        assert case.detail["repair_at"] == DEADLINE + 4 * H and run.ledger.net() == 40_000


def test_the_bound_counts_from_the_recorded_instant_when_the_watermark_lags() -> None:
    """A quiet partition: the gate recorded the close well after the worker's watermark."""
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.tick(DEADLINE + 2 * H)  # hours 1, 2
    at = DEADLINE + 2 * H - 5 * M  # five minutes behind the watermark ...
    said = DEADLINE + 3 * H + 30 * M  # ... but 3 h 35 min behind when the officer said it
    backdated_close(run, at, said)
    claim = run.cases[CASE].detail["backdated_close_claim"]
    assert claim["status"] == "pending" and claim["lateness_ms"] == said - at
    assert (claim["hours_at_stake"], claim["yuan_at_stake"]) == (2, 20_000)  # hours 2 and 3
    run.tick(DEADLINE + 10 * H)
    assert run.amounts() == [10_000] * 3  # hour 3 accrued before the officer said it: owed
    run.act("confirm_repair", "MH-MAIN", DEADLINE + 10 * H, officer="sup-city")
    assert run.ledger.net() == 10_000 == 10_000 * hours_owed(at)


def test_a_backdated_close_that_un_owes_nothing_is_taken_as_it_is() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.tick(DEADLINE + 30 * M)  # escalated, no hour booked or due yet
    backdated_close(run, T0 + 10 * M, DEADLINE + 30 * M)
    case = run.cases[CASE]
    assert case.detail["repair_at"] == T0 + 10 * M and "backdated_close_claim" not in case.detail
    run.tick(T0 + 24 * H)
    assert list(run.ledger) == []


def test_without_recorded_at_the_bound_counts_from_the_watermark() -> None:
    """A replay file's close (no gate, no ``recorded_at``) is judged on the watermark alone."""
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.tick(T0 + 12 * H)
    run.act("close", "MH-MAIN", T0, officer="grid-07")
    claim = run.cases[CASE].detail["backdated_close_claim"]
    assert (claim["status"], claim["at"], claim["recorded_at"]) == ("pending", T0 + 12 * H, None)
    assert run.ledger.net() == 100_000


def test_an_earlier_proof_supersedes_a_backdated_close() -> None:
    """The device's own late reading, once confirmed, proves a repair before the claimed one."""
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.tick(T0 + 8 * H)  # hours 1..6
    backdated_close(run, T0 + 5 * H, T0 + 8 * H)  # claims hours 4..6
    run.read("MH-MAIN", T0 + S, received_at=T0 + 8 * H + M, open=False)  # claims hours 1..6
    d = run.cases[CASE].detail
    assert d["late_repair_claim"]["status"] == d["backdated_close_claim"]["status"] == "pending"
    # the close's own claimant may decide the device's claim: that one needs no four eyes
    run.act("confirm_repair", "MH-MAIN", T0 + 8 * H + 2 * M, officer="sup-jinshui")
    d = run.cases[CASE].detail
    assert d["late_repair_claim"]["status"] == "confirmed"
    assert d["backdated_close_claim"]["status"] == "superseded"
    assert d["repair_at"] == T0 + S and run.ledger.net() == 0
    assert len([e for e in run.ledger if e.reverses]) == 6


def test_one_confirmation_books_each_claim_s_reversals_with_its_own_evidence() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.tick(T0 + 8 * H)  # hours 1..6 (at T0 + 3 h .. T0 + 8 h)
    backdated_close(run, T0 + 3 * H + 30 * M, T0 + 8 * H)  # would un-owe hours 2..6
    run.read("MH-MAIN", T0 + 6 * H + 30 * M, received_at=T0 + 8 * H, open=False)  # hours 5, 6
    # the claimant confirming decides the device's claim only; theirs still waits
    run.act("confirm_repair", "MH-MAIN", T0 + 8 * H + M, officer="sup-jinshui")
    assert [e.reverses for e in run.ledger if e.reverses] == [f"{CASE}:hour:{k}" for k in (5, 6)]
    assert run.cases[CASE].detail["backdated_close_claim"]["status"] == "pending"
    run.act("confirm_repair", "MH-MAIN", T0 + 8 * H + 2 * M, officer="sup-city")
    reversals = [e for e in run.ledger if e.reverses]
    assert [e.reverses for e in reversals] == [f"{CASE}:hour:{k}" for k in (5, 6, 2, 3, 4)]
    assert [e.evidence[0]["type"] for e in reversals] == ["reading"] * 2 + ["action"] * 3
    assert run.ledger.net() == 10_000 * hours_owed(T0 + 3 * H + 30 * M)


def test_a_backdated_close_waits_on_an_older_case_when_the_cover_opens_again() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.tick(T0 + 6 * H)
    backdated_close(run, T0, T0 + 6 * H)
    run.read("MH-MAIN", T0 + 7 * H, open=True)  # stolen again: a new case
    second = f"manhole:MH-MAIN:{T0 + 7 * H}"
    run.act("confirm_repair", "MH-MAIN", T0 + 7 * H + M, officer="sup-city")
    assert [e.reverses for e in run.ledger if e.reverses] == [
        f"{CASE}:hour:{k}" for k in range(1, 5)
    ]
    assert "backdated_close_claim" not in run.cases[second].detail


def test_backdated_close_claims_survive_a_restore() -> None:
    from streams.detector import Detector
    from streams.harness import REG, action, reading
    from streams.rules import default_rules

    det = Detector(default_rules(), REG)
    det.on_reading(reading("MH-MAIN", T0, open=True))
    det.on_watermark(T0 + 6 * H)
    det.on_action(action("close", "MH-MAIN", T0, officer="sup-jinshui", recorded_at=T0 + 6 * H))
    saved = det.export_device("MH-MAIN")
    again = Detector(default_rules(), REG)
    again.import_clock(det.export_clock())
    assert saved is not None and again.import_device("MH-MAIN", saved)
    assert (
        again.on_action(action("confirm_repair", "MH-MAIN", T0 + 6 * H, officer="sup-jinshui"))
        == []
    )
    outs = again.on_action(action("confirm_repair", "MH-MAIN", T0 + 6 * H, officer="sup-city"))
    assert [o.reverses for o in outs if getattr(o, "reverses", None)] == [
        f"{CASE}:hour:{k}" for k in range(1, 5)
    ]
