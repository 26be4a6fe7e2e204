"""An acknowledgement a restarted broker gave is not trusted until the record is in its log.

At a restart aiokafka resends the bridge's in-flight readings into the new, empty broker, which
acknowledges some of them while it has no such topic and keeps nothing (decision 009); the
bridge PUBACKed them and they were lost (issue 14's harness, 3-9 readings a run). Here the
stale producer is made the same way (its metadata lists a topic the broker no longer holds).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bus.kafka import clear_phantoms, ensure_topics_for
from contract.topics import KafkaTopics
from foundation.settings import Settings
from ingest.confirm import AckedOffsets, AckLog, produce_until_kept


def test_an_acknowledgement_at_or_below_the_partitions_highest_comes_from_another_log() -> None:
    acked = AckedOffsets()
    md = lambda offset, partition=0: SimpleNamespace(topic="j", partition=partition, offset=offset)  # noqa: E731
    assert not acked.behind(md(0)) and not acked.behind(md(41))
    assert acked.behind(md(7)) and acked.behind(md(41)), "a restarted broker counts from 0"
    assert not acked.behind(md(3, partition=1)), "each partition on its own"
    acked.restart_at(md(7))
    assert not acked.behind(md(8)), "the new log's offsets count from a record seen in it"


async def _values(bootstrap: str, topic: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        return [r.value for r in (await consumer.getmany(tp, timeout_ms=1_000)).get(tp, [])]
    finally:
        await consumer.stop()


@pytest.mark.services
def test_a_reading_the_new_broker_swallowed_is_produced_again_once_its_topic_exists(
    settings: Settings,
) -> None:
    k = settings.kafka
    journal = KafkaTopics(k.topic_prefix).telemetry

    async def run() -> tuple[list[bytes], list[bytes]]:
        await ensure_topics_for(k)
        producer = AIOKafkaProducer(bootstrap_servers=k.bootstrap, metadata_max_age_ms=600_000)
        admin = AIOKafkaAdminClient(bootstrap_servers=k.bootstrap)
        await producer.start()
        await admin.start()
        try:
            acked = AckedOffsets()
            for i in range(3):  # the old log
                acked.behind(await producer.send_and_wait(journal, b"old %d" % i, partition=0))
            await admin.delete_topics([journal])  # the broker lost it; the producer still lists it
            while journal in await admin.list_topics():
                await asyncio.sleep(0.1)
            md = await producer.send_and_wait(journal, b"in flight", partition=0)
            assert acked.behind(md), "acknowledged by another log"

            async def up_later() -> None:  # `services up` makes the topics a moment later
                await asyncio.sleep(1.0)
                await ensure_topics_for(k)
                await clear_phantoms(k)

            creating = asyncio.create_task(up_later())
            await asyncio.sleep(1.2)
            trusted = await _values(k.bootstrap, journal)  # what the acknowledgement was worth
            await creating
            await produce_until_kept(k, producer, [(journal, None, b"in flight")], acked)
            return trusted, await _values(k.bootstrap, journal)
        finally:
            await producer.stop()
            await admin.close()

    trusted, kept = asyncio.run(run())
    assert b"in flight" not in trusted, "the broker acknowledged it and kept nothing"
    assert kept.count(b"in flight") == 1, kept


RECORDS = [("cw.telemetry", b"jinshui", b'{"ts": 1}'), ("cw.telemetry", None, b'{"ts": 2}')]


def test_a_bridge_killed_after_a_broker_restart_leaves_what_the_old_broker_acknowledged(
    tmp_path: Path,
) -> None:
    """Written by one process, read by the next: only what another cluster acknowledged."""
    log = AckLog(tmp_path)
    log.write("cluster-old", RECORDS)
    log.write("cluster-new", [("cw.telemetry", b"erqi", b'{"ts": 3}')])
    # the process is killed here: nothing closed
    after = AckLog(tmp_path)
    assert after.acked_elsewhere("cluster-new") == RECORDS
    assert after.acked_elsewhere("cluster-old") == [("cw.telemetry", b"erqi", b'{"ts": 3}')]


def test_the_ack_log_keeps_its_last_two_windows_only_and_trims_when_it_writes(
    tmp_path: Path,
) -> None:
    now = [0.0]
    log = AckLog(tmp_path, seconds=30, clock=lambda: now[0])
    log.write("c", RECORDS[:1])
    now[0] = 31
    log.write("c", RECORDS[1:])
    assert len(log.acked_elsewhere("other")) == 2, "the window before the current one is kept"
    now[0] = 65
    log.write("c", [("cw.telemetry", None, b'{"ts": 9}')])
    assert log.acked_elsewhere("other") == [RECORDS[1], ("cw.telemetry", None, b'{"ts": 9}')]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.jsonl", "2.jsonl"]


def test_a_line_cut_by_a_kill_in_the_middle_of_a_write_is_skipped(tmp_path: Path) -> None:
    log = AckLog(tmp_path, clock=lambda: 0.0)
    log.write("old", RECORDS)
    with (tmp_path / "0.jsonl").open("ab") as f:
        f.write(b'["old", "cw.telemetry", null, "eyJ0cyI6')  # no end: the kill
    assert AckLog(tmp_path, clock=lambda: 0.0).acked_elsewhere("new") == RECORDS


def test_acknowledgements_older_than_an_hour_are_not_produced_again(tmp_path: Path) -> None:
    now = [0.0]
    AckLog(tmp_path, clock=lambda: now[0]).write("old", RECORDS)
    now[0] = 3_600 + 60
    assert AckLog(tmp_path, clock=lambda: now[0]).acked_elsewhere("new") == []


def test_what_the_old_log_acknowledged_last_is_kept_through_a_long_restart(tmp_path: Path) -> None:
    """Nothing is written while the broker is away, so nothing is trimmed: a restart of any
    length finds the old log's last seconds on disk, whichever cluster acknowledged them."""
    now = [100.0]
    log = AckLog(tmp_path, seconds=30, clock=lambda: now[0])
    log.write("old", [("j", b"a", b"1"), ("j", b"b", b"2")])
    now[0] = 125.0
    log.write("old", [("j", b"c", b"3")])  # the old broker's last second, then it stops
    now[0] = 400.0  # a long restart
    assert log.recent() == [("j", b"a", b"1"), ("j", b"b", b"2"), ("j", b"c", b"3")]


def test_recent_acknowledgements_are_bounded_in_time_and_in_count(tmp_path: Path) -> None:
    now = [0.0]
    log = AckLog(tmp_path, seconds=30, clock=lambda: now[0])
    log.write("c", [("j", None, b"old")])
    now[0] = 61.0  # two windows on: the first file goes at the next write
    log.write("c", [("j", None, b"x"), ("j", None, b"y")])
    assert [v for _t, _k, v in log.recent()] == [b"x", b"y"], "older than two windows is gone"
    log.write("c", [("j", None, bytes([i])) for i in range(5)])
    assert [v for _t, _k, v in log.recent(cap=3)] == [b"\x02", b"\x03", b"\x04"], "the newest"
