"""The live clock end to end (issue 14): in live mode nothing but the worker's wall-clock ticks
moves a silent cover's clock. A stolen cover (one open reading, then silence, its sensor gone)
reaches its deadline and is escalated on the cases topic with no further input at all."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from contract.topics import KafkaTopics
from foundation.settings import Settings
from registry.devices import load_registry
from streams import journal
from tests.kit.kafka import read_topic_sync
from tests.kit.procs import Proc, wait_until

pytestmark = pytest.mark.services
GRACE_S = 18.0  # 0.005 h: exact in the rules file


def test_a_silent_covers_clock_runs_on_wall_clock_ticks_in_live_mode(
    settings: Settings, registry_file: Path, unique: str, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"rules:\n  manhole:\n    grace_hours: {GRACE_S / 3600:.6f}\n", encoding="utf-8"
    )
    s = settings.replace("paths", registry=str(registry_file), rules=str(rules))
    mh = f"MH-{unique}-1"
    now = time.time_ns() // 1_000_000
    opening = [{"topic": f"city/jinshui/manhole/{mh}/telemetry", "payload": {"ts": now, "open": True},
                "received_at": now}]  # fmt: skip
    worker = Proc(["worker", "--session-timeout", "3"], s, tmp_path / "worker.log")  # live mode
    cases = KafkaTopics(s.kafka.topic_prefix).cases
    try:
        asyncio.run(journal.load(opening, load_registry(registry_file), s.kafka.bootstrap,
                                 s.kafka.topic_prefix, final_watermark=False))  # fmt: skip
        opened = wait_until(
            lambda: [r for r in read_topic_sync(s.kafka.bootstrap, cases, 10, 1) if r["device"] == mh],
            timeout=60, what="the case opened",
        )  # fmt: skip
        assert opened[0]["state"] == "open" and opened[0]["deadline"] == now + int(GRACE_S * 1000)
        escalated = wait_until(
            lambda: [r for r in read_topic_sync(s.kafka.bootstrap, cases, 10**6, 1)
                     if r["device"] == mh and r["state"] == "escalated"],
            timeout=60, what="the deadline passed on wall-clock ticks alone",
        )  # fmt: skip
    finally:
        worker.stop()
    assert escalated[0]["at"] == opened[0]["deadline"]  # at the deadline itself, not at a tick
    assert time.time_ns() // 1_000_000 >= opened[0]["deadline"]
