"""The journal: the telemetry topic as the ordered input of the detector.

The record types and their codec are the contract (``contract.journal``).
``citywatch journal load FILE`` writes a replay
file (docs/contracts.md, "Replay files and ledger JSON") into a live pipeline's journal through the same parser as
``citywatch replay``, which is how a live run is checked against a replay of
the same input: one source of truth, two ways of running it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bus.kafka import ensure_topics, make_producer, start_client
from contract.cases import OfficerAction
from contract.journal import encode, to_record
from contract.reading import Reading
from contract.topics import KafkaTopics
from streams.detector import RegistryLike
from streams.replay import BadLine, parse_lines


async def load(
    lines: Iterable[str | bytes | dict[str, Any]],
    registry: RegistryLike,
    bootstrap: str,
    prefix: str,
    partitions: int = 1,
    final_watermark: bool = True,
    on_bad: Callable[[BadLine], None] | None = None,
    security: Mapping[str, Any] | None = None,
) -> int:
    """Write a replay file into the journal; return the number of records written.

    A watermark goes to every partition after the last line (as ``replay`` ends
    by advancing time to the last instant named), so the live pipeline books
    the same clocks. Rejected lines are reported through ``on_bad``.
    """
    await ensure_topics(bootstrap, prefix, partitions, security=security)
    topic = KafkaTopics(prefix).telemetry
    producer = make_producer(bootstrap, client_id="citywatch-journal-load", security=security)
    await start_client(producer, bootstrap)
    written = 0
    end: int | None = None
    try:
        futures = []
        for _lineno, item in parse_lines(lines, registry):
            if isinstance(item, BadLine):
                if on_bad is not None:
                    on_bad(item)
                if item.at is not None:
                    end = item.at if end is None else max(end, item.at)
                continue
            dev = registry.get(item.device) if isinstance(item, OfficerAction) else None
            key, rec = to_record(
                item,
                dev.district if dev is not None else None,
                dev.kind if dev is not None else None,
            )
            at = item.received_at if isinstance(item, Reading) else item.at
            end = at if end is None else max(end, at)
            if key is None:  # a watermark concerns every partition
                for p in range(partitions):
                    futures.append(await producer.send(topic, encode(rec), partition=p))
            else:
                futures.append(await producer.send(topic, encode(rec), key=key))
            written += 1
        if final_watermark and end is not None:
            for p in range(partitions):
                futures.append(
                    await producer.send(
                        topic, encode({"type": "watermark", "at": end}), partition=p
                    )
                )
            written += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return written
