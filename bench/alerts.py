"""How long from a case event on Kafka to the push leaving the alerts service?

    python bench/alerts.py [--rate 200] [--duration 20] [--bootstrap 127.0.0.1:19092]

Two phases against the running Kafka-protocol broker, each ``--duration``
seconds at a steady ``--rate`` of case events per second:

1. baseline: raw aiokafka, this process producing to a topic and consuming it
   (no consumer group, ``getmany``) -- the floor any Kafka consumer pays;
2. the alerts service, as operators run it (``python -m alerts.service``, its
   own process), routing every case (``group_wait: 0s``, grouped per case) to a
   JSON webhook served by this process on loopback. Latency = the webhook's
   receive time minus the producer's send time of the case event, so it
   includes consume, sqlite accept + commit, Kafka offset commit, grouping,
   rendering, the outbox write and the HTTP POST.

Prints p50/p95/p99/max for both and the ratio of the service's to the baseline's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from aiohttp import web  # noqa: E402
from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402

from alerts.service import FETCH_MAX_WAIT_MS  # noqa: E402
from bus.kafka import ensure_topics, make_producer  # noqa: E402
from contract.topics import KafkaTopics  # noqa: E402


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def event(i: int, now_ms: int) -> dict:
    device = f"MH-B{i:06d}"
    return {
        "case_id": f"manhole:{device}:{now_ms}", "kind": "manhole", "rule": "manhole", "device": device,
        "district": "jinshui", "grid": "JS-G07", "unit": "郑州市市政工程管理处", "severity": "major", "state": "open",
        "at": now_ms, "opened_at": now_ms, "deadline": now_ms + 7_200_000, "evidence": [], "component_code": "0102",
        "address": "花园路农业路口南50米", "detail": {"acknowledged_at": None},
    }  # fmt: skip


async def paced(rate: int, duration: float, send) -> int:  # noqa: ANN001
    """Call ``send(i)`` ``rate`` times a second for ``duration`` seconds, on schedule."""
    n = int(rate * duration)
    start = time.perf_counter()
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(i)
    return n


async def baseline(bootstrap: str, prefix: str, rate: int, duration: float) -> list[float]:
    topic = KafkaTopics(prefix).telemetry
    await ensure_topics(bootstrap, prefix)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    await consumer.start()
    consumer.assign([TopicPartition(topic, 0)])
    await consumer.seek_to_end()
    producer = make_producer(bootstrap, client_id="bench-baseline")
    await producer.start()
    sent: dict[int, float] = {}
    lat: list[float] = []
    done = asyncio.Event()

    async def consume() -> None:
        while not done.is_set() or len(lat) < len(sent):
            batch = await consumer.getmany(timeout_ms=50)
            now = time.time()
            for records in batch.values():
                for r in records:
                    lat.append((now - sent[int(r.key)]) * 1000)
            if done.is_set() and len(lat) >= len(sent):
                break

    async def send(i: int) -> None:
        sent[i] = time.time()
        await producer.send(topic, orjson.dumps(event(i, int(sent[i] * 1000))), key=str(i).encode())

    task = asyncio.create_task(consume())
    await paced(rate, duration, send)
    done.set()
    await asyncio.wait_for(task, 30)
    await producer.stop()
    await consumer.stop()
    return lat


async def through_alerts(
    bootstrap: str, prefix: str, rate: int, duration: float
) -> tuple[list[float], int]:
    sent: dict[str, float] = {}
    lat: list[float] = []

    async def hook(request: web.Request) -> web.Response:
        now = time.time()
        body = orjson.loads(await request.read())
        for c in body["cases"]:
            t = sent.get(c["case_id"])
            if t is not None:
                lat.append((now - t) * 1000)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    tmp = Path(tempfile.mkdtemp(prefix="cw-bench-alerts-"))
    routes = tmp / "routes.yaml"
    routes.write_text(
        f"""
receivers:
  - {{name: hook, webhook: {{url: "http://127.0.0.1:{port}/hook", secret: bench-signing-key-0123456789abcdefghij}}}}
route: {{receiver: hook, group_by: [case_id], group_wait: 0s, group_interval: 0s, repeat_interval: 0s}}
""",
        encoding="utf-8",
    )
    await ensure_topics(bootstrap, prefix)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYWATCH_")}
    env |= {"CITYWATCH_KAFKA_BOOTSTRAP": bootstrap, "CITYWATCH_KAFKA_TOPIC_PREFIX": prefix,
            "CITYWATCH_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "alerts.service", "--routes", str(routes), "--state-dir", str(tmp / "state"),
         "--listen", "127.0.0.1:0"],
        cwd=ROOT, env=env, stdout=open(tmp / "alerts.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )  # fmt: skip
    producer = make_producer(bootstrap, client_id="bench-alerts")
    await producer.start()
    topic = KafkaTopics(prefix).cases
    try:
        # warm-up: one case, until its push arrives (the service is up and assigned)
        warm = event(10**7, int(time.time() * 1000))
        sent[warm["case_id"]] = time.time()
        await producer.send_and_wait(topic, orjson.dumps(warm), key=warm["case_id"].encode())
        for _ in range(600):
            if lat or proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        if not lat:
            raise SystemExit(
                f"alerts service did not push:\n{(tmp / 'alerts.log').read_text()[-2000:]}"
            )
        lat.clear()

        async def send(i: int) -> None:
            now = time.time()
            ev = event(i, int(now * 1000))
            sent[ev["case_id"]] = now
            await producer.send(topic, orjson.dumps(ev), key=ev["case_id"].encode())

        n = await paced(rate, duration, send)
        for _ in range(600):
            if len(lat) >= n:
                break
            await asyncio.sleep(0.05)
    finally:
        await producer.stop()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        await runner.cleanup()
    return lat, n


def line(name: str, lat: list[float]) -> str:
    return (f"{name:<34} n={len(lat):>6}  p50 {pct(lat, 50):7.1f} ms  p95 {pct(lat, 95):7.1f} ms  "
            f"p99 {pct(lat, 99):7.1f} ms  max {max(lat):7.1f} ms")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=200, help="case events per second (default 200)")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per phase (default 20)")
    ap.add_argument(
        "--bootstrap", default=os.environ.get("CITYWATCH_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    )
    args = ap.parse_args()
    prefix = f"bench-alerts-{uuid.uuid4().hex[:8]}"
    print(f"# {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()};"
          f" {args.rate} events/s for {args.duration:g} s per phase; broker {args.bootstrap}")  # fmt: skip
    base = asyncio.run(baseline(args.bootstrap, prefix + "-raw", args.rate, args.duration))
    print(line("baseline: aiokafka produce->consume", base))
    pushed, n = asyncio.run(through_alerts(args.bootstrap, prefix, args.rate, args.duration))
    print(line("alerts: case event -> webhook push", pushed))
    if len(pushed) < n:
        print(f"!! only {len(pushed)} of {n} pushes arrived")
    for p in (50, 95, 99):
        print(
            f"ratio p{p}: {pct(pushed, p) / pct(base, p):6.1f}x  (+{pct(pushed, p) - pct(base, p):.1f} ms)"
        )
    print(f"mean: baseline {statistics.mean(base):.1f} ms, alerts {statistics.mean(pushed):.1f} ms")
    return 0 if len(pushed) >= n else 1


if __name__ == "__main__":
    sys.exit(main())
