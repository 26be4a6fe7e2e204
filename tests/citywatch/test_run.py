"""The main job: a simulated city through the whole pipeline, and its determinism."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from citywatch.run import expected_vs_actual, last_weeks_monday
from foundation.settings import Settings
from registry.devices import load_registry
from sim.simulator import Simulation, build_city, load_scenario_file, split_devices
from store.identity import as_role
from streams.replay import format_json, replay
from streams.rules import load_rules
from tests.conftest import settings_env

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "tests" / "data" / "scenarios-short.yaml"


def _simulated_day(tmp_path: Path, seed: int) -> tuple[str, list[dict], Simulation]:
    scen = load_scenario_file(SCENARIOS)
    city = build_city(seed, *split_devices(60))
    registry = tmp_path / f"registry-{seed}.csv"
    city.write_registry(registry)
    start = last_weeks_monday()
    sim = Simulation(
        city, scen.scenarios, seed=seed, start_ms=start, speed=0, garbage_share=scen.garbage_share
    )
    lines = [
        {"topic": topic, "raw": payload.decode("utf-8", "replace"), "received_at": due}
        for due, topic, payload in sim.events(start + scen.run_for_ms)
    ]
    lines.append({"watermark": start + scen.run_for_ms})
    return str(registry), lines, sim


def test_same_seed_and_scenario_give_identical_ledgers(tmp_path: Path) -> None:
    rules = load_rules(ROOT / "config" / "rules.yaml")
    outputs = []
    for attempt in range(2):
        workdir = tmp_path / str(attempt)
        workdir.mkdir()
        registry, lines, sim = _simulated_day(workdir, seed=11)
        result = replay(lines, rules, load_registry(registry))
        outputs.append(format_json(result))
    assert outputs[0] == outputs[1]
    ledger = orjson.loads(outputs[0])["ledger"]
    hint = sim.expected_ledger_hint(sim.start_ms + 8 * 3_600_000, rules=rules)
    assert sum(e["amount_yuan"] for e in ledger) == hint["total_yuan"] == 70_000
    by_device: dict[str, int] = {}
    for e in ledger:
        by_device[e["device"]] = by_device.get(e["device"], 0) + e["amount_yuan"]
    assert all(row["mark"] == "✓" for row in expected_vs_actual(hint["items"], by_device))


@pytest.mark.services
def test_citywatch_run_books_what_the_scenarios_cost(
    live_services: Settings, unique: str, tmp_path: Path
) -> None:
    s = live_services.replace("kafka", topic_prefix=f"cw-{unique}").replace(
        "influx", database=f"cw_{unique}"
    )
    # its own state folder holds no InfluxDB identities: it runs as the session's admin
    s = as_role(s, "admin").replace("paths", state_dir=str(tmp_path / "state"))
    env = settings_env(s)
    with contextlib.ExitStack() as held:
        for port in (19109, 18787):  # the ports a run once fixed: as if another run held them
            squatter = held.enter_context(socket.socket())
            with contextlib.suppress(OSError):  # taken already: the same proof
                squatter.bind(("127.0.0.1", port))
                squatter.listen()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "citywatch",
                "run",
                "--duration",
                "15",
                "--devices",
                "60",
                "--scenarios",
                str(SCENARIOS),
            ],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=240,
        )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "ledger total 70,000 yuan; scenarios expect 70,000" in out, out[-3000:]
    assert "✗" not in out
    assert "alerts pushed:" in out and "alerts pushed: 0 " not in out
    assert "dead letters" in out
    # a fifth of the dust sites reported in HJ 212 through the gateway, and every frame was answered
    text = " ".join(out.split())  # rich wraps the summary at the terminal's width
    found = re.search(
        r"HJ 212 monitors .*?: ([\d,]+) frames sent, ([\d,]+) answered 9014, ([\d,]+) refused 9011",
        text,
    )
    assert found, out[-3000:]
    sent, answered, refused = (int(g.replace(",", "")) for g in found.groups())
    line = found.group(0)
    assert sent > 0 and answered + refused == sent, line
    # half of the trucks reported in JT/T 808 through the other gateway, every report answered
    found = re.search(
        r"JT/T 808 terminals .*?: (\d+) registered, ([\d,]+) location reports sent, "
        r"([\d,]+) answered 0x8001 result 0, ([\d,]+) refused",
        text,
    )
    assert found, out[-3000:]
    registered, sent, answered, refused = (int(g.replace(",", "")) for g in found.groups())
    assert registered == 3 and sent > 0 and answered + refused == sent, found.group(0)
    assert "JT/T 808 terminal error" not in text
    assert os.path.exists(tmp_path / "state" / "run" / "worker.log")
