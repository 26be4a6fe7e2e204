"""Writing records to Kafka topics and reading them back in tests (real broker, real clients)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from bus.kafka import ensure_topics, make_producer
from contract.topics import KafkaTopics


async def produce(settings: Any, records: list[tuple[str, dict]]) -> None:
    """Put each ``(kind, record)`` on citywatch's topic of that kind (``KafkaTopics``: "cases",
    "penalties"...), keyed by its case id, waiting for Kafka's ack of each."""
    k = settings.kafka
    await ensure_topics(k.bootstrap, k.topic_prefix, k.partitions)
    topics = KafkaTopics(k.topic_prefix)
    producer = make_producer(k.bootstrap, linger_ms=0)
    await producer.start()
    try:
        for kind, rec in records:
            await producer.send_and_wait(
                getattr(topics, kind), orjson.dumps(rec), key=rec["case_id"].encode()
            )
    finally:
        await producer.stop()


async def read_topic(
    bootstrap: str,
    topic: str,
    want: int,
    timeout_s: float = 30.0,
    done: Callable[[list[dict[str, Any]]], bool] | None = None,
) -> list[dict[str, Any]]:
    """All records of ``topic`` from the beginning, waiting until ``want`` arrived (or, given
    ``done``, until it holds for what arrived) or the timeout."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        enough = done or (lambda got: len(got) >= want)
        while not enough(out) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                out.extend(orjson.loads(r.value) for r in records)
    finally:
        await consumer.stop()
    return out


def read_topic_sync(
    bootstrap: str, topic: str, want: int, timeout_s: float = 30.0
) -> list[dict[str, Any]]:
    return asyncio.run(read_topic(bootstrap, topic, want, timeout_s))


class PrivateKafka:
    """A tansu of one test alone, started, stopped and restarted by citywatch's own
    ``services.up``/``down(only={"kafka"})``: a restart is the real thing (a new empty broker
    with a new cluster id), and the pid file in its own state directory is nobody else's."""

    def __init__(self, settings: Any, root: Any) -> None:
        from pathlib import Path

        from tests.kit.influxd import free_port

        self.bootstrap = f"127.0.0.1:{free_port()}"
        self.state = Path(root) / "kafka-state"
        self.services = settings.replace("kafka", bootstrap=self.bootstrap).replace(
            "paths", state_dir=str(self.state)
        )

    def up(self) -> float:
        from citywatch import services

        started = time.monotonic()
        services.up(self.services, log=print, only={"kafka"})
        return started

    def down(self) -> None:
        from citywatch import services

        services.down(self.services, log=print, only={"kafka"})

    def restart(self) -> float:
        self.down()
        return self.up()
