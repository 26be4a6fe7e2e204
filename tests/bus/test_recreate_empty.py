"""Topics made empty again really are empty: tansu's phantom of a stale producer is cleared.

A worker started afresh on a restarted broker recreates its tables' changelogs. The process it
replaced had, at the restart, resent its queued changelog batches into the new broker, which
acknowledged them although it had no such topic; a changelog created afterwards reported their
end, gave back no record and refused every produce, and Faust's recovery waited for ever (issue
14's harness, docs/decisions/009-state-recovery.md). Here the phantom is made the same way: a
producer whose metadata still lists a topic the broker no longer holds.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from bus.kafka import clear_phantoms, ensure_topics_for, recreate_empty
from contract.topics import KafkaTopics
from foundation.settings import Settings

pytestmark = pytest.mark.services


async def _phantom(bootstrap: str, topic: str) -> None:
    """A produce acknowledged into ``topic`` after the broker dropped it: what a restart does."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, metadata_max_age_ms=600_000)
    await producer.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
        await producer.send_and_wait(topic, b"before", partition=0)  # its metadata lists the topic
        await admin.delete_topics([topic])
        for _ in range(50):
            if topic not in await admin.list_topics():
                break
            await asyncio.sleep(0.1)
        await producer.send_and_wait(topic, b"into a topic the broker does not hold", partition=0)
    finally:
        await producer.stop()
        await admin.close()


async def _state(bootstrap: str, topic: str) -> tuple[int, int, str]:
    """(reported end, records a fetch from 0 gives, what a produce into it answers)."""
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5_000)
    await producer.start()
    try:
        await consumer.topics()
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.assign([tp])
        consumer.seek(tp, 0)
        fetched = len((await consumer.getmany(tp, timeout_ms=1_000)).get(tp, []))
        try:
            answer = f"offset {(await producer.send_and_wait(topic, b'new', partition=0)).offset}"
        except KafkaError as exc:
            answer = type(exc).__name__
    finally:
        await producer.stop()
        await consumer.stop()
    return end, fetched, answer


def test_a_topic_recreated_after_a_stale_producers_resend_starts_empty_and_takes_records(
    settings: Settings,
) -> None:
    k = settings.kafka
    plain, recreated = f"{k.topic_prefix}-plain", f"{k.topic_prefix}-recreated"

    async def run() -> tuple[tuple[int, int, str], tuple[int, int, str]]:
        for topic in (plain, recreated):
            await _phantom(k.bootstrap, topic)
        admin = AIOKafkaAdminClient(bootstrap_servers=k.bootstrap)
        await admin.start()
        try:  # what the worker did before: the topic was missing, so it was only created
            await admin.create_topics([NewTopic(plain, 1, 1)])
        finally:
            await admin.close()
        await recreate_empty(k, {recreated: {"cleanup.policy": "compact"}}, 1)
        await asyncio.sleep(0.3)
        return await _state(k.bootstrap, plain), await _state(k.bootstrap, recreated)

    created_only, made_empty = asyncio.run(run())
    end, fetched, answer = created_only
    assert end > 0 and fetched == 0 and answer != "offset 0", (
        "the broker's flaw this guards against: an end no record backs, a partition that takes "
        f"nothing (got end {end}, {fetched} fetched, produce: {answer})"
    )
    assert made_empty == (0, 0, "offset 0"), made_empty


def test_services_up_clears_a_phantom_journal_and_keeps_a_topic_with_records(
    settings: Settings,
) -> None:
    """What ``services up`` does on a broker it has just started, before it restores the archive
    (the restore failed on such a journal with ``UnknownError``)."""
    k = settings.kafka
    topics = KafkaTopics(k.topic_prefix)

    async def run() -> tuple[list[str], tuple[int, int, str], tuple[int, int, str]]:
        await _phantom(k.bootstrap, topics.telemetry)
        await ensure_topics_for(k)
        producer = AIOKafkaProducer(bootstrap_servers=k.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topics.cases, b"a case event", partition=0)
        finally:
            await producer.stop()
        cleared = await clear_phantoms(k)
        await asyncio.sleep(0.3)
        return (
            cleared,
            await _state(k.bootstrap, topics.telemetry),
            await _state(k.bootstrap, topics.cases),
        )

    cleared, journal, cases = asyncio.run(run())
    assert cleared == [topics.telemetry]
    assert journal == (0, 0, "offset 0"), journal
    assert cases[1:] == (1, "offset 1"), "a topic with records is left as it is"
