"""Readings the broker acknowledged and then dropped are seen (issue 15; ingest/broker_stats.py).

On the real Mosquitto that `citywatch services up` starts, with a queue cap of 5 messages
per client and its counters every second: a subscriber whose session is away makes the
broker PUBACK and then drop what passes its queue; the bridge reads the broker's drop
counter, shows it in its metrics and opens one critical broker case on <prefix>.cases,
closed again when the drops stop.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client.parser import text_string_to_metric_families

from citywatch import devices, services
from contract.topics import KafkaTopics
from foundation.settings import Settings
from ingest.bridge import Bridge
from registry.credentials import Grant
from tests.kit.kafka import read_topic
from tests.kit.mqtt import now_ms
from tests.kit.ports import free_ports

pytestmark = pytest.mark.services
CAP = 5


def _session(port: int, name: str, secret: str, subscribe: str | None = None) -> mqtt.Client:
    """A persistent-session v5 client (as a bridge connects), subscribed to ``subscribe``."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    client.username_pw_set(name, secret)
    ready = threading.Event()
    client.on_connect = lambda c, u, f, rc, p=None: (
        c.subscribe(subscribe, qos=1) if subscribe else ready.set()
    )
    client.on_subscribe = lambda *a: ready.set()
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 300
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
    client.loop_start()
    assert ready.wait(10), f"{name} did not connect and subscribe"
    return client


@pytest.fixture
def small_broker(settings: Settings, registry_file: Path, unique: str):
    """A private citywatch broker (free ports) queueing at most CAP messages per client."""
    root = Path(tempfile.mkdtemp(prefix="cw-drops-"))
    root.chmod(0o755)  # as root the broker drops to its own user, which must reach its data
    port = free_ports(3)
    s = settings.replace(
        "mqtt",
        url=f"mqtt://127.0.0.1:{port}",
        auth_dir="",
        max_queued_messages=CAP,
        sys_interval_s=1,
        username=f"br-{unique}",
        password="",
    ).replace("paths", state_dir=str(root / "state"), registry=str(registry_file))
    try:
        services.up(s, log=print, only={"mosquitto"})
        change, *_ = devices.provision_grants(
            s,
            "test",
            [Grant(f"away-{unique}", "bridge"), Grant(f"pub-{unique}", "relay")],
            require_broker=True,
        )  # fmt: skip
        # the bridge is mqtt.username: `up` made that identity and keeps its secret
        secret = services.store_for(s).secret(f"br-{unique}")
        yield s.replace("mqtt", password=secret), change.issued
    finally:
        services.down(s, log=print, only={"mosquitto"})
        shutil.rmtree(root, ignore_errors=True)


def test_readings_the_broker_acked_and_dropped_open_a_broker_case_and_show_in_metrics(
    small_broker: tuple[Settings, dict[str, str]], unique: str
) -> None:
    s, secrets = small_broker
    conf = (Path(s.paths.state_dir) / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    assert f"max_queued_messages {CAP}" in conf and "sys_interval 1" in conf
    topics = KafkaTopics(s.kafka.topic_prefix)
    sent = 40

    async def body(bridge: Bridge) -> tuple[list, list, str]:
        bridge.broker.quiet_ms = 3000  # type: ignore[union-attr]
        away = f"away-{unique}"
        # a second group's subscriber goes away with its session kept: its queue fills up
        gone = _session(s.mqtt.port, away, secrets[away], f"$share/gaway{unique}/city/#")
        gone.disconnect()
        gone.loop_stop()
        pub = _session(s.mqtt.port, f"pub-{unique}", secrets[f"pub-{unique}"])
        for i in range(sent):
            payload = orjson.dumps({"ts": now_ms() - 1000 + i, "open": False, "tilt_deg": 1.0})
            info = pub.publish(f"city/jinshui/manhole/MH-{unique}-1/telemetry", payload, qos=1)
            info.wait_for_publish(10)
            assert info.is_published(), "PUBACKed: the device is told it was delivered"
        pub.disconnect()
        pub.loop_stop()
        forwarded = await read_topic(s.kafka.bootstrap, topics.telemetry, sent)
        cases = await read_topic(s.kafka.bootstrap, topics.cases, 2, timeout_s=30)
        return forwarded, cases, bridge.stats.exposition().decode()

    async def run() -> tuple[list, list, str]:
        bridge = Bridge(s, client_suffix="x")
        stop = asyncio.Event()
        task = asyncio.create_task(bridge.run(stop, stats_every_s=3600))
        await asyncio.wait_for(bridge.subscribed.wait(), 20)
        try:
            return await body(bridge)
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)

    forwarded, cases, metrics = asyncio.run(run())
    assert len(forwarded) == sent, "this bridge kept up: every reading reached Kafka"
    gauges = {x.name: x.value for f in text_string_to_metric_families(metrics) for x in f.samples}
    assert gauges["citywatch_broker_dropped"] == sent - CAP, gauges
    assert gauges["citywatch_broker_stored_messages"] >= 0
    opened, closed = cases
    assert opened["rule"] == "broker.dropped" and opened["kind"] == "broker"
    assert opened["state"] == "open" and opened["severity"] == "critical"
    assert (
        opened["detail"]["dropped"] >= 1 and "acknowledged readings" in opened["detail"]["message"]
    )
    assert closed["case_id"] == opened["case_id"] and closed["state"] == "closed"
    assert closed["detail"]["dropped"] == sent - CAP
