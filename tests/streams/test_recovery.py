"""Recovery of a partition's state (streams/recovery.py, docs/decisions/009-state-recovery.md).

The whole road -- a worker killed while input flows -- is tests/pipeline/test_recovery.py;
here each piece on its own, against the real broker where it reads one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bus.kafka import consumer_for, make_producer, start_client
from contract.reading import Reading
from foundation.settings import Settings
from registry.devices import load_registry
from streams import recovery
from streams.detector import Detector
from streams.rules import load_rules


def test_a_partition_with_nothing_saved_is_rebuilt_from_the_journal_start() -> None:
    assert recovery.state_offset(None, []) == -1


def test_the_state_reflects_the_older_of_the_two_tables_newest_records() -> None:
    clock = recovery.tag({"watermark": 5}, 40)
    assert recovery.state_offset(clock, [12, 57, 33]) == 40  # the clock is behind the devices
    assert recovery.state_offset(recovery.tag({}, 90), [12, 57]) == 57  # the devices are
    assert recovery.state_offset(None, [12, 57]) == 57  # no clock saved yet


def test_state_an_older_release_saved_has_no_offset_and_is_taken_as_it_is() -> None:
    assert recovery.state_offset({"watermark": 5}, [12]) is None
    assert recovery.state_offset(recovery.tag({}, 3), [12, None]) is None


def test_restore_takes_only_the_partitions_own_devices_and_says_their_offset(
    settings: Settings, registry_file: Any, unique: str
) -> None:
    rules, reg = load_rules(settings.paths.rules), load_registry(registry_file)
    saved = Detector(rules, reg)
    mh = f"MH-{unique}-1"
    saved.on_reading(Reading(mh, "manhole", "jinshui", 1_000, 1_000, {"open": True}))
    state = saved.export_device(mh)
    assert state is not None
    devices = [
        (mh, recovery.tag({"p": 0, "s": state}, 7)),
        (f"MH-{unique}-2", recovery.tag({"p": 1, "s": state}, 99)),  # another partition's
    ]
    det = Detector(rules, reg)
    restored = recovery.restore(det, 0, recovery.tag(saved.export_clock(), 9), devices)
    assert (restored.devices, restored.offset) == (1, 7)
    assert det.export_device(mh) == state and det.watermark == saved.watermark


def _checkpointed(
    settings: Settings, registry_file: Any, unique: str
) -> tuple[Detector, str, list[dict[str, Any]]]:
    """A detector, a manhole of it, and its exported states after one, two and three readings."""
    rules, reg = load_rules(settings.paths.rules), load_registry(registry_file)
    det, mh = Detector(rules, reg), f"MH-{unique}-1"
    states = []
    for i, is_open in enumerate((True, False, True)):
        det.on_reading(Reading(mh, "manhole", "jinshui", 1_000 + i, 1_000 + i, {"open": is_open}))
        state = det.export_device(mh)
        assert state is not None
        states.append(state)
    return det, mh, states


def _marker(det: Detector, seq: int, offset: int) -> dict[str, Any]:
    return {"p": 0, "clock": det.export_clock(), "o": offset, "c": seq}


def test_restore_takes_each_devices_newer_key_of_the_last_complete_checkpoint(
    settings: Settings, registry_file: Any, unique: str
) -> None:
    saved, mh, states = _checkpointed(settings, registry_file, unique)
    k0, k1 = recovery.device_key(mh, 0), recovery.device_key(mh, 1)
    items = [
        (k0, {"p": 0, "s": states[0], "o": 3, "c": 1}),
        (k1, {"p": 0, "s": states[1], "o": 8, "c": 2}),
        (recovery.checkpoint_key(0), _marker(saved, 2, 8)),
        (recovery.checkpoint_key(1), {"p": 1, "clock": {}, "o": 99, "c": 7}),  # another's
    ]
    det = Detector(saved.rules, saved.registry)
    restored = recovery.restore(det, 0, None, items)
    assert (restored.devices, restored.offset, restored.seq) == (1, 8, 2)
    assert det.export_device(mh) == states[1] and restored.slots == {mh: 1}
    assert restored.rewrite == frozenset()


def test_restore_reads_values_as_json_bytes_as_the_worker_writes_them_and_dicts_alike(
    settings: Settings, registry_file: Any, unique: str
) -> None:
    """The worker writes each value as JSON bytes (one object per key, not a tree the cyclic GC
    walks); a table of an earlier version of it holds dicts (Faust's json codec): both read."""
    saved, mh, states = _checkpointed(settings, registry_file, unique)
    items: list[tuple[str, Any]] = [
        (recovery.device_key(mh, 0), {"p": 0, "s": states[0], "o": 3, "c": 1}),  # a dict
        (recovery.device_key(mh, 1), orjson.dumps({"p": 0, "s": states[1], "o": 8, "c": 2})),
        (recovery.checkpoint_key(0), orjson.dumps(_marker(saved, 2, 8))),
        ("garbage#0", b"\x00not json"),  # skipped, as a value of another shape is
    ]
    det = Detector(saved.rules, saved.registry)
    restored = recovery.restore(det, 0, None, items)
    assert (restored.devices, restored.offset, restored.seq) == (1, 8, 2)
    assert det.export_device(mh) == states[1] and restored.slots == {mh: 1}


def test_a_checkpoint_cut_short_before_its_marker_is_ignored_and_rewritten(
    settings: Settings, registry_file: Any, unique: str
) -> None:
    saved, mh, states = _checkpointed(settings, registry_file, unique)
    items = [
        (recovery.device_key(mh, 1), {"p": 0, "s": states[1], "o": 8, "c": 2}),
        (recovery.checkpoint_key(0), _marker(saved, 2, 8)),
        # checkpoint 3 wrote the device's other key, then the worker died before its marker
        (recovery.device_key(mh, 0), {"p": 0, "s": states[2], "o": 12, "c": 3}),
    ]
    det = Detector(saved.rules, saved.registry)
    restored = recovery.restore(det, 0, None, items)
    assert (restored.offset, det.export_device(mh)) == (8, states[1])
    # the next checkpoint numbers above 3 and writes the device over the orphan, even unchanged
    assert restored.seq == 3 and restored.rewrite == {mh} and restored.slots == {mh: 1}


def test_state_of_an_older_release_is_restored_and_written_again_at_the_first_checkpoint(
    settings: Settings, registry_file: Any, unique: str
) -> None:
    saved, mh, states = _checkpointed(settings, registry_file, unique)
    items = [(mh, recovery.tag({"p": 0, "s": states[2]}, 12))]
    det = Detector(saved.rules, saved.registry)
    restored = recovery.restore(det, 0, recovery.tag(saved.export_clock(), 10), items)
    assert (restored.offset, restored.rewrite, restored.slots) == (10, {mh}, {})
    assert det.export_device(mh) == states[2]


async def _produce(bootstrap: str, topic: str, batches: list[int]) -> None:
    # created first: no client creates a topic by asking for it (bus.kafka.never_auto_create)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    producer = make_producer(bootstrap, client_id="cw-recovery-test")
    await start_client(producer, bootstrap)
    try:
        n = 0
        for size in batches:  # each flushed on its own: one batch per send group
            futures = [await producer.send(topic, f"r{n + i}".encode(), partition=0)
                       for i in range(size)]  # fmt: skip
            await producer.flush()
            await asyncio.gather(*futures)
            n += size
    finally:
        await producer.stop()


@pytest.mark.services
def test_true_ends_reads_past_the_end_tansu_reports(settings: Settings, unique: str) -> None:
    k, topic = settings.kafka, f"cw-{unique}-ends"
    asyncio.run(_produce(k.bootstrap, topic, [1, 1, 10, 100, 1000]))
    tp = TopicPartition(topic, 0)

    async def ends() -> tuple[int, int]:
        probe = consumer_for(k, group_id=None)
        await probe.start()
        try:
            reported = (await probe.end_offsets([tp]))[tp]
        finally:
            await probe.stop()
        found = await recovery.true_ends(lambda: consumer_for(k, group_id=None), {tp: reported})
        return reported, found[tp]

    reported, true = asyncio.run(ends())
    assert true == 1112
    assert reported <= true  # tansu: 113, the last batch's first offset + 1 (decision 004)


@pytest.mark.services
def test_catch_up_reruns_exactly_the_records_between_the_state_and_the_resume_point(
    settings: Settings, unique: str
) -> None:
    k, topic = settings.kafka, f"cw-{unique}-journal"
    asyncio.run(_produce(k.bootstrap, topic, [5, 20, 15]))
    reader = recovery.kafka_journal_reader(
        lambda: consumer_for(k, group_id=None, enable_auto_commit=False), topic
    )
    taken: list[tuple[int, bytes | None]] = []

    async def take(offset: int, value: bytes | None, key: bytes | None, headers: object) -> None:
        taken.append((offset, value))

    def run(offset: int | None, upto: int) -> int:
        return asyncio.run(
            recovery.catch_up(0, recovery.Restored(0, offset, None), upto, reader, take)
        )

    assert run(11, 31) == 19
    assert taken == [(o, f"r{o}".encode()) for o in range(12, 31)]
    taken.clear()
    assert run(-1, 3) == 3 and [o for o, _ in taken] == [0, 1, 2]  # nothing saved: from 0
    taken.clear()
    assert run(30, 31) == 0 and run(35, 31) == 0  # up to date, or ahead (redelivered later)
    assert run(None, 31) == 0 and taken == []  # an older release's state: taken as it is
