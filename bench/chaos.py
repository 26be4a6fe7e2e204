"""Fault injection on the whole pipeline: nothing lost, nothing doubled, the ledger exact (issue 14).

    .venv/bin/python bench/chaos.py [--seeds 1,2,3] [--short] [--devices 40] [--duration 180]
                                    [--faults worker=5,bridge=3,alerts=2,influx=60,kafka=1,mosquitto=1]
                                    [--json FILE]

What runs: the services (``citywatch.services.up`` on the settings' ports), a
``citywatch bridge --event-time``, a ``citywatch worker --simulation``, the
journal archive (``citywatch archive run``, decision 010) and a
``citywatch alerts`` whose every receiver is a webhook to a loopback receiver
in this process -- the processes ``citywatch run`` starts, started the same way
-- while a simulated city (``bench/chaos-scenarios.yaml``, every device
publishing as itself at QoS 1) plays 12 h of city time in ``--duration``
seconds. At seeded random moments of the publishing window it injects:

* ``worker=N``: SIGKILL the worker N times (restarted at once);
* ``bridge=N``: SIGKILL the bridge N times while QoS-1 messages are in flight;
* ``alerts=N``: SIGKILL the alerts service N times;
* ``influx=S``: stop InfluxDB for S seconds (``services.down``/``up``);
* ``kafka=N``: restart the Kafka-protocol broker N times (``services.down``/``up``);
* ``mosquitto=N``: restart Mosquitto N times.

At the end (final watermark, then waiting for the worker's lag to reach 0 and
InfluxDB and the webhook to settle) it prints, and with ``--check`` asserts:

* readings: published and acknowledged by Mosquitto vs in the journal (lost;
  repeated records of one reading are counted, harmless by design);
* the ledger on ``<prefix>.penalties`` vs the journal replayed through the
  detection core, one detector per partition, in the journal's order -- the
  worker's own definition of the right answer (docs/decisions/001) --
  compared by distinct id, content and sum;
* InfluxDB's ``penalty`` and ``case_event`` points vs that ledger and those
  case events, and its telemetry points vs the journal's distinct readings,
  field by field;
* webhook deliveries per ``Idempotency-Key`` (repeats, and keys recorded as sent
  on ``<prefix>.alerts`` but never received), and every opened case pushed at
  least once;
* per fault, how long the pipeline took to move again (the journal's end for
  the bridge and Mosquitto, the worker's committed offset for the worker and
  the broker, InfluxDB's telemetry count for InfluxDB, a delivery for alerts).

``make chaos`` runs three seeds with the full fault list; the test suite runs
``--short`` (tests/pipeline/test_chaos.py). Figures: bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from citywatch import services  # noqa: E402
from citywatch.run import Child, spawn  # noqa: E402
from contract.topics import KafkaTopics  # noqa: E402
from foundation.settings import Settings, load_settings  # noqa: E402

FULL = {"worker": 5, "bridge": 3, "alerts": 2, "influx": 60, "kafka": 1, "mosquitto": 1}
SHORT = {"worker": 2, "bridge": 1, "alerts": 1, "influx": 10, "mosquitto": 1, "kafka": 1}
"""CI's version (seven faults, the broker restart among them: it passed 3 seeds of 3 once the
alerts service read a restarted broker's topics from their start and the bridge kept its last
acknowledgements on disk, decision 010 §10-§11; bench/RESULTS.md, "Issue 14 closed")."""
SCENARIOS = ROOT / "bench" / "chaos-scenarios.yaml"
HOOK_SECRET = "chaos-harness-webhook-secret-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_faults(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, n = part.partition("=")
        if name not in FULL or not n.isdigit():
            raise SystemExit(
                f"--faults {part!r}: expected NAME=N with NAME one of {', '.join(FULL)}"
            )
        out[name] = int(n)
    return out


# ------------------------------------------------------------------ the webhook receiver


class Hook:
    """A webhook receiver on loopback that records every push (aiohttp in its own thread),
    each stamped with ``clock()`` on arrival (``time.time`` to compare with a publish time)."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.port = free_port()
        self.clock = clock
        self.seen: list[tuple[float, str, dict[str, Any]]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _serve(self) -> None:
        from aiohttp import web

        async def receive(request: web.Request) -> web.Response:
            body = await request.read()
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                doc = {}
            self.seen.append((self.clock(), request.headers.get("Idempotency-Key", ""), doc))
            return web.json_response({"ok": True})

        async def start() -> None:
            app = web.Application()
            app.router.add_post("/hook", receive)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._ready.set()

        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)

    def routes_file(self, directory: Path) -> Path:
        """The shipped routing file with every receiver a webhook to here, pushing at once."""
        import yaml

        doc = yaml.safe_load((ROOT / "config" / "routes.yaml").read_text(encoding="utf-8"))
        for r in doc["receivers"]:
            for channel in ("console", "wecom", "dingtalk", "email", "webhook"):
                r.pop(channel, None)
            r["webhook"] = {"url": f"http://127.0.0.1:{self.port}/hook", "secret": HOOK_SECRET}

        def quick(route: dict[str, Any]) -> None:
            route.update(group_wait="0s", group_interval="1s")
            for child in route.get("routes", []):
                quick(child)

        quick(doc["route"])
        path = directory / "routes.yaml"
        path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
        return path


# ------------------------------------------------------------------ the pipeline under test


@dataclass
class Fault:
    at_s: float
    kind: str
    seconds: float = 0.0
    restarted_s: float | None = None
    recovered_s: float | None = None

    def line(self) -> str:
        rec = (
            "-"
            if self.recovered_s is None
            else f"{self.recovered_s - (self.restarted_s or self.at_s):.1f} s"
        )
        extra = f" for {self.seconds:.0f} s" if self.seconds else ""
        return f"{self.at_s:6.1f} s  {self.kind}{extra}: moving again after {rec}"


def plan(faults: dict[str, int], duration_s: float, rng: random.Random) -> list[Fault]:
    """The faults at random moments of the publishing window's middle 10-85 %."""
    out: list[Fault] = []
    for kind, n in faults.items():
        if kind == "influx":
            if n:
                out.append(Fault(rng.uniform(0.1, 0.5) * duration_s, kind, float(n)))
            continue
        out.extend(Fault(rng.uniform(0.1, 0.85) * duration_s, kind) for _ in range(n))
    return sorted(out, key=lambda f: f.at_s)


class Progress:
    """What moves when the pipeline works, sampled once a second (for recovery times).

    ``count_every``: seconds between counts of the telemetry in InfluxDB, a ``count(*)`` over
    everything written so far: once a second it is cheap for a fault run's minutes and would
    be most of InfluxDB's CPU by the end of the soak's hour. ``report_every``: a progress line
    (journal, committed, lag, RSS) that often, 0 for none."""

    def __init__(self, settings: Settings, hook: Hook, pids: Any = dict, count_every: int = 1,
                 report_every: int = 0, log: Any = print) -> None:  # fmt: skip
        self.settings, self.hook, self.pids = settings, hook, pids
        self.count_every, self.report_every, self.log = count_every, report_every, log
        self.journal_end = 0
        self.committed = 0
        self.sinks_behind = 0
        """Case events and ledger entries on Kafka the worker's InfluxDB sinks have not committed."""
        self.telemetry = 0
        self.max_lag = 0
        self.rss: dict[str, list[float]] = {}
        """process name -> RSS samples (MiB), every RSS_EVERY_S."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        n = 0
        t0 = next_report = time.monotonic()  # a round takes more than its second under load
        while not self._stop.wait(1.0):
            if n % RSS_EVERY_S == 0:
                for name, pid in self.pids().items():
                    mib = rss_mib(pid)
                    if mib is not None:
                        self.rss.setdefault(name, []).append(mib)
            n += 1
            try:
                end, committed, behind = asyncio.run(journal_position(self.settings))
            except Exception:  # noqa: BLE001 - the broker is away: not drained, whatever it was
                self.committed = -1
            else:
                self.journal_end, self.committed, self.sinks_behind = end, committed, behind
                self.max_lag = max(self.max_lag, end - committed)
            if n % self.count_every == 0:
                with contextlib.suppress(Exception):
                    self.telemetry = telemetry_total(self.settings)
            if self.report_every and time.monotonic() >= next_report:
                next_report += self.report_every
                rss = " ".join(f"{k} {v[-1]:.0f}" for k, v in sorted(self.rss.items()) if v)
                self.log(f"  +{time.monotonic() - t0:.0f} s: journal {self.journal_end:,}, committed {self.committed:,} "
                         f"(lag {self.journal_end - self.committed:,}, max {self.max_lag:,}), "
                         f"{self.telemetry:,} field values in InfluxDB; RSS MiB {rss}; "
                         f"load {os.getloadavg()[0]:.1f}")  # fmt: skip

    def rss_summary(self) -> dict[str, tuple[float, float, float]]:
        return {k: (v[0], v[-1], max(v)) for k, v in sorted(self.rss.items()) if v}

    def value(self, kind: str) -> int:
        if kind in ("bridge", "mosquitto"):
            return self.journal_end
        if kind in ("worker", "kafka"):
            return self.committed
        if kind == "influx":
            return self.telemetry
        return len(self.hook.seen)


RSS_EVERY_S = 5


def rss_mib(pid: int) -> float | None:
    """A process's resident set from /proc (None when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def service_pids(settings: Settings) -> dict[str, int]:
    """The services citywatch started (their pid files in the state directory)."""
    out = {}
    for name in ("mosquitto", "kafka", "influxdb"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            info = orjson.loads((Path(settings.paths.state_dir) / name / "pid.json").read_bytes())
            out[name] = int(info["pid"])
    return out


RSS_BOUND = (1.25, 32.0)
"""The soak's bound: a process's RSS at the end <= 1.25 x its RSS once warm (a tenth of the
run in) + 32 MiB. The broker (memory storage holds the journal) and InfluxDB are reported only."""


def rss_growth(samples: dict[str, list[float]]) -> list[str]:
    out = []
    factor, slack = RSS_BOUND
    for name in ("worker", "bridge", "alerts", "mosquitto"):
        v = samples.get(name, [])
        if len(v) >= 10:
            warm, end = v[len(v) // 10], v[-1]
            if end > warm * factor + slack:
                out.append(
                    f"{name} RSS grew {warm:.0f} -> {end:.0f} MiB (bound {factor} x + {slack:.0f})"
                )
    return out


async def journal_position(settings: Settings) -> tuple[int, int, int]:
    """(records in the journal, records the worker committed, records of the cases and
    penalties topics its InfluxDB sinks have not committed yet), summed over partitions."""
    from aiokafka import TopicPartition

    from bus.kafka import group_positions, partition_ends

    k = settings.kafka
    topics = KafkaTopics(k.topic_prefix)
    tps = [TopicPartition(topics.telemetry, p) for p in range(k.partitions)]
    outs = [
        TopicPartition(t, p) for t in (topics.cases, topics.penalties) for p in range(k.partitions)
    ]
    ends = await partition_ends(k, tps + outs)
    committed = await group_positions(k, f"{k.topic_prefix}-worker", tps + outs)
    sinks_behind = sum(max(0, ends[tp] - (committed[tp] or 0)) for tp in outs)
    return sum(ends[tp] for tp in tps), sum(committed[tp] or 0 for tp in tps), sinks_behind


def telemetry_total(settings: Settings) -> int:
    from store.identity import as_role
    from store.influxql import query

    rows = query(
        as_role(settings, "reader"), None, "SELECT count(*) FROM dust, manhole, streetlight"
    )
    return sum(int(v) for r in rows for k, v in r.items() if k.startswith("count_") and v)


class Pipeline:
    """The three citywatch processes, restarted the way an operator's supervisor would."""

    def __init__(self, settings: Settings, logdir: Path, routes: Path) -> None:
        self.settings, self.logdir = settings, logdir
        self.metrics_port = free_port()
        self.args = {
            "worker": ["worker", "--simulation", "--session-timeout", "3"],
            "bridge": ["bridge", "--event-time", "--metrics-port", str(self.metrics_port)],
            "archive": ["archive", "run"],  # what a restarted in-memory broker is rebuilt from (decision 010)
            "alerts": ["alerts", "--routes", str(routes), "--state-dir", str(logdir / "alerts"),
                       "--listen", f"127.0.0.1:{free_port()}"],
        }  # fmt: skip
        self.children: dict[str, Child] = {}
        self.starts: Counter[str] = Counter()

    def start(self, name: str) -> None:
        self.starts[name] += 1
        log_name = f"{name}-{self.starts[name]}"
        self.children[name] = spawn(log_name, self.args[name], self.settings, self.logdir)

    def kill(self, name: str) -> None:
        child = self.children[name]
        if child.alive():
            os.kill(child.proc.pid, signal.SIGKILL)
            child.proc.wait()

    def stop(self) -> None:
        for child in self.children.values():
            child.stop()

    def logs(self, name: str) -> str:
        return "".join(
            (self.logdir / f"{name}-{i}.log").read_text(errors="replace")
            for i in range(1, self.starts[name] + 1)
            if (self.logdir / f"{name}-{i}.log").exists()
        )


# ------------------------------------------------------------------ one run


@dataclass
class Outcome:
    seed: int
    published: int = 0
    readings: int = 0
    journal_readings: int = 0
    lost: int = 0
    repeated: int = 0
    ledger_expected: int = 0
    ledger_live: int = 0
    ledger_missing: int = 0
    ledger_extra: int = 0
    ledger_differing: int = 0
    yuan_expected: int = 0
    yuan_live: int = 0
    influx_penalty_diff: int = 0
    influx_case_events_missing: int = 0
    telemetry_missing: int = 0
    pushes: int = 0
    push_repeats: int = 0
    pushes_missing: int = 0
    cases_never_pushed: int = 0
    lag_at_end: int = 0
    max_lag: int = 0
    rss_growth: list[str] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    rss_mb: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    """process -> (RSS at the start, at the end, the highest seen), MiB."""
    wall_s: float = 0.0
    tracebacks: dict[str, int] = field(default_factory=dict)
    detail: list[str] = field(default_factory=list)
    """The first readings lost, ledger entries and case events InfluxDB lacks (or has beyond
    the ledger): what a failed run leaves to look for in the logs."""

    def failures(self) -> list[str]:
        out = []
        for name in ("lag_at_end", "lost", "ledger_missing", "ledger_extra", "ledger_differing",
                     "influx_penalty_diff", "influx_case_events_missing", "telemetry_missing",
                     "pushes_missing", "cases_never_pushed"):  # fmt: skip
            if getattr(self, name):
                out.append(f"{name} {getattr(self, name)}")
        out.extend(self.rss_growth)
        if self.yuan_live != self.yuan_expected:
            out.append(f"ledger sum {self.yuan_live:,} instead of {self.yuan_expected:,} yuan")
        if self.ledger_expected == 0:
            out.append("the workload booked no ledger entry: nothing was tested")
        return out


def run_once(base: Settings, seed: int, faults: dict[str, int], devices: int,
             duration_s: float, log: Any = print, rate: float | None = None) -> Outcome:  # fmt: skip
    """One seeded day under ``faults``; ``rate``: publish at this many msgs/s for
    ``duration_s`` instead (the soak: the city's steady load, sim time running on)."""
    from citywatch.devices import retire, simulated_identities
    from citywatch.run import _final_watermark
    from sim.publish import run_publisher
    from sim.simulator import Simulation, build_city, load_scenario_file, split_devices

    t_start = time.monotonic()
    tag = f"chaos{seed}-{uuid.uuid4().hex[:6]}"
    workdir = Path(tempfile.mkdtemp(prefix=f"citywatch-{tag}-"))
    rng = random.Random(seed)
    scen = load_scenario_file(str(SCENARIOS))
    city = build_city(seed, *split_devices(devices), id_tag=f"C{seed}")
    registry = workdir / "registry.csv"
    city.write_registry(registry)
    settings = (
        base.replace("paths", registry=str(registry))
        .replace("kafka", topic_prefix=f"cw-{tag}")
        .replace("influx", database=f"cw_{tag.replace('-', '_')}")
        .replace("mqtt", client_id=tag, shared_group=tag, session_expiry_s=300)
    )
    run_for = scen.run_for_ms or 12 * 3_600_000
    start_ms = (int(time.time() * 1000) - 10 * 86_400_000) // 3_600_000 * 3_600_000
    end_ms = start_ms + run_for
    speed = run_for / 1000 / duration_s
    hook = Hook()
    routes = hook.routes_file(workdir)
    settings, credentials = simulated_identities(settings, city.registry(), f"chaos:{tag}")
    from bus.kafka import ensure_topics_for

    asyncio.run(ensure_topics_for(settings.kafka))
    pipeline = Pipeline(settings, workdir, routes)
    outcome = Outcome(seed)
    published = Spool(workdir / "published.bin")
    progress = Progress(
        settings, hook,
        lambda: service_pids(settings) | {n: c.proc.pid for n, c in pipeline.children.items() if c.alive()},
        count_every=30 if rate and not faults else 1, report_every=60 if rate else 0, log=log,
    )  # fmt: skip
    try:
        for name in ("archive", "worker", "bridge", "alerts"):
            pipeline.start(name)
        wait(lambda: "MQTT connected" in pipeline.logs("bridge"), 60, "the bridge to connect")
        sim = Simulation(city, scen.scenarios, seed=seed, start_ms=start_ms, speed=speed,
                         garbage_share=scen.garbage_share or 0.0)  # fmt: skip

        def recorded() -> Any:
            for ev in sim.events(None if rate else end_ms):
                published.append(ev)
                yield ev

        stats: dict[str, Any] = {}
        m = settings.mqtt

        def publish() -> None:
            stats["final"] = run_publisher(
                recorded(), m.host, m.port, f"chaos-sim-{tag}", speed, start_ms=start_ms,
                credentials=credentials, drain_timeout_s=120.0, rate=rate,
                duration_s=duration_s if rate else None,
            )  # fmt: skip

        publisher = threading.Thread(target=publish, daemon=True)
        progress.start()
        t0 = time.monotonic()
        publisher.start()
        schedule = plan(faults, duration_s, rng)
        log(f"seed {seed}: {len(city.devices)} devices, {run_for / 3_600_000:.0f} h of city time "
            f"in {duration_s:.0f} s; faults: {', '.join(f'{f.kind}@{f.at_s:.0f}s' for f in schedule) or 'none'}")  # fmt: skip
        for fault in schedule:
            while time.monotonic() - t0 < fault.at_s:
                time.sleep(0.1)
            inject(fault, pipeline, settings, progress, t0, log)
        publisher.join()
        # the publisher takes one event past its deadline and stops before sending it
        published.truncate(stats["final"].published)
        if stats["final"].acked < stats["final"].published:
            log(
                f"seed {seed}: {stats['final'].published - stats['final'].acked} messages never acknowledged by Mosquitto"
            )
        log(f"seed {seed}: published {len(published):,} messages; draining")
        last = published.last()
        asyncio.run(_final_watermark(settings, last[0] if rate and last else end_ms))
        outcome.lag_at_end = settle(settings, pipeline, progress, hook, log)
        if os.environ.get("CHAOS_HOLD"):
            log(
                f"holding {os.environ['CHAOS_HOLD']} s: journal {progress.journal_end} committed {progress.committed}"
            )
            time.sleep(float(os.environ["CHAOS_HOLD"]))
            log(f"after: journal {progress.journal_end} committed {progress.committed}")
        outcome.rss_mb = progress.rss_summary()
        outcome.max_lag = progress.max_lag
        if rate:  # the soak: citywatch's own processes stay flat once warm
            outcome.rss_growth = rss_growth(progress.rss)
        for fault in schedule:
            outcome.faults.append(fault.line())
        verify(settings, city, published, hook, outcome,
               wall_s=lambda due: (due - start_ms) / speed / 1000)  # fmt: skip
        for name in ("archive", "worker", "bridge", "alerts"):
            n = pipeline.logs(name).count("Traceback")
            if n:
                outcome.tracebacks[name] = n
    finally:
        published.close()
        progress.stop()
        pipeline.stop()
        hook.stop()
        with contextlib.suppress(Exception):
            retire(settings, f"chaos:{tag}")
    outcome.wall_s = time.monotonic() - t_start
    return outcome


class Spool:
    """What the publisher sent, on disk: ``(due, topic, payload)`` in the order published.

    Kept in a list, each event cost the harness ~4 KB of RSS (its three small objects pin a
    memory pool among the simulation's garbage): 10.6 GiB 25 minutes into the soak's hour.
    A file costs what it holds. ``truncate`` keeps the first ``n``; iteration reads them back.
    """

    _HEAD = struct.Struct("<qHI")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("wb")
        self._n = self._kept = 0
        self._last: tuple[int, str, bytes] | None = None
        self._prev: tuple[int, str, bytes] | None = None

    def append(self, ev: tuple[int, str, bytes]) -> None:
        due, topic, payload = ev
        t = topic.encode()
        self._file.write(self._HEAD.pack(due, len(t), len(payload)) + t + payload)
        self._n += 1
        self._kept = self._n
        self._prev, self._last = self._last, ev

    def truncate(self, n: int) -> None:
        """Only the first ``n`` count (the publisher took one event past its deadline)."""
        if n >= self._kept:
            return
        if n == self._kept - 1 == self._n - 1:  # the usual case: one event past the deadline
            self._last = self._prev
        else:
            self._kept, last = n, None
            for last in self:  # noqa: B007 (the last one read is wanted)
                pass
            self._last = last
        self._kept = n

    def close(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)

    def __len__(self) -> int:
        return self._kept

    def last(self) -> tuple[int, str, bytes] | None:
        return self._last

    def __iter__(self) -> Any:
        self._file.flush()
        head = self._HEAD
        with self.path.open("rb") as f:
            for _ in range(self._kept):
                due, tn, pn = head.unpack(f.read(head.size))
                yield due, f.read(tn).decode(), f.read(pn)


def wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"chaos: timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def inject(fault: Fault, pipeline: Pipeline, settings: Settings, progress: Progress,
           t0: float, log: Any) -> None:  # fmt: skip
    before = progress.value(fault.kind)
    quiet = lambda line: None  # noqa: E731
    if fault.kind in ("worker", "bridge", "alerts"):
        pipeline.kill(fault.kind)
        pipeline.start(fault.kind)
    elif fault.kind == "influx":
        services.down(settings, log=quiet, only={"influxdb"})
        time.sleep(fault.seconds)
        services.up(settings, log=quiet, only={"influxdb"})
    else:
        services.down(settings, log=quiet, only={fault.kind})
        services.up(settings, log=quiet, only={fault.kind})
    fault.restarted_s = time.monotonic() - t0
    log(
        f"  {fault.restarted_s:6.1f} s: {fault.kind} {'stopped and started' if fault.kind in ('influx', 'kafka', 'mosquitto') else 'SIGKILLed and restarted'}"
    )

    def watch() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if progress.value(fault.kind) > before:
                fault.recovered_s = time.monotonic() - t0
                return
            time.sleep(0.25)

    threading.Thread(target=watch, daemon=True).start()


def settle(settings: Settings, pipeline: Pipeline, progress: Progress, hook: Hook,
           log: Any, timeout_s: float = 300.0) -> int:  # fmt: skip
    """Wait until the worker committed the whole journal and InfluxDB and the webhook stopped moving."""
    deadline = time.monotonic() + timeout_s
    last: tuple[int, int, int] | None = None
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(2.0)
        state = (progress.journal_end, progress.telemetry, len(hook.seen))
        drained = progress.committed >= progress.journal_end > 0 and not progress.sinks_behind
        if state != last or not drained:
            last, stable_since = state, time.monotonic()
        elif time.monotonic() - stable_since > 8:
            return 0
    log(f"chaos: the pipeline did not settle within {timeout_s:.0f} s "
        f"(journal {progress.journal_end}, committed {progress.committed}, "
        f"sinks {progress.sinks_behind} behind)")  # fmt: skip
    return max(0, progress.journal_end - progress.committed)


# ------------------------------------------------------------------ the checks


async def read_all(settings: Settings, topic: str) -> list[tuple[int, bytes | None]]:
    """Every record of ``topic`` as (partition, value), in partition order."""
    return [(p, value) for p, _o, _h, value in await read_records(settings, topic)]


async def read_records(settings: Settings, topic: str) -> list[tuple[int, int, Any, bytes | None]]:
    """Every record of ``topic`` as (partition, offset, headers, value), in partition order."""

    from bus.kafka import consumer_for, topic_partitions

    reader = consumer_for(settings.kafka, group_id=None, enable_auto_commit=False)
    await reader.start()
    try:
        tps = await topic_partitions(reader, [topic])
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        out: list[tuple[int, int, Any, bytes | None]] = []
        idle = 0
        while idle < 3:
            batch = await reader.getmany(timeout_ms=500)
            if not batch:
                idle += 1
                continue
            idle = 0
            for tp, records in sorted(batch.items(), key=lambda kv: kv[0].partition):
                out.extend((tp.partition, r.offset, r.headers, r.value) for r in records)
        return out
    finally:
        await reader.stop()


def verify(settings: Settings, city: Any, published: Any, hook: Hook,
           outcome: Outcome, wall_s: Any = lambda due: due) -> None:  # fmt: skip
    """``wall_s``: a publish's sim time -> seconds into the publishing window (fault times)."""
    from contract.cases import CaseEvent, LedgerEntry, OfficerAction
    from contract.journal import JournalError, decode
    from contract.reading import Reading
    from ingest.validate import parse_message
    from registry.devices import load_registry
    from store.identity import as_role
    from store.read import case_events, ledger_entries
    from streams.detector import Detector
    from streams.restored import in_restore_order, read_marks
    from streams.rules import load_rules

    registry = load_registry(settings.paths.registry)
    rules = load_rules(settings.paths.rules)
    topics = KafkaTopics(settings.kafka.topic_prefix)
    due_of: dict[tuple[str, int], Any] = {}  # each reading sent: when it was published
    for due, topic, payload in published:
        r = parse_message(topic, payload, due, registry)
        if isinstance(r, Reading):
            due_of[(r.device, r.ts)] = due
    sent = due_of.keys()
    outcome.published, outcome.readings = len(published), len(sent)

    # the journal in the order the worker takes it: after a broker restart, below each
    # partition's restore mark the restored records first (streams.restored, decision 010)
    journal = asyncio.run(read_records(settings, topics.telemetry))
    marks = asyncio.run(read_marks(settings.kafka, {p for p, *_ in journal}))
    # lean enough for the hour's soak (~5.8M readings): the raw values are kept and decoded
    # again by the replay below, and the fields counted, not collected (13 GiB for 2M before)
    in_partition: dict[int, list[tuple[int, Any, bytes | None]]] = {}
    seen: Counter[tuple[str, int]] = Counter()
    fields: Counter[tuple[str, str]] = Counter()
    for partition, offset, headers, value in journal:
        try:
            item = decode(value)
        except JournalError:
            continue
        in_partition.setdefault(partition, []).append((offset, headers, value))
        if isinstance(item, Reading):
            key = (item.device, item.ts)
            seen[key] += 1
            if seen[key] == 1:  # a twin repeats its reading's fields, and InfluxDB keeps one
                for name, v in item.fields.items():
                    if v is not None:
                        fields[(item.kind, name)] += 1
    del journal
    outcome.journal_readings = len(seen)
    outcome.lost = len(sent - seen.keys())
    outcome.detail = [
        f"reading of {d} at ts {ts} lost (published {wall_s(due_of[(d, ts)]):.1f} s in)"
        for d, ts in sorted(sent - seen.keys())[:10]
    ]
    outcome.repeated = sum(n - 1 for n in seen.values())
    del seen, sent, due_of

    by_partition = {p: in_restore_order(rs, marks.get(p)) for p, rs in in_partition.items()}
    del in_partition
    expected: dict[str, dict[str, Any]] = {}
    expected_events: set[bytes] = set()
    for items in by_partition.values():
        det = Detector(rules, registry)
        for value in items:
            item = decode(value)
            if isinstance(item, Reading):
                outs = det.on_reading(item)
            elif isinstance(item, OfficerAction):
                outs = det.on_action(item)
            else:
                outs = det.on_watermark(item.at)
            for o in outs:
                if isinstance(o, LedgerEntry):
                    expected[o.id] = o.to_dict()
                elif isinstance(o, CaseEvent):
                    expected_events.add(orjson.dumps(o.to_dict(), option=orjson.OPT_SORT_KEYS))
    live: dict[str, dict[str, Any]] = {}
    for _, value in asyncio.run(read_all(settings, topics.penalties)):
        rec = orjson.loads(value or b"null")
        if isinstance(rec, dict):
            live[rec["id"]] = rec
    outcome.ledger_expected, outcome.ledger_live = len(expected), len(live)
    outcome.ledger_missing = len(expected.keys() - live.keys())
    outcome.ledger_extra = len(live.keys() - expected.keys())
    outcome.ledger_differing = sum(
        1 for i in expected.keys() & live.keys() if expected[i] != live[i]
    )
    outcome.yuan_expected = sum(e["amount_yuan"] for e in expected.values())
    outcome.yuan_live = sum(e["amount_yuan"] for e in live.values())

    reader = as_role(settings, "reader")
    stored = {e.id: {"amount_yuan": e.amount_yuan} for e in ledger_entries(reader)}
    outcome.influx_penalty_diff = len(stored.keys() ^ expected.keys()) + sum(
        1
        for i in stored.keys() & expected.keys()
        if stored[i]["amount_yuan"] != expected[i]["amount_yuan"]
    )
    stored_events = {(e.case_id, e.at, e.state) for e in case_events(reader)}
    wanted_events = {
        (d["case_id"], d["at"], d["state"]) for d in map(orjson.loads, expected_events)
    }
    outcome.influx_case_events_missing = len(wanted_events - stored_events)
    outcome.detail += [
        *(f"penalty {i} {'not in InfluxDB' if i in expected else 'only in InfluxDB'}"
          for i in sorted(stored.keys() ^ expected.keys())),
        *(f"case event {c} {st} at {at} not in InfluxDB"
          for c, at, st in sorted(wanted_events - stored_events)),
    ][:20]  # fmt: skip

    from store.influxql import query

    missing = 0
    for kind in ("dust", "manhole", "streetlight"):
        rows = query(reader, None, f"SELECT count(*) FROM {kind}")
        counts = {
            k.removeprefix("count_"): int(v)
            for r in rows
            for k, v in r.items()
            if k.startswith("count_")
        }
        for (k, name), n in fields.items():
            if k == kind and name in counts:
                missing += max(0, n - counts[name])
    outcome.telemetry_missing = missing

    keys = Counter(key for _, key, _ in hook.seen)
    outcome.pushes = len(keys)
    outcome.push_repeats = sum(n - 1 for n in keys.values())
    recorded_sent = set()
    for _, value in asyncio.run(read_all(settings, topics.alerts)):
        rec = orjson.loads(value or b"null")
        if (
            isinstance(rec, dict)
            and rec.get("status") == "delivered"
            and rec.get("channel") == "webhook"
        ):
            recorded_sent.add(rec.get("message"))
    outcome.pushes_missing = len({k for k in recorded_sent if k} - set(keys))
    pushed_cases: set[str] = set()
    for _, _, doc in hook.seen:
        for item in doc.get("cases", []) if isinstance(doc, dict) else []:
            if isinstance(item, dict) and item.get("case_id"):
                pushed_cases.add(item["case_id"])
    opened = {orjson.loads(e)["case_id"] for e in expected_events
              if orjson.loads(e)["state"] not in ("planned",)}  # fmt: skip
    outcome.cases_never_pushed = len(opened - pushed_cases)
    outcome.detail += [f"case {c} never pushed" for c in sorted(opened - pushed_cases)[:10]]


# ------------------------------------------------------------------ main


def report(outcomes: list[Outcome]) -> str:
    rows = [("seed", "readings", "lost", "repeated", "ledger", "missing/extra/differing", "yuan live / replay",
             "pushes", "repeats", "never pushed", "wall s")]  # fmt: skip
    for o in outcomes:
        rows.append((
            str(o.seed), f"{o.readings:,}", str(o.lost), str(o.repeated), str(o.ledger_expected),
            f"{o.ledger_missing}/{o.ledger_extra}/{o.ledger_differing}",
            f"{o.yuan_live:,} / {o.yuan_expected:,}", str(o.pushes), str(o.push_repeats),
            str(o.cases_never_pushed), f"{o.wall_s:.0f}",
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    for o in outcomes:
        lines.append(f"seed {o.seed} recovery:")
        lines.extend(f"  {f}" for f in o.faults)
        if o.rss_mb:
            lines.append(
                f"seed {o.seed} RSS MiB (start -> end, max); journal lag at most {o.max_lag:,} records:"
            )
            lines.extend(
                f"  {k:10s} {a:7.1f} -> {b:7.1f}  ({c:.1f})" for k, (a, b, c) in o.rss_mb.items()
            )
        if o.tracebacks:
            lines.append(f"  tracebacks in logs: {o.tracebacks}")
        lines.extend(f"  {d}" for d in o.detail)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="1", help="comma-separated seeds, one run each (default 1)")
    p.add_argument("--short", action="store_true", help="CI's version: fewer faults, a shorter day")
    p.add_argument(
        "--faults", default=None, help="NAME=N,... (default: the full list, or --short's)"
    )
    p.add_argument("--devices", type=int, default=None, help="city size (default 40, --short 24)")
    p.add_argument(
        "--duration", type=float, default=None, help="publishing seconds (default 180, --short 60)"
    )
    p.add_argument(
        "--soak",
        action="store_true",
        help="the soak: no faults, a city of 3,000 devices at --rate for --duration (default 1 h)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="msgs/s (the soak's default: 1,600, the city's steady load)",
    )
    p.add_argument("--json", default=None, help="also write the outcomes as JSON to this file")
    args = p.parse_args(argv)
    faults = (
        parse_faults(args.faults)
        if args.faults is not None
        else ({} if args.soak else SHORT if args.short else FULL)
    )
    devices = args.devices or (3000 if args.soak else 24 if args.short else 40)
    duration = args.duration or (3600.0 if args.soak else 60.0 if args.short else 180.0)
    rate = args.rate or (1600.0 if args.soak else None)
    env = {
        k: v
        for k, v in os.environ.items()
        if k.startswith("CITYWATCH_") and k != "CITYWATCH_CONFIG"
    }
    base = load_settings(ROOT / "tests" / "citywatch.test.toml", env=env)
    base = base.replace("paths", state_dir=str(ROOT / ".state"))
    if "CITYWATCH_MQTT_AUTH_DIR" not in env:
        base = base.replace("mqtt", auth_dir=str(ROOT / ".state" / "mqtt"))
    statuses = services.up(base, log=lambda line: print(f"  {line}"))
    started = {s.name for s in statuses if s.detail == "started"}
    outcomes = []
    try:
        for seed in (int(s) for s in args.seeds.split(",")):
            outcomes.append(run_once(base, seed, faults, devices, duration, rate=rate))
            print(report(outcomes[-1:]), flush=True)
    finally:
        if started:
            services.down(base, log=lambda line: print(f"  {line}"), only=started)
    print()
    print(report(outcomes))
    if args.json:
        Path(args.json).write_text(
            orjson.dumps([vars(o) for o in outcomes], option=orjson.OPT_INDENT_2).decode()
        )
    failed = [(o.seed, o.failures()) for o in outcomes if o.failures()]
    for seed, why in failed:
        print(f"seed {seed}: FAILED: {'; '.join(why)}")
    if not failed:
        print("every seed: 0 lost, ledger exact, InfluxDB complete, every alert delivered")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
