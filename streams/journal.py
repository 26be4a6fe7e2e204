"""The journal: the telemetry topic as the ordered input of the detector.

Three record types travel on ``<prefix>.telemetry``: ``reading`` (from the
bridges), ``action`` (officer actions, forwarded from ``<prefix>.acks``) and
``watermark`` (time passing). ``citywatch journal load FILE`` writes a replay
file (DESIGN §7) into a live pipeline's journal through the same parser as
``citywatch replay``, which is how a live run is checked against a replay of
the same input: one source of truth, two ways of running it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from ingest.kafka import ensure_topics, make_producer
from ingest.reading import Reading
from ingest.topics import KafkaTopics
from streams.detector import RegistryLike
from streams.model import OfficerAction
from streams.replay import BadLine, JournalItem, Watermark, parse_lines


def to_record(item: JournalItem) -> tuple[bytes | None, dict[str, Any]]:
    """(Kafka key, record) of one journal item; readings and actions are keyed by device."""
    if isinstance(item, Reading):
        return item.device.encode(), item.to_record()
    if isinstance(item, OfficerAction):
        return item.device.encode(), item.to_dict() | {"type": "action"}
    return None, {"type": "watermark", "at": item.at}


def from_record(rec: dict[str, Any]) -> JournalItem:
    """The inverse of ``to_record``; raises ValueError on a record of unknown type."""
    kind = rec.get("type")
    if kind == "reading":
        return Reading.from_record(rec)
    if kind == "action":
        return OfficerAction.from_dict(rec)
    if kind == "watermark":
        return Watermark(int(rec["at"]))
    raise ValueError(f"journal record of unknown type {kind!r}")


def encode(rec: dict[str, Any]) -> bytes:
    return orjson.dumps(rec, option=orjson.OPT_SORT_KEYS)


async def load(
    lines: Iterable[str | bytes | dict[str, Any]],
    registry: RegistryLike,
    bootstrap: str,
    prefix: str,
    partitions: int = 1,
    final_watermark: bool = True,
    on_bad: Callable[[BadLine], None] | None = None,
) -> int:
    """Write a replay file into the journal; return the number of records written.

    A watermark goes to every partition after the last line (as ``replay`` ends
    by advancing time to the last instant named), so the live pipeline books
    the same clocks. Rejected lines are reported through ``on_bad``.
    """
    await ensure_topics(bootstrap, prefix, partitions)
    topic = KafkaTopics(prefix).telemetry
    producer = make_producer(bootstrap, client_id="citywatch-journal-load")
    await producer.start()
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
            key, rec = to_record(item)
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
                futures.append(await producer.send(topic, encode({"type": "watermark", "at": end}), partition=p))
            written += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return written
