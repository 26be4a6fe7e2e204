"""Illegal operation (docs/rules.md "illegal_operation"): a vehicle without a permit valid that day, seen
operating in a control zone by its track or a plate camera: 10,000 to its company, one case per day."""

from __future__ import annotations

import pytest

from streams.harness import ROUTE_LAT, Run, local

RING = 113.75  # inside the Fourth Ring
OUT = 113.85


@pytest.mark.parametrize(
    "device,plate,lon,speed,booked",
    [
        ("T-2", "豫A22222", RING, 30, True),  # no permit, moving in the ring
        ("T-2", "豫A22222", RING, 4.9, False),  # standing: not operating
        ("T-2", "豫A22222", OUT, 30, False),  # outside every control zone
        ("T-3", "豫A33333", RING, 30, True),  # permit expired in October
        ("T-1", "豫A11111", RING, 30, False),  # a valid permit
    ],
    ids=["no permit", "standing", "outside the zone", "expired permit", "valid permit"],
)
def test_a_track_in_the_control_zone_without_a_valid_permit(
    device: str, plate: str, lon: float, speed: float, booked: bool
) -> None:
    run = Run()
    run.read(device, local(10), lat=ROUTE_LAT, lon=lon, speed_kmh=speed)
    assert [(e.payer, e.amount_yuan) for e in run.ledger] == (
        [(run.reg.fleet.by_plate[plate].company, 10_000)] if booked else []
    )
    if booked:
        c = run.of_rule("illegal_operation")[0]
        assert (
            c.case_id == f"illegal_operation:{plate}:2025-11-22" and c.detail["seen_by"] == "track"
        )


def test_one_case_per_day_whether_the_track_or_a_camera_saw_it() -> None:
    run = Run()
    run.read("CAM-1", local(9), plate="豫A22222")
    run.read("T-2", local(10), lat=ROUTE_LAT, lon=RING, speed_kmh=30)
    run.read("CAM-1", local(23, 30), plate="豫A22222")
    assert [c.detail["seen_by"] for c in run.of_rule("illegal_operation")] == ["camera"]
    run.read("CAM-1", local(9, day=23), plate="豫A22222")  # the next day: a new case
    assert [e.id for e in run.ledger] == [
        "illegal_operation:豫A22222:2025-11-22:penalty",
        "illegal_operation:豫A22222:2025-11-23:penalty",
    ]
    assert {e.district for e in run.ledger} == {"erqi"}  # the owner's district, not the camera's


def test_the_day_is_the_city_day() -> None:
    run = Run()
    run.read("CAM-1", local(23, 59), plate="豫A22222")
    run.read("CAM-1", local(0, 1, day=23), plate="豫A22222")  # 16:01 UTC: a new Beijing day
    assert len(run.ledger) == 2


def test_cameras_outside_the_zone_and_plates_outside_the_fleet_book_nothing() -> None:
    run = Run()
    run.read("CAM-OUT", local(9), plate="豫A22222")
    run.read("CAM-1", local(9), plate="豫B00000")
    run.read("CAM-1", local(9, 1), plate="豫A11111")  # valid permit
    assert run.ledger.entries() == []


def test_the_days_booked_survive_a_restart_of_the_partition() -> None:
    run = Run()
    run.read("CAM-1", local(9), plate="豫A22222")
    clock = run.det.export_clock()
    again = Run()
    again.det.import_clock(clock)
    again.read("CAM-1", local(11), plate="豫A22222")
    assert again.ledger.entries() == []
