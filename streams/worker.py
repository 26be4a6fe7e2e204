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
The state is written as checkpoints, every ``CHECKPOINT_EVERY`` events or
``CHECKPOINT_EVERY_S`` per partition (docs/decisions/017-checkpointed-state.md);
a restored partition runs the journal again from its checkpoint's offset
(docs/decisions/009-state-recovery.md).

No record stops the worker (docs/contracts.md, "Kafka"): a journal record the
detector cannot take -- not JSON, not an object, an unknown type, a missing or
ill-typed field, in live mode a time past the wall clock plus the rules file's
``clock.live_skew_minutes`` (docs/rules.md, "The clock"), or one the detector
raised on -- goes to ``<prefix>.quarantine`` with its reason, its raw bytes and
where it sat, and the stream goes on. The quarantine record is acknowledged
by Kafka before the worker moves past the refused one, so its offset is never
committed without it. A detector that raised is dropped and restored from its
checkpoint, the journal run again up to the refused record and without it:
half-applied work is never kept.
Errors of Kafka itself (a produce that fails) are not quarantined: they stop
the agent as before, and the uncommitted records are read again.

The journal is read once: the detect agent writes each reading's telemetry
line to InfluxDB from the same pass and acks a journal event only once its
line is written (``streams.held``), so an InfluxDB outage holds the commits,
not the detection. The sinks consume the case/penalty/dead-letter/quarantine/
audit topics in batches and flush each batch to InfluxDB before the batch's
offsets can be committed: an InfluxDB outage stops the sinks (back-pressure),
it loses nothing. A value a sink cannot read is counted, logged and skipped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import orjson

from bus.kafka import Patience, consumer_for, ensure_topics_for, faust_credentials, kafka_outage
from contract import journal
from contract.cases import CaseEvent, LedgerEntry, OfficerAction
from contract.clock import LocalClock
from contract.journal import JournalItem, quarantine_record
from contract.reading import Reading
from contract.topics import KafkaTopics
from foundation.settings import Settings
from registry.devices import RegistryWatcher
from store import points
from store.errors import InfluxError
from store.identity import credentials
from store.schema import LEDGER_RP, ensure_database
from store.writer import InfluxWriter
from streams import ledger_copy, recovery, transport
from streams.detector import Detector
from streams.held import HeldAcks
from streams.intake import LiveBound, Refused, decode
from streams.restored import deferred
from streams.rules import Rules, load_rules
from streams.streetlight import LightingMarks

log = logging.getLogger(__name__)

SINK_BATCH = 5000
SINK_WITHIN_S = 0.5
CHECKPOINT_EVERY = 20_000
CHECKPOINT_EVERY_S = 10.0
"""A partition is checkpointed after this many events or seconds, whichever comes first
(docs/decisions/017-checkpointed-state.md): the journal records a restore runs again."""
CHECKPOINT_SLOW_S = 0.1
"""A checkpoint that takes longer is logged with its size: it holds up every event behind it
(bench/RESULTS.md, "2026-12-04: main after the memory fixes")."""
LOG_FIRST = 100
LOG_EVERY = 1000
"""Refused records of one reason: the first LOG_FIRST are logged, then every LOG_EVERY-th."""
HOLE_EVERY_S = 5.0
"""How often the worker looks for a hole its journal commit cannot pass (``reread_holes``)."""
STATS_EVERY_S = 60.0


GC_THRESHOLD = (20_000, 10, 10)
"""The worker process's cyclic-GC thresholds (``tune_gc``); Python's default is (700, 10, 10)."""


def tune_gc() -> None:
    """Make the cyclic garbage collector cheaper for a worker process (bench/RESULTS.md, issue 15).

    With Python's defaults a worker at a few thousand events a second ran a full
    collection every few seconds -- the events, messages and records held in flight
    survive the young generations -- and each took 100-140 ms of CPU over a heap of
    ~175,000 objects: 1.1-2 s of a 60,000-event run, up to a tenth of its time.
    Everything alive once the app is built (modules, Faust, the rules) is frozen
    out of the collector (``gc.freeze``), and a young collection waits for 20,000
    allocations, not 700, so what dies within a held round dies by refcount
    before it is promoted. Nothing is turned off: garbage in cycles is still found.
    Called by ``citywatch worker`` just before the app runs, never by a library import.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class WorkerStats:
    """What the worker refused, by reason, and what its sinks skipped, by topic.

    Logged every ``STATS_EVERY_S`` when it changed; every quarantined record is
    also a ``quarantine`` point in InfluxDB (``count=1i``, tag ``reason``).
    """

    def __init__(self) -> None:
        self.quarantined: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self._reported: tuple[int, int] = (0, 0)

    def should_log(self, counter: Counter[str], key: str) -> bool:
        n = counter[key]
        return n <= LOG_FIRST or n % LOG_EVERY == 0

    def report(self) -> str | None:
        now = (sum(self.quarantined.values()), sum(self.skipped.values()))
        if now == self._reported:
            return None
        self._reported = now
        q = ", ".join(f"{k} {v}" for k, v in sorted(self.quarantined.items())) or "none"
        k = ", ".join(f"{t} {v}" for t, v in sorted(self.skipped.items())) or "none"
        return f"worker: quarantined {now[0]} ({q}); sinks skipped {now[1]} ({k})"


@dataclass(frozen=True)
class WorkerTopics:
    """The Kafka topics the worker reads and writes, declared once (docs/contracts.md, "Kafka")."""

    journal: Any
    acks: Any
    cases: Any
    penalties: Any
    deadletter: Any
    quarantine: Any
    audit: Any

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
            raw(topics.quarantine),
            raw(topics.audit),
        )


class Pipeline:
    """The per-partition detectors and their persistence in Faust tables.

    bound: live mode's ceiling on time (``streams.intake.LiveBound``); None in
        simulation mode, where the input's own time drives the clocks.
    now: the wall clock, epoch ms (tests pass their own).
    journal_reader: reads journal records back to catch a restored partition up
        (``streams.recovery``); None: a partition resumes from its tables as they are.
    restore_mark: a partition's mark of the last archive restore into this broker
        (``streams.restored``): below it, records the restore did not write are taken
        after the restored ones; None (or a mark of None): in partition order.
    """

    def __init__(
        self,
        app: faust.App,
        rules: Rules,
        registry: RegistryWatcher,
        topics: WorkerTopics,
        *,
        bound: LiveBound | None = None,
        now: Callable[[], int] = wall_ms,
        journal_reader: recovery.JournalReader | None = None,
        restore_mark: Callable[[int], Awaitable[int | None]] | None = None,
    ):
        self.app = app
        self.rules = rules
        self.registry = registry
        self.bound = bound
        self.now = now
        self.journal_reader = journal_reader
        self.restore_mark = restore_mark
        self._marks: dict[int, int | None] = {}
        self.detectors: dict[int, Detector] = {}
        self._restored: dict[int, recovery.Restored] = {}
        self.devices = app.Table("detector-devices", default=None, value_type=bytes)
        """Checkpointed state, each value one JSON object as bytes (``recovery.record``): not a
        tree of dicts and lists, which the cyclic GC would walk at every full collection."""
        self._one_slot_held = str(app.conf.store).startswith("memory")
        """Only the newest of a device's two slots is kept in memory: a restore from the changelog
        reads both, an in-process one needs the newest only (every checkpoint in memory is
        whole). Not with a store on disk, whose restart reads only the changelog's tail."""
        self.clocks = app.Table("detector-clocks", default=None)
        """Read only, at a restore of state an older release saved (recovery.restore)."""
        self.cases = topics.cases
        self.penalties = topics.penalties
        self.quarantine_topic = topics.quarantine
        self.journal_name: str = topics.journal.get_topic_name()
        self.processed = 0
        self.stats = WorkerStats()
        self._registry_version = registry.reloads
        self._changed: dict[int, set[str]] = {}
        """Per partition: devices changed since its last checkpoint."""
        self._slots: dict[int, dict[str, int]] = {}
        """Per partition: device -> the slot of its key holding its last checkpointed state."""
        self._seq: dict[int, int] = {}
        self._since: dict[int, int] = {}
        self._checkpointed_at: dict[int, float] = {}
        self._skip: dict[int, set[int]] = {}
        """Per partition: offsets refused since its last checkpoint, not run again by a catch-up."""
        self._last_quarantine_at = 0
        self.rerun: list[JournalItem] = []
        """Items a catch-up re-ran since the detect agent last took them (``take_rerun``): their
        telemetry is written before the record that caused the catch-up is acked."""

    def detector(self, partition: int) -> Detector:
        """The detector of one partition, restored from the tables on first use."""
        det = self.detectors.get(partition)
        if det is None:
            det = Detector(self.rules, self.registry.current())
            clock = self.clocks.get(f"clock:{partition}")
            restored = recovery.restore(det, partition, clock, list(self.devices.items()))
            self._restored[partition] = restored
            self._changed[partition] = set(restored.rewrite)
            self._slots[partition] = dict(restored.slots)
            self._seq[partition] = restored.seq
            self._since[partition] = 0
            self._checkpointed_at[partition] = time.monotonic()
            if restored.devices or restored.clock:
                log.info(
                    "partition %d: restored %d devices, watermark %s, journal offset %s",
                    partition, restored.devices, det.watermark, restored.offset,
                )  # fmt: skip
            wm = det.watermark
            if self.bound is not None and wm is not None and wm > self.now() + self.bound.skew_ms:
                log.error(
                    "partition %d: the restored watermark %d is past the wall clock; "
                    'it was applied before this worker bounded time (docs/rules.md, "The clock")',
                    partition,
                    wm,
                )
            self.detectors[partition] = det
        return det

    def _committed(self, partition: int) -> int | None:
        """The journal partition's committed offset as Faust's consumer knows it (None: unknown)."""
        known = getattr(getattr(self.app, "consumer", None), "_committed_offset", None)
        if not isinstance(known, dict):
            return None
        offset = known.get((self.journal_name, partition))
        return offset if isinstance(offset, int) else None

    def take_rerun(self) -> list[JournalItem]:
        """What catch-ups re-ran since the last call, for their telemetry lines.

        The catch-up runs the journal from the checkpoint to the first record the
        stream hands over, and that record is not always the committed one: after a
        rebalance Faust's consumer can drop records of a newly assigned partition
        before the agent sees them, and its gap accounting then commits past them
        once a later record is acked (the survivor of two workers: the ledger exact
        from the catch-up, 241-361 readings of each kind never in InfluxDB). So the
        re-run records' lines are written too, before that later record's ack
        (InfluxDB stores a line written twice once, store/writer.py).
        """
        out, self.rerun = self.rerun, []
        return out

    def forget(self, partition: int) -> None:
        """Drop a partition's detector and what it had not checkpointed: the next record
        restores it from the tables and the journal (docs/decisions/017-checkpointed-state.md)."""
        self.detectors.pop(partition, None)
        self._changed.pop(partition, None)

    async def resume(self, partition: int, offset: int) -> None:
        """Restore a partition and catch its state up to ``offset``, the first record taken.

        The tables hold the partition's last checkpoint, older than the committed
        offset (docs/decisions/009-state-recovery.md, 017-checkpointed-state.md);
        the journal records in between are run again first.
        """
        self.detector(partition)
        log.info("partition %d: the first record taken is at %d", partition, offset)
        committed = self._committed(partition)
        if committed is not None and offset > committed:
            log.warning(
                "partition %d: the first record given is at %d, past the committed offset %d: "
                "the records in between are re-run and their telemetry written by the catch-up "
                "(docs/decisions/017-checkpointed-state.md)", partition, offset, committed,
            )  # fmt: skip
        if self.restore_mark is not None:
            self._marks[partition] = mark = await self.restore_mark(partition)
            if mark and offset < mark:
                log.info("partition %d: restored up to its mark %d: what the restore did not "
                         "write below it is taken after %d", partition, mark, mark - 1)  # fmt: skip
        while True:
            restored = self._restored.pop(partition, None)
            if restored is None or self.journal_reader is None:
                return
            broke = False

            async def again(at: int, raw: bytes | None, key: bytes | None, headers: Any) -> None:
                nonlocal broke
                if broke:
                    return
                if not deferred(at, headers, self._marks.get(partition)):
                    await self._again(partition, at, raw, key)
                if partition in self.detectors:
                    await self._at_mark(partition, at, again=True)
                broke = partition not in self.detectors  # it raised: start again without it

            await recovery.catch_up(partition, restored, offset, self.journal_reader, again)
            if not broke:
                return
            self.detector(partition)

    async def _again(self, partition: int, at: int, raw: bytes | None, key: bytes | None) -> None:
        """One record of a catch-up: applied as it was the first time, never quarantined again."""
        if at in self._skip.get(partition, ()):
            return  # refused by this process: quarantined already
        item = decode(raw)  # refused records were quarantined the first time
        if isinstance(item, Refused):
            return
        if self.bound is not None and self.bound.check(item, self.now()) is not None:
            return
        await self.handle(partition, item, raw=raw, key=key, offset=at)
        self.rerun.append(item)

    async def _at_mark(self, partition: int, offset: int, *, again: bool = False) -> None:
        """Right after the record before a partition's restore mark: the records deferred below it.

        They are read back from the journal (``streams.restored``: written while the archive
        was restored, they follow its history); a catch-up (``again``) re-runs them as it
        re-runs any record, a first pass quarantines what cannot be taken.
        """
        mark = self._marks.get(partition)
        if not mark or offset != mark - 1 or self.journal_reader is None:
            return
        n = 0
        async for at, key, raw, headers in self.journal_reader(partition, 0, mark):
            if not deferred(at, headers, mark):
                continue
            n += 1
            if again:
                await self._again(partition, at, raw, key)
            else:
                await self._apply(partition, at, raw, key)
        log.info("partition %d: took the %d records written below the restore's mark %d while "
                 "the archive was restored, after its history", partition, n, mark)  # fmt: skip

    async def take(
        self, partition: int, offset: int, raw: bytes | None, key: bytes | None,
        headers: Any = None,
    ) -> JournalItem | None:  # fmt: skip
        """One journal record as it came off Kafka: decoded, bounded, applied -- or quarantined.

        Returns the item when it was in bounds (applied, or quarantined by a detector
        that raised on it), None when the record was refused before the detector.
        Below the partition's restore mark, a record the restore did not write is applied
        at the mark (``streams.restored``); it is returned now, for its telemetry line.
        """
        if partition not in self.detectors:
            await self.resume(partition, offset)
        mark = self._marks.get(partition)
        item = decode(raw)
        ok = (  # the item, when it is readable and within the live bound
            None
            if isinstance(item, Refused)
            or (self.bound is not None and self.bound.check(item, self.now()) is not None)
            else item
        )
        if mark is not None and deferred(offset, headers, mark):
            out = ok
        elif ok is not None:  # the common case: no await unless there is something to send
            outputs = self._detect(partition, ok, offset)
            if isinstance(outputs, Refused):
                await self.quarantine(outputs, raw, key, self.journal_name, partition, offset)
            else:
                if outputs:
                    await self.emit(outputs)
                self._count(partition, offset)
            out = ok
        else:
            out = await self._apply(partition, offset, raw, key, item)
        if mark and offset == mark - 1:
            await self._at_mark(partition, offset)
        return out

    async def _apply(
        self, partition: int, offset: int, raw: bytes | None, key: bytes | None,
        item: JournalItem | Refused | None = None,
    ) -> JournalItem | None:  # fmt: skip
        if item is None:
            item = decode(raw)
        if isinstance(item, Refused):
            await self.quarantine(item, raw, key, self.journal_name, partition, offset)
            return None
        if self.bound is not None:
            refused = self.bound.check(item, self.now())
            if refused is not None:
                self._skip.setdefault(partition, set()).add(offset)
                await self.quarantine(refused, raw, key, self.journal_name, partition, offset)
                return None
        await self.handle(partition, item, raw=raw, key=key, offset=offset)
        return item

    async def handle(
        self, partition: int, item: JournalItem, *,
        raw: bytes | None = None, key: bytes | None = None, offset: int = -1,
    ) -> None:  # fmt: skip
        """Apply one decoded journal item; its outputs are acknowledged before it can be
        checkpointed, and the partition is checkpointed every ``CHECKPOINT_EVERY`` events
        or ``CHECKPOINT_EVERY_S`` (docs/decisions/017-checkpointed-state.md)."""
        outputs = self._detect(partition, item, offset)
        if isinstance(outputs, Refused):
            await self.quarantine(outputs, raw, key, self.journal_name, partition, offset)
            return
        if outputs:
            await self.emit(outputs)
        self._count(partition, offset)

    def _detect(self, partition: int, item: JournalItem, offset: int) -> list[Any] | Refused:
        """The detector's outputs for one item (not yet sent), or why it was refused: a
        detector that raised is dropped (``forget``) and the record is to be quarantined."""
        det = self.detector(partition)
        if (
            self.registry.reloads != self._registry_version
        ):  # an edited registry, picked up between events
            self._registry_version = self.registry.reloads
            for d in self.detectors.values():
                d.set_registry(self.registry.current())
        try:
            if isinstance(item, Reading):
                outputs = det.on_reading(item)
            elif isinstance(item, OfficerAction):
                outputs = det.on_action(item)
            else:
                outputs = det.on_watermark(item.at)
            changed = det.take_dirty()
        except Exception as exc:  # one record's failure: never the stream's (docs/contracts.md)
            # Whatever the detector did since its last checkpoint was not saved: drop it; the
            # next record restores the partition from the checkpoint and runs the journal
            # again up to itself, this record left out.
            self.forget(partition)
            self._skip.setdefault(partition, set()).add(offset)
            log.exception("partition %d offset %d: the detector raised", partition, offset)
            return Refused("detector_error", f"{type(exc).__name__}: {exc}")
        if changed:
            self._changed[partition] |= changed
        return outputs

    def _count(self, partition: int, offset: int) -> None:
        """One more event applied, its outputs acknowledged: checkpoint when it is time."""
        self.processed += 1
        since = self._since[partition] + 1
        if since >= CHECKPOINT_EVERY or (
            time.monotonic() - self._checkpointed_at[partition] >= CHECKPOINT_EVERY_S
        ):
            self.checkpoint(partition, offset)
        else:
            self._since[partition] = since

    def checkpoint(self, partition: int, offset: int) -> None:
        """Write the partition's changed devices, then its marker: the state at ``offset``.

        Each changed device's state goes to the one of its two keys that does not
        hold its last checkpointed state, and the marker (the partition clock, the
        offset, the checkpoint's number) goes after them into the same changelog
        partition with no await between, so it lands after them: a crash in between
        leaves the last marker and every device's state at it intact
        (``recovery.restore``). The outputs of every event up to ``offset`` were
        acknowledged before (``handle``).
        """
        started = time.perf_counter()
        det = self.detectors[partition]
        seq = self._seq[partition] + 1
        slots = self._slots[partition]
        changed = self._changed[partition]
        try:  # every export first: a checkpoint is written whole or not at all
            states = [(d, st) for d in changed if (st := det.export_device(d)) is not None]
            clock = det.export_clock()
        except Exception:  # a rule's export bug: the state stays where it is, the stream goes on
            log.exception("partition %d offset %d: a state export raised; not checkpointed",
                          partition, offset)  # fmt: skip
            return
        # the table's store (memory, not the changelog): 230 MiB at 30,000 devices for slots no
        # in-process restore reads (bench/RESULTS.md, "2026-12-04: the bisect")
        held = getattr(self.devices, "data", None) if self._one_slot_held else None
        for device_id, state in states:
            slot = 1 - slots.get(device_id, 1)
            self.devices[recovery.device_key(device_id, slot)] = orjson.dumps({
                "p": partition, "s": state, recovery.OFFSET: offset, recovery.SEQ: seq,
            })  # fmt: skip
            slots[device_id] = slot
            if held is not None:  # the other slot is for a restore from the changelog alone
                held.pop(recovery.device_key(device_id, 1 - slot), None)
        self.devices[recovery.checkpoint_key(partition)] = orjson.dumps({
            "p": partition, "clock": clock, recovery.OFFSET: offset, recovery.SEQ: seq,
        })  # fmt: skip
        self._seq[partition] = seq
        self._changed[partition] = set()
        self._since[partition] = 0
        self._checkpointed_at[partition] = time.monotonic()
        skip = self._skip.get(partition)
        if skip:
            self._skip[partition] = {o for o in skip if o > offset}
        took = time.perf_counter() - started
        if took >= CHECKPOINT_SLOW_S:  # no event is taken meanwhile: it is every event's latency
            log.info("partition %d: checkpoint %d wrote %d devices in %.2f s", partition, seq,
                     len(states), took)  # fmt: skip

    async def quarantine(
        self, refused: Refused, raw: bytes | None, key: bytes | None, topic: str,
        partition: int, offset: int,
    ) -> None:  # fmt: skip
        """Send a refused record to ``<prefix>.quarantine`` and wait for Kafka's ack.

        Its ``at`` is the wall clock, kept strictly increasing so two quarantine
        points of one partition never share series and timestamp in InfluxDB.
        """
        at = max(wall_ms(), self._last_quarantine_at + 1)
        self._last_quarantine_at = at
        rec = quarantine_record(
            refused.reason, refused.message, raw, topic, partition, offset, at, key
        )
        fut = await self.quarantine_topic.send(key=key, value=journal.encode(rec))
        await fut  # stored before the refused record's offset can be committed
        self.stats.quarantined[refused.reason] += 1
        if self.stats.should_log(self.stats.quarantined, refused.reason):
            log.warning(
                "quarantined %s[%d]@%d (%s): %s",
                topic, partition, offset, refused.reason, refused.message,
            )  # fmt: skip

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


class WorkerApp(faust.App):
    """The worker's Faust app: it waits for Kafka before anything of Faust's talks to it.

    Faust's consumer and producer give up at once when Kafka does not answer
    at their start, and the worker would exit. ``on_first_start`` runs before
    them (mode's Service: dependencies start after it): it waits for Kafka,
    one log line and a reminder a minute (``bus.kafka.Patience``), and creates
    citywatch's topics with the settings' partitions before Faust sees them.
    """

    citywatch_kafka: Any = None
    """The ``KafkaSettings`` it waits for (set by ``build_app``)."""
    citywatch_afresh: str | None = None
    """Set when this process starts afresh on a broker that lost its state (``build_app``'s
    ``afresh``): what that broker holds of the worker's group is reset before Faust starts."""

    citywatch_datadir: Path | None = None
    """Where the cluster id this worker last ran on is kept (``<group>.cluster``)."""
    citywatch_archive: Path | None = None
    """The journal archive of the prefix on this machine (decision 010): where one is kept, a
    worker started afresh waits for its restore's marks before it takes anything."""

    async def on_first_start(self) -> None:
        await super().on_first_start()
        k = self.citywatch_kafka
        if k is None:
            return
        await ensure_topics_for(k, wait=True, who="worker")
        from bus.watch import look_for

        try:
            now = (await look_for(k)).cluster_id
        except Exception as exc:  # noqa: BLE001 - not told: the watch looks again within seconds
            log.warning("worker: could not read the broker's cluster id at start (%s)", exc)
            now = None
        kept = (
            None
            if self.citywatch_datadir is None
            else self.citywatch_datadir / f"{self.conf.id}.cluster"
        )
        last = kept.read_text().strip() if kept is not None and kept.exists() else None
        # A worker that dies between the broker's restart and its own look at it (SIGKILLed,
        # the machine rebooted) is started again by its supervisor without --afresh: the
        # broker's cluster id, not the flag, says it is a new broker (issue 14's harness).
        # A changelog of another size than the journal (made by tansu on a stale producer's
        # resend at a broker restart, with its default of one partition) refuses every event
        # (PartitionsMismatch) in every later process: its state is unusable, rebuild it.
        from bus.kafka import partition_counts

        changelogs = [t.changelog_topic.get_topic_name() for t in self.tables.values()]
        misfit = {
            n: c for n, c in (await partition_counts(k, changelogs)).items()
            if c not in (0, k.partitions)
        }  # fmt: skip
        if misfit:
            log.error("worker: changelogs of another size than the journal's %d partitions (%s): "
                      "starting afresh, the state is rebuilt from the journal", k.partitions,
                      ", ".join(f"{n}: {c}" for n, c in misfit.items()))  # fmt: skip
        if (
            self.citywatch_afresh is not None
            or misfit
            or (last is not None and now and last != now)
        ):
            if self.citywatch_afresh is None and not misfit:
                log.error("worker: the broker is not the one this worker last ran on (cluster id "
                          "%s -> %s): starting afresh", last, now)  # fmt: skip
            await forget_the_lost_broker(self, k)
            from streams import archive

            if self.citywatch_archive is not None and archive.kept(self.citywatch_archive):
                from streams.restored import wait_for_marks

                await wait_for_marks(k, k.partitions)
        if kept is not None and now and now != last:
            tmp = kept.with_suffix(".tmp")
            tmp.write_text(now + "\n")
            os.replace(tmp, kept)  # only once the reset is done: a crash in it resets again


async def forget_the_lost_broker(app: faust.App, k: Any) -> None:
    """Start this worker from nothing on a broker that lost its state (decision 010, "Rebuild").

    The process this one replaced (exec) went on for a moment on the new broker
    before it saw the restart: at its last rebalance Faust committed its old
    position there (aiokafka had already reset the member to a plain commit,
    which an empty group takes) and flushed its producer, changelog records
    included. Trusted, they start the rebuild at the old journal's end with
    state of a journal that is gone (issue 14's harness: 1 of 13 entries came
    back). So before Faust's consumer joins: every partition of the worker's
    group is committed back to 0 (the group is empty: the old process never
    joined it, ``build_app``), and the tables' changelog topics are deleted and
    created again, empty, checked (a phantom the old process's resends left
    there stalled Faust's recovery for ever: ``bus.kafka.recreate_empty``).
    """
    from aiokafka import TopicPartition
    from aiokafka.errors import CommitFailedError

    from bus.kafka import consumer_for, recreate_empty, start_client

    changelogs = [t.changelog_topic.get_topic_name() for t in app.tables.values()]
    # Deleted and created again with the journal's partitions (what Faust declares; a topic the
    # broker made on the old process's produce may have its own count: PartitionsMismatch), and
    # made to exist before the delete: the old process's resends can leave a phantom that only
    # deleting an existing topic clears (bus.kafka.recreate_empty, decision 009).
    await recreate_empty(k, dict.fromkeys(changelogs, {"cleanup.policy": "compact"}), k.partitions)
    topics = KafkaTopics(k.topic_prefix)
    inputs = [topics.telemetry, topics.acks, topics.cases, topics.penalties, topics.deadletter,
              topics.quarantine, topics.audit]  # fmt: skip
    group = consumer_for(k, group_id=app.conf.id, enable_auto_commit=False)
    await start_client(group, k.bootstrap)
    try:
        tps = [TopicPartition(t, p) for t in inputs for p in range(k.partitions)]
        before = {tp: await group.committed(tp) for tp in tps}
        group.assign(tps)
        try:
            await group.commit(dict.fromkeys(tps, 0))
        except CommitFailedError:  # a member is in the group: another worker rebuilds already
            log.warning("worker: afresh: %s has a member on the new broker already; its offsets "
                        "are kept (that worker started from 0)", app.conf.id)  # fmt: skip
            return
    finally:
        await group.stop()
    moved = {f"{tp.topic}[{tp.partition}]": o for tp, o in before.items() if o}
    log.warning(
        "worker: afresh on the new broker: offsets of %s back to 0 (found there: %s); "
        "changelogs created again empty (%s)",
        app.conf.id, moved or "none", ", ".join(changelogs),
    )  # fmt: skip


def faust_config(
    bootstrap: str,
    partitions: int,
    session_timeout_s: float,
    datadir: Path,
    credentials: Any = None,
) -> dict[str, Any]:
    """The worker's Faust settings (the streams benchmark runs its no-op ceiling with the same).

    ``credentials``: Faust's ``broker_credentials`` for a Kafka with TLS or SASL
    (``bus.kafka.faust_credentials``; docs/decisions/006-kafka-authentication.md).
    """
    extra = {} if credentials is None else {"broker_credentials": credentials}
    return extra | {
        "broker": f"{transport.SCHEME}://{bootstrap}",  # Faust's driver with a short fetch wait
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
    on_topics_lost: Callable[[Any], None] | None = None,
    afresh: str | None = None,
) -> faust.App:
    """The Faust app of the worker.

    live_clock: send wall-clock watermark ticks into the journal every
        ``tick_interval_s`` so clocks run while the whole city is silent;
        False in simulation/replay mode, where the input's own time drives them.
    session_timeout_s: Kafka consumer session and rebalance timeouts; tansu
        finishes a group join only after the rebalance timeout, so this is also
        the worker's start-up delay.
    on_topics_lost: what to do when the broker is seen to have lost citywatch's topics
        (``bus.watch.TopicsLost``; ``citywatch worker`` starts itself afresh); they are
        recreated and the loss logged once either way. It is also looked for at every
        rebalance, before the consumer joins the group again: a restarted broker makes the
        consumer rejoin, and a process that joined the new broker's group would process the
        restored journal with the lost state and commit its old position there, which the
        fresh process would then start from (issue 14's harness: 1 of 13 entries rebuilt).
    afresh: this process replaces one whose broker lost its state (``citywatch worker``
        passes the new cluster id): the group's offsets and the changelogs on the broker are reset
        before Faust's consumer starts (``forget_the_lost_broker``).
    """
    k = settings.kafka
    topics = KafkaTopics(k.topic_prefix)
    datadir = Path(settings.paths.state_dir) / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    app = WorkerApp(
        f"{k.topic_prefix}-worker",
        **faust_config(k.bootstrap, k.partitions, session_timeout_s, datadir, faust_credentials(k)),
    )
    app.citywatch_kafka = k
    app.citywatch_afresh = afresh
    app.citywatch_datadir = datadir
    from streams.archive import archive_dir

    app.citywatch_archive = archive_dir(settings)
    from bus.watch import BrokerWatch

    watch = BrokerWatch(k, "worker", on_loss=on_topics_lost, logger=log)
    registry = RegistryWatcher(settings.paths.registry, fleet=settings.paths.fleet)
    declared = WorkerTopics.declare(app, topics)
    rules = load_rules(settings.paths.rules)
    bound = None
    if live_clock:  # live: no record moves time past the wall clock (docs/rules.md, "The clock")
        from ingest.validate import IngestLimits

        bound = LiveBound(rules.live_skew_ms, IngestLimits().max_future_ms)
    reader = recovery.kafka_journal_reader(
        lambda: consumer_for(k, group_id=None, enable_auto_commit=False), topics.telemetry
    )

    async def restore_mark(partition: int) -> int | None:
        from streams.restored import read_marks

        return (await read_marks(k, [partition])).get(partition)

    pipeline = Pipeline(app, rules, registry, declared, bound=bound, journal_reader=reader,
                        restore_mark=restore_mark)  # fmt: skip
    app.citywatch_pipeline = pipeline  # type: ignore[attr-defined]
    stats = pipeline.stats

    journal_topic, acks, cases, penalties, deadletter, quarantine = (
        declared.journal,
        declared.acks,
        declared.cases,
        declared.penalties,
        declared.deadletter,
        declared.quarantine,
    )
    influx = settings.influx
    writer_ready = asyncio.Event()
    auth = credentials(settings, "writer")  # its sinks write; ensure_database runs as admin
    writer = InfluxWriter(influx.url, influx.database, **auth)
    ledger_writer = InfluxWriter(influx.url, influx.database, retention_policy=LEDGER_RP, **auth)

    @app.task(on_leader=False)
    async def start_writer() -> None:
        """Set up the database, then let the sinks write: waiting while InfluxDB is not there.

        A worker started before InfluxDB (or while it restarts) detects and
        books as usual; its sinks hold their first batch on ``writer_ready``
        (taken, not acked), so no sink offset is committed and nothing is lost.
        """
        patience = Patience(
            "worker", f"InfluxDB at {influx.url}", logger=log,
            meanwhile="the sinks wait (nothing is lost: their offsets are not committed)",
        )  # fmt: skip
        while True:
            try:
                await asyncio.to_thread(ensure_database, settings)
                break
            except InfluxError as exc:  # its text says what is wrong and how to fix it
                await asyncio.sleep(patience.failed(exc, str(exc)))
        patience.ok()
        await writer.start()
        await ledger_writer.start()
        writer_ready.set()

    @app.task(on_leader=False)
    async def rewrite_ledger_copy() -> None:
        """InfluxDB's copy of the ledger, case events and officers' acts made whole at every
        start, whatever a sink did before it (``streams.ledger_copy``)."""
        await writer_ready.wait()
        copied = {topics.penalties: points.penalty_line, topics.cases: points.case_lines,
                  topics.audit: points.audit_line}  # fmt: skip
        for attempt in range(60):
            try:
                written = await ledger_copy.rewrite(settings.kafka, copied, ledger_writer)
            except Exception as exc:  # the broker restarting: try again; else say why, go on
                if attempt < 59 and kafka_outage(exc):
                    await asyncio.sleep(5.0)
                    continue
                log.warning("worker: InfluxDB's ledger copy not written again (%s)", exc)
                return
            log.info("worker: InfluxDB's ledger copy written again from Kafka (%s)",
                     ", ".join(f"{n:,} of {t}" for t, n in written.items()))  # fmt: skip
            return

    @app.on_before_shutdown.connect
    async def stop_writer(app: faust.App, **kwargs: Any) -> None:
        await writer.stop()
        await ledger_writer.stop()

    @app.on_partitions_revoked.connect
    async def forget_partitions(app: faust.App, revoked: set, **kwargs: Any) -> None:
        """Another worker may own them now; if they come back, restore them from the tables.

        First, the broker is looked at: a rebalance is what a restarted broker causes, and
        this handler runs before the consumer joins the group again. A broker that lost its
        state is handled here (``on_topics_lost``: the worker starts afresh), never joined.
        """
        if watch.cluster_id is not None:
            try:
                await watch.check()
            except Exception:  # a look that failed: the watch task looks again within seconds
                log.exception("worker: the broker watch failed at a rebalance; it goes on")
        for tp in revoked:
            if tp.topic == topics.telemetry:
                pipeline.forget(tp.partition)
        for acks in held:
            acks.revoked(tp for tp in revoked if tp.topic == topics.telemetry)

    lighting = LightingMarks(rules.streetlight, LocalClock(rules.timezone))

    def telemetry_line(item: JournalItem | None) -> str | None:
        if not isinstance(item, Reading):
            return None  # actions, watermarks; refused records are quarantined
        try:  # a reading no line can be made of is skipped, never fatal
            dev = registry.current().get(item.device)
            return points.telemetry_line(item, dev, lighting.marks(item, dev))
        except Exception as exc:
            stats.skipped[topics.telemetry] += 1
            if stats.should_log(stats.skipped, topics.telemetry):
                log.warning("telemetry of %s skipped (%s): %.200r", item.device, exc, item)
            return None

    held: list[HeldAcks] = []

    @app.agent(journal_topic, name="detect")
    async def detect(stream: faust.StreamT) -> None:
        """One pass over the journal: the detector, then the reading's telemetry line.

        An event is acked (its offset can be committed) once its outputs were acked
        by Kafka (``Pipeline.take``) and its line is in InfluxDB (``streams.held``).
        """
        manual = stream.noack()
        sensors = app.sensors

        def ack(event: Any) -> None:
            """``Stream.ack`` of ``manual`` as a plain call (it awaits nothing)."""
            last = event.ack()
            m = event.message
            sensors.on_stream_event_out(m.tp, m.offset, manual, event)
            if last:
                sensors.on_message_out(m.tp, m.offset, m)

        acks = HeldAcks(writer, writer_ready, ack)
        held.append(acks)
        acks.start()
        try:
            async for _value in manual:  # ``events()`` without its extra generator per event
                event = manual.current_event
                if event is None:
                    continue
                m = event.message
                item = await pipeline.take(m.partition, m.offset, event.value, event.key, m.headers)
                if pipeline.rerun:  # a catch-up: its records' lines go before this event's ack
                    acks.lines(line for r in pipeline.take_rerun() if (line := telemetry_line(r)))
                if not acks.put(event, telemetry_line(item)):
                    await acks.room()
        finally:
            held.remove(acks)
            await acks.stop()

    def action_of(value: bytes | None) -> JournalItem | Refused:
        """An acks record (``OfficerAction.to_dict()``) read as strictly as the journal."""
        try:
            rec = orjson.loads(value) if value is not None else None
        except orjson.JSONDecodeError as exc:
            return Refused("not_json", f"not JSON: {exc}")
        if not isinstance(rec, dict):
            return Refused("not_an_object", "an officer action is a JSON object")
        return decode(journal.encode(rec | {"type": "action"}))

    @app.agent(acks, name="forward-acks")
    async def forward_acks(stream: faust.StreamT) -> None:
        """Officer actions join the journal on their device's district's partition, in order."""
        async for event in stream.events():
            value, m = event.value, event.message
            item = action_of(value)  # a malformed action is quarantined here, never journaled
            if not isinstance(item, OfficerAction):
                refused = (
                    item if isinstance(item, Refused) else Refused("bad_record", "not an action")
                )
                await pipeline.quarantine(
                    refused, value, event.key, topics.acks, m.partition, m.offset
                )
                continue
            dev = registry.current().get(item.device)
            key, body = journal.to_record(
                item,
                dev.district if dev is not None else None,
                dev.kind if dev is not None else None,
            )
            fut = await journal_topic.send(key=key, value=journal.encode(body))
            await fut

    async def sink(
        stream: faust.StreamT, to_line: Callable[[bytes], str | None], topic: str,
        writer: InfluxWriter = writer,
    ) -> None:  # fmt: skip
        # take from the stream at once, wait for InfluxDB inside: until an agent iterates its
        # topic, Faust's conductor hands that topic's records to nobody and acks none, the
        # consumer's position moves past them, and the first ack after commits past them too
        # (seed 3 of the fault harness: a worker started while InfluxDB was down, 6 ledger
        # entries and 4 case events never in InfluxDB; bench/RESULTS.md)
        async for values in stream.take(SINK_BATCH, within=SINK_WITHIN_S):
            await writer_ready.wait()
            lines = []
            for value in values:
                try:  # a value no sink can read is skipped, never fatal
                    line = to_line(value)
                except Exception as exc:
                    stats.skipped[topic] += 1
                    if stats.should_log(stats.skipped, topic):
                        log.warning("sink of %s skipped a value (%s): %.200r", topic, exc, value)
                    continue
                if line:
                    lines.append(line)
            await writer.add(lines)
            await writer.flush()

    def record(to_line: Callable[[dict[str, Any]], str | None]) -> Callable[[bytes], str | None]:
        return lambda value: to_line(orjson.loads(value))

    @app.agent(cases, name="sink-cases")
    async def sink_cases(stream: faust.StreamT) -> None:
        await sink(stream, record(points.case_lines), topics.cases, ledger_writer)

    @app.agent(penalties, name="sink-penalties")
    async def sink_penalties(stream: faust.StreamT) -> None:
        await sink(stream, record(points.penalty_line), topics.penalties, ledger_writer)

    @app.agent(deadletter, name="sink-deadletter")
    async def sink_deadletter(stream: faust.StreamT) -> None:
        await sink(stream, record(points.deadletter_line), topics.deadletter)

    @app.agent(quarantine, name="sink-quarantine")
    async def sink_quarantine(stream: faust.StreamT) -> None:
        await sink(stream, record(points.quarantine_line), topics.quarantine)

    @app.agent(declared.audit, name="sink-audit")
    async def sink_audit(stream: faust.StreamT) -> None:
        # kept forever beside the ledger: the officers' acts are its evidence (docs/officers.md)
        await sink(stream, record(points.audit_line), topics.audit, ledger_writer)

    @app.task(on_leader=False)
    async def watch_broker() -> None:
        """A broker that lost the topics (restarted empty) is told, never idled on (issue 14)."""
        await watch.run()

    seen_holes: dict[Any, tuple[int, int]] = {}

    @app.timer(HOLE_EVERY_S)
    async def reread_holes() -> None:
        """A hole in the acked journal offsets that stays: read it again (streams.transport).

        Seen on two looks in a row with the same (committed, lowest acked): not a record that
        is merely slow (the detect agent takes records in order, so a slow one holds the
        ones after it unacked too, and the lowest acked does not sit past it).
        """
        consumer = app.consumer
        holes = consumer.holes() if hasattr(consumer, "holes") else {}
        for tp, (committed, low) in holes.items():
            if seen_holes.get(tp) == (committed, low):
                log.warning(
                    "%s[%d]: offsets %d-%d were never taken (Faust's stream passed them unacked) "
                    "and its commit cannot pass them; reading it again from %d",
                    tp.topic, tp.partition, committed, low - 1, committed,
                )  # fmt: skip
                if tp.topic == topics.telemetry:
                    # the detector may have judged records after the hole: it goes back to its
                    # checkpoint and takes the journal again in order from the committed offset
                    pipeline.forget(tp.partition)
                await consumer.reread(tp, committed)
        seen_holes.clear()
        seen_holes.update(holes)

    @app.timer(STATS_EVERY_S)
    async def report_stats() -> None:
        line = stats.report()
        if line is not None:
            log.warning(line)

    if live_clock:

        @app.timer(tick_interval_s)
        async def tick() -> None:
            now = time.time_ns() // 1_000_000
            for partition in range(k.partitions):
                await journal_topic.send(
                    partition=partition, value=journal.encode({"type": "watermark", "at": now})
                )

    return app
