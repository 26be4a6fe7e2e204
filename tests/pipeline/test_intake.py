"""No record stops the worker, and none moves its clock (docs/contracts.md, "Kafka"; docs/rules.md,
"The clock"): a real ``citywatch worker`` on the real broker and InfluxDB."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import pytest

from bus.kafka import ensure_topics, make_producer
from contract.topics import KafkaTopics
from foundation.settings import Settings
from registry.devices import load_registry
from store.errors import InfluxQueryError
from store.influxql import query
from streams import journal
from tests.kit.kafka import read_topic_sync
from tests.kit.procs import Proc, wait_until

pytestmark = pytest.mark.services

H, M = 3_600_000, 60_000
YEAR = 365 * 24 * H


def _produce_raw(s: Settings, values: list[bytes]) -> None:
    async def go() -> None:
        await ensure_topics(s.kafka.bootstrap, s.kafka.topic_prefix)
        producer = make_producer(s.kafka.bootstrap, client_id="test-raw")
        await producer.start()
        try:
            topic = KafkaTopics(s.kafka.topic_prefix).telemetry
            for v in values:
                await (await producer.send(topic, v, partition=0))
        finally:
            await producer.stop()

    asyncio.run(go())


def _load(s: Settings, lines: list[dict[str, Any]]) -> None:
    reg = load_registry(s.paths.registry)
    asyncio.run(
        journal.load(lines, reg, s.kafka.bootstrap, s.kafka.topic_prefix, final_watermark=False)
    )


def _records(s: Settings, name: str) -> list[dict[str, Any]]:
    topic = getattr(KafkaTopics(s.kafka.topic_prefix), name)
    return read_topic_sync(s.kafka.bootstrap, topic, 10**6, 1.0)


def _influx(s: Settings, q: str) -> list[dict[str, Any]]:
    try:
        return query(s, None, q)
    except InfluxQueryError:  # the worker has not created the database yet
        return []


def test_a_non_json_journal_record_is_quarantined_and_the_next_reading_is_processed(
    settings: Settings, registry_file: Path, unique: str, tmp_path: Path
) -> None:
    s = settings.replace("paths", registry=str(registry_file))
    mh = f"MH-{unique}-1"
    t0 = time.time_ns() // 1_000_000 - H
    bad = b"\x00{not json at all"
    _produce_raw(s, [bad])  # offset 0 of partition 0: before the reading
    _load(s, [{"topic": f"city/jinshui/manhole/{mh}/telemetry",
               "payload": {"ts": t0, "open": True}, "received_at": t0}])  # fmt: skip
    worker = Proc(["worker", "--simulation", "--session-timeout", "3"], s, tmp_path / "worker.log")
    try:
        opened = wait_until(
            lambda: [c for c in _records(s, "cases") if c["device"] == mh],
            what="the reading after the bad record opened its case",
        )
        assert opened[0]["state"] == "open" and opened[0]["opened_at"] == t0
        [q] = wait_until(lambda: _records(s, "quarantine"), what="the bad record quarantined")
        assert (q["reason"], q["topic"], q["partition"], q["offset"]) == (
            "not_json", KafkaTopics(s.kafka.topic_prefix).telemetry, 0, 0,
        )  # fmt: skip
        assert base64.b64decode(q["raw_b64"]) == bad and q["raw_bytes"] == len(bad)
        rows = wait_until(
            lambda: _influx(s, "SELECT * FROM quarantine"), what="the quarantine point in InfluxDB"
        )
        assert [(r["reason"], r["count"], r["offset"]) for r in rows] == [("not_json", 1, 0)]
        assert "quarantined" in worker.text() and worker.proc.poll() is None
    finally:
        worker.stop()


def test_a_watermark_a_year_ahead_in_live_mode_books_nothing(
    settings: Settings, registry_file: Path, unique: str, tmp_path: Path
) -> None:
    """The issue's attack: ``{"type": "watermark", "at": now + 365 days}`` booked 8,758 entries."""
    s = settings.replace("paths", registry=str(registry_file))
    mh1, mh2 = f"MH-{unique}-1", f"MH-{unique}-2"
    now = time.time_ns() // 1_000_000
    t0 = now - 5 * H - 30 * M  # deadline now - 3.5 h: its real hours are at -2.5, -1.5, -0.5 h
    _load(s, [
        {"topic": f"city/jinshui/manhole/{mh1}/telemetry", "payload": {"ts": t0, "open": True},
         "received_at": t0},
        {"watermark": now + YEAR},  # forged time
        {"topic": f"city/erqi/manhole/{mh2}/telemetry",  # a reading stamped a year ahead
         "payload": {"ts": now + YEAR, "open": True}, "received_at": now + YEAR},
    ])  # fmt: skip
    worker = Proc(["worker", "--session-timeout", "3"], s, tmp_path / "worker.log")  # live mode
    try:
        quarantined = wait_until(
            lambda: (q := _records(s, "quarantine")) and len(q) == 2 and q,
            what="the forged watermark and the reading from the future quarantined",
        )
        assert [q["reason"] for q in quarantined] == ["ahead_of_clock"] * 2
        assert [q["offset"] for q in quarantined] == [1, 2]
        entries = wait_until(
            lambda: (e := _records(s, "penalties")) and len(e) >= 3 and e,
            what="the cover's real hours booked by the wall-clock ticks",
        )
        time.sleep(3)  # ticks keep coming: nothing beyond the real hours may appear
        entries = _records(s, "penalties")
        assert sorted({e["id"] for e in entries}) == [
            f"manhole:{mh1}:{t0}:hour:{k}" for k in (1, 2, 3)
        ]
        assert sum(e["amount_yuan"] for e in {e["id"]: e for e in entries}.values()) == 30_000
        assert not [c for c in _records(s, "cases") if c["device"] == mh2]
        assert "ahead_of_clock" in worker.text()
    finally:
        worker.stop()
