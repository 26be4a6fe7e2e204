"""The bridge across a restart of Mosquitto: nothing published meanwhile is lost (issue 14).

A private broker of citywatch's own ``services.up`` (free ports, a state directory the
``mosquitto`` user can reach, as ``.state`` in a checkout is), so the restarts touch
nobody else's; Kafka is the session's. The bridge runs as ``citywatch bridge`` does.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from bus.kafka import ensure_topics
from citywatch import devices, services
from contract.topics import KafkaTopics
from foundation.settings import Settings
from registry.credentials import Grant
from tests.kit.kafka import read_topic_sync
from tests.kit.mqtt import Publisher, now_ms
from tests.kit.procs import Proc, wait_until

pytestmark = pytest.mark.services


def _free_run(n: int) -> int:
    """The first of ``n`` consecutive free loopback ports (a broker has three listeners)."""
    for _ in range(200):
        base = random.randrange(43100, 43990)
        try:
            for port in range(base, base + n):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError(f"no {n} consecutive free ports in 43100-43990")


class PrivateBroker:
    """Settings for a bridge ``<client_id>-r`` on a Mosquitto of this test alone."""

    def __init__(self, settings: Settings, registry: Path) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="cw-mqtt-"))
        self.root.chmod(0o755)  # the broker's user reaches its data directory
        self.port = _free_run(3)
        s = settings.replace(
            "mqtt",
            url=f"mqtt://127.0.0.1:{self.port}",
            auth_dir=str(self.root / "mqtt"),
            session_expiry_s=300,
        )
        self.settings = s.replace("paths", state_dir=str(self.root), registry=str(registry))
        self.bridge = f"{s.mqtt.client_id}-r"
        self.relay = f"{s.mqtt.client_id}-pub"

    def up(self, log: Callable[[str], None] = print) -> None:
        services.up(self.settings, log=log, only={"mosquitto"})

    def down(self) -> None:
        services.down(self.settings, log=print, only={"mosquitto"})

    def provision(self) -> Settings:
        change, *_ = devices.provision_grants(
            self.settings, "test", [Grant(self.bridge, "bridge"), Grant(self.relay, "relay")],
            require_broker=True,
        )  # fmt: skip
        self.secrets = change.issued
        return self.settings.replace(
            "mqtt", username=self.bridge, password=self.secrets[self.bridge]
        )

    def publisher(self) -> Publisher:
        return Publisher("127.0.0.1", self.port, self.relay, self.secrets[self.relay])

    def log(self) -> str:
        return (self.root / "mosquitto" / "service.log").read_text(errors="replace")


@pytest.fixture
def broker(settings: Settings, registry_file: Path) -> Iterator[PrivateBroker]:
    b = PrivateBroker(settings, registry_file)
    b.up()
    try:
        yield b
    finally:
        b.down()
        shutil.rmtree(b.root, ignore_errors=True)


class EagerDevice(threading.Thread):
    """A device that connects to a (re)starting broker as early as it answers, over and over,
    and publishes one reading per connection: MQTT 3.1.1, where a PUBACK says nothing of
    whether the message went anywhere. ``acked`` are the readings the broker took."""

    def __init__(self, broker: PrivateBroker, device: str, first_seq: int) -> None:
        super().__init__(daemon=True)
        self.broker, self.device, self.seq = broker, device, first_seq
        self.acked: list[int] = []
        self.refused = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self._attempt()

    def _attempt(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        relay = self.broker.relay
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=relay, protocol=mqtt.MQTTv311)
        client.username_pw_set(relay, self.broker.secrets[relay])
        answered, result = threading.Event(), []
        client.on_connect = lambda c, u, f, rc, p=None: (result.append(rc), answered.set())
        try:
            client.connect("127.0.0.1", self.broker.port, keepalive=10)
        except OSError:
            time.sleep(0.002)  # not listening yet
            return
        client.loop_start()
        try:
            if not answered.wait(2) or result[0].is_failure:
                self.refused += 1
                time.sleep(0.002)
                return
            body = orjson.dumps({"ts": now_ms() - 500, "open": False, "seq": self.seq})
            info = client.publish(f"city/jinshui/manhole/{self.device}/telemetry", body, qos=1)
            info.wait_for_publish(5)
            if info.is_published():
                self.acked.append(self.seq)
            self.seq += 1
        finally:
            client.disconnect()
            client.loop_stop()

    def stop_after(self, more: int) -> None:
        """Stop once ``more`` further readings were taken (so some follow the release)."""
        target = len(self.acked) + more
        deadline = time.monotonic() + 30
        while len(self.acked) < target and time.monotonic() < deadline:
            time.sleep(0.01)
        self.done.set()
        self.join(10)


def _publish(broker: PrivateBroker, device: str, seqs: range) -> None:
    """QoS 1, each PUBACKed by the broker before this returns."""
    pub = broker.publisher()
    try:
        base = now_ms()
        infos = [
            pub.publish(
                f"city/jinshui/manhole/{device}/telemetry",
                {"ts": base - 1000 + i, "open": False, "seq": i},
            )
            for i in seqs
        ]
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published()
    finally:
        pub.close()


def test_readings_published_while_the_bridge_is_away_from_a_restarted_broker_are_forwarded(
    broker: PrivateBroker, unique: str, tmp_path: Path
) -> None:
    """Mosquitto is restarted while the bridge is away; devices publish (and are PUBACKed)
    before the bridge is back: its persistent session and subscription were saved with the
    broker's state, so the broker queues the readings and the bridge forwards them all.

    The bridge is frozen (SIGSTOP) over the restart, so the readings certainly arrive while
    it has no connection; thawed, it finds its connection gone, reconnects with
    clean_start false and resumes its session. Before issue 14 the session was gone after a
    restart and those readings were dropped.
    """
    s = broker.provision()
    topic = KafkaTopics(s.kafka.topic_prefix).telemetry
    asyncio.run(ensure_topics(s.kafka.bootstrap, s.kafka.topic_prefix))
    device = f"MH-{unique}-1"
    bridge = Proc(["bridge", "--name", "r", "--stats-every", "1"], s, tmp_path / "bridge.log")
    try:
        bridge.wait_for_log("MQTT connected", timeout=30)
        bridge.wait_for_log("(new session)")
        time.sleep(0.5)  # the SUBSCRIBE follows the CONNACK
        _publish(broker, device, range(0, 20))
        wait_until(
            lambda: len(read_topic_sync(s.kafka.bootstrap, topic, 20, timeout_s=5)) >= 20,
            timeout=30, what="the first readings in Kafka",
        )  # fmt: skip
        eager = EagerDevice(broker, device, first_seq=1000)
        lines: list[str] = []

        def on_log(line: str) -> None:
            lines.append(line)
            if line.startswith("starting mosquitto"):
                eager.start()  # knocking from the moment the broker process exists

        os.kill(bridge.proc.pid, signal.SIGSTOP)
        try:
            broker.down()
            broker.up(log=on_log)
            early = list(eager.acked)
            eager.stop_after(5)
            _publish(broker, device, range(20, 60))  # PUBACKed by the restarted broker
        finally:
            os.kill(bridge.proc.pid, signal.SIGCONT)
        thawed = time.monotonic()
        bridge.wait_for_log("(resumed session)", timeout=40)
        want = set(range(60)) | set(eager.acked)
        records = read_topic_sync(s.kafka.bootstrap, topic, len(want), timeout_s=30)
        recovered = time.monotonic() - thawed
    finally:
        bridge.stop()
    seqs = {r["fields"]["seq"] for r in records}
    missing = sorted(want - seqs)
    assert not missing, f"{len(missing)} readings lost over the broker restart: {missing[:10]}"
    assert any(f"their shared subscription (group {s.mqtt.shared_group}): {broker.bridge}" in x
               for x in lines), lines  # fmt: skip
    assert "Error saving" not in broker.log()
    print(
        f"the eager device was refused {eager.refused} times during the start and had "
        f"{len(early)} readings taken before `up` returned, {len(eager.acked)} in all; all "
        f"{len(want)} forwarded {recovered:.1f} s after the thaw"
    )


def test_a_bridge_running_through_a_broker_restart_reconnects_to_its_session(
    broker: PrivateBroker, unique: str, tmp_path: Path
) -> None:
    """Left running, the bridge sees the broker go, reconnects on its own (paho's backoff)
    to the session the broker restored, subscribes again and forwards what comes next."""
    s = broker.provision()
    topic = KafkaTopics(s.kafka.topic_prefix).telemetry
    asyncio.run(ensure_topics(s.kafka.bootstrap, s.kafka.topic_prefix))
    device = f"MH-{unique}-1"
    bridge = Proc(["bridge", "--name", "r", "--stats-every", "1"], s, tmp_path / "bridge.log")
    try:
        bridge.wait_for_log("(new session)", timeout=30)
        time.sleep(0.5)
        _publish(broker, device, range(0, 10))
        broker.down()
        time.sleep(1.5)  # long enough for the bridge to notice and start reconnecting
        broker.up()
        _publish(broker, device, range(10, 30))
        bridge.wait_for_log("(resumed session)", timeout=40)
        records = read_topic_sync(s.kafka.bootstrap, topic, 30, timeout_s=30)
        assert "MQTT disconnected" in bridge.text()
    finally:
        bridge.stop()
    assert {r["fields"]["seq"] for r in records} >= set(range(30))
