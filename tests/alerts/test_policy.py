"""Who may do what (alerts/policy.py), table by table, as config/policy.yaml ships it."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerts.policy import default_policy, load_policy
from foundation.errors import ConfigError
from registry.officers import Officer

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_790_000_000_000
M = 60_000

DUTY = Officer("duty-js", "值班员", ("duty",), ("jinshui",))
GRID = Officer("grid-js", "网格员", ("grid",), ("jinshui",))
SUP = Officer("sup-js", "区督办", ("district_supervisor",), ("jinshui",))
CITY = Officer("city-1", "市督办", ("city_supervisor",), ())
FIN = Officer("fin-1", "财务", ("finance",), ())

SHIPPED = load_policy(ROOT / "config" / "policy.yaml")


@pytest.mark.parametrize(
    ("officer", "action", "district", "allowed"),
    [
        (DUTY, "ack", "jinshui", True),
        (DUTY, "close", "jinshui", False),
        (DUTY, "accident", "jinshui", False),
        (DUTY, "ack", "erqi", False),
        (GRID, "close", "jinshui", True),
        (GRID, "close", "erqi", False),
        (GRID, "confirm_repair", "jinshui", False),
        (SUP, "close", "jinshui", True),
        (SUP, "accident", "jinshui", True),
        (SUP, "confirm_repair", "jinshui", True),
        (SUP, "accident", "erqi", False),
        (CITY, "accident", "erqi", True),
        (CITY, "reject_repair", "huiji", True),
        (FIN, "ack", "jinshui", False),
        (FIN, "close", "jinshui", False),
    ],
)
def test_roles_and_districts_gate_each_action(officer, action, district, allowed) -> None:
    d = SHIPPED.decide(officer, action, district, acted_at=NOW, now=NOW, note="x")
    assert d.allowed is allowed, d.reason
    if not allowed:
        assert d.reason and "\n" not in d.reason


def test_the_shipped_file_is_the_default_policy() -> None:
    assert SHIPPED.actions == default_policy().actions
    assert SHIPPED.backdate_tolerance_ms == 5 * M and SHIPPED.note_max_length == 500


def test_an_accident_says_it_waits_for_a_second_officer() -> None:
    d = SHIPPED.decide(SUP, "accident", "jinshui", acted_at=NOW, now=NOW)
    assert d.allowed and "second, different officer" in d.reason and d.role == "district_supervisor"


def test_backdating_by_a_grid_officer_is_refused() -> None:
    d = SHIPPED.decide(GRID, "close", "jinshui", acted_at=NOW - 3 * 60 * M, now=NOW, reason="late")
    assert not d.allowed and "may not backdate" in d.reason


def test_backdating_by_a_supervisor_needs_a_reason_and_is_marked() -> None:
    without = SHIPPED.decide(SUP, "close", "jinshui", acted_at=NOW - 60 * M, now=NOW)
    assert not without.allowed and "needs a reason" in without.reason
    with_reason = SHIPPED.decide(
        SUP, "close", "jinshui", acted_at=NOW - 60 * M, now=NOW, reason="巡查"
    )
    assert (
        with_reason.allowed
        and with_reason.backdated
        and "backdated by 60 min" in with_reason.reason
    )


def test_a_few_minutes_ago_is_not_backdating() -> None:
    d = SHIPPED.decide(GRID, "close", "jinshui", acted_at=NOW - 4 * M, now=NOW)
    assert d.allowed and not d.backdated


def test_an_act_dated_in_the_future_is_refused() -> None:
    d = SHIPPED.decide(CITY, "close", "jinshui", acted_at=NOW + 10 * M, now=NOW)
    assert not d.allowed and "future" in d.reason


def test_a_note_needs_text_and_has_a_bounded_length() -> None:
    assert not SHIPPED.decide(DUTY, "note", "jinshui", acted_at=NOW, now=NOW, note="  ").allowed
    assert not SHIPPED.decide(
        DUTY, "note", "jinshui", acted_at=NOW, now=NOW, note="x" * 501
    ).allowed
    assert SHIPPED.decide(DUTY, "note", "jinshui", acted_at=NOW, now=NOW, note="x" * 500).allowed


def test_a_policy_file_with_an_unknown_role_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "policy.yaml"
    p.write_text("actions:\n  close: {roles: [grid, supervisor]}\n")
    with pytest.raises(ConfigError, match=r"policy.yaml:2.*unknown role 'supervisor'"):
        load_policy(p)


def test_a_policy_file_with_an_unknown_action_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "policy.yaml"
    p.write_text("actions:\n  clsoe: {roles: [grid]}\n")
    with pytest.raises(ConfigError, match="did you mean 'close'"):
        load_policy(p)


def test_announcing_works_is_for_grid_officers_and_supervisors() -> None:
    assert SHIPPED.decide(
        GRID, "announce_works", "jinshui", acted_at=NOW, now=NOW, note="清淤"
    ).allowed
    assert not SHIPPED.decide(
        DUTY, "announce_works", "jinshui", acted_at=NOW, now=NOW, note="清淤"
    ).allowed
    assert not SHIPPED.decide(
        GRID, "announce_works", "erqi", acted_at=NOW, now=NOW, note="清淤"
    ).allowed
