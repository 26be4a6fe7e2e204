"""Where a partition ends and how far a group is behind, on the real broker (bus/kafka.py).

tansu reports a partition's end as its last batch's first offset + 1
(docs/decisions/004-tansu-as-kafka-in-tests.md): these read past it.
"""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from bus.kafka import (
    consumer_for,
    ensure_topics_for,
    group_lag,
    partition_ends,
    producer_for,
    start_client,
    topic_partitions,
)
from contract.topics import KafkaTopics
from foundation.settings import Settings


async def _fill(settings: Settings, partition: int, batches: int, per_batch: int) -> None:
    k = settings.kafka
    producer = producer_for(k, "positions-test", linger_ms=50)
    await start_client(producer, k.bootstrap)
    try:
        topic = KafkaTopics(k.topic_prefix).telemetry
        for _ in range(batches):
            sent = [await producer.send(topic, b"x", partition=partition) for _ in range(per_batch)]
            await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _commit(settings: Settings, group: str, tp: TopicPartition, offset: int) -> None:
    consumer = consumer_for(settings.kafka, group_id=group, enable_auto_commit=False)
    await start_client(consumer, settings.kafka.bootstrap)
    try:
        consumer.assign([tp])
        await consumer.commit({tp: OffsetAndMetadata(offset, "")})
    finally:
        await consumer.stop()


def test_a_partition_written_in_batches_ends_after_its_last_record(settings: Settings) -> None:
    s = settings.replace("kafka", partitions=2)
    asyncio.run(ensure_topics_for(s.kafka))
    asyncio.run(_fill(s, partition=1, batches=3, per_batch=4))
    topic = KafkaTopics(s.kafka.topic_prefix).telemetry
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    ends = asyncio.run(partition_ends(s.kafka, tps))
    assert ends == {tps[0]: 0, tps[1]: 12}


def test_an_empty_partition_never_committed_on_hides_no_other_partitions_lag(
    settings: Settings,
) -> None:
    s = settings.replace("kafka", partitions=2)
    asyncio.run(ensure_topics_for(s.kafka))
    asyncio.run(_fill(s, partition=1, batches=2, per_batch=5))
    topic = KafkaTopics(s.kafka.topic_prefix).telemetry
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    group = f"{s.kafka.topic_prefix}-worker"
    asyncio.run(_commit(s, group, tps[1], 3))
    assert asyncio.run(group_lag(s.kafka, group, tps)) == 7


def test_data_on_a_partition_the_group_never_committed_on_cannot_be_judged_yet(
    settings: Settings,
) -> None:
    s = settings.replace("kafka", partitions=2)
    asyncio.run(ensure_topics_for(s.kafka))
    asyncio.run(_fill(s, partition=0, batches=1, per_batch=3))
    topic = KafkaTopics(s.kafka.topic_prefix).telemetry
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    assert asyncio.run(group_lag(s.kafka, f"{s.kafka.topic_prefix}-worker", tps)) is None


def test_a_topics_partitions_are_listed_in_order_and_a_missing_topic_gives_none_or_the_first(
    settings: Settings,
) -> None:
    s = settings.replace("kafka", partitions=3)
    asyncio.run(ensure_topics_for(s.kafka))
    topics = KafkaTopics(s.kafka.topic_prefix)
    missing = f"{s.kafka.topic_prefix}.nobody-made-this"

    async def listed(or_first: bool) -> list[TopicPartition]:
        consumer = consumer_for(s.kafka, group_id=None, enable_auto_commit=False)
        await start_client(consumer, s.kafka.bootstrap)
        try:
            return await topic_partitions(consumer, [topics.cases, missing], or_first=or_first)
        finally:
            await consumer.stop()

    cases = [TopicPartition(topics.cases, p) for p in range(3)]
    assert asyncio.run(listed(or_first=False)) == cases
    assert asyncio.run(listed(or_first=True)) == [*cases, TopicPartition(missing, 0)]
