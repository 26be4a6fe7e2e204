"""MQTT -> Kafka throughput of the bridge, against the raw MQTT ceiling measured in the same run.

    .venv/bin/python bench/ingest.py [--messages 30000] [--publishers 2] [--mqtt-url URL]

Against citywatch's own secured Mosquitto (``citywatch services up``: no
anonymous clients, identities through the dynamic-security plugin, TLS on the
next port up with citywatch's CA). Every client is a provisioned identity,
issued under one source ``bench:<unique>`` and retired when the run ends
(docs/contracts.md, "Device identity"): each publisher process is a relay, the
bare subscriber and every bridge a bridge. Publishers always use the plain
listener; the subscribing side is measured over both listeners:

1. baseline: a bare paho subscriber (QoS 1, MQTT v5 shared subscription) that
   only counts: the transport ceiling of one process (figures: bench/RESULTS.md),
   over the plain listener, then over TLS;
2. one bridge (``citywatch bridge``): validation, registry lookup, Kafka produce,
   MQTT ack after the Kafka ack; counted as records arriving in Kafka; over the
   plain listener, then over TLS (``mqtts://``, the generated CA as ``mqtt.ca_file``);
3. two bridges sharing the subscription, plain then TLS.

Each phase is timed from the first message received to the last one counted.
Every rate is printed as a ratio of the plain baseline, and each TLS row as a
ratio of the same row over the plain listener (the cost of TLS).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
from aiokafka import AIOKafkaConsumer
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bus.kafka import ensure_topics  # noqa: E402
from citywatch import devices, services  # noqa: E402
from contract.topics import KafkaTopics, shared_subscription  # noqa: E402
from foundation.settings import load_settings  # noqa: E402
from registry.credentials import Grant  # noqa: E402

DEVICES = 200


class Broker:
    """The secured broker as the bench uses it: both listeners, the CA, and this run's identities."""

    def __init__(self, settings) -> None:  # noqa: ANN001
        self.settings = settings
        self.host = settings.mqtt.host
        self.port = settings.mqtt.port
        self.tls_port = services.tls_port(settings)
        self.ca = str(services.ca_file(settings))
        self.source = f"bench:{uuid.uuid4().hex[:12]}"
        self.secrets: dict[str, str] = {}
        self.publishers: list[str] = []

    def url(self, tls: bool) -> str:
        return f"mqtts://{self.host}:{self.tls_port}" if tls else f"mqtt://{self.host}:{self.port}"

    def issue(self, grants: list[Grant]) -> None:
        change, _, _, _ = devices.provision_grants(
            self.settings,
            self.source,
            grants,
            rotate=True,
            remove_missing=False,
            require_broker=True,
        )
        self.secrets.update(change.issued)

    def retire(self) -> None:
        devices.retire(self.settings, self.source)

    def client(self, identity: str, tls: bool = False) -> tuple[mqtt.Client, int]:
        """A paho v5 client logged in as ``identity`` (the client id is the user name), and its port."""
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=identity, protocol=mqtt.MQTTv5)
        client.username_pw_set(identity, self.secrets[identity])
        if tls:
            client.tls_set(ca_certs=self.ca, cert_reqs=ssl.CERT_REQUIRED)
        return client, self.tls_port if tls else self.port


def _topics(tag: str) -> list[str]:
    return [f"city/jinshui/manhole/MH-{tag}-{i:04d}/telemetry" for i in range(DEVICES)]


def _publisher(
    broker: Broker, identity: str, tag: str, start: int, count: int, ready: mp.Event, go: mp.Event
) -> None:
    topics = _topics(tag)
    base = time.time_ns() // 1_000_000 - 60_000
    payloads = [
        (
            topics[i % DEVICES],
            orjson.dumps(
                {"ts": base + i // DEVICES, "open": False, "tilt_deg": 1.5, "battery_pct": 88}
            ),
        )
        for i in range(start, start + count)
    ]
    client, port = broker.client(identity)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p=None: rc.is_failure or connected.set()
    client.connect(broker.host, port)
    client.loop_start()
    if not connected.wait(10):
        raise SystemExit(f"the broker did not accept publisher {identity}")
    ready.set()
    go.wait()
    infos = []
    for topic, payload in payloads:
        while True:
            info = client.publish(topic, payload, qos=1)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                break
            time.sleep(0.001)  # MQTT_ERR_QUEUE_SIZE: the publisher's own back-pressure
        infos.append(info)
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


def _publish(broker: Broker, tag: str, total: int, publishers: int) -> None:
    ctx = mp.get_context("fork")
    go = ctx.Event()
    share = total // publishers
    procs, readies = [], []
    for p in range(publishers):
        ready = ctx.Event()
        proc = ctx.Process(
            target=_publisher, args=(broker, broker.publishers[p], tag, p * share, share, ready, go)
        )
        proc.start()
        procs.append(proc)
        readies.append(ready)
    for r in readies:
        if not r.wait(30):
            raise SystemExit("a publisher did not connect within 30 s")
    go.set()
    for proc in procs:
        proc.join(120)


def baseline(broker: Broker, tls: bool, total: int, publishers: int) -> float:
    """Messages per second a bare QoS-1 subscriber receives (it acks as paho does by default)."""
    tag = "raw" + uuid.uuid4().hex[:6]
    identity = f"bench-{tag}"
    broker.issue([Grant(identity, "bridge")])  # only a bridge may subscribe
    count = 0
    first = last = 0.0
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(client, userdata, msg):  # noqa: ANN001
        nonlocal count, first, last
        if count == 0:
            first = time.perf_counter()
        count += 1
        if count >= total:
            last = time.perf_counter()
            done.set()

    client, port = broker.client(identity, tls)
    client.on_message = on_message
    client.on_subscribe = lambda c, u, mid, codes, p=None: (
        all(not rc.is_failure for rc in codes) and subscribed.set()
    )
    client.connect(broker.host, port)
    client.subscribe(shared_subscription(tag), qos=1)
    client.loop_start()
    if not subscribed.wait(10):
        raise SystemExit(f"the broker did not accept the subscription of {identity}")
    _publish(broker, tag, total, publishers)
    done.wait(120)
    client.disconnect()
    client.loop_stop()
    return total / (last - first) if last else float("nan")


async def _count_kafka(bootstrap: str, topic: str, total: int, timeout: float = 180) -> float:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    count, first, last = 0, 0.0, 0.0
    deadline = time.monotonic() + timeout
    try:
        while count < total and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            n = sum(len(v) for v in batch.values())
            if n and not count:
                first = time.perf_counter()
            count += n
        last = time.perf_counter()
    finally:
        await consumer.stop()
    return count, first, last


def bridges(
    broker: Broker, tls: bool, n_bridges: int, total: int, publishers: int, workdir: Path
) -> float:
    settings = broker.settings
    tag = "br" + uuid.uuid4().hex[:6]
    prefix = f"bench-{tag}"
    # Each bridge its own identity <client_id>-<name>; a bridge's secret is kept in the auth
    # directory, where `citywatch bridge` finds it by its user name.
    broker.issue([Grant(f"{prefix}-{i}", "bridge") for i in range(n_bridges)])
    registry = workdir / f"registry-{tag}.csv"
    rows = [
        "device_id,kind,district,grid,unit,road_class,address,lat,lon,pm10_warning,pm10_violation,component_code"
    ]
    rows += [
        f"MH-{tag}-{i:04d},manhole,jinshui,JS-G01,市政工程管理处,main,地址{i},34.79,113.67,,,"
        for i in range(DEVICES)
    ]
    registry.write_text("\n".join(rows) + "\n", encoding="utf-8")
    asyncio.run(ensure_topics(settings.kafka.bootstrap, prefix))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYWATCH_")}
    env.update(
        {
            "CITYWATCH_MQTT_URL": broker.url(tls),
            "CITYWATCH_MQTT_CA_FILE": broker.ca if tls else "",
            "CITYWATCH_PATHS_STATE_DIR": settings.paths.state_dir,
            "CITYWATCH_MQTT_AUTH_DIR": str(services.auth_dir(settings)),
            "CITYWATCH_KAFKA_TOPIC_PREFIX": prefix,
            "CITYWATCH_KAFKA_BOOTSTRAP": settings.kafka.bootstrap,  # the bench's Kafka, not 19092
            "CITYWATCH_PATHS_REGISTRY": str(registry),
            "CITYWATCH_MQTT_SHARED_GROUP": tag,
            "CITYWATCH_MQTT_CLIENT_ID": prefix,
            "CITYWATCH_MQTT_SESSION_EXPIRY_S": "30",
            "CITYWATCH_LOG_LEVEL": "WARNING",
        }
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "citywatch", "bridge", "--name", str(i)],
            env={**env, "CITYWATCH_MQTT_USERNAME": f"{prefix}-{i}"},
            cwd=ROOT,
        )
        for i in range(n_bridges)
    ]
    time.sleep(3.0)  # connect + subscribe
    topic = KafkaTopics(prefix).telemetry
    counter: dict = {}
    t = threading.Thread(
        target=lambda: counter.update(
            r=asyncio.run(_count_kafka(settings.kafka.bootstrap, topic, total))
        )
    )
    t.start()
    _publish(broker, tag, total, publishers)
    t.join()
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(20)
    count, first, last = counter["r"]
    if count < total:
        print(f"  warning: only {count} of {total} records reached Kafka", file=sys.stderr)
    return count / (last - first) if last > first else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=30_000)
    ap.add_argument("--publishers", type=int, default=2)
    ap.add_argument(
        "--mqtt-url",
        default=None,
        help="citywatch's own secured Mosquitto, plain listener (default: mqtt.url of the "
        "settings, mqtt://127.0.0.1:18883); TLS is measured on the next port up",
    )
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k.startswith("CITYWATCH_")}
    settings = load_settings(env=env)
    if "CITYWATCH_PATHS_STATE_DIR" not in env:  # the same broker state as `citywatch services up`
        settings = settings.replace("paths", state_dir=str(ROOT / ".state"))
    if "CITYWATCH_MQTT_AUTH_DIR" not in env:
        settings = settings.replace("mqtt", auth_dir=os.path.join(settings.paths.state_dir, "mqtt"))
    if args.mqtt_url:
        settings = settings.replace("mqtt", url=args.mqtt_url)
    if settings.mqtt.tls:
        raise SystemExit("--mqtt-url: give the plain listener (mqtt://); TLS is the next port up")
    started = {s.name for s in services.up(settings, log=lambda _: None) if s.detail == "started"}
    broker = Broker(settings)

    def row(label: str, rate: float, plain: float | None = None) -> None:
        tls = f"   TLS/plain {rate / plain:.2f}x" if plain else ""
        print(f"{label:<52} {rate:>10,.0f} msg/s   {rate / raw:.2f}x{tls}", flush=True)

    try:
        broker.publishers = [f"bench-pub-{uuid.uuid4().hex[:8]}" for _ in range(args.publishers)]
        broker.issue([Grant(p, "relay") for p in broker.publishers])
        with tempfile.TemporaryDirectory() as tmp:
            print(
                f"citywatch ingest benchmark: {args.messages} QoS-1 messages from {args.publishers} "
                f"publisher processes (relay identities, plain listener), {os.cpu_count()} cpus, "
                f"broker {broker.url(False)} + {broker.url(True)} (CA {broker.ca}), "
                f"Kafka {settings.kafka.bootstrap}",
                flush=True,
            )
            raw = baseline(broker, False, args.messages, args.publishers)
            row("baseline: bare paho subscriber (counts only)", raw)
            raw_tls = baseline(broker, True, args.messages, args.publishers)
            row("bare paho subscriber over TLS", raw_tls, raw)
            for n in (1, 2):
                plain = bridges(broker, False, n, args.messages, args.publishers, Path(tmp))
                row(f"{n} bridge(s): MQTT -> validate -> Kafka, acked", plain)
                tls = bridges(broker, True, n, args.messages, args.publishers, Path(tmp))
                row(f"{n} bridge(s) over TLS (mqtts://, citywatch CA)", tls, plain)
    finally:
        broker.retire()
        if started:
            services.down(settings, log=lambda _: None, only=started)


if __name__ == "__main__":
    main()
