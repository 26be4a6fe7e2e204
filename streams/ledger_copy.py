"""InfluxDB's copy of the ledger and the case events, written again from Kafka at a worker's start.

The ledger is the penalties topic (docs/decisions/001); InfluxDB's ``penalty`` and
``case_event`` points are what the wall displays, the reports and the finance
office read. The worker's sinks write them as they come, committing a topic's
offset only once its batch is in InfluxDB; yet the full fault harness (seed 1,
twice: a worker started afresh on a restarted broker while InfluxDB was down,
then killed three times in a second once it was back) ended with 6 of 13 ledger
entries and 5 case events on Kafka and never in InfluxDB, the sinks' offsets past
them (bench/RESULTS.md, "Issue 14 closed"). Which Faust path commits them is not
pinned down. So each worker, once InfluxDB answers, reads both topics from their
start to their end as it finds them and writes every record again: a point
written twice is stored once (same measurement, tags and time), so this costs a
read of two small topics (a month of a city's ledger is thousands of records) and
makes InfluxDB's copy whole after any restart, whatever a sink did before it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from bus.kafka import consumer_for, partition_ends, start_client, topic_partitions
from foundation.settings import KafkaSettings
from store.writer import InfluxWriter
from streams.recovery import kafka_journal_reader

log = logging.getLogger(__name__)

BATCH = 5_000
"""Lines per write while the topics are read again."""


async def rewrite(
    k: KafkaSettings,
    topics: Mapping[str, Callable[[dict[str, Any]], str | None]],
    writer: InfluxWriter,
) -> dict[str, int]:
    """Write every record of ``topics`` (name -> its line maker) up to each partition's end
    as found now; returns the records written per topic. A record no line can be made of is
    skipped, as the sinks skip it."""

    def make_consumer() -> Any:
        return consumer_for(k, group_id=None, enable_auto_commit=False)

    probe = make_consumer()
    await start_client(probe, k.bootstrap)
    try:
        tps = await topic_partitions(probe, topics)
        starts = await probe.beginning_offsets(tps) if tps else {}  # past what retention dropped
    finally:
        await probe.stop()
    ends = await partition_ends(k, tps)
    written = dict.fromkeys(topics, 0)
    lines: list[str] = []
    for tp in tps:
        if ends.get(tp, 0) <= starts.get(tp, 0):
            continue
        to_line = topics[tp.topic]
        read = kafka_journal_reader(make_consumer, tp.topic)  # a topic range, not only the journal
        async for _offset, _key, value, _headers in read(tp.partition, starts[tp], ends[tp]):
            try:
                line = to_line(orjson.loads(value)) if value else None
            except Exception:  # noqa: BLE001 - as the sinks: skipped, never fatal
                line = None
            if line:
                lines.append(line)
                written[tp.topic] += 1
            if len(lines) >= BATCH:
                await writer.add(lines)
                lines = []
    await writer.add(lines)
    await writer.flush()
    return written
