"""Reading Kafka topics back in tests (real broker, real consumer)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer


async def read_topic(
    bootstrap: str, topic: str, want: int, timeout_s: float = 30.0
) -> list[dict[str, Any]]:
    """All records of ``topic`` from the beginning, waiting until ``want`` arrived or the timeout."""
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
        while len(out) < want and time.monotonic() < deadline:
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
