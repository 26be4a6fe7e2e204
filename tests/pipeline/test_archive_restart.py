"""The broker-restart check (issue 14, decision 010): a reading Kafka acknowledged, the embedded
broker restarted by `services down`/`up`, the reading and the ledger entries it caused still there.

The whole live path as an operator runs it, against a tansu of this test alone (memory storage,
as the embedded default): a device publishes over MQTT, a bridge (``--event-time``) forwards into
the journal, a worker (``--simulation``) books, ``citywatch archive run`` keeps the journal on
disk. ``down`` waits for the archive; ``up`` starts an empty broker and restores the journal into
it; the worker sees the restart and starts afresh on it; the ledger comes back with the same ids.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from contract.topics import KafkaTopics
from foundation.settings import Settings
from registry.devices import load_registry
from streams import journal
from streams.archive import archive_dir, archive_files
from streams.replay import replay, replay_file
from streams.rules import load_rules
from tests.kit.kafka import PrivateKafka, read_topic_sync
from tests.kit.mqtt import Publisher, as_bridge, drop_session, now_ms
from tests.kit.procs import Proc, wait_until

pytestmark = pytest.mark.services

H = 3_600_000
M = 60_000


def _ids(s: Settings, want: int) -> dict[str, int]:
    records = read_topic_sync(
        s.kafka.bootstrap, KafkaTopics(s.kafka.topic_prefix).penalties, want, 2
    )
    return {r["id"]: r["amount_yuan"] for r in records}


def test_a_reading_and_its_ledger_survive_a_restart_of_the_embedded_broker(
    settings: Settings, registry_file: Path, unique: str, tmp_path: Path
) -> None:
    kafka = PrivateKafka(settings, tmp_path)
    s = settings.replace("paths", registry=str(registry_file), state_dir=str(kafka.state))
    s = as_bridge(s.replace("kafka", bootstrap=kafka.bootstrap), "k")
    mh = f"MH-{unique}-1"
    topic = f"city/jinshui/manhole/{mh}/telemetry"
    t0 = (now_ms() // H - 10) * H
    sent = [{"topic": topic, "payload": {"ts": t0 + i * M, "open": i >= 3, "seq": i},
             "received_at": t0 + i * M} for i in range(8)]  # fmt: skip
    ticks = [{"watermark": t0 + 6 * H}]
    expected = replay(sent + ticks, load_rules(s.paths.rules), load_registry(s.paths.registry))
    want = {e["id"]: e["amount_yuan"] for e in expected.ledger.to_json_list()}
    assert len(want) == 3
    kafka.up()
    procs = [
        Proc(["archive", "run"], s, tmp_path / "archive.log"),
        Proc(["worker", "--simulation", "--session-timeout", "3"], s, tmp_path / "worker.log"),
        Proc(["bridge", "--name", "k", "--event-time"], s, tmp_path / "bridge.log"),
    ]
    archiver, worker, bridge = procs
    k = s.kafka
    telemetry = KafkaTopics(k.topic_prefix).telemetry
    try:
        bridge.wait_for_log("MQTT connected", timeout=60)
        pub = Publisher(s.mqtt.host, s.mqtt.port, mh)
        for line in sent:
            pub.publish(topic, line["payload"]).wait_for_publish(10)
        pub.close()
        # acknowledged: Kafka has every reading (the bridge PUBACKs only after that)
        wait_until(lambda: len(read_topic_sync(k.bootstrap, telemetry, 8, 1)) >= 8,
                   timeout=30, what="the readings in the journal")  # fmt: skip
        asyncio.run(journal.load(ticks, load_registry(s.paths.registry), k.bootstrap,
                                 k.topic_prefix, final_watermark=False))  # fmt: skip
        wait_until(lambda: _ids(s, 3) == want, timeout=90, what="the ledger before the restart")
        before = _ids(s, 3)

        kafka.down()  # waits for the archive to have what the broker holds
        kafka.up()  # an empty broker, given the journal back from the archive
        restored = read_topic_sync(k.bootstrap, telemetry, 9, 5)
        worker.wait_for_log("starting afresh on the recreated journal", timeout=30)
        wait_until(lambda: _ids(s, 3) == want, timeout=90, what="the ledger after the restart")
        after = _ids(s, 3)
        archiver.wait_for_log("records written by a restore skipped", timeout=30)
        alive = [p.proc.poll() is None for p in procs]
        texts = [p.text() for p in procs]
    finally:
        for p in procs:
            p.stop()
        kafka.down()
        drop_session(s.mqtt.host, s.mqtt.port, s.mqtt.username)
    readings = [r for r in restored if r.get("type") == "reading"]
    assert sorted(r["fields"]["seq"] for r in readings) == list(range(8)), "every reading is back"
    assert before == want and after == want, "the same entries under the same ids"
    assert alive == [True, True, True], [t[-2000:] for t in texts]
    # the archive is the replay format: `citywatch replay` reads it and books the same ledger
    (day,) = archive_files(archive_dir(s), "journal")
    again = replay_file(str(day), load_rules(s.paths.rules), load_registry(s.paths.registry))
    assert {e["id"]: e["amount_yuan"] for e in again.ledger.to_json_list()} == want
    assert len(day.read_text().splitlines()) == 9, (
        "8 readings and a tick, once: not again after the restore"
    )
    assert "archive: 9 records written by a restore skipped" in texts[0]


def test_the_audit_and_the_silences_come_back_with_their_keys(
    settings: Settings, tmp_path: Path
) -> None:
    """What a rebuild needs beside the journal: the officers' acts (the ledger's evidence) and
    the silences (read from the beginning by every alerts start)."""
    from aiokafka import AIOKafkaConsumer

    from bus.kafka import producer_for
    from streams.archive import lag

    kafka = PrivateKafka(settings, tmp_path)
    s = settings.replace("paths", state_dir=str(kafka.state))
    s = s.replace("kafka", bootstrap=kafka.bootstrap)
    topics = KafkaTopics(s.kafka.topic_prefix)
    acts = [(b"GRID-07", {"type": "audit", "act": "close", "n": i}) for i in range(2)]
    silence = (b"sil-1", {"type": "silence", "id": "sil-1", "ends_at": 1})

    async def produce() -> None:
        producer = producer_for(s.kafka, "test")
        await producer.start()
        try:
            for key, value in acts:
                await producer.send_and_wait(topics.audit, orjson.dumps(value), key=key)
            await producer.send_and_wait(topics.silences, orjson.dumps(silence[1]), key=silence[0])
        finally:
            await producer.stop()

    async def read(topic: str, want: int) -> list[tuple[bytes | None, dict]]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=s.kafka.bootstrap,
                                    auto_offset_reset="earliest", group_id=None)  # fmt: skip
        await consumer.start()
        out: list[tuple[bytes | None, dict]] = []
        try:
            deadline = time.monotonic() + 10
            while len(out) < want and time.monotonic() < deadline:
                for rs in (await consumer.getmany(timeout_ms=200)).values():
                    out += [(r.key, orjson.loads(r.value)) for r in rs]
        finally:
            await consumer.stop()
        return out

    kafka.up()
    archiver = Proc(["archive", "run"], s, tmp_path / "archive.log")
    try:
        archiver.wait_for_log("archive of", timeout=30)
        asyncio.run(produce())
        wait_until(lambda: asyncio.run(lag(s)) == 0, timeout=30, what="the archive on disk")
        kafka.restart()
        audit = asyncio.run(read(topics.audit, 2))
        silences = asyncio.run(read(topics.silences, 1))
    finally:
        archiver.stop()
        kafka.down()
    assert audit == acts
    assert silences == [silence]
    kinds = {p.name.split("-")[0] for p in archive_dir(s).glob("*.jsonl")}
    assert kinds == {"audit", "silences"}, "a file per topic (no journal record was written)"


def test_a_broker_restarted_while_the_worker_is_mid_journal_gives_back_every_entry(
    settings: Settings, registry_file: Path, unique: str, tmp_path: Path
) -> None:
    """The restart hits a worker with records taken but not yet committed (issue 14's harness).

    At the rebalance the restart causes, the replaced process commits its old position
    into the new broker's empty group and flushes its changelog records there; a fresh
    worker that trusted them began the rebuild at the old journal's end with lost state
    (the harness: 1 of 13 entries came back). Here a cover is open for hours while a
    second one's 12,000 readings move time on; the broker restarts while the worker is
    part-way through them, and every entry of the replay comes back under its id.
    """
    from citywatch.run import _lag

    kafka = PrivateKafka(settings, tmp_path)
    s = settings.replace("paths", registry=str(registry_file), state_dir=str(kafka.state))
    s = s.replace("kafka", bootstrap=kafka.bootstrap)
    k = s.kafka
    open_cover, other = f"MH-{unique}-1", f"MH-{unique}-2"
    t0 = (now_ms() // H - 10) * H

    def reading(device: str, district: str, ts: int, opened: bool) -> dict:
        topic = f"city/{district}/manhole/{device}/telemetry"
        return {"topic": topic, "payload": {"ts": ts, "open": opened}, "received_at": ts}

    head = [reading(open_cover, "jinshui", t0 + i * M, i >= 3) for i in range(8)]
    tail = [reading(other, "erqi", t0 + 8 * M + i * 1_500, False) for i in range(12_000)]
    ticks = [{"watermark": t0 + 6 * H}]
    registry = load_registry(s.paths.registry)
    expected = replay(head + tail + ticks, load_rules(s.paths.rules), registry)
    want = {e["id"]: e["amount_yuan"] for e in expected.ledger.to_json_list()}
    assert len(want) >= 3
    kafka.up()
    # the archive where this broker's `up` restores from; the worker with InfluxDB's secrets
    at_home = s.replace("paths", state_dir=settings.paths.state_dir)
    procs = [
        Proc(["archive", "run"], s, tmp_path / "archive.log"),
        Proc(
            ["worker", "--simulation", "--session-timeout", "3"], at_home, tmp_path / "worker.log"
        ),
    ]
    archiver, worker = procs
    try:
        load = journal.load  # the journal as the bridge would have written it
        asyncio.run(load(head, registry, k.bootstrap, k.topic_prefix, final_watermark=False))
        wait_until(lambda: asyncio.run(_lag(s)) == 0, timeout=60, what="the worker on the journal")
        asyncio.run(load(tail + ticks, registry, k.bootstrap, k.topic_prefix,
                         final_watermark=False))  # fmt: skip
        behind = asyncio.run(_lag(s))
        kafka.down()  # waits for the archive, not for the worker
        kafka.up()
        worker.wait_for_log("starting afresh on the recreated journal", timeout=30)
        wait_until(lambda: asyncio.run(_lag(s)) == 0, timeout=120, what="the rebuild")
        after = _ids(s, len(want))
        alive = [p.proc.poll() is None for p in procs]
        texts = [p.text() for p in procs]
    finally:
        for p in procs:
            p.stop()
        kafka.down()
    assert behind, "the restart came while the worker was part-way through the journal"
    assert after == want, (sorted(set(want) - set(after)), texts[1][-3000:])
    assert alive == [True, True], [t[-2000:] for t in texts]
