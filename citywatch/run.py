"""``citywatch run`` (what ``make run`` calls): a simulated city through the whole pipeline.

Brings the services up, writes the simulated city's device registry, starts a
bridge (``--event-time``) and a worker (``--simulation``) as the operator
would, publishes the city at a time warp so hourly penalty clocks visibly run
within minutes, shows a live view (messages per second, dead letters, open
cases, penalties by district, the latest cases), waits for the pipeline to
drain, prints the ledger against what the scenarios should cost, and stops
everything it started.

The city's clock starts on the Monday 08:00 (Asia/Shanghai) of last week:
recent enough for InfluxDB's raw retention, and always a Monday, so a seed
gives the same city, the same messages and the same amounts on every run.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from citywatch import services
from contract.cases import CaseEvent
from contract.clock import city_zone
from contract.clock import local as local_time
from foundation.errors import CitywatchError
from foundation.settings import Settings


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS picks it): what a run gives its bridge's metrics and
    its ack endpoint, so two runs on one machine never collide on a fixed port (issue 15)."""
    import socket

    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def last_weeks_monday(now: datetime | None = None) -> int:
    """Epoch ms of Monday 08:00 city time, 7 to 13 days before ``now``."""
    now = (now or datetime.now(city_zone())).astimezone(city_zone())
    monday = (now - timedelta(days=now.weekday() + 7)).replace(
        hour=8, minute=0, second=0, microsecond=0
    )
    return int(monday.timestamp() * 1000)


def settings_env(s: Settings) -> dict[str, str]:
    """The environment that makes a citywatch subprocess use exactly these settings."""
    from foundation.settings import SCHEMA

    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYWATCH_")}
    for section in SCHEMA:  # every section, so a new one (alerts.*) reaches children too
        for name, value in vars(getattr(s, section)).items():
            env[f"CITYWATCH_{section.upper()}_{name.upper()}"] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 1500) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def spawn(name: str, args: list[str], settings: Settings, logdir: Path) -> Child:
    log = logdir / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "citywatch", *args],
        env=settings_env(settings),
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,  # noqa: SIM115
    )
    return Child(name, proc, log)


@dataclass
class Snapshot:
    """What the live view shows, read from the bridge's metrics and from InfluxDB."""

    published: int = 0
    rate: float = 0.0
    sim_ms: int | None = None
    forwarded: int = 0
    dead: dict[str, int] = field(default_factory=dict)
    broker_dropped: int | None = None
    """The MQTT broker's drops since its start (its $SYS counter, through the bridge): readings
    it acknowledged and lost. None until the broker has said."""
    broker_stored: int | None = None
    open_cases: dict[str, int] = field(default_factory=dict)
    penalties: dict[str, int] = field(default_factory=dict)
    latest: list[CaseEvent] = field(default_factory=list)
    pushes: list[dict[str, Any]] = field(default_factory=list)
    push_count: int = 0
    hj212: Any = None
    """The HJ 212 monitors' ``sim.hj212.FleetStats`` once they are done."""
    broker: str = ""
    """What the broker watch saw ("" all well; ``topics missing: ...``, ``broker restarted``)."""
    cluster_id: str | None = None
    restarted_to: str | None = None
    jt808: Any = None
    """The JT/T 808 terminals' ``sim.jt808.TerminalStats`` once they are done."""


def _broker_view(settings: Settings, snap: Snapshot) -> None:
    """``snap.broker``: the topics of the run's prefix missing, or the broker restarted (new cluster id)."""
    from bus.watch import look_for

    try:
        seen = asyncio.run(look_for(settings.kafka))
    except Exception as exc:  # an outage: the view says so, the components wait
        snap.broker = f"Kafka does not answer ({type(exc).__name__})"
        return
    if snap.cluster_id is not None and seen.cluster_id not in (None, snap.cluster_id):
        snap.restarted_to = seen.cluster_id  # shown for the rest of the run: worth knowing
    snap.cluster_id = seen.cluster_id or snap.cluster_id
    if seen.missing:
        snap.broker = f"topics missing: {len(seen.missing)} ({', '.join(seen.missing)})"
    elif snap.restarted_to:
        snap.broker = f"broker restarted (cluster id {snap.restarted_to}): journal restored?"
    else:
        snap.broker = ""


def _bridge_metrics(port: int, snap: Snapshot | None = None) -> tuple[int, dict[str, int]]:
    """(forwarded, dead letters by reason) from the bridge's /metrics on ``port`` ((0, {}) while
    it is not up); the broker's drop counter and queue depth go into ``snap``."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read().decode()
        families = list(text_string_to_metric_families(text))
    except (OSError, ValueError):
        return 0, {}
    forwarded, dead = 0, {}
    for family in families:
        for sample in family.samples:
            if sample.name == "citywatch_bridge_forwarded_total":
                forwarded = int(sample.value)
            elif sample.name == "citywatch_bridge_rejected_total":
                dead[sample.labels["reason"]] = int(sample.value)
            elif snap is not None and sample.name == "citywatch_broker_dropped":
                snap.broker_dropped = None if sample.value < 0 else int(sample.value)
            elif snap is not None and sample.name == "citywatch_broker_stored_messages":
                snap.broker_stored = None if sample.value < 0 else int(sample.value)
    return forwarded, dead


def _influx_view(settings: Settings, snap: Snapshot) -> None:
    from store.errors import InfluxQueryError
    from store.read import latest_cases, ledger_totals

    try:
        latest = latest_cases(settings)
        pen = ledger_totals(settings, ("district",))
    except (InfluxQueryError, OSError):
        return
    opened: dict[str, int] = {}
    for case in latest:
        if not case.is_final:
            opened[case.rule] = opened.get(case.rule, 0) + 1
    snap.open_cases = dict(sorted(opened.items()))
    snap.penalties = {t.group[0]: t.yuan for t in pen}
    snap.latest = sorted(latest, key=lambda c: c.at, reverse=True)[:6]


CITY_CLOCK = "%a %m-%d %H:%M"
"""How the live view shows the simulated city's clock (weekday, date, time)."""


def _render(snap: Snapshot, end_ms: int, phase: str):  # noqa: ANN202
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table

    head = Table.grid(padding=(0, 3))
    head.add_row(
        f"[b]{phase}[/b]",
        f"city time [b]{local_time(snap.sim_ms, fmt=CITY_CLOCK, empty='-')}[/b] → {local_time(end_ms, fmt=CITY_CLOCK, empty='-')}",
        f"published {snap.published:,} ({snap.rate:,.0f}/s)",
        f"into Kafka {snap.forwarded:,}",
        f"dead letters {sum(snap.dead.values()):,}",
        _broker_cell(snap),
    )
    if snap.broker:
        head.add_row("[b red]Kafka[/b red]", f"[b red]{snap.broker}[/b red]", "", "", "")
    cases = Table(title="open cases 未结案件", show_edge=False)
    cases.add_column("rule")
    cases.add_column("open", justify="right")
    for rule, n in snap.open_cases.items():
        cases.add_row(rule, str(n))
    pen = Table(title="penalties 扣款 (yuan)", show_edge=False)
    pen.add_column("district")
    pen.add_column("yuan", justify="right")
    for district, amount in sorted(snap.penalties.items(), key=lambda kv: -kv[1]):
        pen.add_row(district, f"{amount:,}")
    latest = Table(title="latest case events 最新案件", show_edge=False)
    for col in ("time", "rule", "state", "device", "district"):
        latest.add_column(col)
    for case in snap.latest:
        latest.add_row(
            local_time(case.at, fmt=CITY_CLOCK, empty="-"),
            case.rule,
            case.state,
            case.device,
            case.district,
        )
    body = Table.grid(padding=(0, 4))
    body.add_row(cases, pen)
    pushes = Table(title=f"latest alerts 最新推送 ({snap.push_count:,} sent)", show_edge=False)
    for col in ("receiver", "channel", "status", "title"):
        pushes.add_column(col)
    for rec in snap.pushes[-5:][::-1]:
        pushes.add_row(
            rec.get("receiver", ""),
            rec.get("channel", ""),
            rec.get("status", ""),
            str(rec.get("title", ""))[:60],
        )
    return Panel(Group(head, body, latest, pushes), title="citywatch — simulated Zhengzhou 郑州")


def _broker_cell(snap: Snapshot) -> str:
    """The broker's drops (red when any: acknowledged readings lost) and its queue depth."""
    if snap.broker_dropped is None:
        return "broker drops [dim]?[/dim]"
    queued = "" if snap.broker_stored is None else f", holds {snap.broker_stored:,}"
    if snap.broker_dropped:
        return f"[b red]broker DROPPED {snap.broker_dropped:,}[/b red]{queued}"
    return f"broker drops 0{queued}"


def _tail_alerts(settings: Settings, snap: Snapshot, stop: threading.Event) -> None:
    """Follow <prefix>.alerts (one record per push) for the live view."""
    import orjson

    from bus.kafka import consumer_for
    from contract.topics import KafkaTopics

    async def follow() -> None:
        consumer = consumer_for(
            settings.kafka,
            KafkaTopics(settings.kafka.topic_prefix).alerts,
            group_id=None,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for r in records:
                        rec = orjson.loads(r.value)
                        if rec.get("status") in ("silenced", "inhibited"):
                            continue  # a muted notice is recorded, not pushed
                        snap.pushes.append(rec)
                        snap.push_count += 1
                del snap.pushes[:-20]
        finally:
            await consumer.stop()

    asyncio.run(follow())


async def _final_watermark(settings: Settings, at: int) -> None:
    """The city's time reached ``at``: clocks due by then are booked (as ``replay`` does at its end)."""
    from bus.kafka import producer_for
    from contract.journal import encode
    from contract.topics import KafkaTopics

    producer = producer_for(settings.kafka, client_id="citywatch-run")
    await producer.start()
    try:
        for p in range(settings.kafka.partitions):
            await producer.send_and_wait(
                KafkaTopics(settings.kafka.topic_prefix).telemetry,
                encode({"type": "watermark", "at": at}),
                partition=p,
            )
    finally:
        await producer.stop()


async def _lag(settings: Settings) -> int | None:
    """Journal records the worker has not committed yet (None: cannot tell yet)."""
    from aiokafka import TopicPartition

    from bus.kafka import group_lag
    from contract.topics import KafkaTopics

    k = settings.kafka
    topic = KafkaTopics(k.topic_prefix).telemetry
    tps = [TopicPartition(topic, p) for p in range(k.partitions)]
    return await group_lag(k, f"{k.topic_prefix}-worker", tps)


def run(
    settings: Settings,
    *,
    duration_s: float = 150.0,
    devices: int = 300,
    seed: int | None = None,
    scenario_file: str = "config/scenarios/default.yaml",
    keep_services: bool = False,
    live: bool = True,
    hj212_share: float = 0.2,
    metrics_port: int = 0,
    ack_listen: str = "127.0.0.1:0",
    jt808_share: float = 0.5,
) -> dict[str, Any]:
    """The main job; returns the summary it printed (tests read it).

    hj212_share: the share of dust sites that are HJ 212-2017 monitors: their readings go
    over TCP through ``citywatch gateway hj212`` (docs/gateways.md) instead of MQTT.
    ``metrics_port`` (the bridge's ``/metrics``, which the live view reads) and the port of
    ``ack_listen`` (the alerts service's ack endpoint): 0 is a port the OS finds free, so two
    runs on one machine do not collide (``citywatch run --metrics-port/--ack-listen`` fix them).
    jt808_share: the share of trucks whose terminals speak JT/T 808 through
    ``citywatch gateway jt808`` (docs/gateways.md) instead of MQTT.
    """
    from rich.console import Console
    from rich.live import Live

    from sim.simulator import Simulation, build_city, load_scenario_file, split_devices
    from streams.rules import load_rules

    console = Console(stderr=False, force_terminal=None)
    metrics_port = metrics_port or free_port()
    ack_host, _, ack_port = ack_listen.rpartition(":")
    if not ack_host or not ack_port.isdigit():
        raise CitywatchError(f"ack_listen {ack_listen!r}: expected HOST:PORT, e.g. 127.0.0.1:0")
    ack_listen = f"{ack_host}:{int(ack_port) or free_port(ack_host)}"
    state = Path(settings.paths.state_dir).resolve()
    logdir = state / "run"
    logdir.mkdir(parents=True, exist_ok=True)
    rules = load_rules(settings.paths.rules)
    scen = load_scenario_file(scenario_file)
    seed = (scen.seed if scen.seed is not None else 7) if seed is None else seed
    run_for_ms = scen.run_for_ms or 30 * 3_600_000
    garbage_share = 0.005 if scen.garbage_share is None else scen.garbage_share
    start_ms = last_weeks_monday()
    end_ms = start_ms + run_for_ms
    speed = run_for_ms / 1000 / duration_s

    run_tag = f"run-{datetime.now(city_zone()):%Y%m%d-%H%M%S}"
    gateway_id = f"hj212-{run_tag}"
    jt808_id = f"jt808-{run_tag}"
    city = (
        build_city(seed, *split_devices(devices), fleet=True)
        .with_hj212(hj212_share, gateway_id)
        .with_jt808(jt808_share, jt808_id)
    )
    registry = logdir / "registry.csv"
    city.write_registry(registry)
    fleet = logdir / "fleet.yaml"
    city.write_fleet(fleet)
    settings = settings.replace("paths", registry=str(registry), fleet=str(fleet))
    settings = settings.replace("kafka", topic_prefix=f"{settings.kafka.topic_prefix}-{run_tag}")
    settings = settings.replace(
        "mqtt", client_id=run_tag, shared_group=run_tag, session_expiry_s=60
    )
    settings = settings.replace(
        "influx", database=f"{settings.influx.database}_{run_tag.replace('-', '_')}"
    )
    # port 0: each gateway binds a free port itself and says which in its log (``_listening``);
    # a port picked here and bound later was taken in between on a busy machine (a test run)
    settings = settings.replace(
        "hj212", passwords=str(logdir / f"hj212-{run_tag}.json"), listen="127.0.0.1:0"
    )
    settings = settings.replace(
        "jt808", auth_codes=str(logdir / f"jt808-{run_tag}.json"), listen="127.0.0.1:0"
    )

    console.print(
        f"[b]citywatch run[/b]: {len(city.devices)} devices, seed {seed}, "
        f"{run_for_ms / 3_600_000:.0f} h of city time in {duration_s:.0f} s ({speed:.0f}x)"
    )
    statuses = services.up(settings, log=lambda line: console.print(f"  {line}"))
    started = {s.name for s in statuses if s.detail == "started"}
    for st in statuses:
        console.print(f"  {st.line()}")
    children: list[Child] = []
    summary: dict[str, Any] = {}
    from citywatch.devices import retire, simulated_identities

    try:
        # each simulated device publishes as itself; the bridge has its own identity
        # (docs/contracts.md, "Device identity")
        settings, credentials = simulated_identities(settings, city.registry(), f"run:{run_tag}")
        fleet = None
        if city.hj212_monitors():
            # the HJ 212 monitors speak to the gateway, the gateway to the broker as itself
            from citywatch.gateways import issue_passwords
            from sim.hj212 import MonitorFleet

            issued = issue_passwords(settings, registry_path=str(registry))
            gw_secret = credentials[city.hj212_monitors()[0].device_id][1]
            credentials = {d: c for d, c in credentials.items() if c[0] != gateway_id}
            gw_settings = settings.replace("mqtt", username=gateway_id, password=gw_secret)
            children.append(spawn("gateway", ["gateway", "hj212", "--stats-every", "10"],
                                  gw_settings, logdir))  # fmt: skip
            host, port = _listening(children, "HJ 212")
            fleet = MonitorFleet(host, port, {i.device_id: (i.mn, i.pw) for i in issued})
            fleet.start()
        terminals = None
        if city.jt808_terminals():
            # the trucks' terminals register with the JT/T 808 gateway, which speaks to the broker
            from sim.jt808 import TerminalFleet

            speakers = city.jt808_terminals()
            jt_secret = credentials[speakers[0].device_id][1]
            credentials = {d: c for d, c in credentials.items() if c[0] != jt808_id}
            jt_settings = settings.replace("mqtt", username=jt808_id, password=jt_secret)
            children.append(spawn("jt808", ["gateway", "jt808", "--stats-every", "10"],
                                  jt_settings, logdir))  # fmt: skip
            host, port = _listening(children, "JT/T 808")
            plates = city.registry().fleet
            terminals = TerminalFleet(
                host,
                port,
                {
                    d.device_id: (
                        d.phone,
                        plates.by_terminal[d.device_id].plate
                        if plates is not None and d.device_id in plates.by_terminal
                        else d.device_id,
                    )
                    for d in speakers
                },
            )
            terminals.start()
        from bus.kafka import ensure_topics_for

        k = settings.kafka
        asyncio.run(ensure_topics_for(k))
        # the journal on disk beside the in-memory broker: a restarted tansu is given it back by
        # `services up` and the worker rebuilds the ledger from it (decision 010)
        children.append(spawn("archive", ["archive", "run"], settings, logdir))
        children.append(spawn("worker", ["worker", "--simulation"], settings, logdir))
        children.append(
            spawn(
                "bridge",
                [
                    "bridge",
                    "--event-time",
                    "--metrics-port",
                    str(metrics_port),
                    "--stats-every",
                    "10",
                ],
                settings,
                logdir,
            )
        )
        children.append(
            spawn(
                "alerts",
                [
                    "alerts",
                    "--state-dir",
                    str(logdir / f"alerts-{run_tag}"),
                    "--listen",
                    ack_listen,
                ],
                settings,
                logdir,
            )
        )
        _wait_for(
            lambda: "MQTT connected" in next(c for c in children if c.name == "bridge").tail(10**9),
            children,
            30,
            "the bridge to connect",
        )

        sim = Simulation(
            city,
            scen.scenarios,
            seed=seed,
            start_ms=start_ms,
            speed=speed,
            garbage_share=garbage_share,
        )
        snap = Snapshot()
        stop = threading.Event()

        mqtt_acked = [0]

        def progress(stats: Any) -> None:
            mqtt_acked[0] = stats.acked
            via_gateway = (fleet.stats.sent if fleet is not None else 0) + (
                terminals.stats.sent if terminals is not None else 0
            )
            snap.published, snap.rate, snap.sim_ms = (
                stats.acked + via_gateway,
                stats.rate,
                stats.sim_ms,
            )

        def routed(events: Any) -> Any:
            """The HJ 212 monitors' and JT/T 808 terminals' messages go to them, the others to MQTT."""
            for due, topic, body, tag in events:
                device = topic.split("/")[3] if topic.count("/") == 4 else ""
                if fleet is not None and device in fleet:
                    fleet.send(device, body, garbage=tag.startswith("garbage"))
                    continue
                if terminals is not None and device in terminals:
                    terminals.send(device, body, garbage=tag.startswith("garbage"))
                    continue
                yield due, topic, body

        from sim.publish import run_publisher

        m = settings.mqtt
        publisher = threading.Thread(
            target=run_publisher,
            args=(
                routed(sim.events(end_ms, tagged=True)),
                m.host,
                m.port,
                f"citywatch-sim-{run_tag}",
                speed,
            ),  # fmt: skip
            kwargs={
                "on_progress": progress,
                "stop_event": stop,
                "start_ms": start_ms,
                "credentials": credentials,
                "ca_file": (m.ca_file or str(services.ca_file(settings))) if m.tls else None,
            },
            daemon=True,
        )
        publisher.start()
        follower = threading.Thread(target=_tail_alerts, args=(settings, snap, stop), daemon=True)
        follower.start()
        phase = "publishing"
        with Live(
            _render(snap, end_ms, phase), console=console, refresh_per_second=2, transient=not live
        ) as view:
            last_poll = 0.0
            drained_since = None
            while True:
                time.sleep(0.5)
                for child in children:
                    if not child.alive():
                        raise CitywatchError(
                            f"the {child.name} stopped unexpectedly; its log ends:\n{child.tail()}"
                        )
                if time.monotonic() - last_poll > 2:
                    last_poll = time.monotonic()
                    snap.forwarded, snap.dead = _bridge_metrics(metrics_port, snap)
                    _broker_view(settings, snap)
                    _influx_view(settings, snap)
                    if not publisher.is_alive():
                        if (
                            phase == "publishing"
                        ):  # the city's clock reached the end: say so to the pipeline
                            snap.published = mqtt_acked[0]
                            if fleet is not None:
                                fleet.close()
                                snap.published += fleet.stats.sent
                                snap.hj212 = fleet.stats
                            if terminals is not None:
                                terminals.close()
                                snap.published += terminals.stats.sent
                                snap.jt808 = terminals.stats
                            asyncio.run(_final_watermark(settings, end_ms))
                        phase = "draining"
                        lag = asyncio.run(_lag(settings))
                        if lag == 0 and snap.forwarded + sum(snap.dead.values()) >= snap.published:
                            drained_since = drained_since or time.monotonic()
                            if time.monotonic() - drained_since > 3:  # sinks flush within a second
                                _influx_view(settings, snap)
                                break
                        else:
                            drained_since = None
                view.update(_render(snap, end_ms, phase))
        stop.set()
        hint = sim.expected_ledger_hint(end_ms, rules=rules)
        summary = _summary(settings, snap, hint)
        _print_summary(console, settings, summary)
    finally:
        for child in reversed(children):
            child.stop()
        retire(settings, f"run:{run_tag}")
        if started and not keep_services:
            services.down(settings, log=lambda line: console.print(f"  {line}"), only=started)
    return summary


def _listening(children: list[Child], protocol: str, timeout: float = 30) -> tuple[str, int]:
    """Where the gateway just spawned (the last child) listens, as its log says."""
    pattern = re.compile(rf"{re.escape(protocol)} gateway \S+ listening on (\S+):(\d+)")
    found: list[re.Match[str]] = []

    def listening() -> bool:
        m = pattern.search(children[-1].tail(10**9))
        if m:
            found.append(m)
        return m is not None

    _wait_for(listening, children, timeout, f"the {protocol} gateway to listen")
    return found[-1].group(1), int(found[-1].group(2))


def _wait_for(check: Any, children: list[Child], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        for child in children:
            if not child.alive():
                raise CitywatchError(
                    f"the {child.name} stopped while waiting for {what}; its log ends:\n{child.tail()}"
                )
        if time.monotonic() > deadline:
            raise CitywatchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def _summary(settings: Settings, snap: Snapshot, hint: dict[str, Any]) -> dict[str, Any]:
    from store.read import latest_cases, ledger_entries, ledger_totals, point_counts

    by_payer = ledger_totals(settings, ("payer_type", "payer"))
    by_rule = ledger_totals(settings, ("rule",))
    actual_by_device: dict[str, int] = {}
    for e in ledger_entries(settings):
        actual_by_device[e.device] = actual_by_device.get(e.device, 0) + e.amount_yuan
    cases = latest_cases(settings)
    counts = point_counts(
        settings, {"dust": "pm10", "manhole": "tilt_deg", "streetlight": "voltage_v"}
    )
    return {
        "database": settings.influx.database,
        "published": snap.published,
        "forwarded": snap.forwarded,
        "dead_letters": snap.dead,
        "broker_dropped": snap.broker_dropped,
        "telemetry_points": counts,
        "cases": len(cases),
        "cases_by_rule": _count_by([c.rule for c in cases]),
        "ledger_total": sum(t.yuan for t in by_payer),
        "ledger_by_payer": [(*t.group, t.yuan) for t in by_payer],
        "ledger_by_rule": {t.group[0]: (t.count, t.yuan) for t in by_rule},
        "actual_by_device": actual_by_device,
        "expected": hint,
        "alerts_sent": snap.push_count,
        "hj212": (
            {"sent": snap.hj212.sent, "answered": snap.hj212.replied, "refused": snap.hj212.refused}
            if snap.hj212 is not None
            else None
        ),
        "jt808": (
            {
                "sent": snap.jt808.sent,
                "answered": snap.jt808.replied,
                "refused": snap.jt808.refused,
                "registered": snap.jt808.registered,
                "errors": snap.jt808.errors[:5],
            }
            if snap.jt808 is not None
            else None
        ),
    }


def _count_by(values: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def expected_vs_actual(
    items: list[dict[str, Any]], actual_by_device: dict[str, int]
) -> list[dict[str, Any]]:
    """Expected against booked, per group of devices that share the same scenarios.

    A device can take part in several scenarios (a site with its own dust
    episode is also caught in the city-wide storm); its ledger cannot be split
    between them, so devices are grouped by the set of scenarios they are in.
    """
    per_device: dict[str, dict[str, Any]] = {}
    for item in items:
        d = per_device.setdefault(item["device"], {"scenarios": [], "expected": 0, "exact": True})
        name = item["scenario"].split(" at ")[0]
        if name not in d["scenarios"]:
            d["scenarios"].append(name)
        d["expected"] += item["amount_yuan"]
        d["exact"] = d["exact"] and item.get("exact", True)
    groups: dict[str, dict[str, Any]] = {}
    for device, d in per_device.items():
        label = " + ".join(d["scenarios"])
        g = groups.setdefault(
            label, {"scenario": label, "devices": [], "expected": 0, "actual": 0, "exact": True}
        )
        g["devices"].append(device)
        g["expected"] += d["expected"]
        g["actual"] += actual_by_device.get(device, 0)
        g["exact"] = g["exact"] and d["exact"]
    out = []
    for g in groups.values():
        g["mark"] = "✓" if g["actual"] == g["expected"] else ("≈" if not g["exact"] else "✗")
        devs = g["devices"]
        g["devices"] = devs[0] if len(devs) == 1 else f"{len(devs)} devices"
        out.append(g)
    return out


def _print_summary(console: Any, settings: Settings, s: dict[str, Any]) -> None:
    from rich.table import Table

    console.print()
    console.print(
        f"[b]Summary[/b]: {s['published']:,} messages published, {s['forwarded']:,} forwarded, "
        f"{sum(s['dead_letters'].values()):,} dead letters ({', '.join(f'{k} {v}' for k, v in s['dead_letters'].items()) or 'none'})"
    )
    dropped = s.get("broker_dropped")
    console.print(
        "broker drops: not reported by the broker"
        if dropped is None
        else f"broker drops since its start: {dropped:,}"
        + (" [b red]✗ acknowledged readings were lost[/b red]" if dropped else "")
    )
    console.print(f"telemetry points in InfluxDB: {s['telemetry_points']}")
    if s.get("hj212"):
        h = s["hj212"]
        console.print(
            f"HJ 212 monitors (through `citywatch gateway hj212`): {h['sent']:,} frames sent, "
            f"{h['answered']:,} answered 9014, {h['refused']:,} refused 9011"
        )
    if s.get("jt808"):
        j = s["jt808"]
        console.print(
            f"JT/T 808 terminals (through `citywatch gateway jt808`): {j['registered']} registered, "
            f"{j['sent']:,} location reports sent, {j['answered']:,} answered 0x8001 result 0, "
            f"{j['refused']:,} refused"
        )
        for err in j["errors"]:
            console.print(f"  JT/T 808 terminal error: {err}")
    console.print(
        f"cases: {s['cases']} ({', '.join(f'{k} {v}' for k, v in s['cases_by_rule'].items())})"
    )
    console.print(
        f"alerts pushed: {s['alerts_sent']:,} (see .state/run/alerts.log for the console channel)"
    )
    t = Table(title="ledger by payer 按缴款单位")
    t.add_column("payer type")
    t.add_column("payer")
    t.add_column("yuan", justify="right")
    for payer_type, payer, amount in sorted(s["ledger_by_payer"], key=lambda r: -r[2]):
        t.add_row(payer_type, payer, f"{amount:,}")
    console.print(t)
    e = Table(title="expected (from the scenarios) vs actual (from the ledger)")
    for col in ("scenario", "devices", "expected yuan", "actual yuan", ""):
        e.add_column(col, justify="right" if "yuan" in col else "left")
    for row in expected_vs_actual(s["expected"]["items"], s["actual_by_device"]):
        e.add_row(
            row["scenario"][:48],
            row["devices"],
            f"{row['expected']:,}",
            f"{row['actual']:,}",
            row["mark"],
        )
    console.print(e)
    console.print(
        f"ledger total [b]{s['ledger_total']:,}[/b] yuan; scenarios expect {s['expected']['total_yuan']:,}"
    )
    from store.identity import ROLES, as_role, auth_dir
    from store.schema import PENALTY

    db = settings.influx.database
    reader = as_role(settings, "reader").influx
    user = (
        f"-u {reader.username}:$(cat {auth_dir(settings) / ROLES['reader']}) "
        if reader.username == ROLES["reader"]
        else ("-u USER:PASSWORD " if reader.username else "")
    )
    console.print(
        f"\nThe data stays in InfluxDB {settings.influx.url}, database [b]{db}[/b]; try\n"
        f"  curl -sG {user}{settings.influx.url}/query --data-urlencode db={db} "
        f"--data-urlencode 'q=SELECT sum(amount_yuan) FROM {PENALTY} GROUP BY district'\n"
        f"Dashboards: deploy/grafana (docs/grafana.md), or `citywatch grafana push --url URL --token TOKEN "
        f"--database {db}`.\nServices started by this run were stopped; `citywatch run --keep-services` keeps them."
    )
