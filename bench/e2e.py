"""End to end on one box: publishers -> Mosquitto -> bridge -> tansu -> worker -> InfluxDB and alerts -> webhook.

    .venv/bin/python bench/e2e.py [--devices 30000] [--rates 1000,2000,3200,5000] [--seconds 20]
                                  [--plot bench/e2e.png] [--json FILE] [--noop-records 50000] [--short]

Against citywatch's own services on the settings' ports (``CITYWATCH_*``: source a worktree's
env file for private ports, or nothing for the defaults; `citywatch services up` starts them when
nothing answers there), every client a provisioned identity of this run. A registered city of
``--devices`` manhole covers in three districts; each offered rate is published for ``--seconds``
(QoS 1, split over ``--publishers`` processes) with a cover *opening* every 0.25 s as the probe
(each probe a fresh cover, so each opens a case). The processes are the ones `citywatch run`
starts: one bridge, one live worker and ``citywatch alerts``, whose every receiver is a webhook to
a loopback receiver in this process (bench/chaos.py's ``Hook``) stamping each delivery's arrival;
every route there groups by case and pushes at once (``group_wait: 0s``), so the push time is the
pipeline's, not a grouping window's. Per rate it prints:

- the share of the rate's telemetry in InfluxDB, and the drain time after the broker acknowledged
  the last message (until every reading is there, or ``--drain-timeout``): publishers wait
  for every PUBACK, since paho only queues what ``publish()`` takes;
- the pipeline's sustained events/s (readings in InfluxDB over first publish -> drained);
- publish -> case event p50/p99 (the probe's publish to the Kafka timestamp of its case's
  first event on ``<prefix>.cases``) and publish -> push p50/p99 (to the webhook's receipt of
  the first push naming the probe's cover);
- the broker's drops during the rate (its ``$SYS`` counter, through the bridge's metrics);
- the peak RSS of each process during the rate (bridge, worker, alerts, and the services
  citywatch started: mosquitto, tansu, influxd), sampled 4 times a second from /proc.
- the cores each of them used on average during the rate (CPU time from /proc over the step's
  wall time), and ``others``: the rest of the machine's busy time (the publishers, this bench).

Two baselines in the same run, each with the pipeline's processes stopped: before the pipeline
starts, a bare QoS-1 paho subscriber that only counts, fed as fast as the publishers can (the
transport ceiling of one subscribing process); after the last rate, bench/streams.py's Faust
no-op agent (its code, imported) over ``--noop-records`` of this run's own journal records
copied to a fresh one-partition topic (the ceiling of a Faust consumer on this broker). Each
rate's events/s is printed as a ratio of both, then the issue's "done when" figures (issue 15)
as met or not. A progress line comes every ``--progress-every`` s (5) while a rate runs. ``--short`` is the smoke
test's size (tests/bench/test_e2e.py). The machine's other load is not controlled: the 1-min
load average is printed per rate; say so beside any figure kept (bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.chaos import Hook, rss_mib, service_pids  # noqa: E402
from bench.streams import noop_ceiling  # noqa: E402
from citywatch import devices, services  # noqa: E402
from citywatch.run import free_port, spawn  # noqa: E402
from contract.topics import KafkaTopics  # noqa: E402
from foundation.settings import load_settings  # noqa: E402
from registry.credentials import Grant  # noqa: E402

DISTRICTS = ("jinshui", "erqi", "zhongyuan")
PROBE_EVERY_S = 0.25
RSS_EVERY_S = 0.25
SERVICE_NAMES = {"mosquitto": "mosquitto", "kafka": "tansu", "influxdb": "influxd"}
"""citywatch's service names (their pid files) -> the process named in the report."""
PROCESSES = ("bridge", "worker", "alerts", "mosquitto", "tansu", "influxd")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _client(settings, identity: str, secret: str) -> mqtt.Client:  # noqa: ANN001
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=identity, protocol=mqtt.MQTTv5)
    c.username_pw_set(identity, secret)
    # paho scans every message in flight on each PUBACK (Client._update_inflight): 1,000 in
    # flight halved a flooding publisher's rate against 50-100 on this machine (19.6k against
    # 10.4k msg/s), and a publisher slowed that way lets its in-flight window fill, so it slows more
    c.max_inflight_messages_set(100)
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
            # checked between readings too: a publisher catching up must not starve the probes
            if probes and time.perf_counter() >= next_probe:
                last = _probe(client, probes.pop(), sent_probes)
                sent += 1
                next_probe += PROBE_EVERY_S
        if probes and time.perf_counter() >= next_probe:
            last = _probe(client, probes.pop(), sent_probes)
            sent += 1
            next_probe += PROBE_EVERY_S
        time.sleep(0.001)
    if last is not None:  # PUBACKs arrive in order per client: the last one means all
        last.wait_for_publish(300)
    acked = time.monotonic()
    client.disconnect()
    client.loop_stop()
    out.put((sent, sent_probes, acked))


def _probe(
    client: mqtt.Client, cover: tuple[str, str], sent: dict[str, int]
) -> mqtt.MQTTMessageInfo:
    """Publish ``cover`` opening (its case is the probe), noting the publish time in ``sent``."""
    dist, dev = cover
    sent[dev] = now_ms()
    body = orjson.dumps({"ts": sent[dev], "open": True, "tilt_deg": 40.0})
    return _publish(client, _topic(dist, dev), body)


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


def cpu_s(pid: int) -> float | None:
    """A process's CPU time so far, user and system (None when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU time the whole machine spent busy so far, all cores (/proc/stat): user, nice, system,
    irq and softirq; not idle, iowait or steal, and guest time is already in user and nice."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = values
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


class Watch:
    """Every process's RSS sampled 4 times a second, kept as peaks per rate step, and a progress
    line every ``every_s`` while a step runs (``status()`` says what moved); and the cores each
    process used over the step, the rest of the machine (the publishers, this bench) as
    ``others``: on two shared cores, where the time goes is what decides the rate."""

    def __init__(self, pids: Callable[[], dict[str, int]], every_s: float) -> None:
        self.pids, self.every_s = pids, every_s
        self.peak: dict[str, float] = {}
        self.phase = ""
        self.status: Callable[[], str] = lambda: ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def begin(self, phase: str, status: Callable[[], str]) -> None:
        """A new step: peaks from now on, progress lines prefixed with ``phase``."""
        with self._lock:
            self.peak, self.phase, self.status = {}, phase, status
            self._since = self._last = time.monotonic()
            self._cpu0 = {n: (pid, cpu_s(pid)) for n, pid in self.pids().items()}
            self._busy0 = machine_busy_s()

    def end(self) -> dict[str, float]:
        """The step's peak RSS per process (MiB); progress lines stop."""
        with self._lock:
            peak, self.phase = dict(self.peak), ""
        return {name: round(peak[name], 1) for name in PROCESSES if name in peak}

    def cores(self) -> dict[str, float]:
        """Cores each process used on average since ``begin`` (a process restarted in between
        is left out), and ``others``: the machine's busy time not theirs."""
        wall = time.monotonic() - self._since
        out: dict[str, float] = {}
        for name, pid in self.pids().items():
            was, before = self._cpu0.get(name, (None, None))
            now = cpu_s(pid)
            if was == pid and before is not None and now is not None:
                out[name] = (now - before) / wall
        ordered = {name: round(out[name], 2) for name in PROCESSES if name in out}
        ordered["others"] = round(
            max(0.0, (machine_busy_s() - self._busy0) / wall - sum(out.values())), 2
        )
        return ordered

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(RSS_EVERY_S):
            for name, pid in self.pids().items():
                mib = rss_mib(pid)
                if mib is not None:
                    with self._lock:
                        self.peak[name] = max(self.peak.get(name, 0.0), mib)
            now = time.monotonic()
            if self.phase and now - self._last >= self.every_s:
                self._last = now
                try:
                    said = self.status()
                except Exception as exc:  # noqa: BLE001 (a progress line is not worth a crash)
                    said = f"(status unavailable: {exc})"
                rss = " ".join(f"{k} {v:.0f}" for k, v in sorted(self.peak.items()))
                print(f"  {self.phase} +{now - self._since:.0f} s: {said}; peak RSS MiB {rss}; "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip


def bench_routes(hook: Hook, directory: Path) -> Path:
    """The shipped routing file with every receiver a webhook to ``hook`` (bench/chaos.py), and
    every route grouping by case and pushing at once: a push per case, timed by the pipeline
    alone (a city's ``group_wait: 30s`` would be the figure otherwise)."""
    import yaml

    path = hook.routes_file(directory)
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))

    def each(route: dict[str, Any]) -> None:
        route.update(group_by=["case_id"], group_wait="0s")
        for child in route.get("routes", []):
            each(child)

    each(doc["route"])
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def first_pushes(hook: Hook) -> dict[str, int]:
    """Device -> wall-clock ms of the first webhook delivery naming one of its cases."""
    first: dict[str, int] = {}
    for at, _key, doc in list(hook.seen):
        for item in doc.get("cases", []) if isinstance(doc, dict) else []:
            if isinstance(item, dict) and item.get("device"):
                first.setdefault(item["device"], int(at * 1000))
    return first


async def copy_journal(kafka, source: str, prefix: str, n: int) -> int:  # noqa: ANN001
    """The first ``n`` records of ``source`` (all partitions, in partition order; repeated when it
    holds fewer, as a short run's does) into partition 0 of ``<prefix>.telemetry``, a fresh
    one-partition topic; the end offset there."""

    from bench.streams import produce
    from bus.kafka import consumer_for, ensure_topics, topic_partitions

    reader = consumer_for(kafka, group_id=None, enable_auto_commit=False)
    await reader.start()
    records: list[tuple[bytes, bytes]] = []
    try:
        reader.assign(await topic_partitions(reader, [source]))
        await reader.seek_to_beginning()
        idle = 0
        while len(records) < n and idle < 3:
            batch = await reader.getmany(timeout_ms=500, max_records=10_000)
            idle = 0 if batch else idle + 1
            for _tp, got in sorted(batch.items(), key=lambda kv: kv[0].partition):
                records.extend((r.key or b"", r.value or b"") for r in got)
    finally:
        await reader.stop()
    if not records:
        raise SystemExit(f"the journal {source} is empty: nothing to feed the no-op agent")
    records = (records * (n // len(records) + 1))[:n]
    await ensure_topics(kafka.bootstrap, prefix, 1)
    return await produce(kafka.bootstrap, KafkaTopics(prefix).telemetry, records)


def criteria(rows: list[dict], bare: float, noop: float) -> list[tuple[str, bool | None, str]]:
    """Issue 15's "done when" figures that this bench measures: (what, met (None: not measured
    in this run), the figure)."""
    out: list[tuple[str, bool | None, str]] = []
    best = max(rows, key=lambda r: r["ev_s"]) if rows else None
    if best is not None:
        ratio = best["ev_s"] / bare
        top = max(rows, key=lambda r: r["offered"])
        # a pipeline that kept up with every rate offered has shown only what was offered
        kept_up = top["got"] == top["sent"] and top["drain_s"] < 2.0
        met = True if ratio >= 0.5 else (None if kept_up and top["offered"] < bare / 2 else False)
        note = (f"; it kept up with the highest rate offered, {top['offered']:,.0f} msg/s, "
                "below 0.5x: offer more to tell") if met is None else ""  # fmt: skip
        out.append(("sustained end-to-end rate >= 0.5x the bare QoS-1 subscriber", met,
                    f"{best['ev_s']:,.0f} ev/s at {best['rate']:,} offered = {ratio:.2f}x of "
                    f"{bare:,.0f} (and {best['ev_s'] / noop:.2f}x the Faust no-op agent){note}"))  # fmt: skip
    for rate, bound in ((3200, 1.0), (5000, 2.0)):
        row = next((r for r in rows if r["rate"] == rate), None)
        what = f"publish -> case event p99 <= {bound:g} s at {rate:,} msg/s offered"
        if row is None:
            out.append((what, None, "rate not in this run"))
        else:
            out.append((what, row["p99"] <= bound, f"p99 {row['p99']:.2f} s "
                        f"(achieved {row['offered']:,.0f} msg/s)"))  # fmt: skip
    below = [r for r in rows if r["offered"] <= bare]
    short = [r for r in below if r["got"] < r["sent"]]
    out.append(("every telemetry point in InfluxDB at every rate up to the bare subscriber's",
                not short if below else None,
                ", ".join(f"{r['rate']:,}: {r['share']:.2%}" for r in below) or "no rate below it"))  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=30_000)
    ap.add_argument("--rates", default="1000,2000,3200,5000", help="offered msg/s, comma-separated")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds per offered rate")
    ap.add_argument("--drain-timeout", type=float, default=120.0)
    ap.add_argument("--logs", default="", help="keep the processes' logs here")
    ap.add_argument("--keep", action="store_true", help="keep this run's InfluxDB database")
    ap.add_argument("--publishers", type=int, default=2, help="publisher processes (relays)")
    ap.add_argument("--baseline-messages", type=int, default=30_000)
    ap.add_argument("--noop-records", type=int, default=50_000,
                    help="journal records for the Faust no-op agent (fewer bias it: 1 s commits)")  # fmt: skip
    ap.add_argument("--plot", default=str(ROOT / "bench" / "e2e.png"), help="PNG ('' for none)")
    ap.add_argument("--json", default="", help="also write the figures as JSON to this file")
    ap.add_argument(
        "--progress-every", type=float, default=5.0, help="seconds between progress lines"
    )
    ap.add_argument(
        "--short", action="store_true", help="smoke-test size: 300 devices, 2 short rates"
    )
    args = ap.parse_args(argv)
    if args.short:
        args.devices, args.rates, args.seconds = 300, "100,200", 3.0
        args.baseline_messages, args.drain_timeout, args.noop_records = 2000, 60.0, 20_000
        args.progress_every = 1.0
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    env = {k: v for k, v in os.environ.items() if k.startswith("CITYWATCH_")}
    settings = load_settings(env=env)
    if "CITYWATCH_PATHS_STATE_DIR" not in env:  # the same state as `citywatch services up`
        settings = settings.replace("paths", state_dir=str(ROOT / ".state"))
    tag = uuid.uuid4().hex[:8]
    source = f"bench-e2e:{tag}"
    load_start = os.getloadavg()
    started = {s.name for s in services.up(settings, log=lambda _: None) if s.detail == "started"}
    children: dict[str, Any] = {}
    hook = Hook(clock=time.time)
    watch = Watch(lambda: {SERVICE_NAMES[k]: v for k, v in service_pids(settings).items()}
                  | {n: c.proc.pid for n, c in list(children.items()) if c.alive()},
                  args.progress_every)  # fmt: skip
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
                f"{args.seconds:g} s each, {os.cpu_count()} cpus, load average "
                f"{' '.join(f'{x:.1f}' for x in load_start)}; broker {s.mqtt.url.split('@')[-1]}, "
                f"Kafka {s.kafka.bootstrap}, InfluxDB {s.influx.url}",
                flush=True,
            )
            print(f"baseline 1/2: a bare QoS-1 subscriber, {args.baseline_messages:,} messages ...",
                  flush=True)  # fmt: skip
            raw = baseline(s, secrets, pubs, sub, city, args.baseline_messages)
            print(f"baseline: bare QoS-1 subscriber {raw:,.0f} msg/s", flush=True)
            from bus.kafka import ensure_topics_for

            asyncio.run(ensure_topics_for(s.kafka))
            metrics_port = free_port()
            routes = bench_routes(hook, workdir)
            children["worker"] = spawn("worker", ["worker"], s, workdir)
            children["bridge"] = spawn(
                "bridge", ["bridge", "--metrics-port", str(metrics_port)], s, workdir
            )
            children["alerts"] = spawn(
                "alerts",
                ["alerts", "--routes", str(routes), "--state-dir", str(workdir / "alerts"),
                 "--listen", f"127.0.0.1:{free_port()}"],
                s, workdir,
            )  # fmt: skip
            topics = KafkaTopics(s.kafka.topic_prefix)
            clock = CaseClock(s.kafka.bootstrap, topics.cases)
            deadline = time.monotonic() + 60
            while "MQTT connected" not in children["bridge"].tail(10**6):
                if time.monotonic() > deadline or not all(c.alive() for c in children.values()):
                    raise SystemExit(
                        "the pipeline did not start:\n"
                        + "\n".join(f"--- {n}\n{c.tail()}" for n, c in children.items())
                    )
                time.sleep(0.2)
            probes = list(city.probes)
            # warm-up: the worker takes seconds to join its group; the first rate must not pay it
            print("warm-up: the worker joins its group, alerts its own ...", flush=True)
            warm_sent, warm, _ = publish_rate(s, secrets, pubs[:1], city, 10, 0.5, probes)
            while (not set(warm) <= set(clock.first) or not set(warm) <= set(first_pushes(hook))
                   or _points(s) < warm_sent):  # fmt: skip
                if time.monotonic() > deadline + 60:
                    raise SystemExit(
                        "no case pushed within 2 min:\n"
                        + "\n".join(f"--- {n}\n{c.tail()}" for n, c in children.items())
                    )
                time.sleep(0.2)
            rows = []
            print(f"warm: the worker answers ({warm_sent} readings, {len(warm)} cases pushed)",
                  flush=True)  # fmt: skip
            for step, rate in enumerate(rates, 1):
                dropped_before = _metric(metrics_port, "citywatch_broker_dropped") or 0.0
                print(f"rate {step}/{len(rates)}: {rate:,} msg/s, publishing {args.seconds:g} s ...",
                      flush=True)  # fmt: skip
                t0, lo = time.monotonic(), now_ms()
                pushed0, cased0 = len(hook.seen), len(clock.first)
                watch.begin(
                    f"rate {rate:,}",
                    lambda lo=lo, pushed0=pushed0, cased0=cased0: (
                        f"{_points(s, lo):,} readings in InfluxDB, {len(clock.first) - cased0:,} "
                        f"cases, {len(hook.seen) - pushed0:,} pushes"
                    ),
                )
                sent, sent_probes, t_stop = publish_rate(
                    s, secrets, pubs, city, rate, args.seconds, probes
                )
                hi = now_ms() + 1  # drain from the broker's last PUBACK
                got = _points(s, lo, hi)
                print(f"  published {sent:,} (acknowledged in {t_stop - t0:.1f} s); draining ...",
                      flush=True)  # fmt: skip
                while got < sent and time.monotonic() - t_stop < args.drain_timeout:
                    time.sleep(0.5)
                    got = _points(s, lo, hi)
                drained = time.monotonic()
                waited = time.monotonic() + 10  # a probe's case and push may trail its telemetry
                while time.monotonic() < waited and not (
                    set(sent_probes) <= set(clock.first) and set(sent_probes) <= set(first_pushes(hook))
                ):  # fmt: skip
                    time.sleep(0.2)
                rss, cores = watch.end(), watch.cores()
                pushes = first_pushes(hook)
                lat = [
                    (clock.first[d] - t) / 1000 for d, t in sent_probes.items() if d in clock.first
                ]
                push = [(pushes[d] - t) / 1000 for d, t in sent_probes.items() if d in pushes]
                dropped_after = _metric(metrics_port, "citywatch_broker_dropped") or dropped_before
                row = {
                    "rate": rate, "sent": sent, "got": got, "offered": sent / (t_stop - t0),
                    "share": got / sent if sent else float("nan"),
                    "drain_s": drained - t_stop, "ev_s": got / (drained - t0),
                    "p50": _pct(lat, 0.5), "p99": _pct(lat, 0.99),
                    "probes": f"{len(lat)}/{len(sent_probes)}",
                    "push_p50": _pct(push, 0.5), "push_p99": _pct(push, 0.99),
                    "pushed": f"{len(push)}/{len(sent_probes)}",
                    "dropped": int(dropped_after - dropped_before),
                    "rss_mib": rss, "cores": cores, "load": round(os.getloadavg()[0], 2),
                }  # fmt: skip
                rows.append(row)
                print(
                    f"RESULT rate={rate} offered={row['offered']:.0f} in_influx={row['share']:.2%} "
                    f"missing={sent - got} drain_s={row['drain_s']:.1f} "
                    f"ev_s={row['ev_s']:.0f} ev_s/baseline={row['ev_s'] / raw:.2f}x "
                    f"p50_s={row['p50']:.2f} p99_s={row['p99']:.2f} probes={row['probes']} "
                    f"push_p50_s={row['push_p50']:.2f} push_p99_s={row['push_p99']:.2f} "
                    f"pushed={row['pushed']} broker_dropped={row['dropped']} "
                    f"rss_mib={','.join(f'{k}:{v:.0f}' for k, v in rss.items())} "
                    f"cores={','.join(f'{k}:{v:.2f}' for k, v in cores.items())} load={row['load']:.1f}",
                    flush=True,
                )
            clock.stop.set()
            for name in ("bridge", "alerts", "worker"):  # the no-op agent runs on a quiet pipeline
                children[name].stop()
            print(f"baseline 2/2: the Faust no-op agent over {args.noop_records:,} of this run's "
                  "journal records ...", flush=True)  # fmt: skip
            noop_prefix = f"e2e-{tag}-noop"
            end = asyncio.run(
                copy_journal(s.kafka, topics.telemetry, noop_prefix, args.noop_records)
            )
            noop_run = noop_ceiling(s.kafka.bootstrap, noop_prefix, end, workdir, 180.0)
            noop = noop_run["records"] / noop_run["seconds"]
            print(f"baseline: Faust no-op agent {noop:,.0f} ev/s ({noop_run['records']:,.0f} records "
                  f"in {noop_run['seconds']:.2f} s, cpu {noop_run['cpu']:.0%})", flush=True)  # fmt: skip
            report(rows, raw, noop, load_start)
            checks = criteria(rows, raw, noop)
            if args.json:
                Path(args.json).write_text(orjson.dumps({
                    "devices": args.devices, "seconds": args.seconds, "cpus": os.cpu_count(),
                    "load_start": load_start, "load_end": os.getloadavg(),
                    "broker": s.mqtt.url.split("@")[-1], "kafka": s.kafka.bootstrap, "influx": s.influx.url,
                    "bare_subscriber_msg_s": raw, "noop_agent_ev_s": noop,
                    "noop_agent": {k: v for k, v in noop_run.items() if k != "log"},
                    "rates": rows,
                    "criteria": [{"what": w, "met": m, "figure": f} for w, m, f in checks],
                }, option=orjson.OPT_INDENT_2).decode())  # fmt: skip
                print(f"json: {args.json}", flush=True)
            if args.plot:
                _plot(rows, raw, noop, args.plot)
                print(f"plot: {args.plot}", flush=True)
    finally:
        watch.stop()
        for child in reversed(list(children.values())):
            child.stop()
        hook.stop()
        if not args.keep:
            _drop(settings, f"e2e_{tag}")
        devices.retire(settings, source)
        if started:
            services.down(settings, log=lambda _: None, only=started)
    return 0


def report(rows: list[dict], raw: float, noop: float, load_start: tuple[float, ...]) -> None:
    """The markdown table of the run, its baselines and ratios, and the issue's criteria."""
    print("\n| offered msg/s (achieved) | in InfluxDB | drain s | pipeline ev/s | / bare subscriber "
          "| / no-op agent | publish→case p50 s | p99 s | publish→push p50 s | p99 s | probes cased/pushed "
          "| broker drops | peak RSS MiB | cores used | load |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        rss = ", ".join(f"{k} {v:.0f}" for k, v in r["rss_mib"].items())
        cores = ", ".join(f"{k} {v:.2f}" for k, v in r.get("cores", {}).items())
        print(f"| {r['rate']:,} ({r['offered']:,.0f}) | {r['share']:.2%} ({r['sent'] - r['got']:,} missing) "
              f"| {r['drain_s']:.1f} | {r['ev_s']:,.0f} | {r['ev_s'] / raw:.2f}x | {r['ev_s'] / noop:.2f}x "
              f"| {r['p50']:.2f} | {r['p99']:.2f} | {r['push_p50']:.2f} | {r['push_p99']:.2f} "
              f"| {r['probes']} / {r['pushed']} | {r['dropped']} | {rss} | {cores} | {r['load']:.1f} |")  # fmt: skip
    print(f"\nbaselines (same run): bare QoS-1 subscriber {raw:,.0f} msg/s, Faust no-op agent "
          f"{noop:,.0f} ev/s (no-op / bare {noop / raw:.2f}x); load average at the start "
          f"{load_start[0]:.1f}, at the end {os.getloadavg()[0]:.1f}")  # fmt: skip
    for what, met, figure in criteria(rows, raw, noop):
        verdict = "not measured" if met is None else ("met" if met else "NOT met")
        print(f"done when: {what}: {verdict} ({figure})", flush=True)


def _plot(rows: list[dict], raw: float, noop: float, path: str) -> None:
    """Four panels against the offered rate (as the broker acknowledged it): publish -> case
    event and -> push p50/p99; sustained ev/s with both baselines; peak RSS per process; the
    cores each process used, stacked up to the machine's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, rate, mem, cpu) = plt.subplots(1, 4, figsize=(20, 4.5))
    xs = [r["offered"] for r in rows]  # what the broker acknowledged, not what was asked
    lat.plot(xs, [r["p50"] for r in rows], "o-", label="case p50")
    lat.plot(xs, [r["p99"] for r in rows], "s-", label="case p99")
    lat.plot(xs, [r["push_p50"] for r in rows], "o--", label="push p50")
    lat.plot(xs, [r["push_p99"] for r in rows], "s--", label="push p99")
    for r in rows:
        lat.annotate(f"asked {r['rate']:,}", (r["offered"], r["p99"]), textcoords="offset points",
                     xytext=(4, 6), fontsize=8)  # fmt: skip
    lat.plot([3200, 5000], [1.0, 2.0], "k*", markersize=10, label="issue 15: case p99 bound")
    lat.set_yscale("log")  # tens of ms when it keeps up, tens of seconds when it queues
    lat.set_ylabel("publish → case event / webhook push (s)")
    lat.set_title("latency")
    rate.plot(xs, [r["ev_s"] for r in rows], "o-", label="pipeline sustained ev/s")
    rate.plot(xs, xs, ":", color="grey", label="offered")
    rate.axhline(raw, color="tab:red", linestyle="--", label=f"bare QoS-1 subscriber {raw:,.0f}")
    rate.axhline(raw / 2, color="tab:red", linestyle=":", label="0.5x bare (issue 15)")
    rate.axhline(noop, color="tab:green", linestyle="--", label=f"Faust no-op agent {noop:,.0f}")
    rate.set_ylabel("events/s")
    rate.set_title("throughput (same run)")
    for name in PROCESSES:
        ys = [r["rss_mib"].get(name, float("nan")) for r in rows]
        if any(y == y for y in ys):
            mem.plot(xs, ys, "o-", label=name)
    mem.set_ylabel("peak RSS during the rate (MiB)")
    mem.set_title("memory")
    labels = [f"{r['rate']:,}" for r in rows]
    bottom = [0.0] * len(rows)
    for name in (*PROCESSES, "others"):
        ys = [r.get("cores", {}).get(name, 0.0) for r in rows]
        cpu.bar(labels, ys, bottom=bottom, label=name)
        bottom = [b + y for b, y in zip(bottom, ys, strict=True)]
    cpu.axhline(os.cpu_count() or 1, color="k", linestyle=":", label="the machine's cores")
    cpu.set_ylabel("cores used during the rate")
    cpu.set_xlabel("asked msg/s")
    cpu.set_title("where the CPU went (others: publishers, bench)")
    cpu.legend(fontsize=7)
    for ax in (lat, rate, mem):
        ax.set_xlabel("offered msg/s (acknowledged by the broker)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("citywatch end to end (one box)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
