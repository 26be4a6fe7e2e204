"""Reckless muck trucks, 野蛮渣土车 (docs/rules.md "muck_truck"): 20,000 to the company, one case
per trip and kind of violation; tolerances judged at their boundaries."""

from __future__ import annotations

from typing import Any

import pytest

from streams.harness import ROUTE_LAT, Run, local, rules_with

IN_L1 = 113.702  # inside loading site L-1 (jinshui, inside the Fourth Ring)
RING = 113.75  # on route R-1, inside the ring (limit 40 km/h)
OUT = 113.85  # on route R-1, outside the ring (default limit 60 km/h)
IN_D1 = 113.904  # inside disposal site D-1
NIGHT = local(23)  # inside T-1's permit hours (22:00-06:00)


def drive(
    run: Run,
    start: int,
    points: list[tuple[int, float, float, dict[str, Any]]],
    device: str = "T-1",
    lat: float = ROUTE_LAT,
) -> None:
    """points: (seconds after start, lon, speed km/h, more fields)."""
    for s, lon, speed, more in points:
        fields = {"lat": lat, "lon": lon, "speed_kmh": speed, "cover_closed": True,
                  "body_lifted": False} | more  # fmt: skip
        run.read(device, start + s * 1000, **fields)


def leave_site(run: Run, start: int = NIGHT) -> None:
    """Load at L-1 and set off: the trip begins, the truck is loaded."""
    drive(run, start, [(0, IN_L1, 0, {}), (60, RING, 30, {})])


def every(
    seconds: int, span: int, lon: float, speed: float, **more: Any
) -> list[tuple[int, float, float, dict[str, Any]]]:
    return [(s, lon, speed, dict(more)) for s in range(0, span + 1, seconds)]


@pytest.mark.parametrize(
    "lon,speed,span_s,cases",
    [
        (RING, 45.0, 120, 0),  # at limit + tolerance: not speeding
        (RING, 45.1, 30, 1),  # above it for speeding_for: a case
        (RING, 45.1, 20, 0),  # above it, but not for 30 s
        (OUT, 65.0, 120, 0),  # outside the ring the default 60 applies
        (OUT, 65.1, 30, 1),
    ],
    ids=[
        "at the tolerance",
        "30 s above",
        "20 s above",
        "outside the ring at 65",
        "outside above 65",
    ],
)
def test_speeding_is_judged_against_the_zone_limit_plus_the_tolerance_for_30_s(
    lon: float, speed: float, span_s: int, cases: int
) -> None:
    run = Run()
    leave_site(run)
    drive(run, NIGHT + 120_000, every(10, span_s, lon, speed) + [(span_s + 10, lon, 20.0, {})])
    got = run.of_rule("muck.speeding")
    assert len(got) == cases
    assert run.amounts("muck.speeding") == [20_000] * cases
    if cases:
        c = got[0]
        assert c.unit == "顺达渣土" and c.detail["plate"] == "豫A11111" and c.state == "repaired"
        assert [e["speed_kmh"] for e in c.evidence[:2]] == [speed, speed]


def test_one_speeding_case_per_trip_and_a_new_trip_is_a_new_case() -> None:
    run = Run()
    leave_site(run)
    burst = every(10, 40, RING, 50.0) + [(50, RING, 30.0, {})]
    drive(run, NIGHT + 120_000, burst)
    drive(run, NIGHT + 300_000, burst)  # the same trip: same case, no new money
    assert len(run.of_rule("muck.speeding")) == 1
    leave_site(run, NIGHT + 600_000)  # back to L-1: a new trip
    drive(run, NIGHT + 720_000, burst)
    cases = run.of_rule("muck.speeding")
    assert len(cases) == 2 and len({c.detail["trip"] for c in cases}) == 2
    assert run.amounts() == [20_000, 20_000]
    ids = {e.id for e in run.ledger}
    assert ids == {f"{c.case_id}:penalty" for c in cases}


@pytest.mark.parametrize(
    "minutes,cases", [(9, 0), (10, 1)], ids=["9 min outside the hours", "10 min outside the hours"]
)
def test_moving_outside_the_permit_hours_longer_than_the_tolerance(
    minutes: int, cases: int
) -> None:
    run = Run()
    day = local(14)  # the permit allows 22:00-06:00
    drive(run, day, [(0, IN_L1, 0, {})])  # loads at L-1, then moves from day + 1 min
    drive(run, day + 60_000, every(60, minutes * 60, RING, 30.0))
    drive(run, day + 60_000 + minutes * 60_000 + 60_000, [(0, RING, 0.0, {})])  # stops
    assert len(run.of_rule("muck.off_hours")) == cases
    assert run.amounts("muck.off_hours") == [20_000] * cases


@pytest.mark.parametrize(
    "lat_off_m,minutes,cases",
    [(70, 20, 0), (80, 4, 0), (80, 5, 1)],
    ids=["inside the 75 m corridor", "off route 4 min", "off route 5 min"],
)
def test_off_the_approved_route_longer_than_the_tolerance(
    lat_off_m: float, minutes: int, cases: int
) -> None:
    run = Run()
    leave_site(run)
    lat = ROUTE_LAT + lat_off_m / 110_574
    drive(run, NIGHT + 120_000, every(60, minutes * 60, RING, 30.0), lat=lat)
    drive(run, NIGHT + 120_000 + minutes * 60_000 + 60_000, [(0, RING, 30.0, {})])  # back on route
    assert len(run.of_rule("muck.off_route")) == cases
    if cases:
        assert run.of_rule("muck.off_route")[0].state == "repaired"


@pytest.mark.parametrize(
    "loaded,seconds,cases",
    [(True, 50, 0), (True, 60, 1), (False, 300, 0)],
    ids=["open 50 s", "open 60 s", "empty with the cover open"],
)
def test_cover_open_while_moving_loaded(loaded: bool, seconds: int, cases: int) -> None:
    run = Run()
    leave_site(run)
    load = {} if loaded else {"load_kg": 200}
    drive(run, NIGHT + 120_000, every(10, seconds, RING, 30.0, cover_closed=False, **load))
    drive(run, NIGHT + 130_000 + seconds * 1000, [(0, RING, 30.0, {})])
    assert len(run.of_rule("muck.cover_open")) == cases
    assert run.amounts() == [20_000] * cases


def test_a_parked_truck_with_its_cover_open_is_no_case() -> None:
    run = Run()
    leave_site(run)
    drive(run, NIGHT + 120_000, every(10, 600, RING, 0.0, cover_closed=False))
    assert run.of_rule("muck.cover_open") == []


def test_tipping_by_the_roadside_is_dumping_and_tipping_in_the_disposal_site_is_not() -> None:
    run = Run()
    leave_site(run)
    drive(run, NIGHT + 120_000, [(0, OUT, 0.0, {"body_lifted": True}), (30, OUT, 0.0, {"body_lifted": True}),
                                 (60, OUT, 0.0, {})])  # fmt: skip
    dumping = run.of_rule("muck.dumping")
    assert len(dumping) == 1 and dumping[0].opened_at == NIGHT + 120_000
    assert dumping[0].state == "repaired" and run.amounts() == [20_000]
    leave_site(run, NIGHT + 600_000)
    drive(run, NIGHT + 900_000, [(0, IN_D1, 0.0, {"body_lifted": True}), (60, IN_D1, 0.0, {})])
    assert len(run.of_rule("muck.dumping")) == 1


def test_tipping_in_a_disposal_site_the_permit_does_not_name_is_dumping() -> None:
    run = Run()
    leave_site(run)
    drive(run, NIGHT + 120_000, [(0, 113.954, 0.0, {"body_lifted": True})], lat=34.702)  # D-X
    assert len(run.of_rule("muck.dumping")) == 1


def test_one_trip_can_hold_one_case_of_each_kind() -> None:
    run = Run()
    day = local(15)
    leave_site(run, day)
    drive(run, day + 120_000, every(10, 700, RING, 50.0, cover_closed=False), lat=ROUTE_LAT + 0.002)
    drive(run, day + 900_000, [(0, OUT, 0.0, {"body_lifted": True})])
    rules = sorted(c.rule for c in run.cases.values())
    assert rules == [
        "muck.cover_open",
        "muck.dumping",
        "muck.off_hours",
        "muck.off_route",
        "muck.speeding",
    ]
    assert sum(run.amounts()) == 100_000


def test_a_truck_the_fleet_does_not_know_is_not_judged_and_the_amount_is_data() -> None:
    run = Run(rules_with(muck_truck={"penalty_yuan": 5_000}))
    leave_site(run)
    drive(run, NIGHT + 120_000, every(10, 40, RING, 80.0))
    assert run.amounts() == [5_000]
    from streams.harness import REG

    assert REG.fleet.by_terminal.get("T-9") is None


def test_the_trip_survives_an_export_and_restore_of_the_truck() -> None:
    run = Run()
    leave_site(run)
    drive(run, NIGHT + 120_000, every(10, 40, RING, 50.0))
    saved = run.det.export_device("T-1")
    assert saved is not None
    again = Run()
    again.det.import_device("T-1", saved)
    drive(again, NIGHT + 300_000, every(10, 40, RING, 50.0))  # same trip: booked already
    assert again.amounts() == []
