"""Properties over random input: ids unique, money exact, the floor rule, determinism, restore."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract.cases import CaseEvent, LedgerEntry
from streams.detector import Detector
from streams.harness import REG, T0, H, M, action, reading, rules_with
from streams.rules import Rules, default_rules

DEVICES = ("MH-MAIN", "MH-SEC", "DS-1", "DS-2", "SL-1")
END = T0 + 100 * H
OFFICERS = ("grid-07", "sup-01", "sup-02")
LATE_MAX = 15 * M

op = st.one_of(
    st.tuples(
        st.just("r"),
        st.sampled_from(DEVICES),
        st.integers(0, 24 * 60),  # event minute
        st.booleans(),  # abnormal / dusty / dark and leaking
        st.integers(0, 180),  # arrival lag, minutes
    ),
    st.tuples(st.just("w"), st.integers(0, 26 * 60)),
    st.tuples(
        st.just("a"),
        st.sampled_from(("close", "accident", "ack", "note", "confirm_repair", "reject_repair")),
        st.sampled_from(DEVICES),
        st.integers(0, 26 * 60),
        st.sampled_from(OFFICERS),
        st.one_of(st.none(), st.integers(0, 600)),  # recorded this many minutes later (the gate)
    ),
)
ops = st.lists(op, max_size=120)


def build(ops_: list[tuple[Any, ...]]) -> list[tuple[str, Any]]:
    evs: list[tuple[str, Any]] = []
    for o in ops_:
        if o[0] == "r":
            _, dev, minute, bad, lag = o
            ts = T0 + minute * M
            fields: dict[str, Any]
            if dev.startswith("MH"):
                fields = {"open": bad, "tilt_deg": 1.0}
            elif dev.startswith("DS"):
                fields = {"pm10": 400.0 if bad else 50.0 + minute % 3}
            else:
                fields = {
                    "on": True,
                    "current_a": 0.0 if bad else 0.4,
                    "leakage_ma": 31.0 if bad else 1.0,
                }
            evs.append(("r", reading(dev, ts, ts + lag * M, **fields)))
        elif o[0] == "w":
            evs.append(("w", T0 + o[1] * M))
        else:
            _, kind, dev, minute, officer, recorded = o
            at = T0 + minute * M
            evs.append(("a", action(kind, dev, at, officer, note="n" if kind == "note" else None,
                                    recorded_at=None if recorded is None else at + recorded * M)))  # fmt: skip
    evs.append(("w", END))  # long after everything: all owed hours are booked
    return evs


def run(
    evs: list[tuple[str, Any]], det: Detector | None = None, rules: Rules | None = None
) -> list[Any]:
    det = det or Detector(rules or default_rules(), REG)
    log: list[Any] = []
    for kind, x in evs:
        if kind == "r":
            log += det.on_reading(x)
        elif kind == "a":
            log += det.on_action(x)
        else:
            log += det.on_watermark(x)
    return log


def check_invariants(normal_run: int, ops_: list[tuple[Any, ...]]) -> None:
    log = run(build(ops_), rules=rules_with(manhole={"normal_run": normal_run}))
    entries = [o for o in log if isinstance(o, LedgerEntry)]
    ids = [e.id for e in entries]
    assert len(ids) == len(set(ids)), "an entry id was booked twice"
    assert all(type(e.amount_yuan) is int for e in entries)
    by_id = {e.id: e for e in entries}
    for e in entries:
        if e.reverses is not None:
            assert e.amount_yuan == -by_id[e.reverses].amount_yuan
            assert e.accrued_at >= by_id[e.reverses].accrued_at
            first = e.evidence[0]
            if first.get("action") == "close":  # a close reversed it: at once only within the bound
                decided = [ev for ev in e.evidence[1:] if ev.get("action") == "confirm_repair"]
                if decided:
                    assert all(ev["officer"] != first["officer"] for ev in decided), e
                else:
                    said = max(e.accrued_at, first.get("recorded_at") or first["at"])
                    assert said - first["at"] <= LATE_MAX, e
    cases: dict[str, CaseEvent] = {}
    for o in log:
        if isinstance(o, CaseEvent):
            cases[o.case_id] = o
    for c in cases.values():
        if c.rule == "manhole":
            net = sum(
                e.amount_yuan for e in entries if e.case_id == c.case_id and e.rule == "manhole"
            )
            assert c.deadline is not None
            until = c.detail["repair_at"] if c.detail["repair_at"] is not None else END
            assert net == 10_000 * max(0, (until - c.deadline) // H), c
        if c.rule == "dust":
            assert sum(e.amount_yuan for e in entries if e.case_id == c.case_id) == 100_000
    acc = [e for e in entries if e.rule == "manhole.accident"]
    assert len(acc) == len({(e.case_id, e.payer_type) for e in acc})


def check_restore(mode: str, ops_: list[tuple[Any, ...]], cut_fraction: float) -> None:
    rules = rules_with(dust={"mode": mode, "flatline_readings": 3})
    evs = build(ops_)
    ref = run(evs, rules=rules)
    assert run(evs, rules=rules) == ref  # same input, same output
    cut = int(len(evs) * cut_fraction)
    det = Detector(rules, REG)
    first = run(evs[:cut], det)
    fresh = Detector(rules, REG)
    fresh.import_clock(det.export_clock())
    for d in det.device_ids():
        state = det.export_device(d)
        assert state is not None
        fresh.import_device(d, state)
    assert first + run(evs[cut:], fresh) == ref


def check_twice(ops_: list[tuple[Any, ...]]) -> None:
    evs = build(ops_)
    ledger_once = [o for o in run(evs) if isinstance(o, LedgerEntry)]
    doubled = [e for ev in evs for e in ((ev, ev) if ev[0] == "r" else (ev,))]
    ledger_twice = [o for o in run(doubled) if isinstance(o, LedgerEntry)]
    assert ledger_twice == ledger_once


@pytest.mark.parametrize("normal_run", [1, 2])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops_=ops)
def test_ledger_invariants(normal_run: int, ops_: list[tuple[Any, ...]]) -> None:
    check_invariants(normal_run, ops_)


@pytest.mark.parametrize("mode", ["absolute", "background"])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops_=ops, cut_fraction=st.floats(0, 1))
def test_same_input_same_output_and_restore_anywhere(
    mode: str, ops_: list[tuple[Any, ...]], cut_fraction: float
) -> None:
    check_restore(mode, ops_, cut_fraction)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_every_reading_twice_changes_nothing(ops_: list[tuple[Any, ...]]) -> None:
    check_twice(ops_)
