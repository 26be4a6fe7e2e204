"""The Faust worker: the detection core on Kafka, and the InfluxDB sinks.

The telemetry topic is the journal of everything the detector sees, in order:
readings from the bridges, officer actions (forwarded from ``<prefix>.acks``
into the journal under the device's key, so they land on the device's
partition between its readings) and, in live mode, watermark ticks of the
wall clock. One pass over the journal is one ``citywatch replay``: the same
input gives the same ledger, live or replayed.

Delivery is at-least-once (the embedded broker has no transactions). Outputs
of an event are sent and acknowledged by Kafka *before* the detector state
that produced them is written to its table, so a crash can only make the
worker repeat outputs (same deterministic ids, harmless downstream), never
skip them; and a repeated input changes nothing (the detector ignores a
reading it has seen, watermarks only move forward, actions are idempotent).

The sinks consume the journal and the case/penalty/dead-letter topics in
batches and flush each batch to InfluxDB before the batch's offsets can be
committed: an InfluxDB outage stops the sinks (back-pressure), it loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import orjson

from contract import journal
from contract.cases import CaseEvent, LedgerEntry, OfficerAction
from contract.journal import Watermark
from contract.reading import Reading
from contract.topics import KafkaTopics
from foundation.settings import Settings
from registry.devices import RegistryWatcher
from store import points
from store.schema import LEDGER_RP, ensure_database
from store.writer import InfluxWriter
from streams.detector import Detector
from streams.rules import Rules, load_rules

log = logging.getLogger(__name__)

SINK_BATCH = 5000
SINK_WITHIN_S = 0.5
CLOCK_EVERY = 200
"""Events between two saves of a partition's clock when nothing else forces one."""


@dataclass(frozen=True)
class WorkerTopics:
    """The Kafka topics the worker reads and writes, declared once (docs/contracts.md, "Kafka")."""

    journal: Any
    acks: Any
    cases: Any
    penalties: Any
    deadletter: Any

    @classmethod
    def declare(cls, app: faust.App, topics: KafkaTopics) -> WorkerTopics:
        def raw(name: str) -> Any:
            return app.topic(name, key_serializer="raw", value_serializer="raw")

        return cls(
            raw(topics.telemetry),
            raw(topics.acks),
            raw(topics.cases),
            raw(topics.penalties),
            raw(topics.deadletter),
        )


class Pipeline:
    """The per-partition detectors and their persistence in Faust tables."""

    def __init__(
        self, app: faust.App, rules: Rules, registry: RegistryWatcher, topics: WorkerTopics
    ):
        self.app = app
        self.rules = rules
        self.registry = registry
        self.detectors: dict[int, Detector] = {}
        self.devices = app.Table("detector-devices", default=None)
        self.clocks = app.Table("detector-clocks", default=None)
        self.cases = topics.cases
        self.penalties = topics.penalties
        self.processed = 0
        self._registry_version = registry.reloads
        self._since_clock: dict[int, int] = {}

    def detector(self, partition: int) -> Detector:
        """The detector of one partition, restored from the tables on first use."""
        det = self.detectors.get(partition)
        if det is None:
            det = Detector(self.rules, self.registry.current())
            clock = self.clocks.get(f"clock:{partition}")
            if clock:
                det.import_clock(clock)
            restored = 0
            for device_id, value in list(self.devices.items()):
                if value and value.get("p") == partition:
                    if det.import_device(device_id, value["s"]):
                        restored += 1
                    else:
                        log.warning(
                            "partition %d: %s is not in the registry and its saved state "
                            "carries no entry (an older release saved it); state dropped",
                            partition,
                            device_id,
                        )
            det.take_dirty()
            if restored or clock:
                log.info(
                    "partition %d: restored %d devices, watermark %s", partition, restored, clock
                )
            self.detectors[partition] = det
        return det

    async def handle(self, partition: int, rec: dict[str, Any]) -> None:
        det = self.detector(partition)
        if (
            self.registry.reloads != self._registry_version
        ):  # an edited registry, picked up between events
            self._registry_version = self.registry.reloads
            for d in self.detectors.values():
                d.set_registry(self.registry.current())
        try:
            item = journal.from_record(rec)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("journal record refused (%s): %r", exc, rec)
            return
        if isinstance(item, Reading):
            outputs = det.on_reading(item)
        elif isinstance(item, OfficerAction):
            outputs = det.on_action(item)
        else:
            outputs = det.on_watermark(item.at)
        if outputs:
            await self.emit(outputs)
        for device_id in det.take_dirty():
            self.devices[device_id] = {"p": partition, "s": det.export_device(device_id)}
        # The partition's clock is saved when time itself moved (a watermark record), when it
        # produced outputs, and every CLOCK_EVERY events otherwise: a changelog send per reading
        # cost a fifth of the worker's time (bench/streams.py). A restored clock that is a few
        # readings behind is caught up by the next reading (the watermark is a maximum), and the
        # devices' own states, written on every change, record what they have booked.
        self._since_clock[partition] = self._since_clock.get(partition, 0) + 1
        if outputs or isinstance(item, Watermark) or self._since_clock[partition] >= CLOCK_EVERY:
            self.clocks[f"clock:{partition}"] = det.export_clock()
            self._since_clock[partition] = 0
        self.processed += 1

    async def emit(self, outputs: Iterable[Any]) -> None:
        futures = []
        for out in outputs:
            if isinstance(out, CaseEvent):
                futures.append(
                    await self.cases.send(
                        key=out.case_id.encode(), value=journal.encode(out.to_dict())
                    )
                )
            elif isinstance(out, LedgerEntry):
                futures.append(
                    await self.penalties.send(
                        key=out.case_id.encode(), value=journal.encode(out.to_dict())
                    )
                )
            else:  # notices and refusals: logged; the alerts service reads cases
                log.info("detector: %s", out)
        if futures:
            await asyncio.gather(*futures)


def faust_config(
    bootstrap: str, partitions: int, session_timeout_s: float, datadir: Path
) -> dict[str, Any]:
    """The worker's Faust settings (the streams benchmark runs its no-op ceiling with the same)."""
    return {
        "broker": f"kafka://{bootstrap}",
        "store": "memory://",
        "processing_guarantee": "at_least_once",
        "topic_partitions": partitions,
        "topic_replication_factor": 1,
        "broker_session_timeout": session_timeout_s,
        "broker_rebalance_timeout": session_timeout_s,
        "broker_heartbeat_interval": min(1.0, session_timeout_s / 3),
        "broker_commit_every": 1000,
        "broker_commit_interval": 1.0,
        "producer_linger": 0.005,
        "consumer_auto_offset_reset": "earliest",
        "web_enabled": False,
        "table_standby_replicas": 0,
        "datadir": str(datadir),
    }


def build_app(
    settings: Settings,
    *,
    live_clock: bool = True,
    tick_interval_s: float = 1.0,
    session_timeout_s: float = 6.0,
) -> faust.App:
    """The Faust app of the worker.

    live_clock: send wall-clock watermark ticks into the journal every
        ``tick_interval_s`` so clocks run while the whole city is silent;
        False in simulation/replay mode, where the input's own time drives them.
    session_timeout_s: Kafka consumer session and rebalance timeouts; tansu
        finishes a group join only after the rebalance timeout, so this is also
        the worker's start-up delay.
    """
    k = settings.kafka
    topics = KafkaTopics(k.topic_prefix)
    datadir = Path(settings.paths.state_dir) / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{k.topic_prefix}-worker",
        **faust_config(k.bootstrap, k.partitions, session_timeout_s, datadir),
    )
    registry = RegistryWatcher(settings.paths.registry)
    declared = WorkerTopics.declare(app, topics)
    pipeline = Pipeline(app, load_rules(settings.paths.rules), registry, declared)
    app.citywatch_pipeline = pipeline  # type: ignore[attr-defined]

    journal_topic, acks, cases, penalties, deadletter = (
        declared.journal,
        declared.acks,
        declared.cases,
        declared.penalties,
        declared.deadletter,
    )
    influx = settings.influx
    writer_ready = asyncio.Event()
    writer = InfluxWriter(influx.url, influx.database, token=influx.token, org=influx.org)
    ledger_writer = InfluxWriter(
        influx.url, influx.database, token=influx.token, org=influx.org, retention_policy=LEDGER_RP
    )

    @app.task(on_leader=False)
    async def start_writer() -> None:
        await asyncio.to_thread(ensure_database, influx.url, influx.database, token=influx.token)
        await writer.start()
        await ledger_writer.start()
        writer_ready.set()

    @app.on_before_shutdown.connect
    async def stop_writer(app: faust.App, **kwargs: Any) -> None:
        await writer.stop()
        await ledger_writer.stop()

    @app.on_partitions_revoked.connect
    async def forget_partitions(app: faust.App, revoked: set, **kwargs: Any) -> None:
        """Another worker may own them now; if they come back, restore them from the tables."""
        for tp in revoked:
            if tp.topic == topics.telemetry:
                pipeline.detectors.pop(tp.partition, None)

    @app.agent(journal_topic, name="detect")
    async def detect(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await pipeline.handle(event.message.partition, orjson.loads(event.value))

    @app.agent(acks, name="forward-acks")
    async def forward_acks(stream: faust.StreamT) -> None:
        """Officer actions join the journal on their device's partition, in order."""
        async for value in stream:
            try:  # a malformed action is refused here, never journaled
                action = OfficerAction.from_dict(orjson.loads(value))
            except (ValueError, KeyError, TypeError) as exc:
                log.error("officer action refused (%s): %r", exc, value)
                continue
            key, body = journal.to_record(action)
            fut = await journal_topic.send(key=key, value=journal.encode(body))
            await fut

    async def sink(stream: faust.StreamT, to_line: Any, writer: InfluxWriter = writer) -> None:
        await writer_ready.wait()
        async for values in stream.take(SINK_BATCH, within=SINK_WITHIN_S):
            lines = []
            for value in values:
                line = to_line(orjson.loads(value))
                if line:
                    lines.append(line)
            await writer.add(lines)
            await writer.flush()

    def journal_line(rec: dict[str, Any]) -> str | None:
        if rec.get("type") != "reading":
            return None
        reading = Reading.from_record(rec)
        return points.telemetry_line(reading, registry.current().get(reading.device))

    @app.agent(journal_topic, name="sink-telemetry")
    async def sink_telemetry(stream: faust.StreamT) -> None:
        await sink(stream, journal_line)

    @app.agent(cases, name="sink-cases")
    async def sink_cases(stream: faust.StreamT) -> None:
        await sink(stream, points.case_event_line, ledger_writer)

    @app.agent(penalties, name="sink-penalties")
    async def sink_penalties(stream: faust.StreamT) -> None:
        await sink(stream, points.penalty_line, ledger_writer)

    @app.agent(deadletter, name="sink-deadletter")
    async def sink_deadletter(stream: faust.StreamT) -> None:
        await sink(stream, points.deadletter_line)

    if live_clock:

        @app.timer(tick_interval_s)
        async def tick() -> None:
            now = time.time_ns() // 1_000_000
            for partition in range(k.partitions):
                await journal_topic.send(
                    partition=partition, value=journal.encode({"type": "watermark", "at": now})
                )

    return app
