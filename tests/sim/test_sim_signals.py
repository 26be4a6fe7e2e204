"""The message stream: determinism, validity against the real validator, garbage, signals."""

from __future__ import annotations

from collections import defaultdict

import orjson
import pytest

from contract.reading import Reading
from ingest.validate import Rejection, parse_message
from registry.devices import load_registry
from sim.city import build_city, split_devices
from sim.simulator import DEFAULT_START_MS, GARBAGE_VARIANTS, Cadence, Simulation, local_minute

HOUR = 3_600_000
START = DEFAULT_START_MS  # 2026-11-02T08:00+08:00


@pytest.fixture(scope="module")
def city():
    return build_city(7, *split_devices(300))


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


def test_streetlights_lit_at_night_dark_by_day_local_time(day):
    events, _ = day
    lamps = _by_device(events, "streetlight")
    assert len(lamps) == 90
    for msgs in lamps.values():
        for due, p in msgs:
            m = local_minute(due)
            if m >= 18 * 60 + 30 or m < 6 * 60 + 30:  # the schedule: lit
                assert p["on"] is True and 0.25 <= p["current_a"] <= 1.3, (m, p)
                assert p["power_w"] > 0
            elif 7 * 60 <= m < 18 * 60:  # clearly day
                assert p["on"] is False and p["current_a"] == 0, (m, p)
            assert p["leakage_ma"] < 30


def test_dust_follows_working_hours_and_stays_below_warning(day):
    events, _ = day
    sites = _by_device(events, "dust")
    assert len(sites) == 45
    work, night = [], []
    for msgs in sites.values():
        gaps = {b - a for (a, _), (b, _) in zip(msgs, msgs[1:], strict=False)}
        assert gaps <= {60_000, 120_000, 180_000}  # one a minute; garbled ones left out
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
