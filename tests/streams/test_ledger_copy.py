"""InfluxDB's copy of the ledger is written again from the penalties topic at a worker's start.

The full fault harness ended twice with ledger entries on Kafka that the sinks had committed
past and never written (streams/ledger_copy.py): whatever a sink did before, the copy a worker
writes at its start holds every entry of the topic, once.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from bus.kafka import ensure_topics_for
from contract.cases import LedgerEntry
from contract.topics import KafkaTopics
from foundation.settings import Settings
from store import points
from store.identity import as_role, credentials
from store.read import ledger_entries
from store.schema import LEDGER_RP, ensure_database
from store.writer import InfluxWriter
from streams.ledger_copy import rewrite

pytestmark = pytest.mark.services

H = 3_600_000


def _entry(unique: str, hour: int) -> LedgerEntry:
    case = f"manhole:MH-{unique}:{H}"
    return LedgerEntry(
        id=f"{case}:hour:{hour}", case_id=case, rule="manhole", device=f"MH-{unique}",
        payer="金水区城管", payer_type="property_unit", district="jinshui", amount_yuan=10_000,
        accrued_at=H * (hour + 3), hour_index=hour, reverses=None, evidence=[],
    )  # fmt: skip


def test_every_entry_on_the_penalties_topic_is_in_influxdb_once_after_the_copy(
    settings: Settings, unique: str
) -> None:
    k = settings.kafka
    topic = KafkaTopics(k.topic_prefix).penalties
    entries = [_entry(unique, h) for h in (1, 2, 3)]

    async def run() -> tuple[dict[str, int], dict[str, int]]:
        await ensure_topics_for(k)
        producer = AIOKafkaProducer(bootstrap_servers=k.bootstrap)
        await producer.start()
        try:
            for e in entries + entries[:1]:  # a repeat, as a restarted worker sends
                await producer.send_and_wait(topic, orjson.dumps(e.to_dict()), key=b"jinshui")
        finally:
            await producer.stop()
        ensure_database(settings)
        writer = InfluxWriter(
            settings.influx.url, settings.influx.database, retention_policy=LEDGER_RP,
            **credentials(settings, "writer"),
        )  # fmt: skip
        await writer.start()
        try:
            first = await rewrite(k, {topic: points.penalty_line}, writer)
            again = await rewrite(k, {topic: points.penalty_line}, writer)  # the next start
        finally:
            await writer.stop()
        return first, again

    first, again = asyncio.run(run())
    assert first == again == {topic: 4}
    stored = ledger_entries(as_role(settings, "reader"))
    assert sorted((e.id, e.amount_yuan) for e in stored) == sorted(
        (e.id, 10_000) for e in entries
    ), "each entry once, whatever was written twice"
