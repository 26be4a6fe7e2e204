"""The simulated trucks' night through the live pipeline: the replay's ledger, on two partitions.

Five truck scenarios (sim/trucks.py) and the routine trips of the permitted trucks, from
21:00 for eight hours, loaded into the journal and judged by two workers on two partitions:
the fleet's records share one journal key (decision 013), so the overload's loading district
(from the truck's track, on the other partition were records keyed by district) and the one
illegal-operation case of the day (track and camera) come out exactly as replay books them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from foundation.settings import Settings
from registry.devices import load_registry
from sim.scenarios import make_scenario
from sim.simulator import DEFAULT_START_MS, Simulation, build_city
from store.identity import as_role
from streams import journal
from streams.replay import replay
from streams.rules import load_rules
from tests.kit.ledger import book_with_two_workers

pytestmark = pytest.mark.services
H = 3_600_000


def _night(tmp_path: Path) -> tuple[Path, Path, list[dict]]:
    city = build_city(7, 0, 0, 0, fleet=True)
    reg, fleet = tmp_path / "registry.csv", tmp_path / "fleet.yaml"
    city.write_registry(reg)
    city.write_fleet(fleet)
    start = DEFAULT_START_MS + 13 * H  # Monday 21:00 in Zhengzhou
    scenarios = [
        make_scenario("truck_unlicensed", ["T-EQ-02"], "1h"),
        make_scenario("truck_speeding", ["T-JS-01"], "2h"),
        make_scenario("truck_cover_open", ["T-EQ-01"], "2h30m"),
        make_scenario("truck_dumping", ["T-ZD-01"], "3h"),
        # T-EQ-01 is owned and loads in erqi; the weigh station stands in zhengdong, which
        # Kafka's partitioner puts on the other of two partitions: keyed by district, the
        # station would not know where the truck loaded
        make_scenario("truck_overload", ["T-EQ-01"], "4h30m"),
    ]
    sim = Simulation(city, scenarios, seed=7, start_ms=start, speed=0, garbage_share=0.005)
    end = start + 8 * H
    lines: list[dict] = [
        {"topic": t, "raw": p.decode("utf-8", "replace"), "received_at": due}
        for due, t, p in sim.events(end)
    ]
    lines.append({"watermark": end})
    return reg, fleet, lines


def test_two_workers_book_the_trucks_night_as_replay_does(
    settings: Settings, tmp_path: Path
) -> None:
    reg, fleet, lines = _night(tmp_path)
    s = (
        as_role(settings, "admin")
        .replace("paths", registry=str(reg), fleet=str(fleet))
        .replace("kafka", partitions=2)
    )
    registry = load_registry(reg, fleet)
    result = replay(lines, load_rules(s.paths.rules), registry)
    expected = result.ledger.to_json_list()
    assert sorted((e["rule"], e["payer"], e["amount_yuan"]) for e in expected) == [
        ("illegal_operation", "郑州宏远土方工程有限公司", 10_000),
        ("muck.cover_open", "郑州宏远土方工程有限公司", 20_000),
        ("muck.dumping", "郑州东区渣土运输有限公司", 20_000),
        ("muck.speeding", "郑州顺达渣土运输有限公司", 20_000),
        ("overload", "erqi", 30_000),
        ("overload", "erqi", 30_000),
    ]
    asyncio.run(
        journal.load(lines, registry, s.kafka.bootstrap, s.kafka.topic_prefix, partitions=2)
    )
    book_with_two_workers(s, tmp_path, result)
