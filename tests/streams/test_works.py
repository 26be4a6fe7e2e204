"""Announced works (施工报备, docs/rules.md "Announced works"): the water company lifting covers
to clean a sewer is not fined like a theft; works that overrun their window are."""

from __future__ import annotations

from streams.harness import T0, H, M, Run


def _announce(run: Run, start: int, until: int, officer: str = "grid-07") -> None:
    run.act("announce_works", "MH-MAIN", T0 - H, officer=officer, note="供水公司清淤",
            works_from=start, works_until=until)  # fmt: skip


def test_a_cover_opened_inside_announced_works_books_nothing() -> None:
    run = Run()
    _announce(run, T0, T0 + 6 * H)
    run.read("MH-MAIN", T0 + H, open=True)
    run.tick(T0 + 5 * H)
    run.read("MH-MAIN", T0 + 5 * H + 30 * M, open=False)
    run.read("MH-MAIN", T0 + 5 * H + 35 * M, open=False)
    run.read("MH-MAIN", T0 + 5 * H + 40 * M, open=False)
    run.tick(T0 + 12 * H)
    assert list(run.ledger) == []
    [case] = run.of_rule("manhole")
    assert case.detail["planned_works"]["reason"] == "供水公司清淤" and case.deadline == T0 + 6 * H


def test_the_same_cover_still_open_after_the_window_books_from_the_windows_end() -> None:
    run = Run()
    _announce(run, T0, T0 + 6 * H)
    run.read("MH-MAIN", T0 + H, open=True)
    run.tick(T0 + 9 * H + M)
    entries = sorted((e.hour_index, e.accrued_at) for e in run.ledger)
    assert entries == [(1, T0 + 7 * H), (2, T0 + 8 * H), (3, T0 + 9 * H)]  # from the window's end
    states = [e.state for e in run.events]
    assert states[0] == "planned" and "escalated" in states


def test_a_cover_opened_before_or_after_the_window_is_an_ordinary_case() -> None:
    run = Run()
    _announce(run, T0 + 10 * H, T0 + 12 * H)
    run.read("MH-MAIN", T0, open=True)  # before the works: a theft as any other
    run.tick(T0 + 4 * H)
    assert [e.hour_index for e in run.ledger] == [1, 2]  # grace 2 h on a main road


def test_announcing_the_same_works_twice_changes_nothing() -> None:
    run = Run()
    _announce(run, T0, T0 + 6 * H)
    _announce(run, T0, T0 + 6 * H)
    assert run.det.export_device("MH-MAIN")["states"]["manhole"]["works"] == [  # type: ignore[index]
        {
            "from": T0,
            "until": T0 + 6 * H,
            "officer": "grid-07",
            "role": "",
            "reason": "供水公司清淤",
            "recorded_at": T0 - H,
        }  # fmt: skip
    ]
