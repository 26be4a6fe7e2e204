"""Publishing the simulated fleet: paho-mqtt 2.x, MQTT v5, QoS 1, time warp, load mode.

``run_publisher(events, host, port, client_id, speed, on_progress, stop_event)``
publishes ``(due_ms, topic, payload)`` events (sim-time order, e.g.
``Simulation.events``) when the warped clock reaches them: event ``e`` goes out
at ``wall0 + (e.due_ms - sim0) / speed`` seconds. ``speed=0`` publishes as fast
as the broker takes them (no sleeping; ``ts`` is still sim time). ``rate=N``
paces by message count instead (N msgs/s, the load mode).

Back-pressure: at most ``max_inflight`` unacknowledged QoS-1 messages on the
wire (Mosquitto accepts 20 by default; more measured slower here) and at most
``max_queued`` waiting in paho; past that paho's ``publish()`` returns
``MQTT_ERR_QUEUE_SIZE`` and we wait for acks and retry (counted in
``PublishStats.retries``). Without that bound paho fails past ~65k unacked
messages (16-bit message ids; docs/simulator.md, "Time warp"). At the end it waits up to
``drain_timeout_s`` for every PUBACK.

``run_load(rate, duration_s, processes, host, port, city)`` sustains ``rate``
msgs/s across ``processes`` publisher processes (spawned; each simulates its
own slice of the devices with its own client id) and reports the achieved rate
(acknowledged messages / wall time, all processes together).
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

__all__ = ["LoadStats", "PublishStats", "run_load", "run_publisher"]


class _Waitable(Protocol):
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = ...) -> bool: ...


@dataclass
class PublishStats:
    """Progress of one publisher; passed to ``on_progress`` and returned at the end."""

    published: int = 0
    """Messages handed to paho."""
    acked: int = 0
    """Messages the broker acknowledged (PUBACK)."""
    retries: int = 0
    """Times ``publish()`` said the queue was full and we waited."""
    sim_ms: int | None = None
    """Sim time (epoch ms) of the last published message: how far the city got."""
    wall_s: float = 0.0
    """Wall seconds since the first publish."""
    behind_s: float = 0.0
    """How far publishing trails the warped clock (0 when keeping up)."""
    done: bool = False
    """True in the final report."""

    @property
    def rate(self) -> float:
        """Acknowledged messages per wall second so far."""
        return self.acked / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class LoadStats:
    """Result (and progress) of ``run_load``."""

    target_rate: float
    processes: int
    duration_s: float
    published: int = 0
    acked: int = 0
    wall_s: float = 0.0
    per_process: list[PublishStats] = field(default_factory=list)

    @property
    def achieved_rate(self) -> float:
        """Acknowledged messages per wall second, all processes together."""
        return self.acked / self.wall_s if self.wall_s > 0 else 0.0


def _connect(host: str, port: int, client_id: str, max_inflight: int, max_queued: int,
             timeout_s: float, username: str | None = None, password: str | None = None,
             ca_file: str | None = None) -> tuple[mqtt.Client, list[int]]:  # fmt: skip
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if username:
        client.username_pw_set(username, password or None)
    if ca_file:
        client.tls_set(ca_certs=ca_file)
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(max_queued)
    acked = [0]
    connected = threading.Event()
    failure: list[str] = []

    def on_connect(c: Any, u: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc.is_failure:
            failure.append(str(rc))
        connected.set()

    def on_publish(c: Any, u: Any, mid: int, rc: Any, props: Any = None) -> None:
        acked[0] += 1

    client.on_connect = on_connect
    client.on_publish = on_publish
    try:
        client.connect(host, port)
    except OSError as exc:
        raise ConnectionError(f"cannot connect to MQTT broker {host}:{port}: {exc}") from None
    client.loop_start()
    if not connected.wait(timeout_s) or failure:
        client.loop_stop()
        why = failure[0] if failure else f"no CONNACK within {timeout_s:g} s"
        raise ConnectionError(f"MQTT broker {host}:{port} refused client {client_id!r}: {why}")
    return client, acked


def run_publisher(
    events: Iterable[tuple[int, str, bytes]],
    mqtt_host: str = "127.0.0.1",
    mqtt_port: int = 1883,
    client_id: str = "citywatch-sim",
    speed: float = 60.0,
    on_progress: Callable[[PublishStats], None] | None = None,
    stop_event: _Waitable | None = None,
    *,
    rate: float | None = None,
    duration_s: float | None = None,
    start_ms: int | None = None,
    progress_every_s: float = 1.0,
    max_inflight: int = 20,
    max_queued: int = 5000,
    drain_timeout_s: float = 30.0,
    connect_timeout_s: float = 10.0,
    username: str | None = None,
    password: str | None = None,
    ca_file: str | None = None,
) -> PublishStats:
    """Publish ``events`` over MQTT v5 at QoS 1; return the final ``PublishStats``.

    events: ``(due_ms, topic, payload)`` in sim-time order (an iterator may be endless).
    speed: sim seconds per wall second (600 = ten sim minutes per second);
        0 = as fast as possible. Ignored when ``rate`` is given.
    on_progress: called about every ``progress_every_s`` seconds and once at the
        end (``done=True``), from the calling thread.
    stop_event: anything with ``is_set()``/``wait(timeout)`` (``threading.Event``,
        ``multiprocessing.Event``); setting it stops publishing promptly.
    rate: pace by count at this many msgs/s instead of by sim time (load mode).
    duration_s: stop after this many wall seconds (None: when events end).
    start_ms: sim time that maps to the first wall instant (default: the first
        event's ``due_ms``), e.g. the simulation's start.
    max_inflight / max_queued: back-pressure bounds (see the module doc).
    drain_timeout_s: how long to wait for outstanding PUBACKs at the end.
    username / password / ca_file: broker credentials and TLS CA (settings' mqtt section).
    Raises ``ConnectionError`` when the broker cannot be reached.
    """
    if rate is not None and not rate > 0:
        raise ValueError(f"Invalid rate {rate!r}; expected msgs/s > 0")
    if not speed >= 0:
        raise ValueError(f"Invalid speed {speed!r}; expected >= 0 (0 = as fast as possible)")
    client, acked = _connect(mqtt_host, mqtt_port, client_id, max_inflight, max_queued,
                             connect_timeout_s, username, password, ca_file)  # fmt: skip
    stats = PublishStats()
    publish = client.publish
    queue_full = mqtt.MQTT_ERR_QUEUE_SIZE
    stopped = stop_event.is_set if stop_event is not None else (lambda: False)
    clock = time.monotonic
    wall0 = clock()
    sim0 = start_ms
    next_report = wall0 + progress_every_s
    deadline = None if duration_s is None else wall0 + duration_s
    n = 0

    def report(now: float) -> None:
        stats.acked = acked[0]
        stats.wall_s = now - wall0
        if on_progress is not None:
            on_progress(stats)

    def pause(seconds: float) -> None:
        if stop_event is not None:
            stop_event.wait(seconds)
        else:
            time.sleep(seconds)

    try:
        for due, topic, payload in events:
            if sim0 is None:
                sim0 = due
            # when is this message due on the wall clock?
            if rate is not None:
                target = wall0 + n / rate
            elif speed > 0:
                target = wall0 + (due - sim0) / 1000.0 / speed
            else:
                target = 0.0
            now = clock()
            while target > now + 0.0005:
                if now >= next_report:
                    report(now)
                    next_report = now + progress_every_s
                if stopped() or (deadline is not None and now >= deadline):
                    break
                pause(min(target - now, max(0.0, next_report - now), 0.25))
                now = clock()
            if stopped() or (deadline is not None and now >= deadline):
                break
            stats.behind_s = max(0.0, now - target) if target else 0.0
            while True:
                # MQTT_ERR_NO_CONN also means "stored": paho sends it after reconnecting,
                # so only a full queue is retried (a retry would publish it twice)
                if publish(topic, payload, qos=1).rc != queue_full:
                    break
                stats.retries += 1
                if stopped():
                    break
                pause(0.001)
            n += 1
            stats.published = n
            stats.sim_ms = due
            if now >= next_report:
                report(now)
                next_report = now + progress_every_s
        # drain: wait for the broker to acknowledge what we sent
        drain_end = clock() + drain_timeout_s
        while acked[0] < stats.published and clock() < drain_end:
            time.sleep(0.002)
        end = clock()
    finally:
        # disconnect first: the network thread then leaves its 1 s select at once
        client.disconnect()
        client.loop_stop()
    stats.done = True
    report(end)
    return stats


# --------------------------------------------------------------------------- load mode


def _load_worker(
    index: int, city: Any, rate: float, duration_s: float, host: str, port: int,
    client_id: str, seed: int, start_ms: int, garbage_share: float,
    out: Any, ready: Any, go: Any, stop: Any,
) -> None:  # fmt: skip
    from sim.simulator import Simulation

    try:
        sim = Simulation(city, (), seed=seed, start_ms=start_ms, garbage_share=garbage_share)
        events = sim.events(None)
        first = next(events)  # build the heap before the clock starts

        def chain() -> Any:
            yield first
            yield from events

        ready.put(index)
        go.wait(60)

        def progress(s: PublishStats) -> None:
            out.put(("progress", index, s))

        stats = run_publisher(chain(), host, port, client_id, speed=0, on_progress=progress,
                              stop_event=stop, rate=rate, duration_s=duration_s)  # fmt: skip
        out.put(("done", index, stats))
    except BaseException as exc:  # report, never hang the parent
        ready.put(index)
        out.put(("error", index, f"{type(exc).__name__}: {exc}"))


def run_load(
    rate: float,
    duration_s: float,
    processes: int = 1,
    host: str = "127.0.0.1",
    port: int = 1883,
    city: Any = None,
    *,
    seed: int = 0,
    start_ms: int | None = None,
    garbage_share: float = 0.0,
    client_id_prefix: str = "citywatch-load",
    on_progress: Callable[[LoadStats], None] | None = None,
    stop_event: Any = None,
) -> LoadStats:
    """Sustain ``rate`` msgs/s for ``duration_s`` across ``processes`` publishers.

    city: the fleet (default: ``default_city()``, 300 devices); process ``k``
        publishes ``city.slice(k, processes)`` at ``rate / processes`` msgs/s
        with client id ``{client_id_prefix}-{k}``. The sim clock runs as fast
        as the rate needs (payloads are the simulation's, ``ts`` = sim time).
    garbage_share: malformed share in load mode (default 0: measure transport).
    on_progress: called with the running totals about once a second.
    Raises ``RuntimeError`` naming the process when a publisher fails.
    """
    from sim.simulator import DEFAULT_START_MS, default_city

    if not rate > 0 or not duration_s > 0:
        raise ValueError(f"Invalid rate {rate!r} / duration_s {duration_s!r}; expected > 0")
    if type(processes) is not int or processes < 1:
        raise ValueError(f"Invalid processes {processes!r}; expected a whole number >= 1")
    city = city if city is not None else default_city()
    if len(city) < processes:
        raise ValueError(f"{processes} processes need at least {processes} devices")
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    ready = ctx.Queue()
    go = ctx.Event()
    stop = stop_event if stop_event is not None else ctx.Event()
    procs = [
        ctx.Process(
            target=_load_worker,
            args=(
                k,
                city.slice(k, processes),
                rate / processes,
                duration_s,
                host,
                port,
                f"{client_id_prefix}-{k}",
                seed + k,
                start_ms or DEFAULT_START_MS,
                garbage_share,
                out,
                ready,
                go,
                stop,
            ),
            daemon=True,
        )  # fmt: skip
        for k in range(processes)
    ]
    for p in procs:
        p.start()
    result = LoadStats(float(rate), processes, float(duration_s),
                       per_process=[PublishStats() for _ in procs])  # fmt: skip
    try:
        for _ in procs:
            ready.get(timeout=120)
        t0 = time.monotonic()
        go.set()
        finished: set[int] = set()
        errors: list[str] = []
        last_report = t0
        while len(finished) < len(procs):
            try:
                msg = out.get(timeout=1.0)
            except queue_mod.Empty:
                if not any(p.is_alive() for p in procs):
                    break
                continue
            kind, k, payload = msg
            if kind == "error":
                errors.append(f"publisher {k}: {payload}")
                finished.add(k)
                continue
            result.per_process[k] = payload
            if kind == "done":
                finished.add(k)
            now = time.monotonic()
            if on_progress is not None and now - last_report >= 1.0:
                last_report = now
                _sum(result, now - t0)
                on_progress(result)
        if errors:
            stop.set()
            raise RuntimeError("; ".join(errors))
        # every process measured its own wall time from the common start
        _sum(result, max((s.wall_s for s in result.per_process), default=0.0))
    finally:
        stop.set()
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    return result


def _sum(result: LoadStats, wall_s: float) -> None:
    result.published = sum(s.published for s in result.per_process)
    result.acked = sum(s.acked for s in result.per_process)
    result.wall_s = wall_s
