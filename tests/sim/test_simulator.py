"""sim/simulator.py: the message stream (determinism, validity, garbage, signals), what each
scenario publishes, and the expected ledger (the real rules on the simulation's own messages)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from contract.reading import Reading
from ingest.validate import Rejection, parse_message
from registry.devices import load_registry
from sim.city import build_city, split_devices
from sim.scenarios import load_scenario_file, parse_scenario_flag
from sim.simulator import (
    DEFAULT_START_MS,
    GARBAGE_VARIANTS,
    NO_SCENARIO,
    Cadence,
    Simulation,
    local_minute,
)
from streams.replay import replay
from streams.rules import default_rules, parse_rules

HOUR = 3_600_000
MIN = 60_000
START = DEFAULT_START_MS  # 2026-11-02T08:00+08:00
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FILE = ROOT / "config" / "scenarios" / "default.yaml"
SHORT_FILE = ROOT / "tests" / "data" / "scenarios-short.yaml"


@pytest.fixture(scope="module")
def city():
    return build_city(7, *split_devices(300), fleet=True)


@pytest.fixture(scope="module")
def day(city):
    """A whole sim day (tagged) of the 300-device city, 1 % garbage."""
    sim = Simulation(city, seed=7, garbage_share=0.01)
    return list(sim.events(START + 24 * HOUR, tagged=True)), sim


def test_same_seed_same_bytes_twice(city):
    def run(seed):
        sim = Simulation(city, seed=seed, garbage_share=0.005)
        return list(sim.events(START + 6 * HOUR))

    a, b = run(5), run(5)
    assert len(a) > 10_000
    assert a == b  # (due, topic, payload bytes) identical, in order
    assert run(6) != a


def test_events_continue_where_they_stopped(city):
    whole = list(Simulation(city, seed=1).events(START + 2 * HOUR))
    sim = Simulation(city, seed=1)
    parts = list(sim.events(START + HOUR)) + list(sim.events(START + 2 * HOUR))
    assert parts == whole
    assert all(due < START + 2 * HOUR for due, _, _ in whole)
    assert [due for due, _, _ in whole] == sorted(due for due, _, _ in whole)


def test_every_clean_message_is_valid_and_every_garbage_rejected(day, tmp_path, city):
    events, sim = day
    path = tmp_path / "registry.csv"
    city.write_registry(path)
    registry = load_registry(path)
    garbage = 0
    variants = set()
    for due, topic, payload, tag in events:
        result = parse_message(topic, payload, due, registry)
        if tag.startswith("garbage:"):
            garbage += 1
            variants.add(tag.split(":")[1])
            assert isinstance(result, Rejection), (tag, payload)
        else:
            assert isinstance(result, Reading), (result, payload)
            assert result.ts == due
            assert len(payload) <= 4096
    assert garbage == sim.counts["garbage"]
    share = garbage / len(events)
    assert 0.008 < share < 0.012, share  # configured 1 %
    assert variants == set(GARBAGE_VARIANTS)


def test_garbage_share_zero_and_default(city):
    sim = Simulation(city, seed=2, garbage_share=0)
    assert all(tag == "" for *_, tag in sim.events(START + 3 * HOUR, tagged=True))
    sim = Simulation(city, seed=2)  # default 0.5 %
    n = sum(1 for *_, tag in sim.events(START + 24 * HOUR, tagged=True) if tag)
    assert 0.004 < n / sim.counts["messages"] < 0.006


def _by_device(events, kind):
    out = defaultdict(list)
    for due, topic, payload, tag in events:
        if f"/{kind}/" in topic and not tag:
            out[topic.split("/")[3]].append((due, orjson.loads(payload)))
    return out


def test_streetlights_are_photocell_lamps_lit_inside_the_rules_window(day, city):
    from contract.clock import DEFAULT_TIMEZONE, LocalClock
    from streams.daylight import Schedule, SunTable

    events, _ = day
    lamps = _by_device(events, "streetlight")
    assert len(lamps) == 90
    sun = SunTable(LocalClock(DEFAULT_TIMEZONE))
    window = Schedule()  # the rules' default: sunset + 15 min to sunrise - 15 min
    daylight = Schedule(after_sunset_ms=-15 * 60_000, before_sunrise_ms=-15 * 60_000)
    for device_id, msgs in lamps.items():
        dv = city.by_id[device_id]
        for due, p in msgs:
            if sun.should_be_lit(window, dv.lat, dv.lon, due):
                assert p["on"] is True and 0.25 <= p["current_a"] <= 1.3, (local_minute(due), p)
                assert p["power_w"] > 0
            elif not sun.should_be_lit(daylight, dv.lat, dv.lon, due):  # clearly day
                assert p["on"] is False and p["current_a"] == 0, (local_minute(due), p)
            assert p["leakage_ma"] < 30


def test_dust_follows_working_hours_and_stays_below_warning(day):
    events, _ = day
    sites = _by_device(events, "dust")
    assert len(sites) == 45
    work, night = [], []
    for msgs in sites.values():
        gaps = {b - a for (a, _), (b, _) in zip(msgs, msgs[1:], strict=False)}
        assert gaps <= {
            60_000,
            120_000,
            180_000,
            240_000,
        }  # one a minute; garbled ones left out (1 %: up to 3 in a row)
        for k, (due, p) in enumerate(msgs):
            assert p["pm25"] < p["pm10"] < p["tsp"]
            hour = [q["pm10"] for t, q in msgs[max(0, k - 60) : k + 1] if t > due - HOUR]
            assert sum(hour) / len(hour) < 150  # the rolling mean never reaches a warning
            m = local_minute(due)
            (work if 7 * 60 <= m < 20 * 60 else night).append(p["pm10"])
    # the sites' own dust is a working-hours thing
    assert sum(work) / len(work) > sum(night) / len(night) + 10


def test_manhole_heartbeats_every_ten_minutes_and_battery_drains(day):
    events, _ = day
    covers = _by_device(events, "manhole")
    assert len(covers) == 165
    for msgs in covers.values():
        gaps = {b - a for (a, _), (b, _) in zip(msgs, msgs[1:], strict=False)}
        assert gaps <= {600_000, 1_200_000, 1_800_000}  # garbled beats are left out
        assert all(p["open"] is False and p["tilt_deg"] < 15 for _, p in msgs)
        batteries = [p["battery_pct"] for _, p in msgs]
        assert batteries == sorted(batteries, reverse=True)
        assert batteries[0] > batteries[-1]


def test_cadence_is_configurable(city):
    sim = Simulation(city, seed=1, cadence=Cadence(dust_s=30, manhole_s=300, streetlight_s=60))
    covers = _by_device(sim.events(START + HOUR, tagged=True), "manhole")
    msgs = next(iter(covers.values()))
    assert msgs[1][0] - msgs[0][0] == 300_000
    with pytest.raises(ValueError, match="dust_s"):
        Cadence(dust_s=0)


def test_constructor_rejects_bad_arguments(city):
    with pytest.raises(ValueError, match="garbage_share"):
        Simulation(city, garbage_share=2)
    with pytest.raises(ValueError, match="speed"):
        Simulation(city, speed=-1)
    with pytest.raises(ValueError, match="HH:MM"):
        Simulation(city, lamp_on="25:00")


# --------------------------------------------------------------------------- what scenarios publish


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


# --------------------------------------------------------------------------- the expected ledger


@pytest.fixture(scope="module")
def short_day():
    """tests/data/scenarios-short.yaml on a 60-device city: (simulation, end of the run)."""
    f = load_scenario_file(SHORT_FILE)
    city = build_city(f.seed, *split_devices(60))
    sim = Simulation(city, f.scenarios, seed=f.seed, garbage_share=f.garbage_share)
    return sim, sim.start_ms + f.run_for_ms


def _replayed(sim, end, rules):
    """``streams.replay`` of a replay file holding the messages of a second, equal simulation."""
    twin = Simulation(sim.city, sim.scenarios, seed=sim.seed, start_ms=sim.start_ms,
                      garbage_share=sim.garbage_share)  # fmt: skip
    lines = [{"topic": topic, "raw": payload.decode("utf-8", "replace"), "received_at": due}
             for due, topic, payload in twin.events(end)]  # fmt: skip
    lines.append({"watermark": end})
    return replay(lines, rules, sim.city.registry()), len(lines) - 1


def _per_device(amounts):
    out = defaultdict(int)
    for device, amount in amounts:
        out[device] += amount
    return {d: a for d, a in out.items() if a}


def _rows(hint):
    return {r["scenario"].split()[0]: r for r in hint["by_scenario"]}


def test_the_expected_ledger_is_the_replay_of_the_same_messages(short_day):
    sim, end = short_day
    rules = default_rules()
    hint = sim.expected_ledger_hint(end, rules)
    result, messages = _replayed(sim, end, rules)
    assert hint["total_yuan"] == result.ledger.net() == 70_000
    assert hint["messages"] == messages and hint["rejected"] == len(result.rejected) > 0
    assert _per_device((i["device"], i["amount_yuan"]) for i in hint["items"]) == _per_device(
        (e.device, e.amount_yuan) for e in result.ledger
    )
    rows = _rows(hint)
    assert (rows["cover_open"]["entries"], rows["cover_open"]["amount_yuan"]) == (3, 30_000)
    assert (rows["cover_stolen"]["entries"], rows["cover_stolen"]["amount_yuan"]) == (4, 40_000)
    assert rows["cover_stolen"]["rules"] == ["manhole", "offline"]  # the silence beside it
    assert (rows["cover_tilted"]["cases"], rows["cover_tilted"]["amount_yuan"]) == (1, 0)
    assert all(i["exact"] and i["scenario"] != NO_SCENARIO for i in hint["items"])
    cover = next(i for i in hint["items"] if i["scenario"].startswith("cover_open"))
    assert (
        cover["payer_type"] == "property_unit"
        and cover["payer"] == sim.city.by_id[cover["device"]].unit
    )


def test_the_hint_follows_the_rules_not_a_copy_of_them(short_day):
    sim, end = short_day
    dearer = parse_rules("rules:\n  manhole:\n    penalty_per_hour_yuan: 12345\n")
    hint = sim.expected_ledger_hint(end, dearer)
    assert hint["total_yuan"] == 7 * 12_345 == _replayed(sim, end, dearer)[0].ledger.net()
    shorter = parse_rules("rules:\n  manhole:\n    grace_hours: 1\n")
    hint = sim.expected_ledger_hint(end, shorter)
    rows = _rows(hint)
    assert rows["cover_open"]["entries"] == 4 and rows["cover_stolen"]["entries"] == 5
    assert hint["total_yuan"] == 90_000 == _replayed(sim, end, shorter)[0].ledger.net()
    steeper = parse_rules("rules:\n  manhole:\n    tilt_threshold_deg: 30\n")
    row = _rows(sim.expected_ledger_hint(end, steeper))["cover_tilted"]
    assert (row["cases"], row["rule"]) == (0, None)  # 25 degrees is no longer abnormal


def test_cases_no_scenario_explains_are_listed_apart(short_day):
    sim, end = short_day
    strict = parse_rules("rules:\n  dust:\n    warning: 20\n    violation: 30\n")
    hint = sim.expected_ledger_hint(end, strict)
    stray = [i for i in hint["items"] if i["scenario"] == NO_SCENARIO and i["amount_yuan"]]
    sites = {d.device_id for d in sim.city.of_kind("dust")}
    assert {i["device"] for i in stray} == sites  # every site, fined for its normal dust
    assert hint["total_yuan"] == _replayed(sim, end, strict)[0].ledger.net() > 70_000
    assert any("without a scenario" in n for n in hint["notes"])


def test_the_hint_leaves_the_simulation_where_it_was(short_day):
    sim, end = short_day
    fresh = Simulation(sim.city, sim.scenarios, seed=sim.seed, garbage_share=sim.garbage_share)
    whole = list(fresh.events(end))
    again = Simulation(sim.city, sim.scenarios, seed=sim.seed, garbage_share=sim.garbage_share)
    first = list(again.events(sim.start_ms + 3 * HOUR))
    again.expected_ledger_hint(end)
    assert first + list(again.events(end)) == whole


def test_default_file_hint_is_the_documented_ledger(city):
    f = load_scenario_file(DEFAULT_FILE)
    sim = Simulation(city, f.scenarios, seed=f.seed, start_ms=f.start_ms)
    end = f.start_ms + f.run_for_ms
    hint = sim.expected_ledger_hint(end, default_rules())
    rows = _rows(hint)
    assert rows["cover_open"]["amount_yuan"] == 3 * 10_000  # floor((5h20m - 2h) / 1h)
    assert rows["cover_tilted"]["amount_yuan"] == 0
    assert rows["cover_stolen"]["entries"] == 26  # 12:00 Monday to 14:00 Tuesday
    assert (
        rows["dust_storm"]["amount_yuan"] == 0
    )  # background, the default: the weather fines nobody
    assert rows["dust_storm"]["devices"] == 45
    assert rows["dust_off"]["rule"] == "offline" and rows["lamp_failure"]["cases"] == 2
    assert (rows["day_burner"]["rule"], rows["day_burner"]["cases"]) == (
        "streetlight.day_burner",
        1,
    )
    assert (rows["flooded_well"]["rule"], rows["flooded_well"]["cases"]) == (
        "manhole.water_level",
        1,
    )
    assert (rows["night_pour"]["rule"], rows["night_pour"]["cases"]) == ("noise", 1)
    assert (rows["circuit_trip"]["rule"], rows["circuit_trip"]["cases"]) == (
        "streetlight.circuit",
        1,
    )
    # the two dust episodes: Monday's on a clean day, Tuesday's site dirtier than the storm
    fined = {i["device"]: i["amount_yuan"] for i in hint["items"]
             if i["scenario"].startswith("dust_episode") and i["amount_yuan"]}  # fmt: skip
    assert fined == {"DS-JS-0001": 100_000, "DS-ZY-0002": 100_000}
    # the trucks (sim/trucks.py): each bad trip one case of its rule, the routine trips nothing
    trucks = {
        k: (v["rule"], v["cases"], v["amount_yuan"])
        for k, v in rows.items()
        if k.startswith("truck_")
    }
    assert trucks == {
        "truck_unlicensed": ("illegal_operation", 1, 10_000),
        "truck_speeding": ("muck.speeding", 1, 20_000),
        "truck_cover_open": ("muck.cover_open", 1, 20_000),
        "truck_dumping": ("muck.dumping", 1, 20_000),
        "truck_overload": ("overload", 1, 60_000),
    }
    payers = sorted(
        e.payer for e in sim.replay(end, default_rules()).ledger if e.rule == "overload"
    )
    assert payers == ["jinshui", "zhengdong"]  # loaded in Jinshui, owned in Zhengdong
    assert hint["total_yuan"] == 620_000
    absolute = parse_rules("rules:\n  dust:\n    mode: absolute\n")
    rows_abs = _rows(sim.expected_ledger_hint(end, absolute))
    assert (
        rows_abs["dust_storm"]["amount_yuan"] >= 40 * 100_000
    )  # nearly every site fined for the weather
    assert rows_abs["cover_open"]["exact"]
