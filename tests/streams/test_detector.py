"""The detector as a whole: restore mid-stream, idempotence, dirty tracking, time only from the watermark."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from contract.cases import CaseEvent, LedgerEntry
from contract.reading import Reading
from streams.detector import Detector
from streams.harness import REG, T0, H, M, Run, action, reading, rules_with
from streams.ledger import Ledger
from streams.rules import default_rules


def city_day(seed: int = 7) -> list[tuple[str, Any]]:
    """A day of a small city: every kind, late readings, duplicates, silence, officers."""
    rnd = random.Random(seed)
    evs: list[tuple[str, Any]] = []
    t = T0
    for minute in range(0, 20 * 60, 5):
        t = T0 + minute * M
        wm = t + 3000
        # manholes: MH-MAIN opens at 11:00, silent 13:00-19:00, repaired reading at 19:00 arrives late
        if minute == 60:
            evs.append(("r", reading("MH-MAIN", t, wm, open=True)))
        elif 180 <= minute < 540:
            pass
        elif minute % 15 == 0 and minute < 180:
            evs.append(("r", reading("MH-MAIN", t, wm, open=True, tilt_deg=40.0)))
        if minute == 600:
            evs.append(
                ("r", reading("MH-MAIN", T0 + 450 * M, wm, open=False))
            )  # late proof of repair: 2.5 h late, a claim (docs/rules.md, "Late repair claims")
        if minute == 610:
            evs.append(("a", action("confirm_repair", "MH-MAIN", wm)))  # the officer confirms
        if minute % 10 == 0:
            evs.append(
                ("r", reading("MH-SEC", t, wm, tilt_deg=20.0 if 100 <= minute < 400 else 1.0))
            )
        if minute == 200:
            evs.append(("a", action("accident", "MH-SEC", wm)))
            evs.append(("a", action("accident", "MH-SEC", wm + 1000, officer="grid-09")))
        if minute == 320:
            evs.append(("a", action("ack", "MH-SEC", wm)))
        # dust: DS-1 has an episode at midday, DS-2 flatlines, DS-3 goes offline in working hours
        level = 260.0 if 120 <= minute < 200 else 60.0 + rnd.randint(0, 40)
        evs.append(("r", reading("DS-1", t, wm, pm10=level)))
        if minute % 15 == 0:
            evs.append(("r", reading("DS-1", t, wm, pm10=level)))  # redelivery
        evs.append(
            ("r", reading("DS-2", t + 1000, wm, pm10=77.0 if minute > 300 else 70.0 + minute % 7))
        )
        if not (400 <= minute < 500):
            evs.append(("r", reading("DS-3", t + 2000, wm, pm10=90.0 + rnd.randint(-5, 5))))
        # streetlights (daytime here, leakage event)
        if minute % 15 == 0:
            evs.append(
                (
                    "r",
                    reading(
                        "SL-1", t, wm, on=False, leakage_ma=35.0 if 240 <= minute < 300 else 1.0
                    ),
                )
            )
        if minute % 30 == 0:
            evs.append(("w", wm + 60_000))
    evs.append(("a", action("close", "MH-SEC", t)))
    evs.append(("w", t + 30 * H))
    return evs


def apply(det: Detector, ev: tuple[str, Any]) -> list[Any]:
    kind, x = ev
    if kind == "r":
        return det.on_reading(x)
    if kind == "a":
        return det.on_action(x)
    return det.on_watermark(x)


def collect(outs: list[Any], ledger: Ledger, cases: dict[str, CaseEvent], log: list[Any]) -> None:
    for o in outs:
        log.append(o)
        if isinstance(o, LedgerEntry):
            ledger.add(o)
        elif isinstance(o, CaseEvent):
            cases[o.case_id] = o


def run_all(
    events: list[tuple[str, Any]], rules: Any = None
) -> tuple[Ledger, dict[str, CaseEvent], list[Any]]:
    det = Detector(rules or default_rules(), REG)
    ledger, cases, log = Ledger(), {}, []  # type: ignore[var-annotated]
    for ev in events:
        collect(apply(det, ev), ledger, cases, log)
    return ledger, cases, log


def test_city_day_has_every_kind_of_case_and_money() -> None:
    ledger, cases, _ = run_all(city_day())
    rules = {c.rule for c in cases.values()}
    assert {
        "manhole",
        "dust",
        "dust.warning",
        "dust.flatline",
        "streetlight.leakage",
        "offline",
    } <= rules
    assert {e.rule for e in ledger} >= {"manhole", "manhole.accident", "dust"}
    assert any(e.reverses for e in ledger)  # the confirmed late repair reversed booked hours
    assert sum(e.amount_yuan for e in ledger if e.rule == "manhole.accident") == 1_500_000


@pytest.mark.parametrize("mode", ["absolute", "background"])
@pytest.mark.parametrize("cut_fraction", [0.0, 0.1, 0.33, 0.5, 0.77, 0.95, 1.0])
def test_export_import_midstream_gives_same_ledger(cut_fraction: float, mode: str) -> None:
    rules = rules_with(dust={"mode": mode})
    events = city_day()
    ref_ledger, ref_cases, ref_log = run_all(events, rules)
    cut = int(len(events) * cut_fraction)

    det = Detector(rules, REG)
    ledger, cases, log = Ledger(), {}, []  # type: ignore[var-annotated]
    for ev in events[:cut]:
        collect(apply(det, ev), ledger, cases, log)
    # what the Faust worker does: every device's state and the clock, through JSON
    snapshot = json.loads(json.dumps({
        "clock": det.export_clock(),
        "devices": {d: det.export_device(d) for d in det.device_ids()},
    }))  # fmt: skip
    restored = Detector(rules, REG)
    restored.import_clock(snapshot["clock"])
    for device_id, state in snapshot["devices"].items():
        restored.import_device(device_id, state)
    for ev in events[cut:]:
        collect(apply(restored, ev), ledger, cases, log)

    assert ledger.to_json_list() == ref_ledger.to_json_list()
    assert cases == ref_cases
    assert log == ref_log


def test_redelivering_everything_twice_changes_nothing() -> None:
    events = city_day()
    ref_ledger, ref_cases, _ = run_all(events)
    doubled = [ev for ev in events for _ in (0, 1)]
    ledger, cases, _ = run_all(doubled)
    assert ledger.to_json_list() == ref_ledger.to_json_list()
    assert {k: v.state for k, v in cases.items()} == {k: v.state for k, v in ref_cases.items()}


def test_restart_replaying_from_an_older_snapshot_books_nothing_twice() -> None:
    """At-least-once: the worker restores a snapshot taken at event 100 but had processed up to 300."""
    events = city_day()
    ref_ledger, _, _ = run_all(events)
    det = Detector(default_rules(), REG)
    ledger = Ledger()
    for ev in events[:100]:
        collect(apply(det, ev), ledger, {}, [])
    snap = {d: det.export_device(d) for d in det.device_ids()}
    clock = det.export_clock()
    for ev in events[100:300]:
        collect(apply(det, ev), ledger, {}, [])
    again = Detector(default_rules(), REG)
    again.import_clock(clock)
    for d, s in snap.items():
        again.import_device(d, s)  # type: ignore[arg-type]
    for ev in events[100:]:  # events 100..300 are processed a second time
        collect(apply(again, ev), ledger, {}, [])  # Ledger.add raises on any conflicting re-booking
    assert ledger.to_json_list() == ref_ledger.to_json_list()


def test_take_dirty_reports_changed_devices_once() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=False)
    run.read("DS-1", T0, pm10=50.0)
    assert run.det.take_dirty() == {"MH-MAIN", "DS-1"}
    assert run.det.take_dirty() == set()
    run.tick(T0 + 2 * H)  # both go offline: their state changed on the clock
    assert run.det.take_dirty() == {"MH-MAIN", "DS-1"}


def test_unknown_device_is_ignored_but_moves_the_watermark() -> None:
    from contract.reading import Reading

    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.take(
        run.det.on_reading(Reading("GHOST", "manhole", "jinshui", T0, T0 + 5 * H, {"open": True}))
    )
    assert run.det.watermark == T0 + 5 * H
    assert run.amounts("manhole") == [10_000] * 3
    assert run.det.export_device("GHOST") is None


def test_event_time_ahead_of_watermark_does_not_run_clocks() -> None:
    """Only received_at moves time: a sensor with a fast clock cannot book penalties early."""
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.read("MH-MAIN", T0 + 10 * H, received_at=T0 + M, open=True)
    assert list(run.ledger) == []


def test_import_rejects_unknown_version() -> None:
    det = Detector(default_rules(), REG)
    with pytest.raises(ValueError, match="version"):
        det.import_device("MH-MAIN", {"v": 99})


def test_set_registry_keeps_the_payer_of_an_open_case() -> None:
    """The parties of a case are fixed when it opens, so reversals always hit the original payer."""
    from dataclasses import replace as dc_replace

    from registry.devices import Registry

    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.tick(T0 + 3 * H)
    new_reg = Registry(
        [dc_replace(d, unit="新产权单位") if d.device_id == "MH-MAIN" else d for d in REG]
    )
    run.det.set_registry(new_reg)
    run.tick(T0 + 4 * H)
    run.read("MH-MAIN", T0 + 4 * H - 5 * M, received_at=T0 + 4 * H + M, open=False)  # late repair
    run.read("MH-MAIN", T0 + 5 * H, open=True)  # a new case: the new unit pays
    run.tick(T0 + 8 * H + 30 * M)
    assert [(e.payer, e.amount_yuan) for e in run.ledger] == [
        ("市政工程管理处", 10_000),
        ("市政工程管理处", 10_000),
        ("市政工程管理处", -10_000),
        ("新产权单位", 10_000),
    ]


def test_worker_restarted_after_a_device_left_the_registry_keeps_its_clock_running() -> None:
    """A restart restores what a live registry reload would have kept (docs/rules.md, "Registry changes")."""
    from registry.devices import Registry

    det = Detector(default_rules(), REG)
    ledger = Ledger()
    collect(
        det.on_reading(Reading("MH-MAIN", "manhole", "jinshui", T0, T0, {"open": True})),
        ledger,
        {},
        [],
    )
    collect(det.on_watermark(T0 + 3 * H), ledger, {}, [])
    state = json.loads(json.dumps(det.export_device("MH-MAIN")))
    clock = det.export_clock()
    without = Registry([d for d in REG if d.device_id != "MH-MAIN"])
    restarted = Detector(default_rules(), without)
    restarted.import_clock(clock)
    assert restarted.import_device("MH-MAIN", state) is True
    collect(restarted.on_watermark(T0 + 5 * H), ledger, {}, [])
    assert [(e.payer, e.amount_yuan) for e in ledger] == [("市政工程管理处", 10_000)] * 3


def test_restoring_an_old_state_without_its_entry_of_a_removed_device_is_skipped() -> None:
    from registry.devices import Registry

    det = Detector(default_rules(), REG)
    det.on_reading(Reading("MH-MAIN", "manhole", "jinshui", T0, T0, {"open": True}))
    state = det.export_device("MH-MAIN")
    assert state is not None
    del state["device"]  # saved by an older release
    restarted = Detector(default_rules(), Registry([d for d in REG if d.device_id != "MH-MAIN"]))
    assert restarted.import_device("MH-MAIN", state) is False
    assert restarted.export_device("MH-MAIN") is None
