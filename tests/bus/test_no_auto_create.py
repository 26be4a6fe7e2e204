"""No citywatch client creates a topic: tansu would give it four partitions, not the settings'.

At a broker restart the components ask for their topics' metadata as soon as the new broker
answers. aiokafka asks with ``allow_auto_topic_creation`` set, and tansu then makes a topic it
does not hold with its own default of four partitions: a journal of four partitions against the
settings' one, into which the restore and the bridge wrote, and every worker after refused every
event (issue 14's harness; docs/decisions/010-durable-journal.md §9).
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest

from bus.kafka import partition_counts, producer_for, start_client
from foundation.settings import Settings

pytestmark = pytest.mark.services


def test_a_produce_into_a_topic_nobody_created_is_refused_and_makes_no_topic(
    settings: Settings,
) -> None:
    k = settings.kafka
    topic = f"{k.topic_prefix}-never-created"

    async def run() -> tuple[str, dict[str, int]]:
        producer = producer_for(k, "test-no-auto-create")
        producer.client._request_timeout_ms = 2_000  # how long it waits for the topic
        await start_client(producer, k.bootstrap)
        try:
            try:
                md = await asyncio.wait_for(producer.send_and_wait(topic, b"x", key=b"d"), 15)
                answer = f"acknowledged on partition {md.partition}"
            except (TimeoutError, KafkaError) as exc:
                answer = type(exc).__name__
        finally:
            await producer.stop()
        return answer, await partition_counts(k, [topic])

    answer, counts = asyncio.run(run())
    assert not answer.startswith("acknowledged"), answer
    assert counts == {topic: 0}, f"the broker made the topic: {counts}"


def test_the_broker_would_make_it_with_four_partitions_if_asked(settings: Settings) -> None:
    """The flaw guarded against, asked for explicitly: why the default matters."""
    k = settings.kafka
    topic = f"{k.topic_prefix}-auto-created"

    async def run() -> dict[str, int]:
        producer = producer_for(k, "test-auto-create")
        await start_client(producer, k.bootstrap)
        try:
            node = producer.client.get_random_node()
            await producer.client.send(node, MetadataRequest([topic], True))
        finally:
            await producer.stop()
        for _ in range(20):
            counts = await partition_counts(k, [topic])
            if counts[topic]:
                return counts
            await asyncio.sleep(0.1)
        return counts

    assert MetadataRequest([topic])._allow_auto_topic_creation is False
    assert asyncio.run(run()) == {topic: 4}
