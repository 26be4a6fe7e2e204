"""The Faust pipeline's ledger is the replay's ledger: uninterrupted, killed mid-stream, or random.

The input is a replay file (docs/contracts.md, "Replay files and ledger JSON"). ``citywatch replay`` runs it through
the detector in-process; the live path writes the same file into the journal
topic (``streams.journal.load``) and a real ``citywatch worker`` (Faust, on the
real Kafka-protocol broker) books the ledger onto ``<prefix>.penalties``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from foundation.settings import Settings
from registry.devices import load_registry
from streams import journal
from streams.replay import replay
from streams.rules import load_rules
from streams.worker import CHECKPOINT_EVERY_S
from tests.kit.ledger import live_ledger as _live_ledger
from tests.kit.ledger import wait_case_events as _wait_case_events
from tests.kit.procs import Proc

pytestmark = pytest.mark.services

H = 3_600_000
M = 60_000
T0 = 1_793_000_000_000  # 2026-10-26T09:33:20Z


def theft_and_dust_day(u: str) -> list[dict[str, Any]]:
    """A stolen cover (silent, closed by an officer), a late repair proved by a late reading
    and confirmed by an officer, an accident reported twice and confirmed by a second officer, and a dust episode with oscillation."""
    mh1, mh2, ds = f"MH-{u}-1", f"MH-{u}-2", f"DS-{u}-1"
    t = lambda dev, kind, district="jinshui": f"city/{district}/{kind}/{dev}/telemetry"  # noqa: E731
    lines: list[dict[str, Any]] = []
    lines.append(
        {
            "topic": t(mh1, "manhole"),
            "payload": {"ts": T0, "open": False, "tilt_deg": 1},
            "received_at": T0,
        }
    )
    lines.append(
        {
            "topic": t(mh1, "manhole"),
            "payload": {"ts": T0 + 10 * M, "open": True},
            "received_at": T0 + 10 * M,
        }
    )
    # the cover is stolen with its sensor: silence, time passes
    for k in range(1, 9):
        lines.append({"watermark": T0 + 10 * M + k * H})
    lines.append({"action": "accident", "device": mh1, "at": T0 + 6 * H, "officer": "grid-07"})
    lines.append({"action": "accident", "device": mh1, "at": T0 + 6 * H + M, "officer": "grid-07"})
    lines.append(
        {"action": "accident", "device": mh1, "at": T0 + 6 * H + 2 * M, "officer": "sup-07"}
    )
    lines.append(
        {"action": "close", "device": mh1, "at": T0 + 8 * H + 40 * M, "officer": "grid-07"}
    )
    # second cover: opened, hours accrue, then a late reading proves it was repaired earlier
    lines.append(
        {
            "topic": t(mh2, "manhole", "erqi"),
            "payload": {"ts": T0 + H, "tilt_deg": 30.0},
            "received_at": T0 + H,
        }
    )
    lines.append({"watermark": T0 + 9 * H})
    lines.append(
        {
            "topic": t(mh2, "manhole", "erqi"),
            "payload": {"ts": T0 + 4 * H + 30 * M, "tilt_deg": 2.0},
            "received_at": T0 + 9 * H + M,
        }
    )
    # 4.5 h late: a late repair claim, the reversals wait for an officer (docs/rules.md)
    lines.append({"action": "confirm_repair", "device": mh2, "at": T0 + 9 * H + 2 * M,
                  "officer": "grid-03"})  # fmt: skip
    # dust: rises above 200, oscillates around it, recovers
    for i in range(0, 240, 5):
        pm10 = 120 if i < 30 else (260 if i < 120 else (195 if i % 10 else 205) if i < 180 else 90)
        ts = T0 + i * M
        lines.append(
            {
                "topic": t(ds, "dust"),
                "payload": {"ts": ts, "pm10": pm10},
                "received_at": T0 + 9 * H + 2 * M + i,
            }
        )
    lines.append({"topic": t(mh1, "manhole"), "raw": "{broken", "received_at": T0 + 9 * H + 5 * M})
    lines.append({"watermark": T0 + 12 * H})
    return lines


def _replay_ledger(lines: list[dict[str, Any]], s: Settings) -> list[dict[str, Any]]:
    result = replay(lines, load_rules(s.paths.rules), load_registry(s.paths.registry))
    return result.ledger.to_json_list()


def _replay_case_events(lines: list[dict[str, Any]], s: Settings) -> set[bytes]:
    result = replay(lines, load_rules(s.paths.rules), load_registry(s.paths.registry))
    return {orjson.dumps(e.to_dict(), option=orjson.OPT_SORT_KEYS) for e in result.case_events}


def _load(s: Settings, lines: list[dict[str, Any]]) -> int:
    return asyncio.run(
        journal.load(
            lines, load_registry(s.paths.registry), s.kafka.bootstrap, s.kafka.topic_prefix
        )
    )


@pytest.fixture
def pipeline_settings(settings: Settings, registry_file: Path) -> Settings:
    return settings.replace("paths", registry=str(registry_file))


def test_live_ledger_equals_replay_ledger(
    pipeline_settings: Settings, unique: str, tmp_path: Path
) -> None:
    s = pipeline_settings
    lines = theft_and_dust_day(unique)
    expected = _replay_ledger(lines, s)
    assert {e["rule"] for e in expected} >= {"manhole", "manhole.accident", "dust"}
    assert any(e["reverses"] for e in expected), "the scenario must exercise a reversal"
    _load(s, lines)
    worker = Proc(["worker", "--simulation", "--session-timeout", "3"], s, tmp_path / "worker.log")
    try:
        live = _live_ledger(s, len(expected))
        _wait_case_events(s, _replay_case_events(lines, s))
    finally:
        worker.stop()
    assert sorted(live) == sorted(e["id"] for e in expected)
    assert all(live[e["id"]] == e for e in expected)


def test_a_changelog_of_another_size_than_the_journal_is_rebuilt_not_crashed_on(
    pipeline_settings: Settings, unique: str, tmp_path: Path
) -> None:
    """At a broker restart a stale producer's resend can make tansu create a changelog with its
    default of one partition; Faust then refused every event of every later worker
    (PartitionsMismatch, issue 14's harness). The worker rebuilds from the journal instead."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from bus.kafka import ensure_topics_for

    s = pipeline_settings.replace("kafka", partitions=2)
    lines = theft_and_dust_day(unique)
    expected = _replay_ledger(lines, s)
    asyncio.run(ensure_topics_for(s.kafka))
    changelog = f"{s.kafka.topic_prefix}-worker-detector-devices-changelog"

    async def misfit() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(changelog, 1, 1)])
        finally:
            await admin.close()

    asyncio.run(misfit())
    asyncio.run(
        journal.load(
            lines, load_registry(s.paths.registry), s.kafka.bootstrap, s.kafka.topic_prefix,
            partitions=2,
        )
    )  # fmt: skip
    worker = Proc(["worker", "--simulation", "--session-timeout", "3"], s, tmp_path / "worker.log")
    try:
        live = _live_ledger(s, len(expected))
        _wait_case_events(s, _replay_case_events(lines, s))
        # the state is written at the next checkpoint (decision 017): that is where Faust checks
        time.sleep(CHECKPOINT_EVERY_S + 1)
        _load(s, [{"watermark": T0 + 13 * H}])
        time.sleep(4)  # the event, its checkpoint, and Faust's answer to it
    finally:
        worker.stop()
    assert sorted(live) == sorted(e["id"] for e in expected)
    assert all(live[e["id"]] == e for e in expected)
    log = worker.text()
    assert "PartitionsMismatch" not in log, log[-2000:]
    assert "changelogs of another size" in log


def test_worker_killed_mid_stream_books_the_same_ledger(
    pipeline_settings: Settings, unique: str, tmp_path: Path
) -> None:
    s = pipeline_settings
    lines = theft_and_dust_day(unique)
    expected = _replay_ledger(lines, s)
    half = len(lines) // 2
    _load(s, lines[:half])
    worker = Proc(["worker", "--simulation", "--session-timeout", "3"], s, tmp_path / "worker.log")
    try:
        first = _live_ledger(s, 3)  # the worker has booked part of the ledger
        worker.kill()
        _load(s, lines[half:])
        worker.restart()
        live = _live_ledger(s, len(expected))
    finally:
        worker.stop()
    assert len(first) >= 3
    assert sorted(live) == sorted(e["id"] for e in expected)
    assert all(live[e["id"]] == e for e in expected)


# ---------------------------------------------------------------- property: random covers, same ledger

STEP = st.one_of(
    st.tuples(st.just("reading"), st.integers(1, 240), st.booleans(), st.integers(0, 40)),
    st.tuples(st.just("silence"), st.integers(30, 600)),
    st.tuples(st.just("close"), st.integers(1, 300)),
    st.tuples(st.just("accident"), st.integers(1, 60)),
)


def _script_lines(u: str, scripts: list[list[tuple]]) -> list[dict[str, Any]]:
    devices = [(f"MH-{u}-1", "jinshui"), (f"MH-{u}-2", "erqi")]
    clock = T0
    lines: list[dict[str, Any]] = []
    for i, step in enumerate(s for script in scripts for s in script):
        dev, district = devices[i % 2]
        kind = step[0]
        clock += step[1] * M
        if kind == "reading":
            payload = {"ts": clock, "open": step[2], "tilt_deg": float(step[3])}
            lines.append(
                {
                    "topic": f"city/{district}/manhole/{dev}/telemetry",
                    "payload": payload,
                    "received_at": clock,
                }
            )
        elif kind == "silence":
            lines.append({"watermark": clock})
        else:
            lines.append({"action": kind, "device": dev, "at": clock, "officer": "duty"})
    return lines


@hsettings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(scripts=st.lists(st.lists(STEP, min_size=3, max_size=25), min_size=2, max_size=4))
def test_random_cover_histories_book_the_same_ledger_live_and_replayed(
    pipeline_settings: Settings,
    unique: str,
    tmp_path_factory: pytest.TempPathFactory,
    scripts: list,
) -> None:
    import uuid

    s = pipeline_settings.replace(
        "kafka", topic_prefix=f"{pipeline_settings.kafka.topic_prefix}-{uuid.uuid4().hex[:6]}"
    )
    lines = _script_lines(unique, scripts)
    expected = _replay_ledger(lines, s)
    ids = [e["id"] for e in expected]
    assert len(ids) == len(set(ids)), "an entry id appears twice in the replay ledger"
    _load(s, lines)
    worker = Proc(
        ["worker", "--simulation", "--session-timeout", "3"],
        s,
        tmp_path_factory.mktemp("w") / "worker.log",
    )
    try:
        _wait_case_events(s, _replay_case_events(lines, s))
        live = _live_ledger(s, len(expected))
    finally:
        worker.stop()
    assert sorted(live) == sorted(ids)
    assert all(live[e["id"]] == e for e in expected)
    assert all(isinstance(e["amount_yuan"], int) for e in live.values())


def test_the_scenario_file_is_valid_json_lines(unique: str) -> None:
    for line in theft_and_dust_day(unique):
        assert orjson.loads(orjson.dumps(line)) == line
