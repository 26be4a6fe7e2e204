"""The fleet file (registry/fleet.py; docs/contracts.md, "Fleet"): every mistake named at its line, with the fix."""

from __future__ import annotations

import pytest

from foundation.errors import ConfigError
from registry.devices import Device, Registry, load_registry
from registry.fleet import INDEX_FROM, parse_fleet

SQUARE = "[[113.70, 34.80], [113.71, 34.80], [113.71, 34.81], [113.70, 34.81]]"
GOOD = f"""
vehicles:
  - plate: 豫A12345
    terminal: T-1
    company: 顺达渣土
    owner_district: jinshui
    axles: 3
    permit: {{number: P-1, valid_from: 2026-10-01, valid_until: 2026-12-31,
              hours: ["22:00", "06:00"], routes: [R-1], sites: [L-1]}}
sites:
  - {{id: L-1, kind: loading, district: jinshui, polygon: {SQUARE}}}
routes:
  - {{id: R-1, width_m: 100, line: [[113.70, 34.80], [113.80, 34.80]]}}
zones:
  - {{id: ring4, control: true, speed_limit_kmh: 40, polygon: {SQUARE}}}
"""


def _reg(district: str = "jinshui", kind: str = "vehicle") -> Registry:
    return Registry(
        [Device("T-1", kind, district, "G", "顺达渣土", None, "", None, None, None, None, None)]
    )


def _error(text: str, registry: Registry | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        parse_fleet(text, "fleet.yaml", registry)
    return e.value


def test_the_shipped_example_loads_against_the_example_registry() -> None:
    reg = load_registry("config/registry.example.csv", "config/fleet.example.yaml")
    f = reg.fleet
    assert len(f) == 2 and f.by_terminal["T-0001"].plate == "豫A12345"
    assert f.by_plate["豫A67890"].permit is None
    assert f.places(34.8005, 113.701).site.id == "L-JS-1"  # type: ignore[union-attr]


def test_a_good_file_gives_vehicles_permits_and_places() -> None:
    f = parse_fleet(GOOD, "fleet.yaml", _reg())
    v = f.by_plate["豫A12345"]
    assert v.permit is not None and v.permit.hours == (22 * 60, 6 * 60)
    assert v.permit.valid_on("2026-12-31") and not v.permit.valid_on("2027-01-01")
    inside = f.places(34.805, 113.705)
    assert inside.site is not None and inside.control is not None and inside.speed_limit(60) == 40
    assert f.places(34.9, 113.9).site is None and f.places(34.9, 113.9).speed_limit(60) == 60


def test_the_route_corridor_is_half_its_width_either_side() -> None:
    f = parse_fleet(GOOD, "fleet.yaml")
    permit = f.by_plate["豫A12345"].permit
    assert permit is not None
    metre = 1 / 110_574  # a degree of latitude is 110.574 km
    assert f.on_route(permit, 34.80 + 49 * metre, 113.75)
    assert not f.on_route(permit, 34.80 + 51 * metre, 113.75)


@pytest.mark.parametrize(
    "change,registry,message",
    [
        (("routes: [R-1]", "routes: [R-2]"), None, "routes[0]: no route 'R-2' in this file; did you mean 'R-1'?"),
        (("valid_until: 2026-12-31", "valid_until: 2026-09-30"), None, "valid_until: 2026-09-30 is before valid_from 2026-10-01"),
        (("valid_from: 2026-10-01", "valid_from: 1st of October"), None, "valid_from: expected a date YYYY-MM-DD"),
        (("axles: 3", "axels: 3"), None, "unknown key; did you mean 'axles'?"),
        (("plate: 豫A12345", "plate: 豫A 12345"), None, "is not a plate as cameras read it"),
        (("kind: loading", "kind: dumping"), None, "expected one of loading, disposal"),
        (("[113.71, 34.81], [113.70, 34.81]", "[113.70, 34.81], [113.71, 34.81]"), None,
         "not a simple polygon (Self-intersection"),
        (("[[113.70, 34.80], [113.80, 34.80]]", "[[34.80, 113.70], [34.80, 113.80]]"), None,
         "is not [lon, lat] in degrees"),
        ((" control: true, speed_limit_kmh: 40,", ""), None, "zone 'ring4' judges nothing"),
        (("terminal: T-1", "terminal: T-1"), _reg(kind="manhole"),
         "'T-1' is not a vehicle device of the device registry; add the row T-1,vehicle,jinshui"),
        (("terminal: T-1", "terminal: T-1"), _reg(district="erqi"),
         "registered in district 'erqi' but the vehicle's owner_district is 'jinshui'"),
    ],
    ids=["unknown route", "permit ends before it starts", "bad date", "misspelt key", "plate with a space",
         "site kind", "crossed polygon", "lat/lon swapped", "zone without a rule", "terminal not a vehicle",
         "terminal in another district"],
)  # fmt: skip
def test_mistakes_are_refused_at_their_line_with_the_fix(
    change: tuple[str, str], registry: Registry | None, message: str
) -> None:
    e = _error(GOOD.replace(*change), registry)
    assert message in str(e) and e.file == "fleet.yaml" and e.line is not None


def test_a_plate_given_twice_is_refused() -> None:
    twice = GOOD.replace(
        "\nsites:", "\n  - {plate: 豫A12345, company: X, owner_district: erqi, axles: 2}\nsites:", 1
    )
    assert "plate '豫A12345' given twice" in str(_error(twice))


def test_many_zones_go_through_an_strtree_with_the_same_answers() -> None:
    zones = "\n".join(
        f"  - {{id: z{i}, speed_limit_kmh: {30 + i}, polygon: [[{113 + i / 100}, 34.0], "
        f"[{113.02 + i / 100}, 34.0], [{113.02 + i / 100}, 34.02], [{113 + i / 100}, 34.02]]}}"
        for i in range(INDEX_FROM * 2)
    )
    many = parse_fleet("zones:\n" + zones)
    few = parse_fleet("zones:\n" + "\n".join(zones.splitlines()[: INDEX_FROM - 1]))
    assert many._zones.tree is not None and few._zones.tree is None
    for lon in (113.005, 113.015, 113.105, 113.5):
        got = [z.id for z in many.places(34.01, lon).zones]
        want = [
            z.id
            for z in many.zones.values()
            if z.shape.contains(__import__("shapely").Point(many.xy(34.01, lon)))
        ]
        assert got == want
    assert [z.id for z in many.places(34.01, 113.015).zones] == ["z0", "z1"]
