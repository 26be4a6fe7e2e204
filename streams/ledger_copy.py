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

from bus.kafka import consumer_for, partition_ends, start_client
from foundation.settings import KafkaSettings
from store.writer import InfluxWriter

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
    from aiokafka import TopicPartition

    reader = consumer_for(k, group_id=None, enable_auto_commit=False)
    await start_client(reader, k.bootstrap)
    written = dict.fromkeys(topics, 0)
    try:
        await reader.topics()
        tps = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(reader.partitions_for_topic(t) or ())
        ]
        ends = await partition_ends(k, tps)
        todo = {tp for tp in tps if ends.get(tp)}
        if not todo:
            return written
        reader.assign(sorted(todo))
        await reader.seek_to_beginning(*todo)
        lines: list[str] = []
        while todo:
            batch = await reader.getmany(*todo, timeout_ms=1_000)
            for tp, records in batch.items():
                for r in records:
                    if r.offset >= ends[tp]:
                        break
                    try:
                        line = topics[tp.topic](orjson.loads(r.value)) if r.value else None
                    except Exception:  # noqa: BLE001 - as the sinks: skipped, never fatal
                        line = None
                    if line:
                        lines.append(line)
                        written[tp.topic] += 1
                if records and records[-1].offset + 1 >= ends[tp]:
                    todo.discard(tp)
            if len(lines) >= BATCH or not todo:
                await writer.add(lines)
                await writer.flush()
                lines = []
    finally:
        await reader.stop()
    return written
