"""The MQTT → Kafka bridge: takes everything the sensors send, loses nothing.

paho-mqtt runs its network loop in its own thread and hands every message to
an asyncio loop, which validates it (``ingest.validate``), produces the
``Reading`` to ``<prefix>.telemetry`` (or the ``Rejection`` to
``<prefix>.deadletter``) and only after Kafka has acknowledged the produce
sends the MQTT PUBACK (paho ``manual_ack``). A bridge killed with messages in
flight therefore loses none: the broker redelivers what was never acked, and
the duplicates this can make are harmless downstream (readings are deduplicated
by device and event time).

Several bridges share the load through an MQTT v5 shared subscription
(``$share/<group>/city/+/+/+/telemetry``); dispatch happens in ``on_message``
because paho's ``message_callback_add`` does not match ``$share`` filters
(paho issue #472). The session is persistent (``clean_start=False`` plus a
Session Expiry Interval), so what is published while the bridge is down waits
in the broker. MQTT v5 Receive Maximum bounds the unacknowledged messages the
broker sends us: that is the bridge's back-pressure.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bus.kafka import ensure_topics, make_producer
from contract.topics import KafkaTopics, shared_subscription
from foundation.settings import Settings
from ingest.validate import IngestLimits, Rejection, parse_message
from registry.devices import RegistryWatcher

log = logging.getLogger(__name__)

RECEIVE_MAXIMUM = 1000
"""Unacknowledged QoS-1 messages the broker may have in flight to one bridge."""


@dataclass
class BridgeStats:
    """Counters a duty engineer reads at 3 a.m.: what came in, what went out, why not."""

    received: int = 0
    forwarded: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    acked: int = 0
    produce_seconds: float = 0.0
    produce_batches: int = 0
    connects: int = 0

    @property
    def in_flight(self) -> int:
        return self.received - self.forwarded - sum(self.rejected.values())

    def prometheus(self) -> str:
        lines = [
            "# TYPE citywatch_bridge_received_total counter",
            f"citywatch_bridge_received_total {self.received}",
            "# TYPE citywatch_bridge_forwarded_total counter",
            f"citywatch_bridge_forwarded_total {self.forwarded}",
            "# TYPE citywatch_bridge_rejected_total counter",
        ]
        lines += [f'citywatch_bridge_rejected_total{{reason="{code}"}} {n}' for code, n in sorted(self.rejected.items())]
        lines += [
            "# TYPE citywatch_bridge_in_flight gauge",
            f"citywatch_bridge_in_flight {self.in_flight}",
            "# TYPE citywatch_bridge_produce_seconds_total counter",
            f"citywatch_bridge_produce_seconds_total {self.produce_seconds:.6f}",
            "# TYPE citywatch_bridge_produce_batches_total counter",
            f"citywatch_bridge_produce_batches_total {self.produce_batches}",
            "# TYPE citywatch_bridge_mqtt_connects_total counter",
            f"citywatch_bridge_mqtt_connects_total {self.connects}",
        ]
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        rejected = ", ".join(f"{c}={n}" for c, n in self.rejected.most_common()) or "none"
        mean_ms = 1000 * self.produce_seconds / self.produce_batches if self.produce_batches else 0.0
        return (
            f"received={self.received} forwarded={self.forwarded} in_flight={self.in_flight} "
            f"rejected: {rejected}; kafka produce {mean_ms:.1f} ms/batch"
        )


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Bridge:
    """One bridge process. ``await bridge.run(stop)`` until ``stop`` is set.

    settings: MQTT and Kafka addresses, topic prefix, shared group, registry path.
    client_suffix: distinguishes bridges of one group (each needs its own
        persistent session; the shared subscription splits the stream).
    registry_check_s: how often the registry file is checked for edits.
    event_time_clock: stamp ``received_at`` with the reading's own ``ts``
        instead of the wall clock (simulation mode: a time-warped city runs on
        its own clock, and the pipeline's watermark follows it).
    """

    def __init__(
        self,
        settings: Settings,
        client_suffix: str = "1",
        limits: IngestLimits | None = None,
        event_time_clock: bool = False,
        clock: Callable[[], int] = wall_clock_ms,
        registry_check_s: float = 2.0,
    ):
        self.settings = settings
        self.topics = KafkaTopics(settings.kafka.topic_prefix)
        self.client_id = f"{settings.mqtt.client_id}-{client_suffix}"
        self.limits = limits or IngestLimits()
        if event_time_clock:
            self.limits = IngestLimits(
                max_payload_bytes=self.limits.max_payload_bytes,
                max_future_ms=10**15,
                max_lateness_ms=10**15,
                identity_keys=self.limits.identity_keys,
            )
        self.event_time_clock = event_time_clock
        self.clock = clock
        self.registry = RegistryWatcher(
            settings.paths.registry, check_interval_s=registry_check_s, on_error=self._registry_error
        )
        self.stats = BridgeStats()
        self.subscribed = asyncio.Event()
        self._queue: asyncio.Queue[tuple[int, int, str, bytes, int]] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None

    # ---------------------------------------------------------------- MQTT side (paho thread)

    def _registry_error(self, err: Exception) -> None:
        log.error("registry edit refused, still serving the previous version: %s", err)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if reason_code.is_failure:
            log.error("MQTT connect refused: %s", reason_code)
            return
        self.stats.connects += 1
        session = "resumed" if flags.session_present else "new"
        log.info("MQTT connected to %s (%s session)", self.settings.mqtt.url, session)
        client.subscribe(shared_subscription(self.settings.mqtt.shared_group), qos=1)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # noqa: ANN001
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.subscribed.set)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:  # noqa: ANN001
        item = (msg.mid, msg.qos, msg.topic, msg.payload, self.clock())
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if reason_code != 0:
            log.warning("MQTT disconnected (%s); paho reconnects with backoff", reason_code)

    def _make_client(self) -> mqtt.Client:
        m = self.settings.mqtt
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if m.username:
            client.username_pw_set(m.username, m.password or None)
        if m.tls:
            client.tls_set(ca_certs=m.ca_file or None, cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_inflight_messages_set(RECEIVE_MAXIMUM)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        return client

    # ---------------------------------------------------------------- Kafka side (asyncio)

    def _route(self, topic: str, payload: bytes, received_at: int) -> tuple[str, bytes | None, bytes]:
        result = parse_message(topic, payload, received_at, self.registry, self.limits)
        if isinstance(result, Rejection):
            self.stats.rejected[result.code] += 1
            log.debug("dead letter %s on %s: %s", result.code, topic, result.message)
            key = result.device.encode() if result.device else None
            return self.topics.deadletter, key, orjson.dumps(result.to_record())
        record = result.to_record()
        if self.event_time_clock:
            record["received_at"] = result.ts
        self.stats.forwarded += 1
        return self.topics.telemetry, result.device.encode(), orjson.dumps(record)

    async def _pump(self, producer, client: mqtt.Client) -> None:  # noqa: ANN001
        """Validate, produce, wait for Kafka's acks, then ack MQTT: in batches, in order."""
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < 2000:
                batch.append(self._queue.get_nowait())
            self.stats.received += len(batch)
            started = time.perf_counter()
            futures = []
            for _mid, _qos, topic, payload, received_at in batch:
                kafka_topic, key, value = self._route(topic, payload, received_at)
                futures.append(await producer.send(kafka_topic, value=value, key=key))
            await asyncio.gather(*futures)
            self.stats.produce_seconds += time.perf_counter() - started
            self.stats.produce_batches += 1
            for mid, qos, *_ in batch:
                if qos > 0:
                    client.ack(mid, qos)
            self.stats.acked += len(batch)

    async def serve_metrics(self, port: int, host: str = "127.0.0.1"):  # noqa: ANN201
        """Expose the counters in Prometheus text format on ``http://host:port/metrics``."""
        from aiohttp import web

        async def metrics(_request: web.Request) -> web.Response:
            return web.Response(text=self.stats.prometheus(), content_type="text/plain", charset="utf-8")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        log.info("bridge metrics on http://%s:%d/metrics", host, port)
        return runner

    async def run(
        self, stop: asyncio.Event, stats_every_s: float = 30.0, metrics_port: int | None = None
    ) -> BridgeStats:
        self._loop = asyncio.get_running_loop()
        metrics = await self.serve_metrics(metrics_port) if metrics_port else None
        k = self.settings.kafka
        await ensure_topics(k.bootstrap, k.topic_prefix, k.partitions)
        producer = make_producer(k.bootstrap, client_id=self.client_id)
        await producer.start()
        client = self._make_client()
        self._client = client
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.settings.mqtt.session_expiry_s
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        client.connect_async(
            self.settings.mqtt.host, self.settings.mqtt.port, keepalive=30,
            clean_start=False, properties=props,
        )
        client.loop_start()
        pump = asyncio.create_task(self._pump(producer, client))
        reporter = asyncio.create_task(self._report(stats_every_s))
        try:
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({pump, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if pump in done:
                pump.result()  # re-raise a crash of the pump
        finally:
            reporter.cancel()
            client.disconnect()
            client.loop_stop()
            pump.cancel()
            await producer.stop()
            if metrics is not None:
                await metrics.cleanup()
            log.info("bridge stopped: %s", self.stats.summary())
        return self.stats

    async def _report(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            log.info("bridge: %s", self.stats.summary())
