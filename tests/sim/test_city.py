"""The simulated fleet and the registry it writes (docs/contracts.md, "Registry")."""

from __future__ import annotations

import csv

import pytest

from contract.topics import is_valid_segment
from registry.devices import COLUMNS, load_registry
from sim.city import DISTRICTS, build_city, split_devices


def test_same_seed_same_city_byte_for_byte():
    a = build_city(3, 40, 120, 60).registry_csv()
    b = build_city(3, 40, 120, 60).registry_csv()
    c = build_city(4, 40, 120, 60).registry_csv()
    assert a == b
    assert a != c


def test_written_registry_loads_and_matches_the_city(tmp_path):
    city = build_city(7, *split_devices(300))
    path = tmp_path / "registry.csv"
    city.write_registry(path)
    with open(path, encoding="utf-8", newline="") as f:
        # lamps hang on cabinets, HJ 212 monitors and JT/T 808 terminals behind their gateway
        assert next(csv.reader(f)) == [*COLUMNS, "cabinet", "circuit", "gateway", "mn", "phone"]
    reg = load_registry(path)
    assert len(reg) == 300
    assert list(reg) == list(city.registry())


def test_sizes_split_by_ratio_and_every_district_served():
    assert split_devices(300) == (45, 165, 90)
    assert sum(split_devices(1001)) == 1001
    city = build_city(1, 10, 30, 10)
    assert city.counts() == {"dust": 10, "manhole": 30, "streetlight": 10}
    for kind, prefix in (("dust", "DS"), ("manhole", "MH"), ("streetlight", "SL")):
        for d in DISTRICTS:
            assert f"{prefix}-{d.code}-0001" in city.by_id, (kind, d.id)
            assert city.by_id[f"{prefix}-{d.code}-0001"].district == d.id


def test_rows_are_plausible():
    city = build_city(11, 30, 200, 50)
    units = set()
    for d in city:
        assert is_valid_segment(d.device_id)
        dist = next(x for x in DISTRICTS if x.id == d.district)
        assert abs(d.lat - dist.lat) < 0.05 and abs(d.lon - dist.lon) < 0.05
        assert d.grid.startswith(dist.code + "-G")
        assert d.address.startswith("郑州市" + dist.name)
        if d.kind == "manhole":
            assert d.road_class in ("main", "secondary", "other")
            assert d.component_code in ("0101", "0102", "0103", "0104", "0105", "0107", "0111")
            units.add(d.unit)
            assert 0 < d.battery0 <= 100
        elif d.kind == "streetlight":
            assert d.component_code == "0118"
            assert 0.5 <= d.base <= 1.2
        else:
            assert d.component_code == "" and d.road_class == ""
    assert {"郑州市市政工程管理处", "郑州供电公司", "郑州自来水投资控股有限公司"} <= units
    assert {d.unit for d in city.of_kind("manhole") if d.component_code == "0105"} == {
        "郑州供电公司"
    }


def test_id_tag_and_slices():
    city = build_city(1, 10, 10, 10, id_tag="t1a2b")
    assert all(d.device_id.split("-")[1] == "t1a2b" for d in city)
    parts = [city.slice(k, 3) for k in range(3)]
    assert sorted(d.device_id for p in parts for d in p) == sorted(d.device_id for d in city)
    with pytest.raises(ValueError, match="id_tag"):
        build_city(1, 1, 1, 1, id_tag="bad/tag")
    with pytest.raises(ValueError, match="n_dust"):
        build_city(1, -1, 1, 1)


def test_a_fifth_of_the_dust_sites_become_hj212_monitors_behind_the_gateway(tmp_path):
    city = build_city(7, 45, 10, 10).with_hj212(0.2, "gw-hj212-1")
    monitors = city.hj212_monitors()
    assert len(monitors) == 9 and all(d.kind == "dust" for d in monitors)
    assert monitors == build_city(7, 45, 10, 10).with_hj212(0.2, "gw-hj212-1").hj212_monitors()
    path = tmp_path / "registry.csv"
    city.write_registry(path)
    reg = load_registry(path)
    assert list(reg) == list(city.registry())
    d = reg.get(monitors[0].device_id)
    assert d.gateway == "gw-hj212-1" and d.mn == "4101" + d.device_id.replace("-", "")
    assert build_city(7, 45, 10, 10).with_hj212(0.0, "gw").hj212_monitors() == []


def test_half_of_the_trucks_speak_jt808_behind_the_gateway_and_the_registry_loads(tmp_path):
    city = build_city(7, 45, 10, 10, fleet=True).with_jt808(0.5, "gw-jt808-1")
    terminals = city.jt808_terminals()
    trucks = city.of_kind("vehicle")
    assert len(terminals) == len(trucks) // 2 and terminals[0] is not trucks[0]
    assert {d.gateway for d in terminals} == {"gw-jt808-1"}
    assert all(len(d.phone) == 12 and d.phone.isdigit() for d in terminals)
    city.write_registry(tmp_path / "registry.csv")
    reg = load_registry(tmp_path / "registry.csv")
    assert {d.device_id: d.phone for d in reg if d.phone} == {
        d.device_id: d.phone for d in terminals
    }
    assert build_city(7, 45, 10, 10, fleet=True).with_jt808(0.0, "gw").jt808_terminals() == []
