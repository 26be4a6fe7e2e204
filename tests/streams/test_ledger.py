"""The append-only ledger."""

from __future__ import annotations

import pytest

from contract.cases import CaseEvent, LedgerEntry, OfficerAction
from streams.ledger import Ledger, LedgerConflict


def entry(
    i: str = "c:hour:1", amount: int = 10_000, payer: str = "U", payer_type: str = "property_unit"
) -> LedgerEntry:
    return LedgerEntry(
        i, "c", "manhole", "MH-1", payer, payer_type, "jinshui", amount, 5, 1, None, []
    )


def test_add_is_idempotent_by_id() -> None:
    led = Ledger()
    assert led.add(entry()) is True
    assert led.add(entry()) is False
    assert len(led) == 1 and led.net() == 10_000


def test_same_id_different_content_is_a_bug() -> None:
    led = Ledger([entry()])
    with pytest.raises(LedgerConflict, match="c:hour:1"):
        led.add(entry(amount=20_000))


def test_net_by_payer_and_case() -> None:
    led = Ledger([
        entry("a"), entry("b", 500_000, "jinshui", "district_government"), entry("a:reversal", -10_000),
        entry("d", 1_000_000),
    ])  # fmt: skip
    assert led.net_by_payer() == {
        ("district_government", "jinshui"): 500_000,
        ("property_unit", "U"): 1_000_000,
    }
    assert led.net_by_case() == {"c": 1_500_000}
    assert [e.id for e in led.entries()] == ["a", "b", "a:reversal", "d"]


def test_amount_must_be_int_yuan() -> None:
    with pytest.raises(TypeError):
        entry(amount=10_000.0)  # type: ignore[arg-type]


def test_json_round_trip() -> None:
    led = Ledger([entry("a"), entry("b", -3)])
    again = Ledger.from_json_list(led.to_json_list())
    assert again.entries() == led.entries()
    ev = CaseEvent("c", "manhole", "manhole", "MH-1", "jinshui", "G", "U", "major", "open", 1, 1, 2,
                   [{"type": "reading"}], "0102", "addr", {"x": 1})  # fmt: skip
    assert CaseEvent.from_dict(ev.to_dict()) == ev
    a = OfficerAction("close", "MH-1", 7, "grid-07", note="fixed")
    assert OfficerAction.from_dict(a.to_dict()) == a


def test_unknown_action_is_refused() -> None:
    with pytest.raises(ValueError, match="valid actions"):
        OfficerAction("reopen", "MH-1", 7, "grid-07")
