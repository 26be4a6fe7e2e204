"""A restart of the embedded broker is detected and reported, never silently idled on (issue 14).

Measured before: after tansu was restarted the cases and penalties topics stayed empty, the
alerts service pushed nothing more, the worker logged ~2,800 ``OffsetCommit failed ...
UnknownTopicOrPartitionError`` lines in five minutes and nothing told an operator. Here the
bridge, the worker and the alerts service run as real processes against a tansu of this test
alone, restarted by citywatch's own ``services down``/``up``.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from bus.watch import look
from contract.topics import KafkaTopics
from foundation.settings import Settings
from registry.devices import load_registry
from streams import journal
from tests.kit.influxd import free_port
from tests.kit.kafka import PrivateKafka, read_topic_sync
from tests.kit.mqtt import as_bridge
from tests.kit.procs import Proc, metric, wait_until

pytestmark = pytest.mark.services

LOST = "lost citywatch's topics"
H = 3_600_000
M = 60_000


def _left_open(s: Settings, mh: str, district: str) -> None:
    """A cover open for hours: two penalty entries (an hour each past its two-hour grace)."""
    t0 = (time.time_ns() // 1_000_000 // H - 10) * H
    lines = [{"topic": f"city/{district}/manhole/{mh}/telemetry",
              "payload": {"ts": t0, "open": True}, "received_at": t0},
             {"watermark": t0 + 4 * H}]  # fmt: skip
    k = s.kafka
    asyncio.run(journal.load(lines, load_registry(s.paths.registry), k.bootstrap, k.topic_prefix))


def test_each_component_tells_a_restarted_broker_once_and_the_worker_starts_afresh(
    settings: Settings, registry_file: Path, unique: str, tmp_path: Path
) -> None:
    kafka = PrivateKafka(settings, tmp_path)
    s = settings.replace("paths", registry=str(registry_file))
    s = as_bridge(s.replace("kafka", bootstrap=kafka.bootstrap), "k")
    metrics = free_port()
    kafka.up()
    procs = [
        Proc(["worker", "--simulation", "--session-timeout", "3"], s, tmp_path / "worker.log"),
        Proc(["bridge", "--name", "k", "--metrics-port", str(metrics)], s, tmp_path / "b.log"),
        Proc(
            [
                "alerts",
                "--state-dir",
                str(tmp_path / "alerts"),
                "--listen",
                f"127.0.0.1:{free_port()}",
            ],
            s,
            tmp_path / "alerts.log",
        ),  # fmt: skip
    ]
    worker, bridge, alerts = procs
    try:
        bridge.wait_for_log("MQTT connected", timeout=60)
        alerts.wait_for_log("alerts service ready", timeout=60)
        k = s.kafka
        penalties = KafkaTopics(k.topic_prefix).penalties
        _left_open(s, f"MH-{unique}-1", "jinshui")
        wait_until(
            lambda: len(read_topic_sync(k.bootstrap, penalties, 2, 1)) >= 2,
            timeout=90, what="the worker's ledger",
        )  # fmt: skip
        time.sleep(6)  # every watch has had its first look (the cluster id)
        pid = worker.proc.pid
        kafka.restart()
        restarted = time.monotonic()
        for p in procs:
            p.wait_for_log(LOST, timeout=30)
        told = time.monotonic() - restarted
        assert asyncio.run(look(k.bootstrap, k.topic_prefix)).missing == ()
        worker.wait_for_log("starting afresh on the recreated journal", timeout=30)
        alerts.wait_for_log("PUSH", timeout=30)
        # the fresh worker books what the recreated journal brings
        _left_open(s, f"MH-{unique}-2", "erqi")
        wait_until(
            lambda: len(read_topic_sync(k.bootstrap, penalties, 2, 1)) >= 2,
            timeout=60, what="the fresh worker's ledger",
        )  # fmt: skip
        # the alerts service took the new log from its start: the case booked there is pushed
        wait_until(lambda: f"MH-{unique}-2" in alerts.text(), timeout=30,
                   what="the push of the case booked on the new broker")  # fmt: skip
        time.sleep(6)  # more looks: still one line each
        lost_total = metric(metrics, "citywatch_kafka_topics_lost_total")
        texts = [p.text() for p in procs]
        alive = [p.proc.poll() is None for p in procs]
        same_pid = worker.proc.pid == pid
    finally:
        for p in procs:
            p.stop()
        kafka.down()
    assert alive == [True, True, True], "nobody exits over it"
    assert same_pid, "the worker became a new process in place (exec), not a dead one"
    for text in texts:
        assert text.count(LOST) == 1, text[-3000:]
    assert lost_total == 1
    assert "The broker restarted empty" in texts[2], "the operators are pushed an alert"
    assert "read again from their start" in texts[2], "old positions would skip the new log"
    assert re.search(r"PUSH \w+ to city-command\nKafka at ", texts[2]), texts[2][-2000:]
    flood = texts[0].count("UnknownTopicOrPartition")
    assert flood <= 20, f"{flood} lines of UnknownTopicOrPartition: a flood"
    print(f"told within {told:.1f} s; worker log: {flood} UnknownTopicOrPartition lines")
