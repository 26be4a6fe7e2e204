"""Recovery of a partition's detector state: never behind the outputs it already sent.

docs/decisions/009-state-recovery.md. The detector's state lives in two Faust
tables whose changelogs Faust reads back when a worker gets a partition. On
tansu that read stopped short: the broker answers ListOffsets with the first
offset of a partition's last batch plus one (decision 004), Faust takes that
for the changelog's end, and a worker restarted while input kept coming
restored a state older than the cases and penalties it had already booked --
then booked a different ledger. Three pieces, each on its own:

- ``true_ends``: a partition's end as the records say (read the last batch),
  which the worker's transport gives Faust's recovery instead of the broker's
  answer (``streams.transport``);
- ``tag`` / ``restore``: every state record carries the journal offset it
  reflects (``o``). The worker writes a partition's state as checkpoints
  (docs/decisions/017-checkpointed-state.md): the changed devices' states under
  alternating keys, then a marker with the partition clock and the offset; a
  restore takes the last complete checkpoint;
- ``catch_up``: before the first journal record a worker takes on a partition,
  the journal records between the restored state's offset and that record are
  run through the detector again (``JournalReader`` reads them). Outputs they
  repeat carry the same deterministic ids (harmless downstream, decision 001);
  a state that is ahead of the committed offset needs nothing (the detector
  ignores a reading it has seen, watermarks only move forward, actions are
  idempotent).

Whatever the broker reports, the state a worker resumes from is the state
after the record before the first one it takes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import TopicPartition

from streams.detector import Detector

log = logging.getLogger(__name__)

OFFSET = "o"
"""The key of the journal offset a state record reflects (device records and the clock)."""
READ_WAIT_S = 30.0
"""How long the journal may stay silent while a partition is caught up before it is an error."""

JournalRecord = tuple[int, bytes | None, bytes | None, Any]
"""(offset, key, value, headers) of one journal record (headers as aiokafka gives them)."""
JournalReader = Callable[[int, int, int], AsyncIterator[JournalRecord]]
"""``reader(partition, start, stop)``: the journal records of a partition at offsets [start, stop)."""


def tag(state: dict[str, Any], offset: int) -> dict[str, Any]:
    """A state record that says which journal offset it reflects (-1: not from the journal)."""
    return state | {OFFSET: offset}


CHECKPOINT = "checkpoint:"
"""Key prefix of a partition's checkpoint marker in the devices table (``checkpoint_key``)."""
SEQ = "c"
"""The key of the checkpoint number a device record or a marker belongs to."""


def checkpoint_key(partition: int) -> str:
    """The devices table's key of a partition's checkpoint marker (docs/decisions/017)."""
    return f"{CHECKPOINT}{partition}"


def device_key(device_id: str, slot: int) -> str:
    """One of a device's two alternating keys in the devices table (``slot`` 0 or 1)."""
    return f"{device_id}#{slot}"


@dataclass(frozen=True)
class Restored:
    """What ``restore`` found for one partition."""

    devices: int
    """Device states restored."""
    offset: int | None
    """The journal offset the restored state reflects: -1 when nothing was saved (a partition
    new to the tables), None when the records carry no offset (an older release saved them)."""
    clock: dict[str, Any] | None
    seq: int = 0
    """The highest checkpoint number seen on the partition (the next checkpoint is above it)."""
    slots: dict[str, int] = field(default_factory=dict)
    """Device -> the slot of its key that holds the restored state (the next write takes the other)."""
    rewrite: frozenset[str] = frozenset()
    """Devices the next checkpoint must write although they did not change: restored from a record
    of an older release, or beside a record of a checkpoint that never completed."""


def state_offset(
    clock: Mapping[str, Any] | None, device_offsets: Iterable[int | None]
) -> int | None:
    """The journal offset a partition's restored state surely reflects (an older release's records).

    That release wrote each table's changelog in journal order, so the newest
    record of each says how far that table got; the state is whole up to the
    older of the two. Checkpointed state (``restore``) has its offset in the marker.
    """
    offsets = list(device_offsets)
    if clock is None and not offsets:
        return -1
    if (clock is not None and OFFSET not in clock) or any(o is None for o in offsets):
        return None
    newest = [max(o for o in offsets if o is not None)] if offsets else []
    if clock is not None:
        newest.append(int(clock[OFFSET]))
    return min(newest)


def record(value: Any) -> Any:
    """A devices-table value as the dict it holds: the worker writes JSON bytes (one object per
    key, not a tree of dicts the cyclic GC walks), an older release wrote dicts through Faust's
    json codec; either reads back. Anything else is returned as it is (and then skipped)."""
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    return value


def restore(
    det: Detector, partition: int, clock: dict[str, Any] | None, devices: Iterable[tuple[str, Any]]
) -> Restored:
    """Load one partition's saved state (the devices table's items) into a fresh detector.

    With a checkpoint marker (docs/decisions/017-checkpointed-state.md) each
    device's state is the newer of its two keys whose checkpoint number is not
    past the marker's; a record past it belongs to a checkpoint cut short by a
    crash and is ignored (the device's other key still holds its state at the
    marker). The marker carries the partition clock and the journal offset all
    of it reflects. Without a marker, the records are an older release's (one
    plain key per device, the clock in ``clock``, the detector-clocks table)
    and are all written again by the next checkpoint.
    """
    own: list[tuple[str, dict[str, Any]]] = []
    marker: dict[str, Any] | None = None
    mine = checkpoint_key(partition)
    for key, raw in devices:
        value = record(raw)
        if not value or not isinstance(value, dict) or value.get("p") != partition:
            continue
        if key == mine:
            marker = value
        elif not key.startswith(CHECKPOINT):
            own.append((key, value))
    if marker is None:
        return _restore_older_release(det, partition, clock, own)
    upto = int(marker[SEQ])
    det.import_clock(marker["clock"])
    newest: dict[str, tuple[int, int, dict[str, Any]]] = {}
    seen, rewrite = upto, set()
    for key, value in own:
        device_id, sep, slot = key.rpartition("#")
        if not sep or slot not in ("0", "1") or SEQ not in value:
            continue  # an older release's plain key: the first checkpoint rewrote it
        seq = int(value[SEQ])
        seen = max(seen, seq)
        if seq > upto:
            rewrite.add(device_id)  # its next write overwrites this record: see Restored.rewrite
            continue
        if device_id not in newest or seq > newest[device_id][0]:
            newest[device_id] = (seq, int(slot), value["s"])
    restored, slots = 0, {}
    for device_id, (_seq, slot, state) in newest.items():
        if det.import_device(device_id, state):
            restored += 1
            slots[device_id] = slot
        else:
            _dropped(partition, device_id)
    det.take_dirty()
    return Restored(
        restored, int(marker[OFFSET]), marker["clock"], seen, slots,
        frozenset(rewrite & slots.keys()),
    )  # fmt: skip


def _restore_older_release(
    det: Detector, partition: int, clock: dict[str, Any] | None, own: list[tuple[str, Any]]
) -> Restored:
    if clock:
        det.import_clock(clock)
    restored, offsets, rewrite = 0, [], set()
    for device_id, value in own:
        if device_id.rpartition("#")[1] and SEQ in value:
            continue  # a first checkpoint that never completed: its marker was not written
        offsets.append(value.get(OFFSET))
        if det.import_device(device_id, value["s"]):
            restored += 1
            rewrite.add(device_id)
        else:
            _dropped(partition, device_id)
    det.take_dirty()
    return Restored(
        restored, state_offset(clock or None, offsets), clock or None, rewrite=frozenset(rewrite)
    )


def _dropped(partition: int, device_id: str) -> None:
    log.warning(
        "partition %d: %s is not in the registry and its saved state "
        "carries no entry (an older release saved it); state dropped",
        partition,
        device_id,
    )


async def catch_up(
    partition: int,
    restored: Restored,
    upto: int,
    reader: JournalReader,
    take: Callable[[int, bytes | None, bytes | None, Any], Awaitable[None]],
) -> int:
    """Run the journal records after the restored state and before ``upto`` through ``take``.

    ``upto`` is the offset of the first record the worker was given for the
    partition (Faust's committed offset). Returns how many records were re-run.
    """
    if restored.offset is None:
        log.warning(
            "partition %d: the saved state carries no journal offset (an older release saved "
            "it); resuming from it as it is",
            partition,
        )
        return 0
    start = restored.offset + 1
    if start >= upto:
        return 0
    n = 0
    async for offset, key, value, headers in reader(partition, start, upto):
        await take(offset, value, key, headers)
        n += 1
    log.info(
        "partition %d: the restored state reflected journal offset %d, the worker resumes at %d: "
        "re-ran %d journal records to catch up (their outputs repeat with the same ids)",
        partition, restored.offset, upto, n,
    )  # fmt: skip
    return n


def kafka_journal_reader(make_consumer: Callable[[], Any], topic: str) -> JournalReader:
    """A ``JournalReader`` on Kafka: its own consumer (no group), assigned and sought.

    make_consumer: builds an unstarted ``AIOKafkaConsumer`` with ``group_id=None``
        connected as the worker is (``bus.kafka.consumer_for``).
    """

    async def read(partition: int, start: int, stop: int) -> AsyncIterator[JournalRecord]:
        consumer = make_consumer()
        await consumer.start()
        try:
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, start)
            quiet_since = time.monotonic()
            while True:
                batch = (await consumer.getmany(tp, timeout_ms=500)).get(tp, [])
                if not batch:
                    if time.monotonic() - quiet_since > READ_WAIT_S:
                        raise RuntimeError(
                            f"{topic}[{partition}]: no journal record at {start} within "
                            f"{READ_WAIT_S:.0f} s while catching up to {stop}; the records "
                            "between the saved state and the committed offset must still be "
                            "in the journal (its retention must outlast a worker's restart)"
                        )
                    continue
                quiet_since = time.monotonic()
                for rec in batch:
                    if rec.offset >= stop:
                        return
                    yield rec.offset, rec.key, rec.value, rec.headers
                    start = rec.offset + 1
                if start >= stop:
                    return
        finally:
            await consumer.stop()

    return read


async def true_ends(
    make_consumer: Callable[[], Any], reported: Mapping[Any, int]
) -> dict[Any, int]:
    """Each partition's end as its records say: the broker's answer, pushed past its last batch.

    tansu answers ListOffsets with the first offset of the last batch plus one
    (decision 004); a consumer sought to that answer minus one gets the whole
    last batch, whose last offset plus one is the end. With Kafka or Redpanda
    the answer is already right and the read finds nothing past it.
    """
    out = dict(reported)
    todo = [tp for tp, end in reported.items() if end and end > 0]
    if not todo:
        return out
    consumer = make_consumer()
    await consumer.start()
    try:
        tps = [TopicPartition(tp.topic, tp.partition) for tp in todo]
        consumer.assign(tps)
        for tp, ktp in zip(todo, tps, strict=True):
            consumer.seek(ktp, reported[tp] - 1)
            while batch := (await consumer.getmany(ktp, timeout_ms=300)).get(ktp):
                out[tp] = max(out[tp], batch[-1].offset + 1)
    finally:
        await consumer.stop()
    return out
