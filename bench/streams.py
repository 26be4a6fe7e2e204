"""Events per second of the detection core and of the Faust worker, against a Faust no-op ceiling measured in the same run.

    .venv/bin/python bench/streams.py [--devices 3000] [--hours 3] [--records 100000]
                                      [--profile-worker FILE [--profile-gil]] [--trucks 10000]
                                      [--zones 64] [--core-only | --faust-only]

Rows, all over the same simulated city (``build_city``, default scenarios,
absolute dust mode of ``config/rules.yaml``):

1. core: ``streams.detector.Detector.on_reading`` over pre-built ``Reading``s
   in memory (a few sim hours of every device; parsing is done up front and
   not timed); best of three passes, each on a fresh detector;
1b. core, vehicle mix (issue 18): ``--trucks`` trucks (default 10,000) reporting every 10 s
   for 10 sim minutes, driving from one of 20 loading sites toward one of 5 disposal sites,
   a tenth of them speeding, a tenth without a permit, judged against ``--zones`` speed and
   control zones (default 64: the STRtree path) and each permit's route corridor; its rate
   beside row 1's says what the geometry costs per reading (``--core-only`` stops here);
2. core + what the worker adds per event outside Faust: the strict decoding
   of the journal record (``streams.intake.decode``, which quarantines what it
   cannot read), and the checkpoints' state export (``take_dirty`` per event,
   ``export_device``/``export_clock`` of the changed devices every
   ``CHECKPOINT_EVERY`` events) -- still in memory;
3. Faust no-op agent: a tiny ``faust.App`` with the worker's broker settings
   (at_least_once, memory store, 3 s session/rebalance timeouts, linger 5 ms)
   whose one agent iterates ``stream.events()`` and does nothing; a subprocess
   (``bench/streams.py --noop-agent PREFIX N``): the ceiling of Faust on tansu;
4. the worker end to end: ``citywatch worker --simulation`` (detection, tables
   with changelogs, case/penalty outputs, each reading's telemetry written to InfluxDB from the
   same pass, its journal offsets committed only once that is done) as a
   subprocess.

Rows 3 and 4 consume the same ``--records`` journal records (the first ones of
the same simulation) from one fresh topic, each under its own consumer group,
and are measured alike: the parent polls the group's committed offset
(``AIOKafkaConsumer.committed``; tansu's admin OffsetFetch is broken) and
times from the first commit to the commit reaching the end of the topic;
rate = records committed in that span / its duration. Start-up (process
start to first commit) and the process's CPU use over the span (all threads,
from /proc; 100 % = one core) are printed apart; ``--profile-worker`` records
the worker with py-spy (``pip install py-spy``); ``--faust-only`` runs rows 3 and 4
alone (the in-memory rows take half a minute and share nothing with them). Services are brought up with
``citywatch.services.up`` and only what this run started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from contract.clock import HOUR_MS  # noqa: E402
from contract.topics import KafkaTopics  # noqa: E402

RULES = ROOT / "config" / "rules.yaml"
SCENARIOS = ROOT / "config" / "scenarios" / "default.yaml"
SESSION_TIMEOUT_S = 3.0


# --------------------------------------------------------------------------- the no-op agent (subprocess mode)


def noop_agent(prefix: str, n: int, bootstrap: str, datadir: str) -> None:
    """A Faust app with the worker's broker settings and one agent that does nothing.

    Prints one JSON line when it has seen ``n`` events (its in-process view,
    a cross-check of the commit-based figure), then runs until SIGTERM.
    """
    import faust

    from streams.worker import faust_config

    app = faust.App(
        f"{prefix}-noop", **faust_config(bootstrap, 1, SESSION_TIMEOUT_S, Path(datadir))
    )
    topic = app.topic(KafkaTopics(prefix).telemetry, key_serializer="raw", value_serializer="raw")
    seen = {"n": 0, "first": 0.0}

    @app.agent(topic, name="noop")
    async def noop(stream: Any) -> None:
        async for _event in stream.events():
            seen["n"] += 1
            if seen["n"] == 1:
                seen["first"] = time.perf_counter()
            elif seen["n"] == n:
                dt = time.perf_counter() - seen["first"]
                # fd 1, not print(): the Faust worker redirects sys.stdout into its logger
                os.write(1, orjson.dumps({"events": n, "seconds": dt}) + b"\n")

    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


# --------------------------------------------------------------------------- input


def build_input(devices: int, hours: float) -> tuple[Any, list[Any], int]:
    """(city, readings in arrival order, rejected count) of ``hours`` sim hours."""
    from contract.reading import Reading
    from ingest.validate import parse_message
    from sim.city import build_city, split_devices
    from sim.scenarios import load_scenario_file
    from sim.simulator import DEFAULT_START_MS, Simulation

    sf = load_scenario_file(SCENARIOS)
    city = build_city(7, *split_devices(devices), fleet=True)
    sim = Simulation(city, sf.scenarios, seed=7)
    registry = city.registry()
    readings: list[Reading] = []
    rejected = 0
    for due, topic, payload in sim.events(DEFAULT_START_MS + int(hours * HOUR_MS)):
        r = parse_message(topic, payload, due, registry)
        if isinstance(r, Reading):
            readings.append(r)
        else:
            rejected += 1
    return city, readings, rejected


def build_vehicle_input(trucks: int, zones: int, minutes: int = 10) -> tuple[Any, list[Any]]:
    """(registry with a fleet, readings in arrival order) of the vehicle-heavy mix (row 1b)."""
    import random

    from contract.reading import Reading
    from registry.devices import Device, Registry
    from registry.fleet import Fleet, Permit, Vehicle, parse_fleet
    from sim.simulator import DEFAULT_START_MS

    rnd = random.Random(7)
    lon0, lat0 = 113.50, 34.65

    def square(lon: float, lat: float, d: float) -> str:
        return f"[[{lon}, {lat}], [{lon + d}, {lat}], [{lon + d}, {lat + d}], [{lon}, {lat + d}]]"

    loading = [(lon0 + 0.05 + 0.02 * (i % 10), lat0 + 0.05 + 0.1 * (i // 10)) for i in range(20)]
    disposal = [(lon0 + 0.45, lat0 + 0.04 * i) for i in range(5)]
    text = ["sites:"]
    text += [f"  - {{id: L{i}, kind: loading, district: d{i % 10}, polygon: {square(x, y, 0.004)}}}"
             for i, (x, y) in enumerate(loading)]  # fmt: skip
    text += [f"  - {{id: D{i}, kind: disposal, district: zhongmou, polygon: {square(x, y, 0.01)}}}"
             for i, (x, y) in enumerate(disposal)]  # fmt: skip
    text += ["routes:"]
    text += [f"  - {{id: R{i}, width_m: 200, line: [[{x + 0.002}, {y + 0.002}], "
             f"[{disposal[i % 5][0] + 0.005}, {disposal[i % 5][1] + 0.005}]]}}"
             for i, (x, y) in enumerate(loading)]  # fmt: skip
    text += ["zones:", f"  - {{id: ring4, control: true, speed_limit_kmh: 40, polygon: "
             f"{square(lon0 + 0.03, lat0 + 0.03, 0.25)}}}"]  # fmt: skip
    side = max(1, int((zones - 1) ** 0.5))
    text += [f"  - {{id: z{i}, speed_limit_kmh: {30 + 5 * (i % 5)}, polygon: "
             f"{square(lon0 + 0.5 * (i % side) / side, lat0 + 0.5 * (i // side) / side, 0.5 / side)}}}"
             for i in range(zones - 1)]  # fmt: skip
    places = parse_fleet("\n".join(text) + "\n", "<bench fleet>")
    devices, vehicles = [], []
    for i in range(trucks):
        tid = f"T-{i:05d}"
        devices.append(Device(tid, "vehicle", f"d{i % 10}", "G", f"company{i % 50}", None, "",
                              None, None, None, None, None))  # fmt: skip
        permit = (
            None
            if i % 10 == 9
            else Permit(f"P{i}", "2025-01-01", "2030-12-31", (22 * 60, 6 * 60), (f"R{i % 20}",), ())
        )
        vehicles.append(
            Vehicle(f"豫A{i:05d}", tid, f"company{i % 50}", f"d{i % 10}", 3, None, permit)
        )
    fleet = Fleet(vehicles, places.sites.values(), places.routes.values(), places.zones.values(),
                  places.origin)  # fmt: skip
    registry = Registry(devices, fleet=fleet)
    start = DEFAULT_START_MS + 15 * HOUR_MS  # 23:00 Beijing: inside the permits' hours
    per_truck = []
    for i in range(trucks):
        x, y = loading[i % 20]
        tx, ty = disposal[i % 5]
        speed = 70.0 if i % 10 == 3 else rnd.uniform(25, 38)
        per_truck.append((f"T-{i:05d}", x + 0.002, y + 0.002, tx, ty, speed, rnd.randrange(10_000)))
    readings = []
    for k in range(minutes * 6):
        for tid, x, y, tx, ty, speed, offset in per_truck:
            f = min(1.0, k * 10 * speed / 3.6 / 40_000)  # about 40 km to the disposal site
            ts = start + k * 10_000 + offset
            readings.append(Reading(tid, "vehicle", "d0", ts, ts + 200, {
                "lat": y + (ty - y) * f, "lon": x + (tx - x) * f, "speed_kmh": 0.0 if k == 0 else speed,
                "heading_deg": 90.0, "acc_on": True, "cover_closed": True, "body_lifted": False}))  # fmt: skip
    readings.sort(key=lambda r: r.received_at)
    return registry, readings


# --------------------------------------------------------------------------- in-memory rows


def bench_core(
    readings: list[Any], registry: Any, rules: Any, repeats: int = 3
) -> tuple[float, int]:
    """Best events/s of ``Detector.on_reading`` over ``readings``; and the outputs of one pass."""
    from streams.detector import Detector

    best, outputs = 0.0, 0
    for _ in range(repeats):
        det = Detector(rules, registry)
        on_reading = det.on_reading
        n_out = 0
        t = time.perf_counter()
        for r in readings:
            n_out += len(on_reading(r))
        dt = time.perf_counter() - t
        best = max(best, len(readings) / dt)
        outputs = n_out
    return best, outputs


def bench_core_plus(records: list[bytes], registry: Any, rules: Any, repeats: int = 3) -> float:
    """Best events/s of what ``Pipeline.take`` does per event, without Faust and Kafka.

    The decode, the rules, and the state export of the changed devices every
    ``CHECKPOINT_EVERY`` events (docs/decisions/017-checkpointed-state.md).
    """
    from contract.reading import Reading
    from streams.detector import Detector
    from streams.intake import decode
    from streams.worker import CHECKPOINT_EVERY

    best = 0.0
    for _ in range(repeats):
        det = Detector(rules, registry)
        devices: dict[str, Any] = {}
        changed: set[str] = set()
        t = time.perf_counter()
        for i, raw in enumerate(records, 1):
            item = decode(raw)
            if isinstance(item, Reading):
                det.on_reading(item)
            changed |= det.take_dirty()
            if i % CHECKPOINT_EVERY == 0 or i == len(records):
                for device_id in changed:
                    devices[device_id] = {"p": 0, "s": det.export_device(device_id)}
                devices["checkpoint:0"] = {"p": 0, "clock": det.export_clock()}
                changed = set()
        best = max(best, len(records) / (time.perf_counter() - t))
    return best


# --------------------------------------------------------------------------- Kafka side


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> int:
    """Write the records into partition 0 of ``topic``; return the end offset (last offset + 1).

    The end comes from the produce acks, not from ``end_offsets``: tansu's
    ListOffsets(latest) answers the last *batch's* base offset + 1, short of the
    real end by the batch's size - 1.
    """
    from bus.kafka import make_producer

    producer = make_producer(bootstrap, client_id="bench-streams-load")
    await producer.start()
    last = -1
    try:
        for chunk in range(0, len(records), 5000):
            futures = [
                await producer.send(topic, value, key=key, partition=0)
                for key, value in records[chunk : chunk + 5000]
            ]
            last = max(last, max(m.offset for m in await asyncio.gather(*futures)))
    finally:
        await producer.stop()
    return last + 1


async def follow_commits(
    bootstrap: str,
    group: str,
    topic: str,
    end: int,
    proc: subprocess.Popen,
    log: Path,
    timeout: float,
) -> dict[str, float]:
    """Poll the group's committed offset until it reaches ``end``; the timings of the run."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    started = time.perf_counter()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    tp = TopicPartition(topic, 0)
    first: tuple[float, int] | None = None
    last_seen = None
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{group}: the process exited with {proc.returncode}; its log ends:\n"
                    + _tail(log)
                )
            if time.perf_counter() - started > timeout:
                raise RuntimeError(
                    f"{group}: committed offset {last_seen} of {end} after {timeout:.0f} s; "
                    "its log ends:\n" + _tail(log)
                )
            committed = await consumer.committed(tp)
            now = time.perf_counter()
            last_seen = committed
            if committed:  # None: no commit yet; 0: a commit before the first event
                if first is None:
                    if committed >= end:
                        raise RuntimeError(
                            f"{group}: its first commit already covered all {end:,} records, "
                            "so there is no span to time: give it more records"
                        )
                    first = (now, committed)
                    cpu0 = _cpu_seconds(proc.pid)
                if committed >= end:
                    return {
                        "startup_s": first[0] - proc_started(proc),
                        "first_offset": first[1],
                        "seconds": now - first[0],
                        "records": committed - first[1],
                        "cpu": (_cpu_seconds(proc.pid) - cpu0) / (now - first[0]),
                    }
            await asyncio.sleep(0.02)
    finally:
        await consumer.stop()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all threads (Linux /proc; nan elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


_STARTED: dict[int, float] = {}


def proc_started(proc: subprocess.Popen) -> float:
    return _STARTED[proc.pid]


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    out = open(log, "wb")  # noqa: SIM115 - closed by the child's exit, kept for the tail
    proc = subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    _STARTED[proc.pid] = time.perf_counter()
    out.close()
    return proc


def stop(proc: subprocess.Popen | None, grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        print(
            f"  warning: pid {proc.pid} ignored SIGTERM for {grace:.0f} s; killing it",
            file=sys.stderr,
        )
        proc.kill()
        proc.wait(5)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def measure(
    label: str,
    argv: list[str],
    env: dict[str, str],
    bootstrap: str,
    group: str,
    topic: str,
    end: int,
    log: Path,
    timeout: float,
    profile: str | None = None,
    profile_gil: bool = False,
) -> dict[str, float]:
    proc = spawn(argv, env, log)
    spy = None
    try:
        if profile:
            spy = subprocess.Popen(
                [
                    "py-spy"
                    if shutil.which("py-spy")
                    else str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(proc.pid),
                    "--rate",
                    "200",
                    "--nonblocking",
                    *(["--gil", "--threads"] if profile_gil else []),
                    "--format",
                    "raw",
                    "--output",
                    profile,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        result = asyncio.run(follow_commits(bootstrap, group, topic, end, proc, log, timeout))
    finally:
        if spy is not None and spy.poll() is None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                spy.wait(20)
            except subprocess.TimeoutExpired:
                spy.kill()
        stop(proc)
    result["log"] = str(log)
    if label == "noop":
        for line in log.read_text(errors="replace").splitlines():
            if '{"events"' in line:  # after the spinner's terminal escapes
                d = orjson.loads(line[line.index('{"events"') :])
                result["inproc_rate"] = d["events"] / d["seconds"]
    return result


def noop_ceiling(
    bootstrap: str, prefix: str, end: int, workdir: Path, timeout: float
) -> dict[str, float]:
    """The Faust no-op agent's run over the first ``end`` records of ``<prefix>.telemetry``
    (partition 0; see ``measure`` for the keys, ``records / seconds`` is its rate): the
    ceiling every Faust consumer on this broker is compared with (bench/e2e.py too).
    Its log is ``workdir/noop.log``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYWATCH_")}
    env["PYTHONUNBUFFERED"] = "1"
    argv = [sys.executable, str(Path(__file__).resolve()), "--noop-agent", prefix, str(end),
            "--bootstrap", bootstrap, "--datadir", str(workdir / "noop")]  # fmt: skip
    topic = KafkaTopics(prefix).telemetry
    return measure(
        "noop", argv, env, bootstrap, f"{prefix}-noop", topic, end, workdir / "noop.log", timeout
    )


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=3000, help="simulated city size (default 3000)")
    ap.add_argument(
        "--hours",
        type=float,
        default=3.0,
        help="sim hours of readings for the core rows (default 3)",
    )
    ap.add_argument(
        "--records",
        type=int,
        default=100_000,
        help="journal records for the Faust rows (default 100000; the last commit can wait up to the "
        "1 s commit interval, so fewer records bias the fast no-op row)",
    )
    ap.add_argument(
        "--timeout", type=float, default=90.0, help="seconds allowed per Faust run (default 90)"
    )
    ap.add_argument(
        "--profile-worker",
        metavar="FILE",
        help="also record the worker with py-spy (raw collapsed stacks into FILE; slows it a little)",
    )
    ap.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile-worker: only samples of the thread holding the GIL, each stack under "
        "its thread (py-spy --gil --threads): where the worker's per-event time goes",
    )
    ap.add_argument(
        "--trucks", type=int, default=10_000, help="vehicle mix: trucks (default 10000)"
    )
    ap.add_argument("--zones", type=int, default=64, help="vehicle mix: zones (default 64)")
    ap.add_argument(
        "--core-only", action="store_true", help="only the in-memory core rows (no services)"
    )
    ap.add_argument(
        "--faust-only",
        action="store_true",
        help="only the Faust rows (3 and 4, same run): the in-memory rows are not run",
    )
    ap.add_argument("--noop-agent", nargs=2, metavar=("PREFIX", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    ap.add_argument("--datadir", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.noop_agent:
        noop_agent(args.noop_agent[0], int(args.noop_agent[1]), args.bootstrap, args.datadir)
        return

    from bus.kafka import ensure_topics
    from citywatch import services
    from contract import journal
    from foundation.settings import load_settings
    from store.errors import InfluxError
    from store.identity import as_role
    from store.schema import drop_database
    from streams.rules import load_rules

    settings = load_settings(
        env={k: v for k, v in os.environ.items() if k.startswith("CITYWATCH_")}
    )
    settings = settings.replace("paths", state_dir=str(ROOT / ".state" / "bench"))
    rules = load_rules(RULES)
    print(
        f"citywatch streams benchmark: {platform.node()} {os.cpu_count()} cpus, Python {platform.python_version()}, "
        f"faust-streaming {version('faust-streaming')}, aiokafka {version('aiokafka')}, orjson {version('orjson')}"
    )

    t = time.perf_counter()
    city, readings, rejected = build_input(args.devices, args.hours)
    counts: dict[str, int] = {}
    for r in readings:
        counts[r.kind] = counts.get(r.kind, 0) + 1
    mix = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))
    print(
        f"input: {len(city)} devices {city.counts()}, {args.hours:g} sim h, default scenarios, "
        f"dust mode {rules.dust.mode}: {len(readings):,} readings ({mix}; {rejected} garbage rejected), "
        f"built in {time.perf_counter() - t:.1f} s (untimed)"
    )

    registry = city.registry()
    nan = float("nan")
    core, outputs, trucks_core, core_plus = nan, 0, nan, nan
    vehicle_row = ("core: vehicle mix (not run: --faust-only)", nan, "")
    if not args.faust_only:
        core, outputs = bench_core(readings, registry, rules)
        t = time.perf_counter()
        fleet_registry, truck_readings = build_vehicle_input(args.trucks, args.zones)
        print(
            f"vehicle mix: {args.trucks:,} trucks every 10 s for 10 sim min, {args.zones} zones, "
            f"{len(truck_readings):,} readings, built in {time.perf_counter() - t:.1f} s (untimed)"
        )
        trucks_core, truck_outputs = bench_core(truck_readings, fleet_registry, rules)
        vehicle_row = (
            f"core: vehicle mix ({len(truck_readings):,} ev)",
            trucks_core,
            f"{truck_outputs} outputs; {trucks_core / core:.2f}x the city mix, "
            f"{1e6 / trucks_core:.1f} us per reading",
        )
        del truck_readings
        if args.core_only:
            print(f"{'path':58} {'events/s':>10}  note")
            for name, rate, note in [
                (
                    f"core: Detector.on_reading, in memory ({len(readings):,} ev)",
                    core,
                    f"{outputs} outputs",
                ),
                vehicle_row,
            ]:
                print(f"{name:58} {rate:10,.0f}  {note}")
            return
    encoded = [journal.encode(journal.to_record(r)[1]) for r in readings]
    if not args.faust_only:
        core_plus = bench_core_plus(encoded, registry, rules)
    n = min(args.records, len(readings))
    records = [(r.device.encode(), raw) for r, raw in zip(readings[:n], encoded[:n], strict=True)]
    span_min = (readings[n - 1].received_at - readings[0].received_at) / 60_000
    del encoded

    started = {s.name for s in services.up(settings, log=lambda _: None) if s.detail == "started"}
    tag = uuid.uuid4().hex[:8]
    prefix = f"bench-streams-{tag}"
    database = f"bench_streams_{tag}"
    bootstrap = settings.kafka.bootstrap
    admin = as_role(settings, "admin")
    topic = KafkaTopics(prefix).telemetry
    tmp = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    try:
        asyncio.run(ensure_topics(bootstrap, prefix, 1))
        end = asyncio.run(produce(bootstrap, topic, records))
        print(
            f"journal: {end:,} records ({span_min:.0f} sim min of the same city) in {topic} (1 partition), "
            f"Kafka {bootstrap}, InfluxDB {settings.influx.url} db {database}"
        )
        registry_file = tmp / "registry.csv"
        city.write_registry(registry_file)

        base_env = {k: v for k, v in os.environ.items() if not k.startswith("CITYWATCH_")}
        base_env["PYTHONUNBUFFERED"] = "1"
        noop = noop_ceiling(bootstrap, prefix, end, tmp, args.timeout)
        env = base_env | {
            "CITYWATCH_KAFKA_BOOTSTRAP": bootstrap,
            "CITYWATCH_KAFKA_TOPIC_PREFIX": prefix,
            "CITYWATCH_INFLUX_URL": settings.influx.url,
            "CITYWATCH_INFLUX_DATABASE": database,
            # its own state dir holds no embedded identities: it runs as the admin (store.identity)
            "CITYWATCH_INFLUX_USERNAME": admin.influx.username,
            "CITYWATCH_INFLUX_PASSWORD": admin.influx.password,
            "CITYWATCH_PATHS_REGISTRY": str(registry_file),
            "CITYWATCH_PATHS_RULES": str(RULES),
            "CITYWATCH_PATHS_STATE_DIR": str(tmp / "worker"),
            "CITYWATCH_LOG_LEVEL": "WARNING",
        }
        worker = measure(
            "worker",
            [
                sys.executable,
                "-m",
                "citywatch",
                "worker",
                "--simulation",
                "--session-timeout",
                str(SESSION_TIMEOUT_S),
            ],
            env,
            bootstrap,
            f"{prefix}-worker",
            topic,
            end,
            tmp / "worker.log",
            args.timeout,
            profile=args.profile_worker,
            profile_gil=args.profile_gil,
        )
    except BaseException:
        for name in ("noop.log", "worker.log"):
            if (tmp / name).exists():
                print(f"--- {name}\n{_tail(tmp / name)}", file=sys.stderr)
        raise
    finally:
        with contextlib.suppress(InfluxError):
            drop_database(settings, database)
        shutil.rmtree(tmp, ignore_errors=True)
        if started:
            services.down(settings, log=lambda _: None, only=started)

    ceiling = noop["records"] / noop["seconds"]
    worker_rate = worker["records"] / worker["seconds"]
    rows: list[tuple[str, float, str]] = [
        (
            f"core: Detector.on_reading, in memory ({len(readings):,} ev)",
            core,
            f"{outputs} outputs",
        ),
        vehicle_row,
        ("core + record decode + checkpoint export (handle w/o Faust)", core_plus, ""),
        (
            "Faust no-op agent, at_least_once (ceiling)",
            ceiling,
            f"{noop['records']:,.0f} rec in {noop['seconds']:.2f} s, cpu {noop['cpu']:.0%}, start {noop['startup_s']:.1f} s; "
            f"counted in-process: {noop.get('inproc_rate', float('nan')):,.0f} ev/s",
        ),
        (
            "citywatch worker --simulation, end to end",
            worker_rate,
            f"{worker['records']:,.0f} rec in {worker['seconds']:.2f} s, cpu {worker['cpu']:.0%}, "
            f"start {worker['startup_s']:.1f} s",
        ),
    ]
    print(f"{'path':58} {'events/s':>10} {'vs no-op':>9} {'vs worker':>10}  note")
    for name, rate, note in rows:
        print(f"{name:58} {rate:10,.0f} {rate / ceiling:8.2f}x {rate / worker_rate:9.1f}x  {note}")
    print(
        f"Faust rows: from the first commit to the commit reaching offset {end:,}; "
        f"first commits at offsets {noop['first_offset']:,.0f} (no-op) / {worker['first_offset']:,.0f} (worker)"
    )
    if args.profile_worker:
        print(f"worker profile (py-spy raw stacks): {args.profile_worker}")


if __name__ == "__main__":
    main()
