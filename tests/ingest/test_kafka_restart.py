"""The bridge across a restart of the embedded Kafka broker (decision 010 §10).

A reading the old broker acknowledged in its last moment dies with it if the archive had
not taken it yet. The bridge keeps what it acknowledged lately on disk (``ingest.confirm.AckLog``)
and, at the first sign of a restarted broker, produces it all again. Here the old broker
is stopped with no archive running at all, so every reading it held is lost unless the
bridge brings it back. The broker is a tansu of this test alone (``PrivateKafka``).
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from contract.topics import KafkaTopics
from foundation.settings import Settings
from tests.kit.influxd import free_port
from tests.kit.kafka import PrivateKafka, read_topic_sync
from tests.kit.mqtt import Publisher, as_bridge, now_ms
from tests.kit.procs import Proc, metric, wait_until

pytestmark = pytest.mark.services


def _seqs(s: Settings) -> set[int]:
    topic = KafkaTopics(s.kafka.topic_prefix).telemetry
    records = read_topic_sync(s.kafka.bootstrap, topic, 10_000, timeout_s=2)
    return {r["fields"]["seq"] for r in records}


def test_what_the_old_broker_acknowledged_is_in_the_restarted_brokers_journal(
    settings: Settings, registry_file: Path, unique: str, tmp_path: Path
) -> None:
    kafka = PrivateKafka(settings, tmp_path)
    s = settings.replace("paths", registry=str(registry_file), state_dir=str(tmp_path / "state"))
    s = as_bridge(s.replace("kafka", bootstrap=kafka.bootstrap), "k")
    metrics = free_port()
    kafka.up()
    bridge = Proc(["bridge", "--name", "k", "--metrics-port", str(metrics)], s, tmp_path / "b.log")
    try:
        bridge.wait_for_log("MQTT connected", timeout=60)
        time.sleep(0.5)  # the SUBSCRIBE follows the CONNACK
        pub = Publisher(s.mqtt.host, s.mqtt.port, f"pub-{unique}")
        base = now_ms()
        infos = [
            pub.publish(
                f"city/jinshui/manhole/MH-{unique}-1/telemetry",
                orjson.dumps({"ts": base - 100 + i, "open": False, "seq": i}),
            )
            for i in range(20)
        ]
        for info in infos:
            info.wait_for_publish(10)
        pub.close()
        wait_until(lambda: _seqs(s) == set(range(20)), timeout=30, what="the 20 readings")
        time.sleep(6)  # the broker watch has had its first look (the cluster id)
        kafka.restart()  # no archive runs: the old broker's readings are gone with it
        wait_until(
            lambda: _seqs(s) == set(range(20)), timeout=60,
            what="the readings produced again into the new broker's journal",
        )  # fmt: skip
        reproduced = metric(metrics, "citywatch_bridge_reproduced_total")
        text = bridge.text()
        alive = bridge.proc.poll() is None
    finally:
        bridge.stop()
        kafka.down()
    assert alive, "the bridge goes on"
    assert reproduced >= 20, reproduced
    assert "are produced again (twins are harmless" in text, text[-3000:]
