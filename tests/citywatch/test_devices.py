"""`citywatch devices` on the real, secured Mosquitto of `services up` (docs/contracts.md, "Device identity").

Only a device speaks for itself: anonymous clients are refused, a device's
credentials publish on its own topic only (anything else is dropped by the
broker and never reaches the bridge), no device reads or joins the bridges'
shared subscription, nobody takes the bridge's client id, and a registry edit
or a rotation reaches the running broker without a restart.
"""

from __future__ import annotations

import asyncio
import os
import stat
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from citywatch import devices, services
from contract.topics import KafkaTopics
from foundation.settings import Settings
from ingest.bridge import Bridge
from registry.credentials import read_batch
from registry.devices import COLUMNS
from tests.kit.cli import run_cli
from tests.kit.kafka import read_topic
from tests.kit.mqtt import bridge, now_ms

pytestmark = pytest.mark.services
HEADER = ",".join(COLUMNS) + ",gateway"


def _topic(device: str, district: str = "jinshui", kind: str = "manhole") -> str:
    return f"city/{district}/{kind}/{device}/telemetry"


@pytest.fixture
def fleet(live_services: Settings, tmp_path: Path, unique: str):
    """A registry of this test's devices (one site behind a gateway) and `citywatch devices` on it."""
    path = tmp_path / "registry.csv"
    ids = {
        "a": f"MH-{unique}-A",
        "b": f"MH-{unique}-B",
        "s1": f"DS-{unique}-1",
        "s2": f"DS-{unique}-2",
        "gw": f"GW-{unique}",
    }
    rows = [
        f"{ids['a']},manhole,jinshui,JS-G07,郑州市市政工程管理处,main,,,,,,0102,",
        f"{ids['b']},manhole,jinshui,JS-G07,郑州市市政工程管理处,main,,,,,,0102,",
        f"{ids['s1']},dust,erqi,EQ-G03,郑州一建,,,,,,,,{ids['gw']}",
        f"{ids['s2']},dust,erqi,EQ-G03,郑州一建,,,,,,,,{ids['gw']}",
    ]
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    s = live_services
    env = {
        "CITYWATCH_MQTT_URL": s.mqtt.url,
        "CITYWATCH_MQTT_AUTH_DIR": s.mqtt.auth_dir,
        "CITYWATCH_PATHS_STATE_DIR": s.paths.state_dir,
        "CITYWATCH_PATHS_REGISTRY": str(path),
    }

    class Fleet:
        registry, id, settings = path, ids, s
        secrets: dict[str, str] = {}

        def provision(self, *args: str) -> str:
            done = run_cli("devices", "provision", "--out", str(tmp_path / f"batch-{time.time_ns()}.csv"),
                           *args, env=env)  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            batch = next(
                (
                    line.rsplit(": ", 1)[1]
                    for line in done.stdout.splitlines()
                    if "installer" in line
                ),
                None,
            )
            if batch is not None:
                assert stat.S_IMODE(os.stat(batch).st_mode) == 0o600
                self.secrets.update(read_batch(batch))
            return done.stdout

        def rewrite(self, *keep: str) -> None:
            lines = path.read_text(encoding="utf-8").splitlines()
            path.write_text(
                "\n".join([lines[0], *(r for r in lines[1:] if r.split(",")[0] in keep)]) + "\n",
                encoding="utf-8",
            )

    f = Fleet()
    f.secrets = {}
    yield f
    devices.retire(s, f"registry:{path}")


class Client:
    """A paho client as one identity, recording what happens to it."""

    def __init__(
        self, s: Settings, user: str | None, secret: str | None, client_id: str = "", tag: str = ""
    ):
        self.rc: list[object] = []
        self.got: list[tuple[str, bytes]] = []
        self.suback: list[str] = []
        self.disconnects: list[str] = []
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or (user or ""),
                        protocol=mqtt.MQTTv5, reconnect_on_failure=False)  # fmt: skip
        if user is not None:
            c.username_pw_set(user, secret)
        c.on_connect = lambda c, u, f, rc, p=None: (self.rc.append(rc), self.connected.set())
        # (the broker is shared with other test runs: keep only this test's traffic)
        c.on_message = lambda c, u, m: (
            self.got.append((m.topic, m.payload)) if tag in m.topic else None
        )
        c.on_subscribe = lambda c, u, mid, rcs, p=None: (
            self.suback.extend(str(r) for r in rcs),
            self.subscribed.set(),
        )
        c.on_disconnect = lambda c, u, f, rc, p=None: self.disconnects.append(str(rc))
        c.connect(s.mqtt.host, s.mqtt.port)
        c.loop_start()
        assert self.connected.wait(10), "no CONNACK"
        self.client = c

    @property
    def accepted(self) -> bool:
        return not self.rc[-1].is_failure  # type: ignore[attr-defined]

    def subscribe(self, topic: str) -> str:
        self.subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self.subscribed.wait(5)
        return self.suback[-1]

    def publish(self, topic: str, payload: bytes | str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def wait_for(self, n: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _reader(s: Settings, unique: str) -> Client:
    """A bridge identity reading the stream through its own shared group."""
    name, secret = bridge(f"rd-{unique}")
    reader = Client(s, name, secret, tag=unique)
    assert reader.subscribe(f"$share/rd{unique}/city/#") == "Granted QoS 1"
    return reader


def test_provisioning_hands_out_secrets_once_and_anonymous_clients_are_refused(fleet) -> None:  # noqa: ANN001
    out = fleet.provision()
    assert "3 new, 0 rotated, 0 removed" in out and "has them now" in out, out
    assert set(fleet.secrets) == {fleet.id["a"], fleet.id["b"], fleet.id["gw"]}
    s = fleet.settings
    store = Path(s.mqtt.auth_dir) / "credentials.json"
    assert not any(secret in store.read_text() for secret in fleet.secrets.values())
    anonymous = Client(s, None, None, client_id="laptop")
    assert not anonymous.accepted and str(anonymous.rc[0]) == "Not authorized"
    anonymous.close()
    assert services.mqtt_connack(s.mqtt.host, s.mqtt.port) == 5
    a = fleet.id["a"]
    assert services.mqtt_connack(s.mqtt.host, s.mqtt.port, a, fleet.secrets[fleet.id["b"]]) == 5
    assert services.mqtt_connack(s.mqtt.host, s.mqtt.port, a, fleet.secrets[a]) == 0
    assert services.mqtt_connack(s.mqtt.host, s.mqtt.port, fleet.id["s1"], "") == 5, (
        "a device behind a gateway has no identity of its own"
    )
    # the same identity over TLS, verified with citywatch's CA
    tls = services.client_tls(
        s.replace("mqtt", url=f"mqtts://{s.mqtt.host}:{services.tls_port(s)}")
    )
    assert services.mqtt_connack(s.mqtt.host, services.tls_port(s), a, fleet.secrets[a], tls) == 0
    again = fleet.provision()
    assert "0 new, 0 rotated, 0 removed" in again and "installer" not in again


def test_a_device_publishing_on_another_devices_topic_never_reaches_the_bridge(
    fleet, settings: Settings, unique: str
) -> None:  # noqa: ANN001
    fleet.provision()
    s = settings.replace("paths", registry=str(fleet.registry))
    a, b = fleet.id["a"], fleet.id["b"]
    topics = KafkaTopics(s.kafka.topic_prefix)

    async def scenario() -> tuple[list, list, object]:
        bridge_ = Bridge(s)
        stop = asyncio.Event()
        task = asyncio.create_task(bridge_.run(stop, stats_every_s=3600))
        await asyncio.wait_for(bridge_.subscribed.wait(), 20)
        try:
            device = await asyncio.to_thread(Client, s, a, fleet.secrets[a])
            for topic, seq in ((_topic(b), 1), (f"city/jinshui/{a}/telemetry", 2), (_topic(a), 3)):
                body = b'{"ts": %d, "open": true, "seq": %d}' % (now_ms(), seq)
                await asyncio.to_thread(device.publish, topic, body)
            device.close()
            ok = await read_topic(s.kafka.bootstrap, topics.telemetry, 1)
            await asyncio.sleep(1.0)  # what else would have come, has
            ok = await read_topic(s.kafka.bootstrap, topics.telemetry, len(ok) + 1, timeout_s=1)
            dead = await read_topic(s.kafka.bootstrap, topics.deadletter, 10**6, timeout_s=2)
            return ok, dead
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)

    ok, dead = asyncio.run(scenario())
    # (the broker is shared with other test runs: their traffic under city/ reaches this bridge too)
    assert [(r["device"], r["fields"]["seq"]) for r in ok if unique in r["device"]] == [(a, 3)]
    assert [d for d in dead if unique in d["topic"]] == [], (
        "the broker dropped the others: the bridge never saw them"
    )


def test_a_device_can_neither_read_the_stream_nor_join_the_bridges_shared_subscription(
    fleet, unique: str
) -> None:  # noqa: ANN001
    fleet.provision()
    s = fleet.settings
    a, b = fleet.id["a"], fleet.id["b"]
    reader = _reader(s, unique)
    thief = Client(s, b, fleet.secrets[b], tag="")
    try:
        assert thief.subscribe("city/#") == "Not authorized"
        assert thief.subscribe(f"$share/rd{unique}/city/#") == "Not authorized"
        assert thief.subscribe(_topic(b)) == "Not authorized", "not even its own topic"
        device = Client(s, a, fleet.secrets[a])
        for i in range(10):
            device.publish(_topic(a), str(i))
        device.close()
        reader.wait_for(10)
        time.sleep(0.3)
        assert [p for _, p in reader.got] == [str(i).encode() for i in range(10)], (
            "the whole stream reaches the bridges' group"
        )
        assert thief.got == []
    finally:
        thief.close()
        reader.close()


def test_nobody_takes_the_bridges_client_id(fleet, settings: Settings, unique: str) -> None:  # noqa: ANN001
    fleet.provision()
    s = settings
    bridge_id = s.mqtt.username  # the bridge's client id on citywatch's broker is its user name
    reader = Client(s, bridge_id, s.mqtt.password, tag=unique)
    assert reader.subscribe(f"$share/{s.mqtt.shared_group}/city/#") == "Granted QoS 1"
    a = fleet.id["a"]
    try:
        intruder = Client(s, a, fleet.secrets[a], client_id=bridge_id)
        assert intruder.accepted, "it connects, but as itself"
        intruder.publish(_topic(a), "after the intruder")
        reader.wait_for(1)
        assert reader.disconnects == [] and reader.got == [(_topic(a), b"after the intruder")]
        intruder.close()
        guess = Client(s, bridge_id, "a guess")
        assert not guess.accepted
        guess.close()
        time.sleep(0.3)
        assert reader.disconnects == [], "the bridge's session was never taken over"
    finally:
        reader.close()


def _broker_pid(s: Settings) -> int | None:
    return next((st.pid for st in services.status(s) if st.name == "mosquitto"), None)


def test_a_device_removed_from_the_registry_is_locked_out_without_a_restart(fleet) -> None:  # noqa: ANN001
    fleet.provision()
    s = fleet.settings
    a, b = fleet.id["a"], fleet.id["b"]
    pid = _broker_pid(s)
    device = Client(s, b, fleet.secrets[b])
    assert device.accepted
    fleet.rewrite(a, fleet.id["s1"], fleet.id["s2"])
    out = fleet.provision()
    assert "0 new, 0 rotated, 1 removed" in out, out
    deadline = time.monotonic() + 5
    while not device.disconnects and time.monotonic() < deadline:
        time.sleep(0.05)
    assert device.disconnects, "the connected device was put out at once"
    device.close()
    assert services.mqtt_connack(s.mqtt.host, s.mqtt.port, b, fleet.secrets[b]) == 5
    assert services.mqtt_connack(s.mqtt.host, s.mqtt.port, a, fleet.secrets[a]) == 0
    assert _broker_pid(s) == pid, "no restart"


def test_rotating_a_secret_locks_out_the_old_one(fleet) -> None:  # noqa: ANN001
    fleet.provision()
    s = fleet.settings
    a = fleet.id["a"]
    old = fleet.secrets[a]
    device = Client(s, a, old)
    out = fleet.provision("--rotate", a)
    assert "0 new, 1 rotated" in out and "installer" in out, out
    new = fleet.secrets[a]
    assert new != old
    deadline = time.monotonic() + 5
    while not device.disconnects and time.monotonic() < deadline:
        time.sleep(0.05)
    assert device.disconnects, "the session on the old secret ends"
    device.close()
    assert services.mqtt_connack(s.mqtt.host, s.mqtt.port, a, old) == 5
    assert services.mqtt_connack(s.mqtt.host, s.mqtt.port, a, new) == 0


def test_a_gateway_publishes_for_the_devices_it_speaks_for_only(fleet, unique: str) -> None:  # noqa: ANN001
    fleet.provision()
    s = fleet.settings
    gw, s1, s2, a = fleet.id["gw"], fleet.id["s1"], fleet.id["s2"], fleet.id["a"]
    reader = _reader(s, unique)
    dtu = Client(s, gw, fleet.secrets[gw])
    try:
        dtu.publish(_topic(a), "not its device")
        dtu.publish(_topic(s1, "erqi", "dust"), "s1")
        dtu.publish(_topic(s2, "erqi", "dust"), "s2")
        reader.wait_for(2)
        time.sleep(0.3)
        assert sorted(p for _, p in reader.got) == [b"s1", b"s2"]
    finally:
        dtu.close()
        reader.close()
