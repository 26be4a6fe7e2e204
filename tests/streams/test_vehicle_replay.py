"""A vehicle day through replay (docs/rules.md "muck_truck", "overload", "illegal_operation"): the
MQTT payloads as the gateways send them, the same ledger every time, restarts neither lose nor
double an entry."""

from __future__ import annotations

import json

from streams.harness import REG, ROUTE_LAT, local
from streams.replay import replay
from streams.rules import default_rules

NIGHT = local(23)


def line(device: str, kind: str, district: str, ts: int, **payload: object) -> str:
    return json.dumps({"topic": f"city/{district}/{kind}/{device}/telemetry",
                       "payload": {"ts": ts, **payload}, "received_at": ts + 300}, ensure_ascii=False)  # fmt: skip


def day() -> list[str]:
    out = [
        line(
            "T-1", "vehicle", "jinshui", NIGHT, lat=ROUTE_LAT, lon=113.702, speed_kmh=0, acc_on=True
        )
    ]
    for i in range(1, 40):  # east along R-1 at 70 km/h (speeding inside the ring), cover open
        out.append(line("T-1", "vehicle", "jinshui", NIGHT + i * 10_000, lat=ROUTE_LAT,
                        lon=113.702 + i * 0.002, speed_kmh=70.0, cover_closed=False, body_lifted=False))  # fmt: skip
    out.append(line("WIM-1", "weighstation", "zhongmou", NIGHT + 600_000, plate="豫A11111", axles=3,
                    gross_kg=31_000, speed_kmh=40))  # fmt: skip
    out.append(
        line("CAM-1", "platecam", "jinshui", NIGHT + 700_000, plate="豫A22222", confidence=0.98)
    )
    out.append(line("CAM-1", "platecam", "jinshui", NIGHT + 800_000, plate=12345))  # a dead letter
    return out


def test_a_vehicle_day_replays_to_the_same_ledger() -> None:
    first = replay(day(), default_rules(), REG)
    again = replay(day(), default_rules(), REG)
    assert [e.to_dict() for e in first.ledger] == [e.to_dict() for e in again.ledger]
    got = sorted((e.rule, e.payer, e.amount_yuan) for e in first.ledger)
    assert got == [
        ("illegal_operation", "宏远土方", 10_000),
        ("muck.cover_open", "顺达渣土", 20_000),
        ("muck.speeding", "顺达渣土", 20_000),
        ("overload", "jinshui", 30_000),
        ("overload", "jinshui", 30_000),
    ]
    assert [r["code"] for r in first.rejected] == ["wrong_type"]


def test_a_restart_halfway_books_the_same_entries() -> None:
    from streams.detector import Detector

    lines = day()
    whole = {e.id for e in replay(lines, default_rules(), REG).ledger}
    first = Detector(default_rules(), REG)
    from streams.replay import parse_lines

    items = [it for _, it in parse_lines(lines, REG) if not hasattr(it, "code")]
    ids: set[str] = set()
    half = len(items) // 2
    for it in items[:half]:
        ids |= {o.id for o in first.on_reading(it) if hasattr(o, "amount_yuan")}  # type: ignore[arg-type]
    second = Detector(default_rules(), REG)
    second.import_clock(first.export_clock())
    for dev in first.device_ids():
        saved = first.export_device(dev)
        assert saved is not None
        second.import_device(dev, json.loads(json.dumps(saved)))
    for it in items[half:]:
        ids |= {o.id for o in second.on_reading(it) if hasattr(o, "amount_yuan")}  # type: ignore[arg-type]
    assert ids == whole
