"""End to end on one box: publishers -> Mosquitto -> bridge -> tansu -> live worker -> InfluxDB.

    .venv/bin/python bench/e2e.py [--devices 30000] [--rates 1000,2000,4000,8000] [--seconds 20]
                                  [--plot bench/e2e.png] [--short]

Against citywatch's own services on the settings' ports (``CITYWATCH_*``; `citywatch services
up` starts them when nothing answers there), every client a provisioned identity of this run.
A registered city of ``--devices`` manhole covers in three districts; each offered rate is
published for ``--seconds`` (QoS 1, split over ``--publishers`` processes) with a cover *opening* every 0.25 s
as the probe (each probe a fresh cover, so each opens a case). Per rate it prints:

- the share of the rate's telemetry in InfluxDB, and the drain time after the broker acknowledged
  the last message (until every reading is there, or ``--drain-timeout``): publishers wait
  for every PUBACK, since paho only queues what ``publish()`` takes;
- the pipeline's events/s (readings in InfluxDB over first publish -> drained);
- publish -> case event p50/p99 (the probe's publish to the Kafka timestamp of its case's
  first event on ``<prefix>.cases``);
- the broker's drops during the rate (its ``$SYS`` counter, through the bridge's metrics).

The baseline, in the same run and on the same broker before the pipeline starts: a bare
QoS-1 paho subscriber that only counts, fed as fast as the publisher can; each rate's
pipeline events/s is printed as a ratio of it. ``--short`` is the smoke test's size.
The machine's other load is not controlled: say so beside any figure kept (bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from citywatch import devices, services  # noqa: E402
from citywatch.run import free_port, spawn  # noqa: E402
from contract.topics import KafkaTopics  # noqa: E402
from foundation.settings import load_settings  # noqa: E402
from registry.credentials import Grant  # noqa: E402

DISTRICTS = ("jinshui", "erqi", "zhongyuan")
PROBE_EVERY_S = 0.25


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _client(settings, identity: str, secret: str) -> mqtt.Client:  # noqa: ANN001
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=identity, protocol=mqtt.MQTTv5)
    c.username_pw_set(identity, secret)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    ok = threading.Event()
    c.on_connect = lambda cl, u, f, rc, p=None: rc.is_failure or ok.set()
    c.connect(settings.mqtt.host, settings.mqtt.port)
    c.loop_start()
    if not ok.wait(10):
        raise SystemExit(f"the broker did not accept {identity}")
    return c


def _publish(client: mqtt.Client, topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
    """Queue one QoS-1 message in paho (not yet sent: wait on the info for the broker's PUBACK)."""
    while True:
        info = client.publish(topic, payload, qos=1)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            return info
        time.sleep(0.002)  # 65k message ids in flight: wait for acks


def _topic(district: str, device: str) -> str:
    return f"city/{district}/manhole/{device}/telemetry"


class City:
    """The registry of this run: ``n`` ordinary covers and the probe covers, provisioned."""

    def __init__(self, n: int, probes: int, tag: str, workdir: Path) -> None:
        self.covers = [(DISTRICTS[i % 3], f"MH-{tag}-{i:05d}") for i in range(n)]
        self.probes = [(DISTRICTS[i % 3], f"PR-{tag}-{i:05d}") for i in range(probes)]
        self.path = workdir / "registry.csv"
        rows = ["device_id,kind,district,grid,unit,road_class,address,lat,lon,"
                "pm10_warning,pm10_violation,component_code"]  # fmt: skip
        rows += [f"{d},manhole,{dist},G1,市政工程管理处,main,bench,34.79,113.67,,,"
                 for dist, d in self.covers + self.probes]  # fmt: skip
        self.path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def _flood(settings, identity: str, secret: str, topics: list[str], n: int) -> None:  # noqa: ANN001
    """One publisher process: ``n`` QoS-1 messages as fast as the broker acks them."""
    p = _client(settings, identity, secret)
    body = orjson.dumps({"ts": now_ms(), "open": False, "tilt_deg": 1.0})
    infos = [None] * n
    for k in range(n):
        while True:
            info = p.publish(topics[k % len(topics)], body, qos=1)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                break
            time.sleep(0.002)
        infos[k] = info
    for info in infos:
        info.wait_for_publish(60)
    p.disconnect()
    p.loop_stop()


def baseline(
    settings, secrets: dict[str, str], pubs: list[str], sub: str, city: City, n: int
) -> float:  # noqa: ANN001
    """A bare QoS-1 subscriber's rate (counts only) on the same broker, fed by the publisher
    processes: the transport ceiling of one subscribing process."""
    got = [0, 0.0, 0.0]
    done = threading.Event()

    def on_message(c, u, msg) -> None:  # noqa: ANN001
        got[0] += 1
        got[2] = time.perf_counter()
        if got[0] == 1:
            got[1] = got[2]
        if got[0] >= n:
            done.set()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=sub, protocol=mqtt.MQTTv5)
    c.username_pw_set(sub, secrets[sub])
    subscribed = threading.Event()
    c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe(f"$share/b{sub}/city/#", qos=1)
    c.on_subscribe = lambda *a: subscribed.set()
    c.on_message = on_message
    c.connect(settings.mqtt.host, settings.mqtt.port, clean_start=True)
    c.loop_start()
    assert subscribed.wait(10), "the baseline subscriber was not subscribed"
    topics = [_topic(dist, dev) for dist, dev in city.covers]
    share = n // len(pubs)
    procs = [
        mp.get_context("fork").Process(
            target=_flood,
            args=(settings, pub, secrets[pub], topics, share + (n % len(pubs) if k == 0 else 0)),
        )
        for k, pub in enumerate(pubs)
    ]
    for proc in procs:
        proc.start()
    done.wait(120)
    for proc in procs:
        proc.join(30)
    c.disconnect()
    c.loop_stop()
    return got[0] / (got[2] - got[1]) if got[2] > got[1] else float("nan")


class CaseClock:
    """Follows ``<prefix>.cases``: the Kafka timestamp of each probe's first case event."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.first: dict[str, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run(bootstrap, topic)))
        self.thread.daemon = True
        self.thread.start()

    async def _run(self, bootstrap: str, topic: str) -> None:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            while not self.stop.is_set():
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for r in records:
                        device = orjson.loads(r.value).get("device", "")
                        self.first.setdefault(device, r.timestamp)
        finally:
            await consumer.stop()


def _metric(port: int, name: str) -> float | None:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except OSError:
        return None
    for line in text.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def _points(settings, lo_ms: int = 0, hi_ms: int = 4_000_000_000_000) -> int:  # noqa: ANN001
    """Cover readings in InfluxDB with event time in [lo_ms, hi_ms): one rate's, exactly
    (each rate's readings carry its own publish times)."""
    from store.influxql import query

    try:
        rows = query(settings, None, "SELECT count(tilt_deg) FROM manhole WHERE time >= $lo AND time < $hi",
                     params={"lo": lo_ms * 1_000_000, "hi": hi_ms * 1_000_000})  # fmt: skip
    except Exception:  # noqa: BLE001 (no database or measurement yet: nothing there)
        return 0
    return int(rows[0]["count"]) if rows else 0


def _drop(settings, database: str) -> None:  # noqa: ANN001
    """This run's InfluxDB database goes when the run ends (unless --keep): runs pile up."""
    from store.influxql import ident, query

    try:
        query(settings, None, f"DROP DATABASE {ident(database)}", role="admin")
    except Exception as exc:  # noqa: BLE001 (a leftover database is worth a line, not a traceback)
        print(f"note: database {database} was not dropped ({exc})", file=sys.stderr)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def offer(settings, identity: str, secret: str, covers: list[tuple[str, str]], rate: float,
          seconds: float, probes: list[tuple[str, str]], out) -> None:  # fmt: skip  # noqa: ANN001
    """One publisher process: ``rate`` msg/s for ``seconds``, a probe (a cover opening) every
    0.25 s from ``probes``; waits for the broker's PUBACK of every message (paho only queues
    them: a disconnect before that loses them), then puts (sent, {probe: publish ms},
    monotonic time of the last PUBACK) on ``out``."""
    client = _client(settings, identity, secret)
    sent, sent_probes = 0, {}
    last = None
    start = time.perf_counter()
    next_probe = start
    i = 0
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
        due = int(elapsed * rate)
        while sent - len(sent_probes) < due:
            dist, dev = covers[i % len(covers)]
            i += 1
            body = orjson.dumps({"ts": now_ms(), "open": False, "tilt_deg": 1.0})
            last = _publish(client, _topic(dist, dev), body)
            sent += 1
        if time.perf_counter() >= next_probe and probes:
            dist, dev = probes.pop()
            sent_probes[dev] = now_ms()
            body = orjson.dumps({"ts": now_ms(), "open": True, "tilt_deg": 40.0})
            last = _publish(client, _topic(dist, dev), body)
            sent += 1
            next_probe += PROBE_EVERY_S
        time.sleep(0.001)
    if last is not None:  # PUBACKs arrive in order per client: the last one means all
        last.wait_for_publish(300)
    acked = time.monotonic()
    client.disconnect()
    client.loop_stop()
    out.put((sent, sent_probes, acked))


def publish_rate(settings, secrets: dict[str, str], pubs: list[str], city: City, rate: int,  # noqa: ANN001
                 seconds: float, probes: list[tuple[str, str]]) -> tuple[int, dict[str, int], float]:  # fmt: skip
    """``rate`` split over the publisher processes (the probes from the first); (sent, probes,
    monotonic time the broker acknowledged the last message)."""
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    mine = [probes.pop() for _ in range(min(len(probes), int(seconds / PROBE_EVERY_S) + 1))]
    procs = []
    for k, pub in enumerate(pubs):
        covers = city.covers[k :: len(pubs)]
        args = (
            settings,
            pub,
            secrets[pub],
            covers,
            rate / len(pubs),
            seconds,
            mine if k == 0 else [],
            out,
        )
        procs.append(ctx.Process(target=offer, args=args))
    for proc in procs:
        proc.start()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    for proc in procs:
        proc.join(30)
    return (
        sum(r[0] for r in results),
        {d: t for r in results for d, t in r[1].items()},
        max(r[2] for r in results),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=30_000)
    ap.add_argument("--rates", default="1000,2000,4000,8000", help="offered msg/s, comma-separated")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds per offered rate")
    ap.add_argument("--drain-timeout", type=float, default=120.0)
    ap.add_argument("--logs", default="", help="keep the worker's and bridge's logs here")
    ap.add_argument("--keep", action="store_true", help="keep this run's InfluxDB database")
    ap.add_argument("--publishers", type=int, default=2, help="publisher processes (relays)")
    ap.add_argument("--baseline-messages", type=int, default=30_000)
    ap.add_argument("--plot", default=str(ROOT / "bench" / "e2e.png"), help="PNG ('' for none)")
    ap.add_argument(
        "--short", action="store_true", help="smoke-test size: 300 devices, 2 short rates"
    )
    args = ap.parse_args(argv)
    if args.short:
        args.devices, args.rates, args.seconds = 300, "100,200", 3.0
        args.baseline_messages, args.drain_timeout = 2000, 60.0
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    env = {k: v for k, v in os.environ.items() if k.startswith("CITYWATCH_")}
    settings = load_settings(env=env)
    if "CITYWATCH_PATHS_STATE_DIR" not in env:  # the same state as `citywatch services up`
        settings = settings.replace("paths", state_dir=str(ROOT / ".state"))
    tag = uuid.uuid4().hex[:8]
    source = f"bench-e2e:{tag}"
    started = {s.name for s in services.up(settings, log=lambda _: None) if s.detail == "started"}
    children = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(args.logs or tmp)
            workdir.mkdir(parents=True, exist_ok=True)
            probes_needed = int(sum(args.seconds / PROBE_EVERY_S + 2 for _ in rates)) + 4
            city = City(args.devices, probes_needed, tag, workdir)
            pubs = [f"e2e-pub-{tag}-{k}" for k in range(args.publishers)]
            sub, bridge = f"e2e-sub-{tag}", f"e2e-br-{tag}"
            change, *_ = devices.provision_grants(
                settings, source, [*(Grant(p, "relay") for p in pubs), Grant(sub, "bridge"),
                                   Grant(bridge, "bridge")],
                remove_missing=False, require_broker=True,
            )  # fmt: skip
            secrets = change.issued
            s = settings.replace("kafka", topic_prefix=f"e2e-{tag}").replace(
                "influx", database=f"e2e_{tag}"
            )
            s = s.replace("paths", registry=str(city.path))
            s = s.replace("mqtt", username=bridge, password=secrets[bridge], client_id=f"e2e-{tag}",
                          shared_group=f"e2e{tag}")  # fmt: skip
            print(
                f"citywatch end-to-end benchmark: {args.devices:,} devices, rates {rates} msg/s, "
                f"{args.seconds:g} s each, {os.cpu_count()} cpus; broker {s.mqtt.url.split('@')[-1]}, "
                f"Kafka {s.kafka.bootstrap}, InfluxDB {s.influx.url}",
                flush=True,
            )
            raw = baseline(s, secrets, pubs, sub, city, args.baseline_messages)
            print(f"baseline: bare QoS-1 subscriber {raw:,.0f} msg/s", flush=True)
            from bus.kafka import ensure_topics_for

            asyncio.run(ensure_topics_for(s.kafka))
            metrics_port = free_port()
            children.append(spawn("worker", ["worker"], s, workdir))
            children.append(
                spawn("bridge", ["bridge", "--metrics-port", str(metrics_port)], s, workdir)
            )
            clock = CaseClock(s.kafka.bootstrap, KafkaTopics(s.kafka.topic_prefix).cases)
            deadline = time.monotonic() + 60
            while "MQTT connected" not in children[1].tail(10**6):
                if time.monotonic() > deadline or not all(c.alive() for c in children):
                    raise SystemExit("the bridge did not connect:\n" + children[1].tail())
                time.sleep(0.2)
            probes = list(city.probes)
            # warm-up: the worker takes seconds to join its group; the first rate must not pay it
            warm_sent, warm, _ = publish_rate(s, secrets, pubs[:1], city, 10, 0.5, probes)
            while not set(warm) <= set(clock.first) or _points(s) < warm_sent:
                if time.monotonic() > deadline + 60:
                    raise SystemExit("the worker made no case within 2 min:\n" + children[0].tail())
                time.sleep(0.2)
            rows = []
            print(f"warm: the worker answers ({warm_sent} readings, {len(warm)} cases)", flush=True)
            for rate in rates:
                dropped_before = _metric(metrics_port, "citywatch_broker_dropped") or 0.0
                print(f"rate {rate:,} msg/s: publishing {args.seconds:g} s ...", flush=True)
                t0, lo = time.monotonic(), now_ms()
                sent, sent_probes, t_stop = publish_rate(
                    s, secrets, pubs, city, rate, args.seconds, probes
                )
                hi = now_ms() + 1  # drain from the broker's last PUBACK
                got = _points(s, lo, hi)
                while got < sent and time.monotonic() - t_stop < args.drain_timeout:
                    time.sleep(0.5)
                    got = _points(s, lo, hi)
                    print(f"  draining: {got:,}/{sent:,} in InfluxDB", flush=True)
                drained = time.monotonic()
                waited = time.monotonic() + 10  # a probe's case may trail its telemetry
                while not set(sent_probes) <= set(clock.first) and time.monotonic() < waited:
                    time.sleep(0.2)
                lat = [
                    (clock.first[d] - t) / 1000 for d, t in sent_probes.items() if d in clock.first
                ]
                dropped_after = _metric(metrics_port, "citywatch_broker_dropped") or dropped_before
                row = {
                    "rate": rate, "sent": sent, "got": got, "offered": sent / (t_stop - t0), "share": got / sent if sent else float("nan"),
                    "drain_s": drained - t_stop, "ev_s": got / (drained - t0),
                    "p50": _pct(lat, 0.5), "p99": _pct(lat, 0.99),
                    "probes": f"{len(lat)}/{len(sent_probes)}",
                    "dropped": int(dropped_after - dropped_before),
                }  # fmt: skip
                rows.append(row)
                print(
                    f"RESULT rate={rate} offered={row['offered']:.0f} in_influx={row['share']:.2%} "
                    f"missing={sent - got} drain_s={row['drain_s']:.1f} "
                    f"ev_s={row['ev_s']:.0f} ev_s/baseline={row['ev_s'] / raw:.2f}x "
                    f"p50_s={row['p50']:.2f} p99_s={row['p99']:.2f} probes={row['probes']} "
                    f"broker_dropped={row['dropped']}",
                    flush=True,
                )
            clock.stop.set()
            print("\n| offered msg/s (achieved) | in InfluxDB | drain s | pipeline ev/s | / bare subscriber "
                  "| publish→case p50 s | p99 s | probes | broker drops |")  # fmt: skip
            print("|---|---|---|---|---|---|---|---|---|")
            for r in rows:
                print(f"| {r['rate']:,} ({r['offered']:,.0f}) | {r['share']:.2%} ({r['sent'] - r['got']:,} missing) | {r['drain_s']:.1f} | {r['ev_s']:,.0f} | "
                      f"{r['ev_s'] / raw:.2f}x | {r['p50']:.2f} | {r['p99']:.2f} | {r['probes']} | "
                      f"{r['dropped']} |")  # fmt: skip
            print(f"baseline (same run): bare QoS-1 subscriber {raw:,.0f} msg/s", flush=True)
            if args.plot:
                _plot(rows, args.plot)
                print(f"plot: {args.plot}", flush=True)
    finally:
        for child in reversed(children):
            child.stop()
        if not args.keep:
            _drop(settings, f"e2e_{tag}")
        devices.retire(settings, source)
        if started:
            services.down(settings, log=lambda _: None, only=started)
    return 0


def _plot(rows: list[dict], path: str) -> None:
    """publish -> case event p50/p99 against the offered rate, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [r["offered"] for r in rows]  # what the broker acknowledged, not what was asked
    ax.plot(xs, [r["p50"] for r in rows], "o-", label="p50")
    ax.plot(xs, [r["p99"] for r in rows], "s-", label="p99")
    for r in rows:
        ax.annotate(f"asked {r['rate']:,}", (r["offered"], r["p99"]), textcoords="offset points",
                    xytext=(4, 6), fontsize=8)  # fmt: skip
    ax.set_xlabel("offered msg/s (acknowledged by the broker)")
    ax.set_ylabel("publish → case event (s)")
    ax.set_title("citywatch end to end (one box)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    _ = statistics  # percentiles are computed by _pct (nearest rank)


if __name__ == "__main__":
    raise SystemExit(main())
