"""A vehicle case in the settlement's evidence (citywatch/reports/settlement.py): its track points,
weighing and how it ended, in words the finance office reads."""

from __future__ import annotations

from citywatch.reports.data import Case
from citywatch.reports.settlement import evidence_items
from streams.harness import ROUTE_LAT, Run, local

TZ = "Asia/Shanghai"


def _as_case(ev) -> Case:  # a CaseEvent as the reports rebuild it
    return Case(ev.case_id, ev.kind, ev.rule, ev.device, ev.district, ev.grid, ev.unit, ev.address,
                "", ev.severity, ev.state, ev.opened_at, ev.deadline, ev.detail,
                evidence=list(ev.evidence))  # fmt: skip


def test_a_cover_case_lists_its_track_points_with_the_open_cover() -> None:
    run = Run()
    run.read("T-1", local(23), lat=ROUTE_LAT, lon=113.702, speed_kmh=0)
    for k in range(1, 9):
        run.read("T-1", local(23) + k * 10_000, lat=ROUTE_LAT, lon=113.75, speed_kmh=30.0,
                 cover_closed=False)  # fmt: skip
    run.read("T-1", local(23, 2), lat=ROUTE_LAT, lon=113.76, speed_kmh=30.0, cover_closed=True)
    (case,) = run.of_rule("muck.cover_open")
    lines = evidence_items(_as_case(case), TZ)
    assert lines[0].endswith("立案：渣土车未密闭运输，设备 T-1 上报异常")
    tracks = [x for x in lines if "轨迹点 track" in x]
    assert tracks and all("篷布未关闭" in x for x in tracks[:2]) and "30.0 km/h" in tracks[0]


def test_an_overload_case_ends_by_its_weighing() -> None:
    run = Run()
    run.read("WIM-1", local(23), plate="豫A11111", axles=3, gross_kg=30_000)
    (case,) = run.of_rule("overload")
    lines = evidence_items(_as_case(case), TZ)
    assert any("（称重记录）" in x for x in lines)
    assert any("读数 reading：" in x and "gross_kg=30000" in x for x in lines)
