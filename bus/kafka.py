"""Kafka plumbing shared by the bridge and the worker: topic creation and the producer.

Topics are created explicitly before anything produces: a Kafka-protocol
broker that auto-creates on first produce picks its own partition count, and
Faust then refuses to join a table's changelog with a source topic of another
size.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from contract.topics import KafkaTopics

log = logging.getLogger(__name__)

TOPIC_NAMES = ("telemetry", "deadletter", "cases", "penalties", "alerts", "acks")


async def ensure_topics(bootstrap: str, prefix: str, partitions: int = 1) -> list[str]:
    """Create citywatch's topics if missing; return their names.

    Every topic gets ``partitions`` partitions: the worker's tables are
    co-partitioned with the telemetry topic, and acks are forwarded into it by
    device key, so all of them must agree.
    """
    topics = KafkaTopics(prefix)
    names = [getattr(topics, n) for n in TOPIC_NAMES]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in missing]
                )
            except TopicAlreadyExistsError:
                pass
            for _ in range(50):  # wait until metadata shows them
                if set(missing) <= set(await admin.list_topics()):
                    break
                await asyncio.sleep(0.1)
    finally:
        await admin.close()
    return names


def make_producer(
    bootstrap: str, client_id: str = "citywatch", linger_ms: int = 5
) -> AIOKafkaProducer:
    """A producer tuned by bench/RESULTS.md (linger 5 ms); acks=all so an ack means stored.

    No idempotent producer and no transactions: the embedded broker (tansu)
    has none, so duplicates are tolerated downstream by deterministic ids.
    """
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        linger_ms=linger_ms,
        max_batch_size=1 << 20,
        request_timeout_ms=30_000,
    )
