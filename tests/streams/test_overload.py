"""Overloaded trucks, 超载超限 (docs/rules.md "overload"): one case per weighing, 30,000 to the district
of the trip's loading site (from the truck's track) and 30,000 to the owner district."""

from __future__ import annotations

import pytest

from streams.harness import ROUTE_LAT, Run, local, rules_with

NIGHT = local(23)


def load_at(run: Run, device: str, lon: float, lat: float = ROUTE_LAT, at: int = NIGHT) -> None:
    run.read(device, at, lat=lat, lon=lon, speed_kmh=0)
    run.read(device, at + 60_000, lat=ROUTE_LAT, lon=113.75, speed_kmh=30)


def weigh(run: Run, plate: str, axles: int, gross_kg: float, at: int = NIGHT + 1_800_000) -> None:
    run.read("WIM-1", at, plate=plate, axles=axles, gross_kg=gross_kg, speed_kmh=40)


@pytest.mark.parametrize(
    "gross_kg,booked",
    [(26_250, False), (26_251, True), (25_000, False)],
    ids=["at 25 t + 5 %", "one kg above", "at the limit"],
)
def test_a_three_axle_truck_is_overloaded_above_25_t_plus_the_city_tolerance(
    gross_kg: float, booked: bool
) -> None:
    run = Run()
    load_at(run, "T-1", 113.702)  # L-1, jinshui
    weigh(run, "豫A11111", 3, gross_kg)
    cases = run.of_rule("overload")
    assert len(cases) == booked
    assert sorted((e.payer, e.amount_yuan) for e in run.ledger) == (
        [("jinshui", 30_000), ("jinshui", 30_000)] if booked else []
    )


def test_the_loading_district_comes_from_the_track_and_the_owner_district_from_the_fleet() -> None:
    run = Run()
    load_at(run, "T-2", 113.622, lat=34.7015)  # L-2 in erqi; T-2 is owned in erqi too
    load_at(run, "T-1", 113.702)  # L-1, jinshui
    weigh(run, "豫A22222", 4, 40_000)  # 4 axles: 31 t
    weigh(run, "豫A11111", 3, 30_000, at=NIGHT + 1_900_000)
    by_case: dict[str, list[tuple[str, str, str, int]]] = {}
    for e in (e for e in run.ledger if e.rule == "overload"):  # T-2 also operates illegally
        by_case.setdefault(e.case_id, []).append(
            (e.id.rsplit(":", 1)[1], e.payer, e.payer_type, e.amount_yuan)
        )
    assert sorted(map(sorted, by_case.values())) == sorted([
        [("loading", "erqi", "district_government", 30_000), ("owner", "erqi", "district_government", 30_000)],
        [("loading", "jinshui", "district_government", 30_000), ("owner", "jinshui", "district_government", 30_000)],
    ])  # fmt: skip
    c = run.of_rule("overload")[0]
    assert (
        c.detail["loading_site"] == "L-2" and c.detail["limit_kg"] == 31_000 and c.state == "closed"
    )
    assert c.device == "WIM-1" and c.evidence[0]["fields"]["gross_kg"] == 40_000


def test_loaded_in_one_district_owned_in_another_books_each_once() -> None:
    run = Run()
    load_at(run, "T-2", 113.702)  # T-2 (owner erqi) loads at L-1 in jinshui
    weigh(run, "豫A22222", 4, 35_000)
    assert sorted(e.payer for e in run.ledger if e.rule == "overload") == ["erqi", "jinshui"]


def test_each_weighing_is_its_own_case() -> None:
    run = Run()
    load_at(run, "T-1", 113.702)
    weigh(run, "豫A11111", 3, 30_000)
    weigh(run, "豫A11111", 3, 30_000, at=NIGHT + 2_000_000)
    weigh(run, "豫A11111", 3, 30_000, at=NIGHT + 2_000_000)  # the same record twice: the same ids
    assert len(run.of_rule("overload")) == 2 and len(run.ledger) == 4


def test_a_truck_without_a_track_pays_only_its_owner_half_and_the_case_says_why() -> None:
    run = Run()
    weigh(run, "豫A44444", 6, 47_000)  # no terminal; its own limit is 46 t: 47 t is within 5 %
    assert run.ledger.entries() == []
    weigh(run, "豫A44444", 6, 48_400, at=NIGHT + 2_000_000)
    assert [(e.payer, e.id.rsplit(":", 1)[1]) for e in run.ledger] == [("huiji", "owner")]
    assert "loading half not booked" in run.of_rule("overload")[0].detail["unbooked"]


def test_an_unknown_plate_is_a_case_without_money() -> None:
    run = Run()
    weigh(run, "豫B99999", 2, 30_000)
    assert len(run.of_rule("overload")) == 1 and run.ledger.entries() == []


def test_gb1589_limits_and_the_tolerance_are_data() -> None:
    run = Run(
        rules_with(overload={"tolerance_pct": 0.0, "gross_limits_kg": {2: 18_000, 3: 27_000}})
    )
    load_at(run, "T-1", 113.702)
    weigh(run, "豫A11111", 3, 26_500)
    assert run.ledger.entries() == []
    weigh(run, "豫A11111", 3, 27_001, at=NIGHT + 2_000_000)
    assert len(run.ledger) == 2
