"""A tripped circuit darkens a street: one circuit case, not one per lamp (docs/rules.md, "streetlight")."""

from __future__ import annotations

from datetime import datetime

from registry.devices import Device, Registry
from streams.harness import SH, M, Run

LIT = {"on": True, "current_a": 0.42}
DARK = {"on": True, "current_a": 0.0}
LAMPS = [f"SL-C{i:02d}" for i in range(40)]


def _lamp(device_id: str, circuit: str | None) -> Device:
    return Device(device_id=device_id, kind="streetlight", district="jinshui", grid="JS-G01",
                  unit="路灯管理处", road_class="main", address="花园路", lat=34.79, lon=113.67,
                  pm10_warning=None, pm10_violation=None, component_code="0118",
                  cabinet="KX-07" if circuit else None, circuit=circuit)  # fmt: skip


REG = Registry([*(_lamp(d, "L1") for d in LAMPS), _lamp("SL-SOLO", None)])


def _at(h: int, mi: int = 0, day: int = 21) -> int:
    return int(datetime(2026, 12, day, h, mi, tzinfo=SH).timestamp() * 1000)


def _round(run: Run, t: int, state: dict, lamps: list[str]) -> None:
    for d in lamps:
        run.read(d, t, **state)


def test_forty_lamps_of_a_circuit_going_dark_at_once_open_one_circuit_case() -> None:
    run = Run(reg=REG)
    _round(run, _at(18), LIT, LAMPS)
    for k in range(1, 8):  # the feeder trips at 18:05: every lamp dark, reports every 5 min
        _round(run, _at(18, 5 * k), DARK, LAMPS)
    assert run.of_rule("streetlight.fault") == []
    [case] = run.of_rule("streetlight.circuit")
    assert case.detail["cabinet"] == "KX-07" and case.detail["circuit"] == "L1"
    assert case.detail["dark_lamps"] == LAMPS and case.severity == "major"
    assert case.opened_at == _at(18, 5) and case.at == _at(18, 20)
    _round(run, _at(19), LIT, LAMPS)  # reset at the cabinet
    assert run.of_rule("streetlight.circuit")[0].state == "repaired"
    assert run.of_rule("streetlight.fault") == []


def test_a_single_dark_lamp_on_a_lit_circuit_stays_a_lamp_case() -> None:
    run = Run(reg=REG)
    _round(run, _at(18), LIT, LAMPS)
    for k in range(1, 6):
        _round(run, _at(18, 5 * k), LIT, LAMPS[1:])
        run.read(LAMPS[0], _at(18, 5 * k), **DARK)
    assert [c.device for c in run.of_rule("streetlight.fault")] == [LAMPS[0]]
    assert run.of_rule("streetlight.circuit") == []


def test_a_lamp_still_dark_after_its_circuit_is_back_gets_its_own_case_after_dark_for() -> None:
    run = Run(reg=REG)
    for k in range(1, 6):
        _round(run, _at(18, 5 * k), DARK, LAMPS)
    assert len(run.of_rule("streetlight.circuit")) == 1
    for k in range(6, 12):
        _round(run, _at(18, 5 * k), LIT, LAMPS[1:])
        run.read(LAMPS[0], _at(18, 5 * k), **DARK)
    assert run.of_rule("streetlight.circuit")[0].state == "repaired"
    [fault] = run.of_rule("streetlight.fault")
    assert fault.device == LAMPS[0] and fault.at == _at(18, 30) + 15 * M


def test_a_circuit_case_survives_a_restore_of_the_detector() -> None:
    import json

    run = Run(reg=REG)
    for k in range(1, 6):
        _round(run, _at(18, 5 * k), DARK, LAMPS)
    det = run.det
    clock = json.loads(json.dumps(det.export_clock()))
    devices = {d: json.loads(json.dumps(det.export_device(d))) for d in LAMPS}
    again = Run(reg=REG)
    for d, state in devices.items():
        assert again.det.import_device(d, state)
    again.det.import_clock(clock)
    _round(again, _at(19), LIT, LAMPS)
    [case] = again.of_rule("streetlight.circuit")
    assert (
        case.state == "repaired" and case.case_id == run.of_rule("streetlight.circuit")[0].case_id
    )
