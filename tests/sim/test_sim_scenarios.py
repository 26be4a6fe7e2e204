"""Scenarios: timing of what each one publishes, the expected-ledger hint, file errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson
import pytest

from foundation.errors import ConfigError
from sim.city import build_city, split_devices
from sim.scenarios import (
    format_span,
    load_scenario_file,
    parse_scenario_flag,
    parse_scenario_text,
    parse_span,
)
from sim.simulator import DEFAULT_START_MS, Simulation, local_minute
from streams.rules import default_rules

HOUR = 3_600_000
MIN = 60_000
START = DEFAULT_START_MS
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FILE = ROOT / "config" / "scenarios" / "default.yaml"


@pytest.fixture(scope="module")
def city():
    return build_city(7, *split_devices(300))


def run(city, flags, hours, **kw):
    sim = Simulation(city, [parse_scenario_flag(f) for f in flags], seed=3, **kw)
    return sim, list(sim.events(START + hours * HOUR, tagged=True))


def of(events, device):
    return [(due, orjson.loads(p), tag) for due, topic, p, tag in events
            if topic.split("/")[3] == device and not tag.startswith("garbage")]  # fmt: skip


def test_stolen_cover_alarms_once_then_is_silent(city):
    _, events = run(city, ["cover_stolen:MH-JS-0001@2h"], 10)
    msgs = of(events, "MH-JS-0001")
    alarm_at = START + 2 * HOUR
    assert msgs[-1][0] == alarm_at
    assert msgs[-1][1]["open"] is True and msgs[-1][2] == "scenario"
    assert all(p["open"] is False for due, p, _ in msgs[:-1])


def test_late_repair_is_a_normal_reading_at_exactly_the_scheduled_time(city):
    _, events = run(city, ["cover_open:MH-ZY-0001@1h/5h20m"], 10)
    msgs = of(events, "MH-ZY-0001")
    t0, t1 = START + HOUR, START + HOUR + 5 * HOUR + 20 * MIN
    before = [p for due, p, _ in msgs if due < t0]
    during = [(due, p) for due, p, _ in msgs if t0 <= due < t1]
    after = [(due, p, tag) for due, p, tag in msgs if due >= t1]
    assert all(p["open"] is False for p in before)
    assert during[0][0] == t0 and len(during) >= 30  # alarm, then abnormal heartbeats
    assert all(p["open"] is True for _, p in during)
    assert after[0][0] == t1 and after[0][2] == "scenario"
    assert after[0][1]["open"] is False and after[0][1]["tilt_deg"] < 15
    assert all(p["open"] is False for _, p, _ in after)


def test_tilted_cover_repaired_in_time(city):
    _, events = run(city, ["cover_tilted:MH-EQ-0001@1h/1h15m,tilt_deg=25"], 4)
    msgs = of(events, "MH-EQ-0001")
    t0, t1 = START + HOUR, START + 2 * HOUR + 15 * MIN
    during = [p for due, p, _ in msgs if t0 <= due < t1]
    assert during and all(p["tilt_deg"] >= 15 and p["open"] is False for p in during)
    assert [due for due, p, _ in msgs if due >= t1][0] == t1
    assert all(p["tilt_deg"] < 15 for due, p, _ in msgs if due >= t1 or due < t0)


def _hour_means(msgs):
    means = []
    for k, (due, _p, _) in enumerate(msgs):
        hour = [q["pm10"] for t, q, _ in msgs[max(0, k - 60) : k + 1] if t > due - HOUR]
        means.append((due, sum(hour) / len(hour)))
    return means


def test_dust_episode_keeps_the_hourly_mean_above_200(city):
    _, events = run(city, ["dust_episode:DS-JS-0001@30m/1h30m,pm10=320"], 4)
    means = _hour_means(of(events, "DS-JS-0001"))
    over = [due for due, m in means if m > 200]
    assert over and max(over) - min(over) >= 45 * MIN
    assert min(over) > START + 30 * MIN
    # the others stay clean
    assert all(m < 150 for due, m in _hour_means(of(events, "DS-JS-0002")))


def test_dust_storm_raises_every_site_and_the_ambient(city):
    sim, events = run(city, ["dust_storm@1h/3h,pm10=450"], 5)
    t = START + 3 * HOUR
    for site in city.of_kind("dust"):
        msgs = of(events, site.device_id)
        storm = [p["pm10"] for due, p, _ in msgs if START + 90 * MIN <= due < t]
        calm = [p["pm10"] for due, p, _ in msgs if due < START + HOUR]
        assert min(storm) > 400 and max(calm) < 200
    assert sim.ambient("jinshui", t) > 450


def test_dust_monitor_switched_off_goes_silent(city):
    _, events = run(city, ["dust_off:DS-ZD-0001@3h/3h"], 8)
    dues = [due for due, *_ in of(events, "DS-ZD-0001")]
    assert not [d for d in dues if START + 3 * HOUR <= d < START + 6 * HOUR]
    assert [d for d in dues if d >= START + 6 * HOUR]  # back afterwards
    assert 7 * 60 <= local_minute(START + 3 * HOUR) < 20 * 60  # during working hours


def test_lamp_failure_at_night_and_leakage_in_rain(city):
    _, events = run(city, ["lamp_failure:SL-JS-0001@11h/6h", "lamp_leakage:SL-ZY-0001@12h/45m"], 18)
    failed = [
        p for due, p, _ in of(events, "SL-JS-0001") if START + 11 * HOUR <= due < START + 17 * HOUR
    ]
    lit = [p for p in failed if p["on"]]
    assert len(lit) > 30 and all(p["current_a"] == 0 for p in lit)
    leak = [(due, p, tag) for due, p, tag in of(events, "SL-ZY-0001")
            if START + 12 * HOUR <= due < START + 12 * HOUR + 45 * MIN]  # fmt: skip
    assert leak[0][0] == START + 12 * HOUR and leak[0][2] == "scenario"
    assert all(p["leakage_ma"] >= 30 for _, p, _ in leak)
    # it rains on Zhongyuan meanwhile: its dust sites see high humidity
    wet = [p["humidity"] for due, p, _ in of(events, "DS-ZY-0001")
           if START + 12 * HOUR + 15 * MIN <= due < START + 12 * HOUR + 30 * MIN]  # fmt: skip
    assert min(wet) > 85


# --------------------------------------------------------------------------- the default file


def test_default_file_loads_and_its_hint_is_the_documented_ledger(city):
    f = load_scenario_file(DEFAULT_FILE)
    assert f.start_ms == START and f.run_for_ms == 30 * HOUR and f.seed == 7
    assert f.garbage_share == 0.005
    sim = Simulation(city, f.scenarios, seed=f.seed, start_ms=f.start_ms)
    end = f.start_ms + f.run_for_ms
    hint = sim.expected_ledger_hint(end, default_rules())
    rows = {r["scenario"].split()[0]: r for r in hint["by_scenario"]}
    assert rows["cover_open"]["amount_yuan"] == 3 * 10_000  # floor((5h20m - 2h) / 1h)
    assert rows["cover_tilted"]["amount_yuan"] == 0
    assert rows["cover_stolen"]["entries"] == 26  # 12:00 Monday to 14:00 Tuesday
    assert rows["dust_episode"]["amount_yuan"] == 100_000
    assert rows["dust_storm"]["amount_yuan"] == 45 * 100_000  # absolute: every site
    item = next(i for i in hint["items"] if i["device"] == "MH-ZY-0001")
    assert item["payer"] == city.by_id["MH-ZY-0001"].unit and item["payer_type"] == "property_unit"
    r = default_rules()
    background = r.with_sections(dust=dataclasses.replace(r.dust, mode="background"))
    rows_bg = {x["scenario"].split()[0]: x
               for x in sim.expected_ledger_hint(end, background)["by_scenario"]}  # fmt: skip
    assert rows_bg["dust_storm"]["amount_yuan"] == 0  # no site fined for the weather
    assert rows_bg["dust_episode"]["amount_yuan"] == 100_000


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
    ("scenarios:\n  - kind: cover_open\n    device: MH-JS-0001\n    at: 1h\n", 2, "needs 'duration'"),
    ("scenarios:\n  - kind: cover_opn\n    at: 1h\n", 2, "did you mean 'cover_open'"),
    ("scenarios:\n  - kind: dust_episode\n    device: DS-JS-0001\n    at: 1h\n    pm10: high\n", 5, "'pm10' must be a number"),
    ("scenarios:\n  - kind: dust_episode\n    device: DS-JS-0001\n    at: 90\n", 4, "with units"),
    ("scenarios:\n  - kind: dust_storm\n    at: 1h\n    duraton: 2h\n", 4, "did you mean 'duration'"),
    ("scenarios:\n  - kind: dust_storm\n    at: 1h\n  - kind: cover_stolen\n    at: 2h\n", 4, "needs a manhole device"),
    ("scenarios:\n  - kind: cover_stolen\n    device: MH-JS-0001\n    at: 2h\n    duration: 1h\n", 5, "no duration"),
    ("start: 2026-11-02 08:00\nscenarios: []\n", 1, "with offset"),
    ("version: 2\n", 1, "version must be 1"),
    ("scenario:\n  - kind: dust_storm\n", 1, "did you mean 'scenarios'"),
    ("scenarios:\n  - kind: [a\n", 3, "invalid YAML"),  # where PyYAML notices
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
    assert message in exc.value.message


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
    with pytest.raises(ValueError, match="units"):
        parse_span("5")
