"""The vehicles dashboard's queries against the real InfluxDB, on a hand-made night of trucks.

"Now" is Thursday 2025-11-20 10:00 city time, as in test_queries.py. The city: two trucks
reporting this morning (T-1 at 30 then 70 km/h, T-2 at 20), one speeding case on T-1 today
(20,000 to its company), an overload weighed today (30,000 to jinshui, 30,000 to zhengdong),
an illegal-operation case yesterday (10,000), and a dust case today that no vehicle panel
may count.
"""

from __future__ import annotations

import pytest

from tests.citywatch.grafana.test_queries import QUERIES, _post, at, lp, run

pytestmark = pytest.mark.services

V = "vehicles"


def _case(case_id: str, rule: str, device: str, district: str, unit: str, ts: int) -> str:
    tags = {"case_id": case_id, "kind": "vehicle", "rule": rule, "district": district,
            "unit": unit, "state": "open", "severity": "major"}  # fmt: skip
    return lp("case_event", tags, {"device": device, "address": f"{device} 车载终端", "open": 1,
                                   "opened_at": ts}, ts)  # fmt: skip


def _entry(entry_id: str, case_id: str, rule: str, payer: str, payer_type: str, district: str,
           amount: int, ts: int) -> str:  # fmt: skip
    tags = {"case_id": case_id, "rule": rule, "payer": payer, "payer_type": payer_type,
            "district": district, "entry_id": entry_id}  # fmt: skip
    return lp("penalty", tags, {"amount_yuan": amount, "device": "x"}, ts)


@pytest.fixture
def trucks(settings):
    from store.influxql import target as influx_target
    from store.schema import LEDGER_RP, ensure_database

    ensure_database(settings, raw_duration="INF")
    tags1 = {"device": "T-1", "district": "jinshui", "grid": "g", "unit": "顺达渣土"}
    tags2 = {"device": "T-2", "district": "erqi", "grid": "g", "unit": "宏远土方"}
    telemetry = [
        lp("vehicle", tags1, {"lat": 34.80, "lon": 113.70, "speed_kmh": 30.0}, at(11, 20, 8)),
        lp("vehicle", tags1, {"lat": 34.80, "lon": 113.75, "speed_kmh": 70.0}, at(11, 20, 8, 10)),
        lp("vehicle", tags2, {"lat": 34.70, "lon": 113.62, "speed_kmh": 20.0}, at(11, 20, 8, 5)),
    ]
    ledger = [
        _case("S1", "muck.speeding", "T-1", "jinshui", "顺达渣土", at(11, 20, 8, 10)),
        _entry(
            "S1:penalty",
            "S1",
            "muck.speeding",
            "顺达渣土",
            "property_unit",
            "jinshui",
            20_000,
            at(11, 20, 8, 10),
        ),  # fmt: skip
        _case("O1", "overload", "WIM-1", "zhengdong", "治超办", at(11, 20, 9)),
        _entry(
            "O1:loading",
            "O1",
            "overload",
            "jinshui",
            "district_government",
            "jinshui",
            30_000,
            at(11, 20, 9),
        ),  # fmt: skip
        _entry(
            "O1:owner",
            "O1",
            "overload",
            "zhengdong",
            "district_government",
            "zhengdong",
            30_000,
            at(11, 20, 9),
        ),  # fmt: skip
        _case("I1", "illegal_operation", "T-2", "erqi", "宏远土方", at(11, 19, 22)),
        _entry(
            "I1:penalty",
            "I1",
            "illegal_operation",
            "宏远土方",
            "property_unit",
            "erqi",
            10_000,
            at(11, 19, 22),
        ),  # fmt: skip
        _case("D1", "dust", "DS-1", "jinshui", "builder", at(11, 20, 9)),
        _entry(
            "D1:penalty",
            "D1",
            "dust",
            "jinshui",
            "district_government",
            "jinshui",
            100_000,
            at(11, 20, 9),
        ),  # fmt: skip
    ]
    admin = influx_target(settings, None, None, "admin")[2]
    db = settings.influx.database
    _post(
        f"{settings.influx.url}/write",
        {"db": db, "precision": "ms"},
        "\n".join(telemetry).encode(),
        admin,
    )
    _post(f"{settings.influx.url}/write", {"db": db, "precision": "ms", "rp": LEDGER_RP},
          "\n".join(ledger).encode(), admin)  # fmt: skip
    return settings


CHECKS = {
    "Muck-truck cases today [A]": lambda rows: rows[0]["cases"] == 1,
    "Overloads today [A]": lambda rows: rows[0]["cases"] == 1,
    "Illegal operation today [A]": lambda rows: rows == [],  # yesterday's: not today
    "Vehicle penalties today [A]": lambda rows: rows[0]["yuan"] == 80_000,  # 20,000 + 2 x 30,000
    "Truck tracks [A]": lambda rows: (
        sorted((r["device"], r["speed_kmh"]) for r in rows)
        == [("T-1", 30.0), ("T-1", 70.0), ("T-2", 20.0)]
    ),
    "Vehicle cases [A]": lambda rows: (
        [r["rule"] for r in rows] == ["overload", "muck.speeding", "illegal_operation"]
    ),
    "Vehicle penalties by payer [A]": lambda rows: (
        {r["payer"]: r["yuan"] for r in rows}
        == {"顺达渣土": 20_000, "jinshui": 30_000, "zhengdong": 30_000, "宏远土方": 10_000}
    ),
    "Speed per truck [A]": lambda rows: (
        max(r["speed_kmh"] for r in rows if r["device"] == "T-1") == 70.0
    ),
}


def test_every_vehicle_query_has_a_check() -> None:
    assert {w for d, w in QUERIES if d == V} == set(CHECKS)


@pytest.mark.parametrize("what", sorted(CHECKS))
def test_vehicle_query_returns_the_hand_computed_rows(trucks, what: str) -> None:
    rows = run(trucks, (V, what))
    assert CHECKS[what](rows), rows


def test_a_district_filter_narrows_the_tracks(trucks) -> None:
    rows = run(trucks, (V, "Truck tracks [A]"), district="erqi")
    assert {r["device"] for r in rows} == {"T-2"}
