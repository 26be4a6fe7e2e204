"""Scenario files and flags (sim/scenarios.py): through foundation/cityfile, errors name file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from foundation.errors import ConfigError
from sim.city import build_city, split_devices
from sim.scenarios import (
    format_span,
    load_scenario_file,
    make_scenario,
    parse_scenario_flag,
    parse_scenario_text,
    parse_span,
)
from sim.simulator import DEFAULT_START_MS, Simulation

HOUR = 3_600_000
MIN = 60_000
START = DEFAULT_START_MS
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FILE = ROOT / "config" / "scenarios" / "default.yaml"


@pytest.fixture(scope="module")
def city():
    return build_city(7, *split_devices(300), fleet=True)


def test_default_file_loads_with_its_run_defaults():
    f = load_scenario_file(DEFAULT_FILE)
    assert f.start_ms == START and f.run_for_ms == 30 * HOUR and f.seed == 7
    assert f.garbage_share == 0.005 and f.path == str(DEFAULT_FILE)
    kinds = [s.kind for s in f.scenarios]
    assert kinds == ["dust_episode", "cover_tilted", "cover_open", "cover_stolen", "dust_off",
                     "lamp_failure", "lamp_leakage", "day_burner", "flooded_well", "night_pour",
                     "circuit_trip", "dust_storm", "dust_episode", "truck_unlicensed",
                     "truck_speeding", "truck_cover_open", "truck_dumping", "truck_overload"]  # fmt: skip
    cover = f.scenarios[2]
    assert (cover.devices, cover.at_ms, cover.duration_ms) == (
        ("MH-ZY-0001",),
        HOUR,
        5 * HOUR + 20 * MIN,
    )
    assert cover.line is not None and cover.file == str(DEFAULT_FILE)
    assert f.scenarios[1].params == {"tilt_deg": 25.0}
    assert f.scenarios[6].params == {"leakage_ma": 38.0, "rain": True}


def test_parameters_take_their_defaults_and_spans_their_plus():
    f = parse_scenario_text(
        "scenarios:\n  - {kind: dust_storm, at: +1d}\n  - {kind: rain, at: 0, district: erqi}\n"
    )
    storm, rain = f.scenarios
    assert storm.at_ms == 24 * HOUR and storm.duration_ms == 3 * HOUR
    assert storm.params == {"pm10": 450.0}
    assert rain.at_ms == 0 and rain.params == {"district": "erqi"} and rain.district == "erqi"
    assert parse_scenario_text("").scenarios == parse_scenario_text("# nothing\n").scenarios == []
    assert parse_scenario_text("scenarios:\n").scenarios == []


def test_auto_devices_resolve_to_distinct_devices(city):
    f = parse_scenario_text(
        "scenarios:\n"
        "  - {kind: cover_stolen, device: auto, at: 1h}\n"
        "  - {kind: cover_open, device: auto, district: erqi, at: 1h, duration: 3h}\n"
        "  - {kind: cover_open, device: MH-JS-0001, at: 1h, duration: 3h}\n"
    )
    sim = Simulation(city, f.scenarios)
    a, b, c = (s.devices[0] for s in sim.scenarios)
    assert len({a, b, c}) == 3 and c == "MH-JS-0001"
    assert city.by_id[a].kind == "manhole" and city.by_id[b].district == "erqi"


# --------------------------------------------------------------------------- errors


BAD = [
    ("scenarios:\n  - kind: cover_open\n    device: MH-JS-0001\n    at: 1h\n", 2, "scenarios[0]: cover_open needs 'duration'"),
    ("scenarios:\n  - kind: cover_opn\n    at: 1h\n", 2, "unknown scenario kind 'cover_opn'; did you mean 'cover_open'?"),
    ("scenarios:\n  - kind: dust_episode\n    device: DS-JS-0001\n    at: 1h\n    pm10: high\n", 5, "scenarios[0].pm10: expected a non-negative number, got 'high'"),
    ("scenarios:\n  - kind: dust_episode\n    device: DS-JS-0001\n    at: 90\n", 4, "scenarios[0].at: expected a span of sim time with its unit"),
    ("scenarios:\n  - kind: dust_episode\n    device: DS-JS-0001\n    at: 90\n", 4, "got 90 (90s or 90m?)"),
    ("scenarios:\n  - kind: dust_storm\n    at: '1:30'\n", 3, "got '1:30'"),
    ("run_for: 30\n", 1, "run_for: expected a span of sim time with its unit"),
    ("scenarios:\n  - kind: dust_storm\n    at: 1h\n    duraton: 2h\n", 4, "scenarios[0].duraton: unknown key; did you mean 'duration'?"),
    ("scenarios:\n  - kind: dust_storm\n    tilt_deg: 3\n    at: 1h\n", 3, "scenarios[0].tilt_deg: unknown key"),
    ("scenarios:\n  - kind: dust_storm\n    at: 1h\n    at: 2h\n", 4, "given twice (first on line 3)"),
    ("scenarios:\n  - kind: dust_storm\n    at: 1h\n    duration: 0s\n", 4, "'duration' must be longer than 0"),
    ("scenarios:\n  - kind: dust_storm\n    at: 1h\n  - kind: cover_stolen\n    at: 2h\n", 4, "scenarios[1]: cover_stolen needs a manhole device"),
    ("scenarios:\n  - kind: dust_storm\n    device: DS-JS-0001\n    at: 2h\n", 3, "acts on the whole city"),
    ("scenarios:\n  - kind: cover_stolen\n    device: MH-JS-0001\n    at: 2h\n    duration: 1h\n", 5, "no duration"),
    ("scenarios:\n  - kind: cover_open\n    device: MH-JS-0001\n    devices: [MH-JS-0002]\n    at: 1h\n    duration: 1h\n", 4, "either 'device' or 'devices'"),
    ("scenarios:\n  - kind: lamp_leakage\n    device: auto\n    at: 1h\n    rain: 1\n", 5, "scenarios[0].rain: expected true or false"),
    ("scenarios:\n  - at: 1h\n", 2, "scenarios[0]: missing 'kind'"),
    ("scenarios:\n  - kind: dust_storm\n", 2, "scenarios[0]: missing 'at'"),
    ("scenarios: 3\n", 1, "scenarios: expected a list"),
    ("scenarios:\n  - dust_storm\n", 2, "scenarios[0]: expected a mapping"),
    ("- 1\n", 1, "expected a mapping"),
    ("start: 2026-11-02 08:00\nscenarios: []\n", 1, "with offset"),
    ("seed: 1.5\n", 1, "seed: expected a whole number"),
    ("version: 2\n", 1, "reads scenario files of version 1, got 2"),
    ("scenario:\n  - kind: dust_storm\n", 1, "scenario: unknown key; did you mean 'scenarios'?"),
    ("scenarios:\n  - kind: [a\n", 3, "not valid YAML"),  # where PyYAML notices
    ("garbage_share: 5\n", 1, "from 0 to 1"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "message"), BAD)
def test_scenario_file_errors_name_the_line(tmp_path, text, line, message):
    path = tmp_path / "scenarios.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_scenario_file(path)
    assert exc.value.file == str(path)
    assert exc.value.line == line, str(exc.value)
    assert message in exc.value.message, exc.value.message
    assert str(exc.value).startswith(f"{path}:{line}:")  # file:line:column, for editors


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("scenarios:\n  - {kind: dust_off, device: DS-XX-0001, at: 1h}\n", "not in the simulated city"),
        ("scenarios:\n  - {kind: dust_off, device: MH-JS-0001, at: 1h}\n", "but MH-JS-0001 is a manhole"),
        ("scenarios:\n  - {kind: rain, district: jinshiu, at: 1h}\n", "did you mean 'jinshui'"),
    ],
)  # fmt: skip
def test_devices_are_checked_against_the_city_with_the_line(city, text, message):
    f = parse_scenario_text("# a comment\n" + text, "s.yaml")
    with pytest.raises(ConfigError) as exc:
        Simulation(city, f.scenarios)
    assert exc.value.line == 3 and exc.value.file == "s.yaml"
    assert message in exc.value.message


def test_flags_and_spans():
    s = parse_scenario_flag("cover_open:MH-ZY-0001@1h/5h20m")
    assert (s.kind, s.devices, s.at_ms, s.duration_ms) == (
        "cover_open",
        ("MH-ZY-0001",),
        HOUR,
        5 * HOUR + 20 * MIN,
    )
    s = parse_scenario_flag("dust_storm@+24h/4h,pm10=500")
    assert s.params["pm10"] == 500.0 and s.at_ms == 24 * HOUR
    s = parse_scenario_flag("lamp_failure:SL-JS-0001+SL-JS-0002@11h")
    assert s.devices == ("SL-JS-0001", "SL-JS-0002") and s.duration_ms is None
    with pytest.raises(ConfigError, match="KIND"):
        parse_scenario_flag("cover_open MH-1")
    assert parse_span("1d2h3m4s") == ((26 * 60 + 3) * 60 + 4) * 1000
    assert format_span(parse_span("5h20m")) == "5h20m"
    assert parse_span("0") == 0 and parse_span("+90m") == 90 * MIN and parse_span("500ms") == 500
    with pytest.raises(ValueError, match="with its unit"):
        parse_span("5")
    with pytest.raises(ConfigError, match="did you mean 'cover_open'"):
        parse_scenario_flag("cover_opn:MH-ZY-0001@1h/5h")
    with pytest.raises(ConfigError, match="'at': expected a span"):
        parse_scenario_flag("dust_storm@90")
    with pytest.raises(
        ConfigError, match="dust_storm has no parameter 'pm11'; did you mean 'pm10'"
    ):
        parse_scenario_flag("dust_storm@1h,pm11=3")
    with pytest.raises(ConfigError) as exc:
        make_scenario("cover_open", ["MH-ZY-0001"], "1h", file="f.yaml", line=7)
    assert (exc.value.file, exc.value.line) == (
        "f.yaml",
        7,
    ) and "needs 'duration'" in exc.value.message
