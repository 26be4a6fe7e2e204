"""Publishing the simulated fleet: paho-mqtt 2.x, MQTT v5, QoS 1, time warp, load mode.

``run_publisher(events, host, port, client_id, speed, on_progress, stop_event)``
publishes ``(due_ms, topic, payload)`` events (sim-time order, e.g.
``Simulation.events``) when the warped clock reaches them: event ``e`` goes out
at ``wall0 + (e.due_ms - sim0) / speed`` seconds. ``speed=0`` publishes as fast
as the broker takes them (no sleeping; ``ts`` is still sim time). ``rate=N``
paces by message count instead (N msgs/s, the load mode).

Each device publishes as itself (docs/contracts.md, "Device identity"):
``credentials`` maps a device id to the identity that speaks for it (the
device, or its gateway) and that identity's secret, and every identity gets
its own connection, as the real fleet has; on citywatch's broker the user
name is the client id. All connections are driven from the calling thread
(``_Connections``: one selector over their sockets, paho's external-loop
calls), so a city of a thousand devices costs sockets, not threads. Without
``credentials`` one connection (``client_id``, ``username``/``password``)
publishes everything, as a relay or a gateway would.

Back-pressure: at most ``max_inflight`` unacknowledged QoS-1 messages on the
wire (Mosquitto accepts 20 by default; more measured slower here) and at most
``max_queued`` waiting in paho; past that paho's ``publish()`` returns
``MQTT_ERR_QUEUE_SIZE`` and we wait for acks and retry (counted in
``PublishStats.retries``). Without that bound paho fails past ~65k unacked
messages (16-bit message ids; docs/simulator.md, "Time warp"). At the end it waits up to
``drain_timeout_s`` for every PUBACK.

``run_load(rate, duration_s, processes, host, port, city)`` sustains ``rate``
msgs/s across ``processes`` publisher processes (spawned; each simulates its
own slice of the devices, with their credentials, or its own client id) and
reports the achieved rate (acknowledged messages / wall time, all processes together).
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import selectors
import time
from collections.abc import Callable, Iterable, Mapping
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


class _Connections:
    """One MQTT connection per identity, all driven from the calling thread.

    paho's external-loop interface: a selector over the sockets (``on_socket_open``
    / ``on_socket_close``), writes flushed in ``poll`` (``on_socket_register_write``
    marks a client with data to send), keepalive and reconnection once a second.
    A connection the broker drops is reconnected with a growing delay; paho
    sends its unacknowledged messages again after the new CONNACK.
    """

    def __init__(self, host: str, port: int, identities: Mapping[str, tuple[str | None, str | None]],
                 max_inflight: int, max_queued: int, ca_file: str | None) -> None:  # fmt: skip
        self.host, self.port = host, port
        self.sel = selectors.DefaultSelector()
        self.acked = 0
        self.clients: dict[str, mqtt.Client] = {}
        self.refused: dict[str, str] = {}
        self._pending: set[mqtt.Client] = set()
        self._writing: set[mqtt.Client] = set()
        self._waiting: set[str] = set()
        self._lost: dict[str, tuple[float, float]] = {}
        """name -> (when to try again, delay)."""
        self._next_misc = 0.0
        for client_id, (username, secret) in identities.items():
            self.clients[client_id] = self._make(client_id, username, secret, max_inflight,
                                                 max_queued, ca_file)  # fmt: skip

    def _make(self, client_id: str, username: str | None, secret: str | None, max_inflight: int,
              max_queued: int, ca_file: str | None) -> mqtt.Client:  # fmt: skip
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if username:
            c.username_pw_set(username, secret or None)
        if ca_file:
            c.tls_set(ca_certs=ca_file)
        c.max_inflight_messages_set(max_inflight)
        c.max_queued_messages_set(max_queued)

        def on_connect(cl: Any, u: Any, flags: Any, rc: Any, props: Any = None) -> None:
            self._waiting.discard(client_id)
            if rc.is_failure:
                self.refused[client_id] = str(rc)
            else:
                self.refused.pop(client_id, None)
                self._lost.pop(client_id, None)

        def on_publish(cl: Any, u: Any, mid: int, rc: Any, props: Any = None) -> None:
            self.acked += 1

        def on_disconnect(cl: Any, u: Any, flags: Any, rc: Any, props: Any = None) -> None:
            self._waiting.discard(client_id)
            _, delay = self._lost.get(client_id, (0.0, 0.5))
            self._lost[client_id] = (time.monotonic() + delay, min(delay * 2, 30.0))

        def opened(cl: Any, u: Any, sock: Any) -> None:
            self.sel.register(sock, selectors.EVENT_READ, cl)

        def closed(cl: Any, u: Any, sock: Any) -> None:
            self._pending.discard(cl)
            self._writing.discard(cl)
            try:
                self.sel.unregister(sock)
            except (KeyError, ValueError):
                pass

        def want_write(cl: Any, u: Any, sock: Any) -> None:
            self._pending.add(cl)

        def written(cl: Any, u: Any, sock: Any) -> None:
            self._pending.discard(cl)
            if cl in self._writing:
                self._writing.discard(cl)
                self.sel.modify(sock, selectors.EVENT_READ, cl)

        c.on_connect, c.on_publish, c.on_disconnect = on_connect, on_publish, on_disconnect
        c.on_socket_open, c.on_socket_close = opened, closed
        c.on_socket_register_write, c.on_socket_unregister_write = want_write, written
        return c

    def connect(self, timeout_s: float) -> None:
        """Connect every identity; raise ``ConnectionError`` naming the first one refused."""
        for client_id, c in self.clients.items():
            try:
                c.connect(self.host, self.port)
            except OSError as exc:
                self.close()
                raise ConnectionError(
                    f"cannot connect to MQTT broker {self.host}:{self.port}: {exc}"
                ) from None
            self._waiting.add(client_id)
        deadline = time.monotonic() + timeout_s
        while self._waiting and time.monotonic() < deadline and not self.refused:
            self.poll(0.05)
        if self.refused or self._waiting:
            name, why = next(iter(self.refused.items()), (next(iter(self._waiting), "?"), ""))
            why = why or f"no CONNACK within {timeout_s:g} s"
            self.close()
            raise ConnectionError(
                f"MQTT broker {self.host}:{self.port} refused client {name!r}: {why}"
            )

    def poll(self, timeout: float) -> None:
        """Send what is waiting, read what arrived (PUBACKs), keep the connections alive."""
        for c in list(self._pending):
            c.loop_write()
            if c in self._pending and c not in self._writing and c.socket() is not None:
                self._writing.add(c)  # the socket is full: wait until it takes more
                self.sel.modify(c.socket(), selectors.EVENT_READ | selectors.EVENT_WRITE, c)
        if timeout > 0 and self._pending - self._writing:
            timeout = 0.0
        if self.sel.get_map():
            for key, mask in self.sel.select(timeout):
                c = key.data
                if mask & selectors.EVENT_READ:
                    c.loop_read()
                    sock = c.socket()
                    while sock is not None and getattr(sock, "pending", lambda: 0)():
                        c.loop_read()  # TLS: records already decrypted wait in the SSL object
                        sock = c.socket()
                if mask & selectors.EVENT_WRITE:
                    c.loop_write()
        elif timeout > 0:
            time.sleep(timeout)
        now = time.monotonic()
        if now >= self._next_misc:
            self._next_misc = now + 1.0
            for client_id, c in self.clients.items():
                c.loop_misc()
                again = self._lost.get(client_id)
                if again is not None and now >= again[0] and client_id not in self._waiting:
                    self._lost[client_id] = (now + again[1], min(again[1] * 2, 30.0))
                    try:
                        c.reconnect()
                        self._waiting.add(client_id)
                    except OSError:
                        pass

    def close(self) -> None:
        for c in self.clients.values():
            c.on_disconnect = None
            try:
                c.disconnect()
                c.loop_write()
            except Exception:  # noqa: BLE001 - closing: nothing left to report to
                pass
            c._sock_close()
        self.sel.close()


def _speaker_for(credentials: Mapping[str, tuple[str, str]]) -> Callable[[str], str]:
    """topic -> the identity that speaks for the device in it (``city/d/k/<device>/telemetry``)."""
    cache: dict[str, str] = {}

    def speaker(topic: str) -> str:
        who = cache.get(topic)
        if who is None:
            parts = topic.split("/")
            device = parts[3] if len(parts) > 3 else ""
            if device not in credentials:
                raise ValueError(
                    f"no credentials for the device of {topic!r}; provision it first "
                    "(citywatch devices provision)"
                )
            who = cache[topic] = credentials[device][0]
        return who

    return speaker


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
    credentials: Mapping[str, tuple[str, str]] | None = None,
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
    credentials: device id -> (identity, secret) of whoever speaks for it; each
        identity publishes its devices' messages on its own connection (then
        ``client_id``, ``username`` and ``password`` are not used).
    Raises ``ConnectionError`` when the broker cannot be reached or refuses an
    identity, ``ValueError`` for a message of a device without credentials.
    """
    if rate is not None and not rate > 0:
        raise ValueError(f"Invalid rate {rate!r}; expected msgs/s > 0")
    if not speed >= 0:
        raise ValueError(f"Invalid speed {speed!r}; expected >= 0 (0 = as fast as possible)")
    if credentials is not None:
        identities = {who: (who, secret) for who, secret in credentials.values()}
        speaker: Callable[[str], str] = _speaker_for(credentials)
    else:
        identities = {client_id: (username, password)}
        speaker = lambda topic: client_id  # noqa: E731
    conns = _Connections(mqtt_host, mqtt_port, identities, max_inflight, max_queued, ca_file)
    conns.connect(connect_timeout_s)
    clients = conns.clients
    stats = PublishStats()
    queue_full = mqtt.MQTT_ERR_QUEUE_SIZE
    stopped = stop_event.is_set if stop_event is not None else (lambda: False)
    clock = time.monotonic
    wall0 = clock()
    sim0 = start_ms
    next_report = wall0 + progress_every_s
    deadline = None if duration_s is None else wall0 + duration_s
    n = 0

    def report(now: float) -> None:
        stats.acked = conns.acked
        stats.wall_s = now - wall0
        if on_progress is not None:
            on_progress(stats)

    def pause(seconds: float) -> None:
        end = clock() + seconds
        while True:
            conns.poll(max(0.0, min(0.05, end - clock())))
            if clock() >= end or stopped():
                return

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
            client = clients[speaker(topic)]
            while True:
                # MQTT_ERR_NO_CONN also means "stored": paho sends it after reconnecting,
                # so only a full queue is retried (a retry would publish it twice)
                if client.publish(topic, payload, qos=1).rc != queue_full:
                    break
                stats.retries += 1
                if stopped():
                    break
                pause(0.001)
            conns.poll(0.0)
            n += 1
            stats.published = n
            stats.sim_ms = due
            if now >= next_report:
                report(now)
                next_report = now + progress_every_s
        # drain: wait for the broker to acknowledge what we sent
        drain_end = clock() + drain_timeout_s
        while conns.acked < stats.published and clock() < drain_end:
            conns.poll(0.01)
        end = clock()
    finally:
        conns.close()
    stats.done = True
    report(end)
    return stats


# --------------------------------------------------------------------------- load mode


def _load_worker(
    index: int, city: Any, rate: float, duration_s: float, host: str, port: int,
    client_id: str, seed: int, start_ms: int, garbage_share: float,
    out: Any, ready: Any, go: Any, stop: Any, credentials: dict[str, tuple[str, str]] | None = None,
    ca_file: str | None = None,
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
                              stop_event=stop, rate=rate, duration_s=duration_s,
                              credentials=credentials, ca_file=ca_file)  # fmt: skip
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
    credentials: Mapping[str, tuple[str, str]] | None = None,
    ca_file: str | None = None,
) -> LoadStats:
    """Sustain ``rate`` msgs/s for ``duration_s`` across ``processes`` publishers.

    city: the fleet (default: ``default_city()``, 300 devices); process ``k``
        publishes ``city.slice(k, processes)`` at ``rate / processes`` msgs/s
        with client id ``{client_id_prefix}-{k}``. The sim clock runs as fast
        as the rate needs (payloads are the simulation's, ``ts`` = sim time).
    garbage_share: malformed share in load mode (default 0: measure transport).
    credentials: device id -> (identity, secret), as ``run_publisher`` takes them;
        each process gets those of its slice (without: one client id per process).
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
    slices = [city.slice(k, processes) for k in range(processes)]
    procs = [
        ctx.Process(
            target=_load_worker,
            args=(
                k,
                slices[k],
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
                None
                if credentials is None
                else {
                    d.device_id: credentials[d.device_id]
                    for d in slices[k]
                    if d.device_id in credentials
                },  # fmt: skip
                ca_file,
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
