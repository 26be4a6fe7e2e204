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
import logging
import re
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
        # the bridge re-produces what the old broker acknowledged last (decision 010 §10): the
        # one source of twins in the archive, identical to the lines before them; wait for them
        bridge.wait_for_log("are produced again (twins are harmless", timeout=30)
        said = re.search(r"the (\d+) journal records acknowledged in the last", bridge.text())
        assert said, bridge.text()[-2000:]
        twins = int(said.group(1))

        def archived() -> list[str]:
            files = archive_files(archive_dir(s), "journal")
            return files[0].read_text().splitlines() if files else []

        wait_until(lambda: len(archived()) >= 9 + twins, timeout=30, what="the twins archived")
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
    lines = day.read_text().splitlines()
    assert len(set(lines)) == 9, "8 readings and a tick: not again after the restore"
    assert len(lines) == 9 + twins, "and the bridge's twins once each"
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


def _cases(s: Settings) -> list[dict]:
    return read_topic_sync(s.kafka.bootstrap, KafkaTopics(s.kafka.topic_prefix).cases, 10**6, 2)


def _closes(s: Settings, device: str) -> int:
    """How many times the device's manhole case was closed (case events that close it)."""
    events = [e for e in _cases(s) if e["device"] == device and e["rule"] == "manhole"]
    return sum(
        1 for before, e in zip([None, *events], events, strict=False)
        if e["state"] == "closed" and (before is None or before["state"] != "closed")
    )  # fmt: skip


def test_an_officer_act_the_worker_had_not_forwarded_survives_a_broker_restart_once(
    settings: Settings,
    registry_file: Path,
    unique: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An act is acknowledged when the acks topic has it; the worker forwards it into the journal,
    but not while it is down. Two covers are open; an officer closes the first while the worker
    runs (forwarded: in the journal archive) and the second while it is down (only on the acks
    topic); the broker is restarted by `services down`/`up`. The second close comes back (the
    archive kept the acks topic), the first is not given back twice (the restore leaves out the
    acks the journal holds), each case is closed once and the ledger is the replay of the acts
    (decision 010, §6)."""
    from registry.officer_tokens import TokenStore
    from streams.archive import lag
    from tests.kit.cli import officer_cli

    caplog.set_level(logging.INFO, logger="streams.archive")
    kafka = PrivateKafka(settings, tmp_path)
    s = settings.replace("paths", registry=str(registry_file), state_dir=str(kafka.state))
    s = s.replace("kafka", bootstrap=kafka.bootstrap)
    directory = tmp_path / "officers.yaml"
    directory.write_text(
        f"officers:\n  - {{id: grid-{unique}, name: 网格员, roles: [grid], districts: [jinshui, erqi]}}\n",
        encoding="utf-8",
    )
    s = s.replace("paths", officers=str(directory))
    token = TokenStore(Path(s.paths.state_dir) / "officers").issue(f"grid-{unique}")[0]
    k = s.kafka
    topics = KafkaTopics(k.topic_prefix)
    forwarded, pending = f"MH-{unique}-1", f"MH-{unique}-2"
    t0 = (now_ms() // H - 10) * H
    opening = [
        {"topic": f"city/{district}/manhole/{mh}/telemetry",
         "payload": {"ts": t0 + i * M, "open": i >= 1}, "received_at": t0 + i * M}
        for i in range(3) for mh, district in ((forwarded, "jinshui"), (pending, "erqi"))
    ]  # fmt: skip
    five, later = [{"watermark": t0 + 5 * H}], [{"watermark": t0 + 14 * H}]
    registry, rules = load_registry(s.paths.registry), load_rules(s.paths.rules)
    want_before = {e["id"]: e["amount_yuan"] for e in
                   replay(opening + five, rules, registry).ledger.to_json_list()}  # fmt: skip
    assert want_before, "hours booked before the officer acts"
    load = journal.load
    kafka.up()
    # the archive where this broker's `up` restores from; the worker with InfluxDB's secrets
    at_home = s.replace("paths", state_dir=settings.paths.state_dir)
    worker_args = ["worker", "--simulation", "--session-timeout", "3"]
    archiver = Proc(["archive", "run"], s, tmp_path / "archive.log")
    worker = Proc(worker_args, at_home, tmp_path / "worker.log")
    procs = [archiver, worker]
    try:
        asyncio.run(load(opening + five, registry, k.bootstrap, k.topic_prefix,
                         final_watermark=False))  # fmt: skip
        wait_until(lambda: _ids(s, len(want_before)) == want_before, timeout=90,
                   what="the ledger before the acts")  # fmt: skip
        done = officer_cli(s, "case", "close", forwarded, token=token)
        assert done.returncode == 0, done.stderr
        wait_until(lambda: _closes(s, forwarded) == 1, timeout=60, what="the first close applied")
        worker.stop()  # down: the next act stays on the acks topic
        done = officer_cli(s, "case", "close", pending, token=token)
        assert done.returncode == 0, done.stderr
        acts = read_topic_sync(k.bootstrap, topics.acks, 2, 10)
        assert [a["device"] for a in acts] == [forwarded, pending]
        before = _ids(s, len(want_before))
        archived = asyncio.run(lag(s))

        kafka.down()  # waits for the archive to have what the broker holds
        kafka.up()  # an empty broker, given the journal and the acks back from the archive
        worker = Proc(worker_args, at_home, tmp_path / "worker-after.log")
        procs.append(worker)
        wait_until(lambda: _closes(s, pending) == 1, timeout=120,
                   what="the close made while the worker was down, after the restart")  # fmt: skip
        after = _ids(s, len(want_before))
        asyncio.run(load(later, registry, k.bootstrap, k.topic_prefix, final_watermark=False))
        want = {e["id"]: e["amount_yuan"] for e in
                replay(opening + five + acts + later, rules, registry).ledger.to_json_list()}  # fmt: skip
        final = wait_until(lambda: (got := _ids(s, len(want))) == want and got, timeout=90,
                           what="the ledger of the acts' replay")  # fmt: skip
        closes = (_closes(s, forwarded), _closes(s, pending))
        journaled = [r.get("action_id") for r in read_topic_sync(
            k.bootstrap, topics.telemetry, 10**6, 3) if r.get("type") == "action"]  # fmt: skip
        alive = [p.proc.poll() is None for p in (archiver, worker)]
        texts = [p.text() for p in procs]
    finally:
        for p in procs:
            p.stop()
        kafka.down()
    assert archived == 0
    ids = [a.get("action_id") for a in acts]
    assert all(ids) and len(set(ids)) == 2, "each act has its own id"
    assert before == after == want_before, "the restart changed nothing booked"
    assert final == want
    without = replay(opening + five + acts[:1] + later, rules, registry).ledger.to_json_list()
    assert len(without) > len(want), "lost, the second close would have let its clock run"
    assert closes == (1, 1), "each case closed once"
    assert sorted(journaled) == sorted(ids), "each act once in the journal: none given back twice"
    assert alive == [True, True], [t[-2000:] for t in texts]
    kept = archive_dir(s)
    (acks_day,) = archive_files(kept, "acks")
    assert len(acks_day.read_text().splitlines()) == 2, "the acks once: not again after the restore"
    assert "restore: 1 officer actions not written back" in caplog.text
