"""Kafka acknowledgements a restarted broker may not have kept: produced again and seen in the log.

The bridge sends a reading's MQTT PUBACK once Kafka has acknowledged its
record (``ingest.bridge``). When the embedded broker restarts, aiokafka resends
what it had in flight to the new, empty broker at once, before the topics
exist there; tansu v0.6.0 sometimes acknowledges such a produce and keeps
nothing a fetch sees (docs/decisions/009-state-recovery.md, "A broker
restart's phantom changelog"), or answers ``UnknownError``. Trusted, the
first is a reading lost after its PUBACK (3-9 of ~4,540 per harness run with
the broker restarted, issue 14), the second a reading dead-lettered as
``internal_error``.

Both are told apart from an ordinary acknowledgement cheaply: on one log a
partition's offsets only grow, so an acknowledgement at or below the highest
offset already acknowledged on that partition comes from another log -- a
restarted broker. Such records (and those answered ``UnknownError``) are
produced again once the broker holds their topic, and counted as stored only
when a fetch returns them at the offset acknowledged; until then the batch's
PUBACKs wait (the bridge's back-pressure). A record the new broker did keep
is then in the journal twice, which is harmless (readings are deduplicated by
device and event time).

A planned stop leaves one more window: ``services down`` stops the broker once
the archive's lag reads 0, and a reading the old broker acknowledged in that
moment dies with it, its acknowledgement being an honest one of the old log
(1-2 readings in three of six harness seeds, decision 010 §10). So the bridge
writes the journal records it had acknowledged to disk (``AckLog``: a file per
``RECENT_S`` of wall time under the state directory, the last two kept, each
line tagged with the broker's cluster id) and, on the first sign of a restarted
broker (an acknowledgement from another log, or the broker watch's new cluster
id), produces those files' records all again: the archive kept nearly all of
them (harmless twins), the few it never saw are back. A bridge killed in that
moment, or before it could, does the same when it starts on a broker of another
cluster id.

They are read back from disk, not kept in memory as well: a deque of the last
30 s cost the bridge 275 MiB of RSS at 3,200 msg/s (bench/e2e.py, 115 -> 390 MiB),
for something needed only at a broker restart.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import orjson
from aiokafka.errors import UnknownError

from bus.kafka import consumer_for, kafka_outage, start_client
from foundation.settings import KafkaSettings

log = logging.getLogger(__name__)

RETRY_S = 0.5
"""Pause between two tries while the new broker lacks the topics or has not kept a record."""
FETCH_WAIT_S = 3.0
"""How long a record acknowledged again may take to show in a fetch."""

RECENT_S = 30.0
"""The span of one ``AckLog`` file: the last one to two of them are what a restart produces again.

The records at stake were acknowledged in the last second of the old broker (decision 010 §10);
they are still on disk when the restart is noticed, since nothing is written (nor trimmed) while
the broker is away, as long as the new broker's acknowledgements have not filled the next file
too: the first acknowledgement from another log comes at once, the watch's look within 5 s."""
RECENT_MAX = 400_000
"""At most this many records produced again at a restart (the newest; 60 s at ~6,700 msg/s)."""

ACKLOG_MAX_AGE_S = 3600.0
"""A bridge started later than this after its last acknowledgements does not produce them
again: the journal has long moved on, and live mode would quarantine such twins as too late."""

KafkaRecord = tuple[str, bytes | None, bytes]
"""(topic, key, value) as the bridge produces it."""


class AckLog:
    """The journal records the bridge had acknowledged lately, on disk, with the broker's
    cluster id: what a bridge killed right after a broker restart would otherwise take with it.

    Lines go to ``<directory>/<n>.jsonl`` where ``n`` counts ``seconds`` of wall time; when a
    file of a new ``n`` is begun, the ones before the previous are deleted, so the last
    ``seconds`` to ``2 * seconds`` are kept -- trimmed only when records are written, so a
    restart of any length keeps the old log's last seconds. Written, not fsynced: a killed
    process leaves its writes to the system; a machine that dies takes the embedded broker's
    memory too, and the journal archive (fsynced) is then what is left (decision 010).
    """

    def __init__(
        self, directory: Path, seconds: float = RECENT_S, clock: Callable[[], float] = time.time
    ):
        self.directory, self.seconds, self.clock = directory, seconds, clock
        self._n: int | None = None
        self._file: IO[bytes] | None = None

    def write(self, cluster_id: str | None, records: Sequence[KafkaRecord]) -> None:
        if not records:
            return
        n = int(self.clock() // self.seconds)
        if n != self._n or self._file is None:
            self._begin(n)
        assert self._file is not None
        b64 = base64.b64encode
        self._file.write(
            b"".join(
                orjson.dumps(
                    [cluster_id, t, b64(k).decode() if k is not None else None, b64(v).decode()]
                )
                + b"\n"
                for t, k, v in records
            )  # fmt: skip
        )
        self._file.flush()

    def _begin(self, n: int) -> None:
        if self._file is not None:
            self._file.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        for old in self.directory.glob("*.jsonl"):
            if old.stem.isdigit() and int(old.stem) < n - 1:
                old.unlink(missing_ok=True)
        self._n = n
        self._file = (self.directory / f"{n}.jsonl").open("ab")

    def recent(self, cap: int = RECENT_MAX) -> list[KafkaRecord]:
        """Every record of the kept files, whichever broker acknowledged it, oldest first (at
        most the newest ``cap``): what a running bridge produces again at a broker restart."""
        return self._read(lambda _cid: True)[-cap:]

    def acked_elsewhere(self, cluster_id: str | None) -> list[KafkaRecord]:
        """The records on disk acknowledged by a broker of another cluster id, oldest first.

        A line that cannot be read (cut by a kill in the middle of a write) is skipped, and so
        is a file older than ``ACKLOG_MAX_AGE_S``.
        """
        return self._read(lambda cid: cid != cluster_id)

    def _read(self, wanted: Callable[[Any], bool]) -> list[KafkaRecord]:
        if self._file is not None:
            self._file.flush()
        out: list[KafkaRecord] = []
        oldest = (self.clock() - ACKLOG_MAX_AGE_S) // self.seconds
        files = sorted(
            (
                p
                for p in self.directory.glob("*.jsonl")
                if p.stem.isdigit() and int(p.stem) >= oldest
            ),
            key=lambda p: int(p.stem),
        )
        for path in files:
            for line in path.read_bytes().splitlines():
                try:
                    cid, topic, key, value = orjson.loads(line)
                    rec = (topic, base64.b64decode(key) if key is not None else None,
                           base64.b64decode(value))  # fmt: skip
                except (orjson.JSONDecodeError, ValueError, TypeError):
                    continue
                if wanted(cid):
                    out.append(rec)
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def swallowed_error(exc: BaseException) -> bool:
    """A produce refused as a broker without the topic refuses it, not for the record."""
    return isinstance(exc, UnknownError)


class AckedOffsets:
    """The highest offset acknowledged per (topic, partition): an acknowledgement below it is
    from another log."""

    def __init__(self) -> None:
        self.high: dict[tuple[str, int], int] = {}

    def behind(self, md: Any) -> bool:
        """Whether ``md`` (aiokafka's RecordMetadata) went back on its partition; else noted.

        An acknowledgement without an offset (a test's stand-in producer) is not checked.
        """
        if getattr(md, "offset", None) is None:
            return False
        key = (md.topic, md.partition)
        if md.offset <= self.high.get(key, -1):
            return True
        self.high[key] = md.offset
        return False

    def restart_at(self, md: Any) -> None:
        """``md`` is in the log now: its partition's offsets count from it."""
        self.high[(md.topic, md.partition)] = md.offset


async def produce_until_kept(
    k: KafkaSettings, producer: Any, records: Sequence[KafkaRecord], acked: AckedOffsets
) -> None:
    """Produce ``records`` again until each is acknowledged *and* fetched at its offset."""
    from bus.watch import look_for

    pending = list(records)
    tries = 0
    while pending:
        if tries:
            await asyncio.sleep(RETRY_S)
            if tries % 60 == 0:
                log.warning("bridge: %d records acknowledged by a restarted broker are not in its "
                            "log after %.0f s; trying again", len(pending), tries * RETRY_S)  # fmt: skip
        tries += 1
        try:
            missing = set((await look_for(k)).missing)
        except Exception as exc:
            if not kafka_outage(exc):
                raise
            continue
        if any(topic in missing for topic, _key, _value in pending):
            continue  # not yet: what is produced into a topic the broker lacks may vanish
        futures = [await producer.send(t, value=v, key=key) for t, key, v in pending]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        stored = [(r, md) for r, md in zip(pending, outcomes, strict=True)
                  if not isinstance(md, BaseException)]  # fmt: skip
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not swallowed_error(outcome):
                raise outcome  # Kafka itself failing: the bridge's own handling
        seen = await _fetched(k, [(md.topic, md.partition, md.offset, r[2]) for r, md in stored])
        kept = [md for (_r, md), ok in zip(stored, seen, strict=True) if ok]
        for md in sorted(kept, key=lambda md: md.offset):  # the new log's offsets count from here
            acked.restart_at(md)
        pending = [r for (r, _md), ok in zip(stored, seen, strict=True) if not ok] + [
            r for r, md in zip(pending, outcomes, strict=True) if isinstance(md, BaseException)
        ]
        if kept:
            log.warning(
                "bridge: %d records acknowledged by a restarted broker produced again and seen "
                "in its log (%d to go)", len(kept), len(pending),
            )  # fmt: skip


async def _fetched(k: KafkaSettings, wanted: list[tuple[str, int, int, bytes]]) -> list[bool]:
    """For each (topic, partition, offset, value): does a fetch return that value there?"""
    from aiokafka import TopicPartition

    if not wanted:
        return []
    by_tp: dict[Any, dict[int, bytes]] = {}
    for topic, partition, offset, value in wanted:
        by_tp.setdefault(TopicPartition(topic, partition), {})[offset] = value
    found: dict[Any, set[int]] = {tp: set() for tp in by_tp}
    reader = consumer_for(k, group_id=None, enable_auto_commit=False)
    await start_client(reader, k.bootstrap)
    try:
        reader.assign(list(by_tp))
        for tp, offsets in by_tp.items():
            reader.seek(tp, min(offsets))
        deadline = time.monotonic() + FETCH_WAIT_S
        todo = set(by_tp)
        while todo and time.monotonic() < deadline:
            for tp, records in (await reader.getmany(*todo, timeout_ms=300)).items():
                want = by_tp[tp]
                for r in records:
                    if want.get(r.offset) == r.value:
                        found[tp].add(r.offset)
                if records and records[-1].offset >= max(want):
                    todo.discard(tp)
    finally:
        await reader.stop()
    return [
        offset in found[TopicPartition(topic, partition)] for topic, partition, offset, _v in wanted
    ]
