"""An officer action is applied once, however often it is delivered (decision 010, §6).

A forwarder restarted before its commit, or a restore that gives back acks the journal
already held, delivers an action again, later in the journal: by then the case it closed
may be closed and a new one open on the same cover. The detector remembers each device's
last ``ACTED_KEPT`` action ids in its state and gives nothing for a repeat.
"""

from __future__ import annotations

import pytest

from contract.cases import OfficerAction
from contract.journal import JournalError, decode, encode, to_record
from streams.detector import ACTED_KEPT
from streams.harness import T0, H, M, Run

MH = "MH-MAIN"


def _reopened(run: Run) -> None:
    """The first case closed (``close`` id c-1), then the cover shut and opened again: a new case."""
    run.read(MH, T0, open=True)
    run.tick(T0 + 3 * H + 1)  # the deadline at 2 h, an hour booked at 3 h
    run.act("close", MH, T0 + 3 * H + 2, action_id="c-1")
    run.read(MH, T0 + 4 * H, open=False)
    run.read(MH, T0 + 4 * H + M, open=True)


def _manhole_cases(run: Run) -> list[tuple[int, str]]:
    return [(c.opened_at, c.state) for c in run.of_rule("manhole")]


def _entries(run: Run) -> list[tuple[str, int]]:
    return [(e.id, e.amount_yuan) for e in run.ledger]


def test_a_close_delivered_again_after_a_new_case_opened_closes_nothing() -> None:
    once, twice = Run(), Run()
    for run in (once, twice):
        _reopened(run)
    assert _manhole_cases(twice) == [(T0, "closed"), (T0 + 4 * H + M, "open")]
    again = twice.act("close", MH, T0 + 3 * H + 2, action_id="c-1")  # the forwarder's repeat
    assert again == []
    for run in (once, twice):
        run.tick(T0 + 9 * H)
    assert (
        _manhole_cases(twice)
        == _manhole_cases(once)
        == [(T0, "closed"), (T0 + 4 * H + M, "escalated")]
    )
    assert _entries(twice) == _entries(once)
    assert len(_entries(once)) == 3, "an hour of the first case, two of the new one (7 h, 8 h)"


def test_an_accident_delivered_again_books_once() -> None:
    once, twice = Run(), Run()
    report = dict(action_id="acc-1", officer="sup-1")
    confirm = dict(action_id="acc-2", officer="sup-2")
    for run in (once, twice):
        run.read(MH, T0, open=True)
        run.tick(T0 + 3 * H + 1)
        run.act("accident", MH, T0 + 3 * H + 2, **report)
        run.act("accident", MH, T0 + 3 * H + 3, **confirm)  # four eyes: booked here
        run.act("close", MH, T0 + 3 * H + 4, action_id="c-1")
        run.read(MH, T0 + 4 * H, open=False)
        run.read(MH, T0 + 4 * H + M, open=True)  # an accident without a case id now goes here
    assert twice.act("accident", MH, T0 + 3 * H + 2, **report) == []
    assert twice.act("accident", MH, T0 + 3 * H + 3, **confirm) == []
    assert sum(twice.amounts("manhole.accident")) == 1_500_000
    assert _entries(twice) == _entries(once)
    assert twice.of_rule("manhole")[-1].detail.get("accident_report") is None


def test_an_action_without_an_id_is_applied_each_time_as_before() -> None:
    """Records from before ids decode and act; nothing tells their repeats apart."""
    run = Run()
    _reopened(run)
    (item,) = [decode(encode(to_record(OfficerAction("close", MH, T0 + 4 * H + 2 * M, "g"))[1]))]
    assert isinstance(item, OfficerAction) and item.action_id is None
    run.take(run.det.on_action(item))
    assert _manhole_cases(run) == [(T0, "closed"), (T0 + 4 * H + M, "closed")]
    state = run.det.export_device(MH)
    assert state is not None and state["acted"] == ["c-1"], "only ids are remembered"


def test_the_65th_distinct_id_evicts_the_oldest() -> None:
    """Beyond the window a repeat is no longer known: the close c-1 would close the new case."""
    assert ACTED_KEPT == 64
    run = Run()
    _reopened(run)
    for i in range(ACTED_KEPT - 1):  # c-1 and 63 notes: 64 ids
        assert run.act("note", MH, T0 + 5 * H + i, note=f"n{i}", action_id=f"n-{i}")
    state = run.det.export_device(MH)
    assert state is not None and state["acted"][0] == "c-1" and len(state["acted"]) == 64
    assert run.act("close", MH, T0 + 3 * H + 2, action_id="c-1") == [], "the 64th back: known"
    run.act("note", MH, T0 + 6 * H, note="the 65th", action_id="n-64")
    state = run.det.export_device(MH)
    assert state is not None
    assert state["acted"] == [f"n-{i}" for i in range(ACTED_KEPT - 1)] + ["n-64"]
    run.act("close", MH, T0 + 3 * H + 2, action_id="c-1")
    assert _manhole_cases(run)[-1][1] == "closed", "c-1 forgotten: applied again"


def test_a_rejected_action_is_decided_once_too() -> None:
    """An ack that found no open case is not applied to a case that opens after it."""
    run = Run()
    run.read(MH, T0, open=False)
    (rejected,) = run.act("ack", MH, T0 + M, action_id="k-1")
    assert rejected.reason == f"{MH} has no open case"
    run.read(MH, T0 + 2 * M, open=True)
    assert run.act("ack", MH, T0 + M, action_id="k-1") == []
    assert run.of_rule("manhole")[0].detail["acknowledged_at"] is None


def test_the_ids_survive_a_restore_and_a_state_from_before_them_loads() -> None:
    run = Run()
    _reopened(run)
    saved = run.det.export_device(MH)
    assert saved is not None and saved["acted"] == ["c-1"]
    restored = Run()
    assert restored.det.import_device(MH, saved)
    assert restored.det.on_action(OfficerAction("close", MH, T0, "g", action_id="c-1")) == []
    old = {k: v for k, v in saved.items() if k != "acted"}  # a state written before ids
    fresh = Run()
    assert fresh.det.import_device(MH, old)
    assert fresh.take(fresh.det.on_action(OfficerAction("close", MH, T0, "g", action_id="c-1")))
    assert [c.state for c in fresh.of_rule("manhole")] == ["closed"]


@pytest.mark.parametrize("bad", [17, "", "x" * 65, "tab\there"])
def test_an_action_id_that_is_not_short_printable_text_is_refused(bad: object) -> None:
    rec = {"type": "action", "action": "ack", "device": MH, "at": T0, "officer": "g",
           "case_id": None, "note": None, "action_id": bad}  # fmt: skip
    with pytest.raises(JournalError) as exc:
        decode(encode(rec))
    assert exc.value.code == "bad_record" and "action_id" in exc.value.message
