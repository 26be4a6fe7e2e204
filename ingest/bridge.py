"""The MQTT → Kafka bridge: takes everything the sensors send, loses nothing.

paho-mqtt runs its network loop in its own thread and hands every message to
an asyncio loop, which validates it (``ingest.validate``), produces the
``Reading`` to ``<prefix>.telemetry`` (or the ``Rejection`` to
``<prefix>.deadletter``) and only after Kafka has acknowledged the produce
sends the MQTT PUBACK (paho ``manual_ack``). A bridge killed with messages in
flight therefore loses none: the broker redelivers what was never acked, and
the duplicates this can make are harmless downstream (readings are deduplicated
by device and event time). An acknowledgement from another log than the one
before (a restarted Kafka broker, which may have kept nothing) is not trusted:
the record is produced again and seen in the log first (``ingest.confirm``).

No single message can stop the bridge (docs/contracts.md, "MQTT"). Validation
never raises and bounds what it accepts (``too_deep``, ``duplicate_key``);
whatever still fails for one message after validation (serialising its
record, Kafka refusing that record) dead-letters that message as
``internal_error`` with the exception text and its raw bytes, logged once,
and the batch goes on (``Bridge._rescue``). ``forwarded`` and ``rejected``
count only what Kafka acknowledged. Only Kafka itself failing (a timeout, a
lost connection, refusing even a bare dead letter) stops the bridge, before
the batch is acked, so the broker redelivers it to the next bridge.

Several bridges share the load through an MQTT v5 shared subscription
(``$share/<group>/city/#``, ``contract.topics.shared_subscription``): every
topic under ``city/`` reaches a bridge, so a message on a topic that breaks
the scheme becomes a ``bad_topic`` dead letter instead of vanishing unseen.
Counters are prometheus-client metrics (``BridgeStats``), served on
``/metrics`` with ``--metrics-port``.
Dispatch happens in ``on_message`` because paho's ``message_callback_add``
does not match ``$share`` filters (paho issue #472). The session is
persistent (``clean_start=False`` plus a Session Expiry Interval), so what is
published while the bridge is down waits in the broker. MQTT v5 Receive Maximum bounds the unacknowledged messages the
broker sends us: that is the bridge's back-pressure.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import orjson
import paho.mqtt.client as mqtt
from aiokafka.errors import KafkaTimeoutError, ProducerClosed
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from bus.kafka import client_security, ensure_topics, make_producer, start_client
from contract.journal import journal_key
from contract.reading import Reading
from contract.topics import BROKER_COUNTERS, KafkaTopics, parse_topic, shared_subscription
from foundation.settings import Settings
from ingest.broker_stats import BrokerWatch
from ingest.confirm import RECENT_S, AckedOffsets, AckLog, produce_until_kept, swallowed_error
from ingest.validate import IngestLimits, Rejection, parse_message
from registry.devices import RegistryWatcher

log = logging.getLogger(__name__)

RECEIVE_MAXIMUM = 1000
"""Unacknowledged QoS-1 messages the broker may have in flight to one bridge."""


PRODUCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds; one batch's validation, produce and wait for Kafka's acks."""


def _count(metric: Counter) -> float:
    """A counter's value summed over its labels (read through the collector API)."""
    return sum(s.value for m in metric.collect() for s in m.samples if s.name.endswith("_total"))


class BridgeStats:
    """Counters a duty engineer reads at 3 a.m.: what came in, what went out, why not.

    Kept in prometheus-client metrics of this instance's own
    ``CollectorRegistry`` (one per ``Bridge``: two bridges in one process
    never mix their counts); ``exposition()`` is the text ``/metrics`` serves.

    ========================================  =======  ==========================================
    metric                                    type     what
    ========================================  =======  ==========================================
    citywatch_bridge_received_total           counter  MQTT messages taken from the broker
    citywatch_bridge_forwarded_total          counter  readings Kafka acknowledged on ``.telemetry``
    citywatch_bridge_rejected_total{reason}   counter  dead letters Kafka acknowledged, by code
    citywatch_bridge_in_flight                gauge    received, not yet forwarded or rejected
    citywatch_bridge_produce_seconds_total    counter  time spent validating and producing
    citywatch_bridge_produce_batches_total    counter  batches produced
    citywatch_bridge_produce_batch_seconds    histo.   one batch, from validation to Kafka's acks
    citywatch_bridge_mqtt_connects_total      counter  MQTT (re)connections
    citywatch_kafka_topics_missing            gauge    citywatch topics the broker lacked at the
                                                       last look (``bus.watch``; 0 when all there)
    citywatch_kafka_topics_lost_total         counter  times the broker was seen to have lost them
    citywatch_bridge_reproduced_total         counter  journal records produced again after a
                                                       broker restart (``ingest.confirm``)
    citywatch_broker_dropped                  gauge    the broker's drops since its start ($SYS)
    citywatch_broker_dropped_per_minute       gauge    the broker's drops per minute ($SYS)
    citywatch_broker_stored_messages          gauge    messages the broker holds: its queue depth
    ========================================  =======  ==========================================

    The ``citywatch_broker_*`` gauges are the broker's own counters (``ingest.broker_stats``),
    -1 until the broker has sent them (or when it refuses them to the bridge).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self._received = Counter(
            "citywatch_bridge_received", "MQTT messages taken from the broker", registry=reg
        )
        self._forwarded = Counter(
            "citywatch_bridge_forwarded",
            "Readings Kafka acknowledged on <prefix>.telemetry",
            registry=reg,
        )
        self._rejected = Counter(
            "citywatch_bridge_rejected", "Dead letters Kafka acknowledged on <prefix>.deadletter, by reason",
            ["reason"], registry=reg,
        )  # fmt: skip
        in_flight = Gauge(
            "citywatch_bridge_in_flight",
            "Messages received, not yet forwarded or dead-lettered",
            registry=reg,
        )
        in_flight.set_function(lambda: self.in_flight)
        self._produce_seconds = Counter(
            "citywatch_bridge_produce_seconds",
            "Seconds spent validating and producing batches",
            registry=reg,
        )
        self._produce_batches = Counter(
            "citywatch_bridge_produce_batches", "Batches produced to Kafka", registry=reg
        )
        self._batch_seconds = Histogram(
            "citywatch_bridge_produce_batch_seconds", "One batch: validation, produce, Kafka's acks",
            registry=reg, buckets=PRODUCE_BUCKETS,
        )  # fmt: skip
        self._connects = Counter(
            "citywatch_bridge_mqtt_connects", "MQTT connections (re)established", registry=reg
        )
        self.topics_missing = Gauge(
            "citywatch_kafka_topics_missing",
            "citywatch topics the Kafka broker lacked at the last look (0: all there)",
            registry=reg,
        )
        self.topics_lost = Counter(
            "citywatch_kafka_topics_lost",
            "Times the Kafka broker was seen to have lost citywatch's topics (restarted empty)",
            registry=reg,
        )
        self._reproduced = Counter(
            "citywatch_bridge_reproduced",
            "Journal records the old broker acknowledged in its last seconds, produced again "
            "after a broker restart",
            registry=reg,
        )
        self.broker: BrokerWatch | None = None
        """The broker's own counters (``ingest.broker_stats``), once the bridge watches them."""
        for name, doc, read in (
            ("citywatch_broker_dropped", "Messages the MQTT broker dropped since its start "
             "(after PUBACKing them; -1 until heard)", lambda c: c.dropped),
            ("citywatch_broker_dropped_per_minute", "The broker's drops per minute, 1-min "
             "average (-1 until heard)", lambda c: c.dropped_per_min),
            ("citywatch_broker_stored_messages", "Messages the broker holds now: queued, in "
             "flight, retained (-1 until heard)", lambda c: c.stored),
        ):  # fmt: skip
            Gauge(name, doc, registry=reg).set_function(self._broker_reader(read))
        self._rejected_by: dict[str, Counter] = {}
        self.acked = 0
        """Messages acknowledged to the MQTT broker (after Kafka acknowledged them)."""

    def _broker_reader(self, read: Callable[[Any], float | None]) -> Callable[[], float]:
        def value() -> float:
            v = None if self.broker is None else read(self.broker.counters)
            return -1.0 if v is None else float(v)

        return value

    # ---------------------------------------------------------------- counting (the bridge)

    def count_received(self, n: int) -> None:
        self._received.inc(n)

    def count_forwarded(self) -> None:
        self._forwarded.inc()

    def count_reproduced(self, n: int) -> None:
        self._reproduced.inc(n)

    def count_rejected(self, reason: str) -> None:
        child = self._rejected_by.get(reason)
        if child is None:
            child = self._rejected_by[reason] = self._rejected.labels(reason)
        child.inc()

    def count_batch(self, seconds: float) -> None:
        self._produce_seconds.inc(seconds)
        self._produce_batches.inc()
        self._batch_seconds.observe(seconds)

    def count_connect(self) -> None:
        self._connects.inc()

    # ---------------------------------------------------------------- reading

    @property
    def received(self) -> int:
        return int(_count(self._received))

    @property
    def forwarded(self) -> int:
        return int(_count(self._forwarded))

    @property
    def rejected(self) -> collections.Counter[str]:
        """Dead letters by reason."""
        out: collections.Counter[str] = collections.Counter()
        for m in self._rejected.collect():
            for sample in m.samples:
                if sample.name.endswith("_total"):
                    out[sample.labels["reason"]] = int(sample.value)
        return out

    @property
    def produce_seconds(self) -> float:
        return _count(self._produce_seconds)

    @property
    def produce_batches(self) -> int:
        return int(_count(self._produce_batches))

    @property
    def connects(self) -> int:
        return int(_count(self._connects))

    @property
    def in_flight(self) -> int:
        return int(_count(self._received) - _count(self._forwarded) - _count(self._rejected))

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format (``CONTENT_TYPE_LATEST``)."""
        return generate_latest(self.registry)

    def summary(self) -> str:
        rejected = ", ".join(f"{c}={n}" for c, n in self.rejected.most_common()) or "none"
        batches = self.produce_batches
        mean_ms = 1000 * self.produce_seconds / batches if batches else 0.0
        dropped = None if self.broker is None else self.broker.counters.dropped
        broker = "" if dropped is None else f"; broker dropped {dropped:.0f} since its start"
        return (
            f"received={self.received} forwarded={self.forwarded} in_flight={self.in_flight} "
            f"rejected: {rejected}; kafka produce {mean_ms:.1f} ms/batch{broker}"
        )


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


# ------------------------------------------------------------------ one message's Kafka record

KafkaRecord = tuple[str, bytes | None, bytes]
"""(Kafka topic, key, value)."""


def kafka_record(
    result: Reading | Rejection, topics: KafkaTopics, event_time: bool = False
) -> KafkaRecord:
    """The Kafka record of one validation result (docs/contracts.md, "Kafka").

    A ``Reading`` goes to ``<prefix>.telemetry`` keyed by its district (with
    ``event_time``, ``received_at`` is its own ``ts``: simulation mode), a
    ``Rejection`` to ``<prefix>.deadletter`` keyed by its device when the topic
    parsed. Raises only when a reading cannot be serialised, which validation
    is there to prevent; the bridge then dead-letters that message.
    """
    if isinstance(result, Rejection):
        return topics.deadletter, _key(result.device), deadletter_value(result)
    record = result.to_record()
    if event_time:
        record["received_at"] = result.ts
    return topics.telemetry, journal_key(result.district), orjson.dumps(record)


def deadletter_value(rejection: Rejection) -> bytes:
    """``Rejection.to_record()`` as JSON; never raises.

    A text orjson refuses (a lone surrogate in a topic or an exception's text)
    is written with backslash escapes instead.
    """
    record = rejection.to_record()
    try:
        return orjson.dumps(record)
    except orjson.JSONEncodeError:
        return orjson.dumps({k: _printable(v) for k, v in record.items()})


def _printable(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)
    return value


def _key(device: str | None) -> bytes | None:
    return device.encode("utf-8", "backslashreplace") if device else None


def _exc_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def kafka_unavailable(exc: BaseException) -> bool:
    """True when Kafka itself failed, not the record: nothing to dead-letter then.

    A timeout, a closed producer, any error Kafka marks retriable (a lost
    connection, a leader moving), or a cancellation. A reading that timed out
    in an outage must be redelivered, not filed as a dead letter.
    """
    if not isinstance(exc, Exception):
        return True
    return isinstance(exc, (KafkaTimeoutError, ProducerClosed)) or (
        getattr(exc, "retriable", False) is True
    )


def _stop(exc: BaseException) -> NoReturn:
    log.error(
        "Kafka failed (%s); the bridge stops before the batch is acked, the broker redelivers it",
        _exc_text(exc),
    )
    raise exc


@dataclasses.dataclass(slots=True)
class _Attempt:
    """One message of a batch on its way to Kafka."""

    item: tuple[int, int, str, bytes, int]
    """(mid, qos, topic, payload, received_at) as taken from MQTT."""
    result: Reading | Rejection
    record: KafkaRecord | None = None
    future: Any = None
    """The producer's future for ``record`` (None until sent, or when sending failed)."""
    failure: str | None = None
    """What went wrong after validation, for the dead letter (None: nothing so far)."""
    alone: bool = True
    """False when ``record`` failed as part of a produce batch: worth one try on its own."""


class Bridge:
    """One bridge process. ``await bridge.run(stop)`` until ``stop`` is set.

    settings: MQTT and Kafka addresses, topic prefix, shared group, registry path.
    client_suffix: distinguishes bridges of one group (each needs its own
        persistent session; the shared subscription splits the stream).
    registry_check_s: how often the registry file is checked for edits.
    broker_watch_s: how often the broker is checked for lost topics (``bus.watch``).
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
        broker_watch_s: float = 5.0,
    ):
        self.settings = settings
        self.topics = KafkaTopics(settings.kafka.topic_prefix)
        self.client_id = f"{settings.mqtt.client_id}-{client_suffix}"
        self.limits = limits or IngestLimits()
        if event_time_clock:
            self.limits = dataclasses.replace(
                self.limits, max_future_ms=10**15, max_lateness_ms=10**15
            )
        self.event_time_clock = event_time_clock
        self.clock = clock
        self.registry = RegistryWatcher(
            settings.paths.registry,
            check_interval_s=registry_check_s,
            on_error=self._registry_error,
        )
        self.stats = BridgeStats()
        self.broker_watch_s = broker_watch_s
        self.broker = BrokerWatch(self.client_id, settings.mqtt.url.split("@")[-1])
        self.stats.broker = self.broker
        self._sys_mids: set[int] = set()
        self.subscribed = asyncio.Event()
        self._queue: asyncio.Queue[tuple[int, int, str, bytes, int] | None] = asyncio.Queue()
        """MQTT messages for the pump; ``None`` wakes it for a restarted broker alone."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._acked = AckedOffsets()
        self._acklog = AckLog(Path(settings.paths.state_dir) / "bridge" / self.client_id)
        """The last acknowledgements, produced again after a broker restart (decision 010 §10)."""
        self._cluster_id: str | None = None
        """The Kafka cluster id the bridge's acknowledgements come from, as last seen."""
        self._restart_seen = False
        """The broker watch saw a new cluster id (set from its callback, read by the pump)."""
        self._reproduced_at = -float("inf")

    # ---------------------------------------------------------------- MQTT side (paho thread)

    def _registry_error(self, err: Exception) -> None:
        log.error("registry edit refused, still serving the previous version: %s", err)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if reason_code.is_failure:
            log.error("MQTT connect refused: %s", reason_code)
            return
        self.stats.count_connect()
        session = "resumed" if flags.session_present else "new"
        log.info("MQTT connected to %s (%s session)", self.settings.mqtt.url, session)
        client.subscribe(shared_subscription(self.settings.mqtt.shared_group), qos=1)
        # the broker's drop counters, QoS 0 (never queued for us, never acked): ingest.broker_stats
        _rc, mid = client.subscribe([(topic, 0) for topic in BROKER_COUNTERS])
        self._sys_mids.add(mid)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # noqa: ANN001
        if mid in self._sys_mids:
            self._sys_mids.discard(mid)
            refused = [
                t for t, rc in zip(BROKER_COUNTERS, reason_codes, strict=False) if rc.is_failure
            ]
            if refused:
                log.warning(
                    "the MQTT broker refuses the bridge its drop counters (%s): readings it drops "
                    "after acknowledging them stay invisible. Grant the bridge identity read on "
                    "them (citywatch's broker does after `citywatch services down` and `up`; "
                    "docs/contracts.md, 'Broker counters')",
                    ", ".join(refused),
                )
            return
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.subscribed.set)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:  # noqa: ANN001
        # Never raise here: an exception would end paho's network thread.
        try:
            try:
                topic = msg.topic
            except UnicodeDecodeError:  # MQTT requires UTF-8; a lax broker: bad_topic then
                topic = bytes(msg._topic).decode("utf-8", "backslashreplace")
            if topic.startswith("$SYS/"):  # the broker's counters: not a reading, nothing to ack
                assert self._loop is not None and self.broker is not None
                self._loop.call_soon_threadsafe(
                    self.broker.take, topic, bytes(msg.payload), wall_clock_ms()
                )
                return
            item = (msg.mid, msg.qos, topic, bytes(msg.payload), self.clock())
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except Exception:  # not queued, so never acked: the broker redelivers it
            log.exception("MQTT message %s could not be queued", msg.mid)

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

    def _encode(self, result: Reading | Rejection) -> KafkaRecord:
        return kafka_record(result, self.topics, self.event_time_clock)

    def _count(self, result: Reading | Rejection) -> None:
        if isinstance(result, Rejection):
            self.stats.count_rejected(result.code)
        else:
            self.stats.count_forwarded()

    async def _pump(self, producer, client: mqtt.Client) -> None:  # noqa: ANN001
        """Validate, produce, wait for Kafka's acks, then ack MQTT: in batches, in order.

        A message that fails after validation is dead-lettered by ``_rescue``
        and the batch goes on; only Kafka itself failing (``kafka_unavailable``)
        raises, before the batch is acked.
        """
        while True:
            taken = [await self._queue.get()]
            while not self._queue.empty() and len(taken) < 2000:
                taken.append(self._queue.get_nowait())
            batch = [item for item in taken if item is not None]
            self.stats.count_received(len(batch))
            started = time.perf_counter()
            attempts = [await self._send(producer, item) for item in batch]
            sent = [a for a in attempts if a.future is not None]
            outcomes = await asyncio.gather(*(a.future for a in sent), return_exceptions=True)
            swallowed = []  # acknowledged by another log than before, or refused as no topic
            for attempt, outcome in zip(sent, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    if swallowed_error(outcome):
                        swallowed.append(attempt)
                    else:
                        self._failed(attempt, outcome, alone=False)
                elif self._acked.behind(outcome):
                    swallowed.append(attempt)
            restart, self._restart_seen = self._restart_seen, False  # before the await below
            again = await self._after_restart() if (swallowed or restart) else []
            if swallowed or again:  # a restarted broker: the batch's PUBACKs wait until kept
                records = [a.record for a in swallowed if a.record is not None]
                await produce_until_kept(
                    self.settings.kafka, producer, records + again, self._acked
                )
            noted = [
                a.record for a in sent
                if a.failure is None and a.record is not None
                and a.record[0] == self.topics.telemetry
            ]  # fmt: skip
            self._acklog.write(self._cluster_id, noted)
            for attempt in attempts:
                if attempt.failure is None:
                    self._count(attempt.result)
                else:
                    await self._rescue(producer, attempt)
            if batch or again:  # not a wake-up alone
                self.stats.count_batch(time.perf_counter() - started)
            for mid, qos, *_ in batch:
                if qos > 0:
                    client.ack(mid, qos)
            self.stats.acked += len(batch)

    async def _after_restart(self) -> list[KafkaRecord]:
        """What the bridge had acknowledged in its last ``RECENT_S`` or two, once per restart.

        A planned stop of the broker can cut off, after the archive's last commit, a reading
        the old broker acknowledged (decision 010 §10); producing the recent ones again brings it
        back, and the twins of those the archive kept are harmless (``ingest.confirm``). The
        first sign wins: a second one within ``RECENT_S`` is the same restart.
        """
        now = time.monotonic()
        if now - self._reproduced_at < RECENT_S:
            return []
        self._reproduced_at = now
        again = await asyncio.to_thread(self._acklog.recent)
        if again:
            log.warning(
                "bridge: a restarted broker; the %d journal records acknowledged in the last "
                "%.0f-%.0f s are produced again (twins are harmless, decision 010 §10)",
                len(again), RECENT_S, 2 * RECENT_S,
            )  # fmt: skip
            self.stats.count_reproduced(len(again))
        return again

    async def _send(self, producer, item: tuple[int, int, str, bytes, int]) -> _Attempt:  # noqa: ANN001
        """Validate one message, serialise its record and hand it to the producer."""
        _mid, _qos, topic, payload, received_at = item
        attempt = _Attempt(
            item, parse_message(topic, payload, received_at, self.registry, self.limits)
        )
        what = "dead letter" if isinstance(attempt.result, Rejection) else "reading"
        try:
            attempt.record = self._encode(attempt.result)
        except Exception as exc:
            attempt.failure = f"serialising its {what} record failed ({_exc_text(exc)})"
            return attempt
        kafka_topic, key, value = attempt.record
        try:
            attempt.future = await producer.send(kafka_topic, value=value, key=key)
        except Exception as exc:  # refused before sending, e.g. larger than max_request_size
            self._failed(attempt, exc, alone=True)
        return attempt

    def _failed(self, attempt: _Attempt, exc: BaseException, alone: bool) -> None:
        if kafka_unavailable(exc):
            _stop(exc)
        assert attempt.record is not None
        attempt.future = None
        attempt.alone = alone
        attempt.failure = f"producing it to {attempt.record[0]} failed ({_exc_text(exc)})"

    async def _produce(self, producer, record: KafkaRecord) -> BaseException | None:  # noqa: ANN001
        """Produce one record on its own and wait for Kafka's ack; the record's own error, if any."""
        try:
            await (await producer.send(record[0], value=record[2], key=record[1]))
        except Exception as exc:
            if kafka_unavailable(exc):
                _stop(exc)
            return exc
        return None

    async def _rescue(self, producer, attempt: _Attempt) -> None:  # noqa: ANN001
        """Dead-letter one message that failed after validation, with its reason; log it once.

        A record that failed with its produce batch gets one try on its own
        first (a batch fails whole). Then a dead letter with the raw bytes
        (up to ``IngestLimits.max_deadletter_raw_bytes``), then one without
        them. Only when Kafka refuses even that does this raise.
        """
        if not attempt.alone and attempt.record is not None:
            again = await self._produce(producer, attempt.record)
            if again is None:
                self._count(attempt.result)
                return
            attempt.failure = f"producing it to {attempt.record[0]} failed ({_exc_text(again)})"
        _mid, _qos, topic, payload, received_at = attempt.item
        result = attempt.result
        parts = parse_topic(topic)
        device = parts.device_id if parts is not None else None
        if isinstance(result, Rejection):
            # its own dead letter failed: the same code, told why, without the raw bytes
            code, message, tries = result.code, f"{result.message}; then {attempt.failure}", [False]
        else:
            code = "internal_error"
            message = f"the reading passed validation, but {attempt.failure}; please report this"
            tries = [True, False]
        kept = self.limits.max_deadletter_raw_bytes
        error: BaseException | None = None
        for with_raw in tries:
            if not with_raw:
                note = "; raw bytes left out" + (
                    f" (the dead letter with them failed: {_exc_text(error)})" if error else ""
                )
            else:
                note = f"; raw bytes truncated to the first {kept}" if len(payload) > kept else ""
            letter = Rejection(
                code,
                message + note,
                topic,
                payload[:kept] if with_raw else b"",
                received_at,
                device,
            )
            error = await self._produce(
                producer, (self.topics.deadletter, _key(device), deadletter_value(letter))
            )
            if error is None:
                self.stats.count_rejected(code)
                log.error("message on %s dead-lettered as %s: %s", topic, code, letter.message)
                return
        assert error is not None
        log.error("Kafka refuses even a dead letter without raw bytes")
        _stop(error)

    async def serve_metrics(self, port: int, host: str = "127.0.0.1"):  # noqa: ANN201
        """Serve ``BridgeStats`` (prometheus-client's text format) on ``http://host:port/metrics``."""
        from aiohttp import web

        async def metrics(_request: web.Request) -> web.Response:
            return web.Response(
                body=self.stats.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )

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
        security = client_security(k)  # docs/decisions/006-kafka-authentication.md
        if not await self._wait_for_kafka(stop, security):
            if metrics is not None:
                await metrics.cleanup()
            log.info("bridge stopped before Kafka answered")
            return self.stats
        producer = make_producer(k.bootstrap, client_id=self.client_id, security=security)
        await start_client(producer, k.bootstrap)
        await self._produce_left_over(producer)
        client = self._make_client()
        self._client = client
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.settings.mqtt.session_expiry_s
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        client.connect_async(
            self.settings.mqtt.host,
            self.settings.mqtt.port,
            keepalive=30,
            clean_start=False,
            properties=props,
        )
        client.loop_start()
        pump = asyncio.create_task(self._pump(producer, client))
        reporter = asyncio.create_task(self._report(stats_every_s))
        kafka_watch = asyncio.create_task(self._watch_kafka(stop))
        watcher = asyncio.create_task(self._publish_broker_cases(producer))
        try:
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait(
                {pump, stopper, watcher}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in (pump, watcher):
                if task in done:
                    task.result()  # re-raise a crash
        finally:
            reporter.cancel()
            watcher.cancel()
            kafka_watch.cancel()
            client.disconnect()
            client.loop_stop()
            pump.cancel()
            await producer.stop()
            self._acklog.close()
            if metrics is not None:
                await metrics.cleanup()
            log.info("bridge stopped: %s", self.stats.summary())
        return self.stats

    async def _produce_left_over(self, producer) -> None:  # noqa: ANN001
        """What this bridge's last process had acknowledged from a broker since restarted
        (``AckLog``: it was killed before it could produce them again, decision 010 §10)."""
        from bus.watch import look_for

        self._cluster_id = (await look_for(self.settings.kafka)).cluster_id
        left = self._acklog.acked_elsewhere(self._cluster_id)
        if not left:
            return
        log.warning(
            "bridge: %d journal records the last bridge %s had acknowledged from a broker since "
            "restarted are produced again (twins are harmless, decision 010 §10)",
            len(left), self.client_id,
        )  # fmt: skip
        await produce_until_kept(self.settings.kafka, producer, left, self._acked)
        self.stats.count_reproduced(len(left))

    async def _wait_for_kafka(self, stop: asyncio.Event, security: dict[str, Any]) -> bool:
        """Kafka answers and citywatch's topics exist: True; ``stop`` was set first: False.

        A bridge started before Kafka waits for it (one log line, a reminder a
        minute: ``bus.kafka.Patience``) and connects to MQTT only then, so what
        devices send meanwhile waits in its persistent session. A failure that
        is not an outage (refused credentials) stops the bridge.
        """
        k = self.settings.kafka
        ready = asyncio.create_task(
            ensure_topics(
                k.bootstrap,
                k.topic_prefix,
                k.partitions,
                security=security,
                wait=True,
                who=f"bridge {self.client_id}",
            )  # fmt: skip
        )
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not ready.done():
            ready.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ready
            return False
        ready.result()
        return True

    async def _watch_kafka(self, stop: asyncio.Event) -> None:
        """A broker that lost the topics is told once, they are recreated, the metrics count it.

        What the bridge produces afterwards goes into the recreated journal; what
        the broker lost comes back from the archive (decision 010)."""
        from bus.watch import BrokerWatch

        def lost(loss: Any) -> None:
            self.stats.topics_lost.inc()
            self._restart_seen = True  # the pump produces the recent records again,
            self._queue.put_nowait(None)  # now, not only when the next reading comes

        watch = BrokerWatch(self.settings.kafka, f"bridge {self.client_id}", on_loss=lost,
                            every_s=self.broker_watch_s)  # fmt: skip
        while not stop.is_set():
            try:
                await watch.check()
            except Exception:  # never the bridge's end: it goes on forwarding
                log.exception("bridge: the broker watch failed once; it goes on")
            self.stats.topics_missing.set(len(watch.missing))
            self._cluster_id = watch.cluster_id or self._cluster_id
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), watch.every_s)

    async def _publish_broker_cases(self, producer, every_s: float = 1.0) -> None:  # noqa: ANN001
        """Publish the broker case's events (``BrokerWatch.due``) on ``<prefix>.cases``, each
        acknowledged by Kafka; the alerts service pushes them like any case."""
        assert self.broker is not None
        while True:
            await asyncio.sleep(every_s)
            for event in self.broker.due(wall_clock_ms()):
                record = event.to_dict()
                await self._produce_case(producer, record)

    async def _produce_case(self, producer, record: dict[str, Any]) -> None:  # noqa: ANN001
        error = await self._produce(
            producer, (self.topics.cases, record["case_id"].encode(), orjson.dumps(record))
        )
        if error is not None:
            log.error("the broker case %s could not be published: %s", record["case_id"], error)

    async def _report(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            log.info("bridge: %s", self.stats.summary())
