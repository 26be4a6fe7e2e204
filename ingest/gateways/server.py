"""What both protocol gateways are (docs/gateways.md): a TCP server of many long-lived device
connections that publishes, as the gateway's broker identity, on each device's own topic.

One publisher connection (paho, QoS 1) with a bound on publishes awaiting PUBACK: when it is
reached, the connections stop reading (back-pressure) instead of buffering. Bad frames are
dead-lettered on ``city/gateway/<id>/deadletter`` (``ingest.gateways.report``), wrong credentials
are throttled per client address (``ingest.gateways.throttle``). A protocol is a subclass naming
``PROTOCOL`` and its ``connection()`` (``hj212.py``, ``jt808.py``): one gateway, one module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from contract.topics import gateway_deadletter_topic
from foundation.errors import CitywatchError
from foundation.settings import Settings
from ingest.gateways.report import report_payload
from ingest.gateways.throttle import CredentialThrottle, host_of
from registry.devices import RegistryWatcher

log = logging.getLogger(__name__)

PER_CONNECTION_PENDING = 32
"""Publishes of one connection awaiting PUBACK before that connection's reading pauses."""


MAX_UNREAD_REPLIES = 64 * 1024
"""Bytes of replies a monitor may leave unread before its connection is dropped."""


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class GatewayStats:
    """What the gateway did; ``summary()`` is its periodic log line."""

    connections: int = 0
    open: int = 0
    frames: int = 0
    readings: int = 0
    """Readings the broker acknowledged."""
    replies: int = 0
    dead: Counter[str] = field(default_factory=Counter)
    """Dead letters the broker acknowledged, by code."""
    closed_for_errors: int = 0

    def summary(self) -> str:
        dead = ", ".join(f"{c}={n}" for c, n in self.dead.most_common()) or "none"
        return (
            f"connections open={self.open} total={self.connections} frames={self.frames} "
            f"readings={self.readings} replies={self.replies} closed_for_errors="
            f"{self.closed_for_errors}; dead letters: {dead}"
        )


class Publisher:
    """One paho connection as the gateway identity; ``publish`` returns a future for the PUBACK.

    paho runs its network loop in its own thread; PUBACKs resolve futures on
    the asyncio loop. A lost connection is re-established by paho and what
    was not acknowledged is sent again (a persistent session), so the futures
    of a connection loss simply wait.
    """

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop, max_pending: int):
        m = settings.mqtt
        self.loop = loop
        self.connected = asyncio.Event()
        self.refused: str | None = None
        self._futures: dict[int, asyncio.Future[None]] = {}
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=m.username, protocol=mqtt.MQTTv5
        )
        client.username_pw_set(m.username, m.password or None)
        if m.tls:
            client.tls_set(ca_certs=m.ca_file or None, cert_reqs=ssl.CERT_REQUIRED)
        client.max_inflight_messages_set(min(max_pending, 1000))
        client.max_queued_messages_set(0)  # bounded by the gateway's own semaphore
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_disconnect = self._on_disconnect
        self.client = client
        self.host, self.port = m.host, m.port

    def _on_connect(self, client, userdata, flags, rc, props=None) -> None:  # noqa: ANN001
        if rc.is_failure:
            self.refused = str(rc)
            log.error("the broker refused the gateway identity: %s", rc)
        self.loop.call_soon_threadsafe(self.connected.set)

    def _on_disconnect(self, client, userdata, flags, rc, props=None) -> None:  # noqa: ANN001
        if rc != 0:
            log.warning("MQTT disconnected (%s); paho reconnects with backoff", rc)

    def _on_publish(self, client, userdata, mid, rc, props=None) -> None:  # noqa: ANN001
        self.loop.call_soon_threadsafe(self._acked, mid)

    def _acked(self, mid: int) -> None:
        fut = self._futures.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self.loop.create_future()
        info = self.client.publish(topic, payload, qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            fut.set_exception(
                ConnectionError(f"paho refused the publish: {mqtt.error_string(info.rc)}")
            )
            return fut
        self._futures[info.mid] = fut
        if info.is_published():  # acked before we registered: resolve now
            self._acked(info.mid)
        return fut

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Connection:
    """What every device connection does alike: hold what is in flight, dead-letter, reply, close.

    A protocol's handler subclasses it with ``serve(reader)`` and ``frame(raw)`` and names its
    dead-letter codes and words; everything that is the gateway's policy rather than the
    protocol's (the per-connection bound, the throttle, the bad-in-a-row bound, unread replies)
    is here once (docs/gateways.md, "Bad frames" and "Authentication").
    """

    BAD_CREDENTIALS = ""
    """The dead-letter code of a wrong credential (it counts toward the address's lockout)."""
    TOO_MANY = ""
    """The dead-letter code written when a connection is closed for bad frames in a row."""
    UNIT = "frames"
    """What the protocol calls one unit on the wire, in messages (``frames``, ``messages``)."""

    def __init__(self, gateway: GatewayServer, writer: asyncio.StreamWriter, peer: str):
        self.gw = gateway
        self.writer = writer
        self.peer = peer
        self.bad_in_a_row = 0
        self.inflight = asyncio.Semaphore(PER_CONNECTION_PENDING)
        self.waiting: set[asyncio.Future[Any]] = set()

    async def hold(
        self, fut: asyncio.Future[Any], then: Callable[[asyncio.Future[Any]], None] | None = None
    ) -> None:
        """Count ``fut`` against the connection's bound until it settles, then call ``then``."""
        await self.inflight.acquire()
        self.waiting.add(fut)

        def done(f: asyncio.Future[Any]) -> None:
            self.inflight.release()
            self.waiting.discard(f)
            if then is not None:
                then(f)

        fut.add_done_callback(done)

    def count_reading(self, fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self.gw.stats.readings += 1

    async def bad(self, code: str, message: str, raw: bytes, device: str | None) -> bool:
        """Dead-letter a bad frame; False (close) on a locked-out address or ``max_bad`` in a row."""
        self.bad_in_a_row += 1
        await self.hold(await self.gw.dead_letter(code, message, raw, device, self.peer))
        if code == self.BAD_CREDENTIALS and self.gw.throttle.failed(host_of(self.peer)):
            t = self.gw.throttle
            log.warning(
                "%s: %d wrong credentials from %s within %.0f s; the address is refused for "
                "%.0f s (docs/gateways.md, \"Authentication\")",
                self.gw.PROTOCOL, t.limit, host_of(self.peer), t.window_s, t.lockout_s,
            )  # fmt: skip
            return False
        if self.bad_in_a_row >= self.gw.max_bad:
            self.gw.stats.closed_for_errors += 1
            await self.gw.dead_letter(
                self.TOO_MANY,
                f"{self.bad_in_a_row} bad {self.UNIT} in a row; the connection is closed",
                b"", device, self.peer,
            )  # fmt: skip
            log.warning(
                "%s connection from %s closed after %d bad %s in a row (last: %s)",
                self.gw.PROTOCOL, self.peer, self.bad_in_a_row, self.UNIT, code,
            )  # fmt: skip
            return False
        return True

    def reply(self, data: bytes) -> None:
        if self.writer.is_closing():
            return
        if self.writer.transport.get_write_buffer_size() > MAX_UNREAD_REPLIES:
            # a device that never reads its replies would grow our buffer without end
            log.warning(
                "%s connection from %s reads no replies; closed", self.gw.PROTOCOL, self.peer
            )
            self.writer.transport.abort()
            return
        self.writer.write(data)
        self.gw.stats.replies += 1

    async def close(self) -> None:
        """Let the replies of what is in flight go out (a few seconds at most), then close."""
        if self.waiting:
            with contextlib.suppress(Exception):
                await asyncio.wait(list(self.waiting), timeout=5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.drain(), 2)
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 2)


class GatewayServer:
    """One gateway process. ``port`` is the bound port once ``ready`` is set."""

    PROTOCOL = ""
    """The protocol's name in log lines (``HJ 212``, ``JT/T 808``)."""
    max_bad: int
    """Bad frames in a row after which a connection is closed (the protocol's ``max_bad_frames``)."""

    def __init__(
        self,
        settings: Settings,
        *,
        listen: str | None,
        host: str,
        port: int,
        max_pending: int,
        clock: Callable[[], int] = wall_clock_ms,
        registry_check_s: float = 2.0,
    ):
        self.settings = settings
        self.identity = settings.mqtt.username
        self.deadletter_topic = gateway_deadletter_topic(self.identity)
        self.listen_host, self.listen_port = (
            (listen.rpartition(":")[0], int(listen.rpartition(":")[2])) if listen else (host, port)
        )
        self.clock = clock
        self.registry = RegistryWatcher(
            settings.paths.registry,
            check_interval_s=registry_check_s,
            on_error=self._registry_error,
        )
        self.stats = GatewayStats()
        self.throttle = CredentialThrottle()
        self.ready = asyncio.Event()
        self.port: int | None = None
        self._pending = 0
        self._max_pending = max_pending
        self._room = asyncio.Event()
        self._room.set()
        self._publisher: Publisher | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def _registry_error(self, err: Exception) -> None:
        log.error("registry edit refused, still serving the previous version: %s", err)

    def connection(self, writer: asyncio.StreamWriter, peer: str) -> Any:
        """The protocol's handler of one accepted connection (``serve(reader)``, ``close()``)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- serving

    async def run(self, stop: asyncio.Event, stats_every_s: float = 30.0) -> GatewayStats:
        loop = asyncio.get_running_loop()
        publisher = self._publisher = Publisher(self.settings, loop, self._max_pending)
        publisher.start()
        try:
            await asyncio.wait_for(publisher.connected.wait(), 30)
        except TimeoutError:
            publisher.stop()
            raise CitywatchError(
                f"the broker at {publisher.host}:{publisher.port} did not answer within 30 s"
            ) from None
        if publisher.refused:
            publisher.stop()
            raise CitywatchError(
                f"the broker refused identity {self.identity} ({publisher.refused}): provision it "
                "(citywatch devices provision) and give the gateway its secret"
            )
        server = await asyncio.start_server(
            self._serve, self.listen_host, self.listen_port, backlog=4096
        )
        self.port = server.sockets[0].getsockname()[1]
        log.info(
            "%s gateway %s listening on %s:%d, publishing to %s:%d",
            self.PROTOCOL, self.identity, self.listen_host, self.port, publisher.host, publisher.port,
        )  # fmt: skip
        self.ready.set()
        reporter = asyncio.create_task(self._report(stats_every_s))
        try:
            await stop.wait()
        finally:
            reporter.cancel()
            server.close()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)
            publisher.stop()
            log.info("%s gateway stopped: %s", self.PROTOCOL, self.stats.summary())
        return self.stats

    async def _report(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            log.info("%s gateway: %s", self.PROTOCOL, self.stats.summary())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.stats.connections += 1
        self.stats.open += 1
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if peername else "?"
        if self.throttle.locked(host_of(peer)):  # a guesser's address: closed unread
            self.stats.open -= 1
            self._tasks.discard(task)
            writer.close()
            return
        conn = self.connection(writer, peer)
        try:
            await conn.serve(reader)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # one connection's bug must not stop the others
            log.exception("%s connection from %s failed", self.PROTOCOL, peer)
        finally:
            self.stats.open -= 1
            self._tasks.discard(task)
            await conn.close()

    # ---------------------------------------------------------------- publishing

    async def publish(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        """Publish once there is room under ``max_pending``; the future is the PUBACK."""
        assert self._publisher is not None
        while self._pending >= self._max_pending:
            # an Event, not a Semaphore: asyncio's Semaphore walks its waiters on every
            # release, which with hundreds of waiting connections cost more than the frames
            self._room.clear()
            await self._room.wait()
        self._pending += 1
        fut = self._publisher.publish(topic, payload)
        fut.add_done_callback(self._released)
        return fut

    def _released(self, _fut: asyncio.Future[None]) -> None:
        self._pending -= 1
        if self._pending < self._max_pending:
            self._room.set()

    async def dead_letter(
        self, code: str, message: str, raw: bytes, device: str | None, peer: str
    ) -> asyncio.Future[None]:
        payload = report_payload(code, message, raw, self.clock(), device, peer)
        fut = await self.publish(self.deadletter_topic, payload)

        def count(f: asyncio.Future[None]) -> None:
            if not f.cancelled() and f.exception() is None:
                self.stats.dead[code] += 1

        fut.add_done_callback(count)
        return fut
