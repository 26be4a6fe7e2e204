"""Components that survive their dependencies (issue 14): started while InfluxDB or Kafka is
down, the worker and the bridge wait, say so once, and start working when it comes up.

Real processes (``citywatch worker``, ``citywatch bridge``) against a dependency of this
test alone that it starts late: a private influxd (``tests.kit.influxd``, no
authentication) or a private tansu started by citywatch's own ``services.up`` on a free
port, with a state directory of its own so its pid file is nobody else's.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from citywatch import services
from contract.topics import KafkaTopics, shared_subscription
from foundation.settings import Settings
from registry.devices import load_registry
from store.errors import InfluxError
from store.influxql import query
from store.schema import CASE_EVENT, PENALTY
from streams import journal
from streams.replay import replay
from streams.rules import load_rules
from tests.kit.influxd import PrivateInfluxd, free_port
from tests.kit.kafka import read_topic_sync
from tests.kit.mqtt import Publisher, as_bridge, drop_session, now_ms, secret_of
from tests.kit.procs import Proc, wait_until

pytestmark = pytest.mark.services

H = 3_600_000
M = 60_000
T0 = (now_ms() // H - 10) * H
"""Ten hours ago: the telemetry must be within the raw retention policy (30 days)."""


def _cover_left_open(u: str, hours: int = 8) -> list[dict[str, Any]]:
    """Ten readings of a cover that opens at the fourth, then hours of silence: a ledger."""
    topic = f"city/jinshui/manhole/MH-{u}-1/telemetry"
    lines: list[dict[str, Any]] = [
        {
            "topic": topic,
            "payload": {"ts": T0 + i * M, "open": i >= 3, "tilt_deg": 1.0 + i},
            "received_at": T0 + i * M,
        }
        for i in range(10)
    ]
    lines += [{"watermark": T0 + k * H} for k in range(1, hours + 1)]
    return lines


def _expected(s: Settings, lines: list[dict[str, Any]]) -> tuple[int, int]:
    """(ledger entries, case events) the replay books for ``lines``."""
    result = replay(lines, load_rules(s.paths.rules), load_registry(s.paths.registry))
    return len(result.ledger.to_json_list()), len(result.case_events)


def _load(s: Settings, lines: list[dict[str, Any]]) -> None:
    asyncio.run(
        journal.load(
            lines, load_registry(s.paths.registry), s.kafka.bootstrap, s.kafka.topic_prefix
        )
    )


def _influx_counts(s: Settings) -> tuple[int, int, int] | None:
    """(telemetry, penalty, case_event) points in the test's database; None before it exists."""
    try:
        rows = query(
            s,
            None,
            "SELECT count(tilt_deg) FROM manhole; "
            f"SELECT count(amount_yuan) FROM {PENALTY}; SELECT count(open) FROM {CASE_EVENT}",
        )
    except InfluxError:
        return None
    by = {r["_series"]: r["count"] for r in rows}
    return by.get("manhole", 0), by.get("penalty", 0), by.get("case_event", 0)


def _wait_points(s: Settings, want: tuple[int, int, int], timeout: float) -> None:
    last: list[tuple[int, int, int] | None] = [None]

    def reached() -> bool:
        last[0] = _influx_counts(s)
        return last[0] == want

    try:
        wait_until(reached, timeout=timeout, every=0.2, what="the points")
    except AssertionError:
        raise AssertionError(
            f"(telemetry, penalty, case_event) points: {last[0]} within {timeout} s, want {want}"
        ) from None


def _quiet(log: str, what: str) -> None:
    """Waited with one line and no traceback, and aiokafka's per-attempt errors were kept quiet."""
    assert log.count("waiting for it, retrying every") == 1, log[-3000:]
    assert f"{what} does not answer" in log, log[-3000:]
    assert re.search(rf"{re.escape(what)} answers after \d+\.\d s; going on", log), log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert log.count("Unable connect to") <= 1, "aiokafka's line per attempt:\n" + log[-3000:]


def test_a_worker_started_while_influxdb_is_down_writes_once_it_is_up(
    settings: Settings, registry_file: Path, unique: str, tmp_path: Path
) -> None:
    (tmp_path / "influx").mkdir()
    influx = PrivateInfluxd(tmp_path / "influx")  # not started yet
    # a state directory of its own: no embedded InfluxDB identities (the private one has no auth)
    s = settings.replace("paths", registry=str(registry_file), state_dir=str(tmp_path / "state"))
    s = s.replace("influx", url=influx.url)
    lines = _cover_left_open(unique)
    entries, events = _expected(s, lines)
    assert entries >= 3 and events >= 1
    worker = Proc(["worker", "--simulation", "--session-timeout", "3"], s, tmp_path / "w.log")
    try:
        worker.wait_for_log(f"InfluxDB at {influx.url} does not answer", timeout=60)
        _load(s, lines)
        # it detects and books while InfluxDB is away: the ledger reaches Kafka
        penalties = KafkaTopics(s.kafka.topic_prefix).penalties
        wait_until(
            lambda: len(read_topic_sync(s.kafka.bootstrap, penalties, entries, 2)) >= entries,
            timeout=60, what="the ledger on the penalties topic",
        )  # fmt: skip
        time.sleep(3)  # a few more attempts: still one line, still running
        assert worker.proc.poll() is None
        influx.start()
        up = time.monotonic()
        _wait_points(s, (10, entries, events), timeout=60)
        recovered = time.monotonic() - up
        text = worker.text()
    finally:
        worker.stop()
        influx.kill()
    _quiet(text, f"InfluxDB at {influx.url}")
    assert "the sinks wait (nothing is lost" in text
    print(f"all points in InfluxDB {recovered:.1f} s after it answered")


class PrivateKafka:
    """A tansu of this test alone, started late by ``services.up(only={"kafka"})``."""

    def __init__(self, settings: Settings, root: Path) -> None:
        self.bootstrap = f"127.0.0.1:{free_port()}"
        # services' own state directory: its pid file is this test's, nobody else's
        self.services = settings.replace("kafka", bootstrap=self.bootstrap).replace(
            "paths", state_dir=str(root / "kafka-state")
        )

    def up(self) -> float:
        started = time.monotonic()
        services.up(self.services, log=print, only={"kafka"})
        return started

    def down(self) -> None:
        services.down(self.services, log=print, only={"kafka"})


def test_a_worker_started_while_kafka_is_down_books_once_it_is_up(
    settings: Settings, registry_file: Path, unique: str, tmp_path: Path
) -> None:
    kafka = PrivateKafka(settings, tmp_path)
    s = settings.replace("paths", registry=str(registry_file))
    s = s.replace("kafka", bootstrap=kafka.bootstrap)
    lines = _cover_left_open(unique)
    entries, events = _expected(s, lines)
    worker = Proc(["worker", "--simulation", "--session-timeout", "3"], s, tmp_path / "w.log")
    try:
        worker.wait_for_log(f"worker: Kafka at {kafka.bootstrap} does not answer", timeout=60)
        time.sleep(3)  # a few attempts: still one line, still running
        assert worker.proc.poll() is None
        up = kafka.up()
        _load(s, lines)
        _wait_points(s, (10, entries, events), timeout=90)
        recovered = time.monotonic() - up
        text = worker.text()
    finally:
        worker.stop()
        kafka.down()
    _quiet(text, f"worker: Kafka at {kafka.bootstrap}")
    print(f"ledger and telemetry in InfluxDB {recovered:.1f} s after Kafka was started")


def _give_session(s: Settings, name: str) -> None:
    """Make bridge ``name``'s persistent session and its subscription, as an earlier run had."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    client.username_pw_set(name, secret_of(name))
    subscribed = threading.Event()
    client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(
        shared_subscription(s.mqtt.shared_group), qos=1
    )
    client.on_subscribe = lambda *a: subscribed.set()
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = s.mqtt.session_expiry_s
    client.connect(s.mqtt.host, s.mqtt.port, clean_start=False, properties=props)
    client.loop_start()
    try:
        assert subscribed.wait(10), f"{name} did not subscribe"
    finally:
        client.disconnect()
        client.loop_stop()


def test_a_bridge_started_while_kafka_is_down_forwards_what_waited_once_it_is_up(
    settings: Settings, registry_file: Path, unique: str, tmp_path: Path
) -> None:
    """It connects to MQTT only when Kafka answers; what devices published meanwhile waited
    in its persistent session and is forwarded."""
    kafka = PrivateKafka(settings, tmp_path)
    s = settings.replace("paths", registry=str(registry_file)).replace("mqtt", session_expiry_s=120)
    s = as_bridge(s.replace("kafka", bootstrap=kafka.bootstrap), "k")
    _give_session(s, s.mqtt.username)
    bridge = Proc(["bridge", "--name", "k", "--stats-every", "1"], s, tmp_path / "b.log")
    try:
        bridge.wait_for_log(f"Kafka at {kafka.bootstrap} does not answer", timeout=30)
        pub = Publisher(s.mqtt.host, s.mqtt.port, f"pub-{unique}")
        base = now_ms() - 60_000
        for i in range(30):
            pub.publish(
                f"city/jinshui/manhole/MH-{unique}-1/telemetry",
                {"ts": base + i, "open": False, "seq": i},
            ).wait_for_publish(10)
        time.sleep(2)
        assert "MQTT connected" not in bridge.text() and bridge.proc.poll() is None
        up = kafka.up()
        bridge.wait_for_log("(resumed session)", timeout=30)
        topic = KafkaTopics(s.kafka.topic_prefix).telemetry
        records = read_topic_sync(s.kafka.bootstrap, topic, 30, timeout_s=30)
        recovered = time.monotonic() - up
        pub.publish(
            f"city/jinshui/manhole/MH-{unique}-1/telemetry",
            {"ts": base + 30, "open": False, "seq": 30},
        ).wait_for_publish(10)
        pub.close()
        later = read_topic_sync(s.kafka.bootstrap, topic, 31, timeout_s=30)
        text = bridge.text()
    finally:
        bridge.stop()
        kafka.down()
        drop_session(s.mqtt.host, s.mqtt.port, s.mqtt.username)
    assert {r["fields"]["seq"] for r in records} == set(range(30))
    assert {r["fields"]["seq"] for r in later} == set(range(31)), "and it goes on"
    _quiet(text, f"Kafka at {kafka.bootstrap}")
    print(f"30 waiting readings in Kafka {recovered:.1f} s after Kafka was started")
