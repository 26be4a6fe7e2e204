"""The lighting rate (亮灯率, docs/rules.md "Lighting rate"): marks on lamp telemetry, the
district rate read back from the real InfluxDB, and the ranking report's column."""

from __future__ import annotations

import asyncio
from datetime import datetime

from contract.clock import DEFAULT_TIMEZONE, LocalClock
from contract.reading import Reading
from registry.devices import Device
from store import points
from store.identity import credentials
from store.read import lighting_rates
from store.schema import ensure_database
from store.writer import InfluxWriter
from streams.harness import SH
from streams.rules import load_rules
from streams.streetlight import LightingMarks

M = 60_000


def _lamp(device_id: str, district: str) -> Device:
    return Device(device_id=device_id, kind="streetlight", district=district, grid="G", unit="路灯管理处",
                  road_class="main", address="", lat=34.75, lon=113.65, pm10_warning=None,
                  pm10_violation=None, component_code="0118")  # fmt: skip


def _now_night() -> int:
    """Last night's 20:00 local, so the points sit inside the raw retention policy."""
    today = datetime.now(SH).replace(hour=20, minute=0, second=0, microsecond=0)
    return int(today.timestamp() * 1000) - 86_400_000


def test_a_hand_computed_night_gives_the_districts_lighting_rate(settings) -> None:
    marks = LightingMarks(load_rules("config/rules.yaml").streetlight, LocalClock(DEFAULT_TIMEZONE))
    t0 = _now_night()
    lines = []
    # district A: two lamps, 12 readings each inside the window (20:00-21:00), lamp 2 dark for 3
    # district B: one lamp lit all along; both also report at noon (outside the window: not counted)
    plan = [("SL-A1", "jsA", set()), ("SL-A2", "jsA", {3, 4, 5}), ("SL-B1", "jsB", set())]
    for device, district, dark in plan:
        dev = _lamp(device, district)
        for k in range(12):
            lit = k not in dark
            r = Reading(device, "streetlight", district, t0 + k * 5 * M, t0 + k * 5 * M,
                        {"on": True, "current_a": 0.4 if lit else 0.0})  # fmt: skip
            m = marks.marks(r, dev)
            assert m == {"should_lit": 1.0, "lit_when_should": 1.0 if lit else 0.0}
            lines.append(points.telemetry_line(r, dev, m))
        noon = Reading(
            device, "streetlight", district, t0 - 8 * 3_600_000, t0, {"on": False, "current_a": 0.0}
        )
        assert marks.marks(noon, dev) == {"should_lit": 0.0, "lit_when_should": 0.0}
        lines.append(points.telemetry_line(noon, dev, marks.marks(noon, dev)))
    ensure_database(settings)

    async def write() -> None:
        async with InfluxWriter(settings.influx.url, settings.influx.database,
                                **credentials(settings, "writer"), flush_interval_s=0.05) as w:  # fmt: skip
            await w.add([ln for ln in lines if ln])

    asyncio.run(write())
    rates = lighting_rates(settings, t0 - 86_400_000, t0 + 86_400_000)
    assert rates == {"jsA": 21 / 24, "jsB": 1.0}


def test_the_ranking_shows_the_lighting_rate_beside_the_score(tmp_path) -> None:
    import csv

    from citywatch.reports.data import PeriodData, parse_month
    from citywatch.reports.ranking import build_ranking, write_csv

    period = parse_month("2026-10", now_ms=int(datetime(2026, 11, 5, tzinfo=SH).timestamp() * 1000))
    rk = build_ranking(
        PeriodData(period, [], {}, {}), None, [_lamp("SL-A1", "jsA")], lighting={"jsA": 0.875}
    )
    write_csv(rk, tmp_path / "r.csv")
    with open(tmp_path / "r.csv", encoding="utf-8-sig") as f:
        row = next(csv.DictReader(f))
    assert row["district"] == "jsA" and row["lighting_rate"] == "0.8750"
