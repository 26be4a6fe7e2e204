"""The order a restored journal partition is taken in: the restored records first (decision 010).

A restarted embedded broker is empty; ``services up`` writes the archive back
into it (``streams.archive.restore``). The bridge does not wait for that:
what it had queued for the old broker is resent as soon as the new one
answers, and new readings follow, so a partition holds new records ahead of
and between the restored ones (123 ahead of 1,329 in issue 14's harness). A
fresh worker that took them in partition order booked the new readings
before the history they follow: its ledger matched that order, not the one
the readings were published in, and InfluxDB and the pushes it had already
sent disagreed with it.

So the restore ends with a **mark** per journal partition: the offset after
the last record it wrote, committed in the consumer group ``<prefix>.restore``
of the new broker. Below the mark, a record without the restored header is
**deferred**: the worker takes the restored records in order, and right after
the record before the mark it takes the deferred ones, in their order; from
the mark on, everything in order. That is the order in which the records were
first published -- the archive's history, then what arrived while it was
restored -- and the order the archive itself keeps them in (it skips the
restored records and appends the others as it reads them), so a replay of the
archive books what the worker booked. Nothing is copied, so nothing written
while the restore runs can fall between a copy and its mark.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from bus.kafka import consumer_for, start_client
from contract.topics import KafkaTopics
from foundation.settings import KafkaSettings
from streams.archive import RESTORED

log = logging.getLogger(__name__)

MARKS_WAIT_S = 1.0
"""How often a worker started afresh looks for the restore's marks while it waits for them."""

T = TypeVar("T")


def mark_group(prefix: str) -> str:
    """The consumer group whose committed offsets are the restore's marks (nobody consumes in it)."""
    return f"{prefix}.restore"


def is_restored(headers: Any) -> bool:
    """Whether a record carries the restored header (headers as aiokafka or Faust give them)."""
    if not headers:
        return False
    if isinstance(headers, Mapping):
        return RESTORED in headers
    return any(k == RESTORED for k, _v in headers)


def deferred(offset: int, headers: Any, mark: int | None) -> bool:
    """A record below its partition's mark that the restore did not write: taken at the mark."""
    return mark is not None and offset < mark and not is_restored(headers)


def in_restore_order(records: Sequence[tuple[int, Any, T]], mark: int | None) -> list[T]:
    """``(offset, headers, item)`` of one partition, in offset order, as the worker takes them."""
    if not mark:
        return [item for _o, _h, item in records]
    first = [item for o, h, item in records if o < mark and is_restored(h)]
    later = [item for o, h, item in records if deferred(o, h, mark)]
    rest = [item for o, _h, item in records if o >= mark]
    return first + later + rest


async def write_marks(k: KafkaSettings, marks: Mapping[int, int]) -> None:
    """Commit the marks (partition -> offset after the last restored record) for the journal."""
    from aiokafka import TopicPartition

    journal = KafkaTopics(k.topic_prefix).telemetry
    group = consumer_for(k, group_id=mark_group(k.topic_prefix), enable_auto_commit=False)
    await start_client(group, k.bootstrap)
    try:
        tps = {TopicPartition(journal, p): m for p, m in marks.items()}
        group.assign(list(tps))
        await group.commit(tps)
    finally:
        await group.stop()


async def read_marks(k: KafkaSettings, partitions: Iterable[int]) -> dict[int, int]:
    """The restore's marks of ``partitions`` on this broker (a partition never restored: absent)."""
    from aiokafka import TopicPartition

    journal = KafkaTopics(k.topic_prefix).telemetry
    group = consumer_for(k, group_id=mark_group(k.topic_prefix), enable_auto_commit=False)
    await start_client(group, k.bootstrap)
    try:
        out = {}
        for p in partitions:
            m = await group.committed(TopicPartition(journal, p))
            if m is not None:
                out[p] = m
        return out
    finally:
        await group.stop()


async def wait_for_marks(k: KafkaSettings, partitions: int) -> dict[int, int]:
    """Wait until the restore into this broker has written its marks (a worker started afresh).

    The worker's watch can see the restarted broker before ``services up`` has
    written the archive back; a worker that began then would take new records
    before the history. One line says what it waits for, and again every minute.
    """
    waited = 0.0
    while True:
        marks = await read_marks(k, range(partitions))
        if len(marks) == partitions:
            if waited:
                log.info("worker: the restore's marks are there after %.0f s: %s", waited, marks)
            return marks
        if waited % 60 == 0:
            log.warning(
                "worker: waiting for the archive to be restored into the new broker (marks of "
                "group %s; `citywatch services up` restores it, or `citywatch archive restore`)",
                mark_group(k.topic_prefix),
            )
        await asyncio.sleep(MARKS_WAIT_S)
        waited += MARKS_WAIT_S
