"""MQTT -> Kafka throughput of the bridge, against the raw MQTT ceiling measured in the same run.

    .venv/bin/python bench/ingest.py [--messages 30000] [--publishers 2]

Three phases over the same publishers, the same broker and the same payloads:

1. baseline: a bare paho subscriber (QoS 1, MQTT v5 shared subscription) that
   only counts: the transport ceiling of one process (figures: bench/RESULTS.md);
2. one bridge (``citywatch bridge``): validation, registry lookup, Kafka produce,
   MQTT ack after the Kafka ack; counted as records arriving in Kafka;
3. two bridges sharing the subscription.

Each phase is timed from the first message received to the last one counted,
and the bridges' rates are printed as a ratio of the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import signal
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
from citywatch import services  # noqa: E402
from contract.topics import KafkaTopics  # noqa: E402
from foundation.settings import load_settings  # noqa: E402

DEVICES = 200


def _topics(tag: str) -> list[str]:
    return [f"city/jinshui/manhole/MH-{tag}-{i:04d}/telemetry" for i in range(DEVICES)]


def _publisher(
    host: str, port: int, tag: str, start: int, count: int, ready: mp.Event, go: mp.Event
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
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{tag}-{start}", protocol=mqtt.MQTTv5
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
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


def _publish(host: str, port: int, tag: str, total: int, publishers: int) -> None:
    ctx = mp.get_context("fork")
    go = ctx.Event()
    share = total // publishers
    procs, readies = [], []
    for p in range(publishers):
        ready = ctx.Event()
        proc = ctx.Process(target=_publisher, args=(host, port, tag, p * share, share, ready, go))
        proc.start()
        procs.append(proc)
        readies.append(ready)
    for r in readies:
        r.wait(30)
    go.set()
    for proc in procs:
        proc.join(120)


def baseline(host: str, port: int, total: int, publishers: int) -> float:
    """Messages per second a bare QoS-1 subscriber receives (it acks as paho does by default)."""
    tag = "raw" + uuid.uuid4().hex[:6]
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

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-raw-{tag}", protocol=mqtt.MQTTv5
    )
    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect(host, port)
    client.subscribe(f"$share/{tag}/city/jinshui/manhole/+/telemetry", qos=1)
    client.loop_start()
    subscribed.wait(10)
    _publish(host, port, tag, total, publishers)
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


def bridges(settings, n_bridges: int, total: int, publishers: int, workdir: Path) -> float:  # noqa: ANN001
    tag = "br" + uuid.uuid4().hex[:6]
    prefix = f"bench-{tag}"
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
            "CITYWATCH_MQTT_URL": settings.mqtt.url,
            "CITYWATCH_KAFKA_TOPIC_PREFIX": prefix,
            "CITYWATCH_PATHS_REGISTRY": str(registry),
            "CITYWATCH_MQTT_SHARED_GROUP": tag,
            "CITYWATCH_MQTT_CLIENT_ID": tag,
            "CITYWATCH_MQTT_SESSION_EXPIRY_S": "30",
            "CITYWATCH_LOG_LEVEL": "WARNING",
        }
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "citywatch", "bridge", "--name", str(i)], env=env, cwd=ROOT
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
    _publish(settings.mqtt.host, settings.mqtt.port, tag, total, publishers)
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
        "--mqtt-port",
        type=int,
        default=18830,
        help="a Mosquitto citywatch starts with its own config (default 18830); Debian's default "
        "config drops QoS-1 messages past 1000 queued per slow subscriber",
    )
    args = ap.parse_args()
    settings = load_settings(
        env={k: v for k, v in os.environ.items() if k.startswith("CITYWATCH_")}
    )
    settings = settings.replace("mqtt", url=f"mqtt://127.0.0.1:{args.mqtt_port}")
    settings = settings.replace("paths", state_dir=str(ROOT / ".state" / "bench"))
    started = {s.name for s in services.up(settings, log=lambda _: None) if s.detail == "started"}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(
                f"citywatch ingest benchmark: {args.messages} QoS-1 messages from {args.publishers} publisher "
                f"processes, {os.cpu_count()} cpus, broker {settings.mqtt.url}, Kafka {settings.kafka.bootstrap}"
            )
            raw = baseline(settings.mqtt.host, settings.mqtt.port, args.messages, args.publishers)
            print(
                f"{'baseline: bare paho subscriber (counts only)':<48} {raw:>10,.0f} msg/s   1.00x"
            )
            for n in (1, 2):
                rate = bridges(settings, n, args.messages, args.publishers, Path(tmp))
                print(
                    f"{f'{n} bridge(s): MQTT -> validate -> Kafka, acked':<48} {rate:>10,.0f} msg/s   {rate / raw:.2f}x"
                )
    finally:
        if started:
            services.down(settings, log=lambda _: None, only=started)


if __name__ == "__main__":
    main()
