"""The journal archive: what the in-memory broker forgets, on disk (decision 010).

The embedded tansu keeps everything in RAM; restarted, it is empty. The
archive is a consumer (``citywatch archive run``) that appends every record
of the journal (``<prefix>.telemetry``: readings, officer actions,
watermarks), of ``<prefix>.audit`` (the officers' acts, the ledger's
evidence), of ``<prefix>.silences`` and of ``<prefix>.acks`` (officer actions
not yet forwarded into the journal) to files, one per topic and day, and
commits its offsets only after the lines are fsynced: a record Kafka
acknowledged is either on disk or still ahead of the archive's committed
offset. ``restore`` writes the files back into an empty broker, each record
into the partition it came from, in the order it had there; the worker then
re-derives cases and ledger from the journal with the same deterministic
ids (``services up`` restores when the broker lacks the journal topic).

Files (``<paths.state_dir>/archive/<prefix>/``, the day the archive wrote
them, UTC, never earlier than the file before):

* ``journal-YYYY-MM-DD.jsonl``: the replay file format (docs/contracts.md,
  "Replay files"), so ``citywatch replay FILE`` reads a day of the archive;
  each line also names its ``partition``. A reading is
  ``{"topic", "payload": {"ts", ...fields}, "received_at"}``, an action the
  action's own record, a watermark ``{"watermark": ms}``; a record the worker
  could not read (quarantined) is kept as ``{"journal_raw": base64}`` and
  replay reports it, as the worker did;
* ``audit-YYYY-MM-DD.jsonl``, ``silences-YYYY-MM-DD.jsonl``,
  ``acks-YYYY-MM-DD.jsonl``: ``{"key", "value", "partition"}`` with the
  record's key (text or null) and value (JSON). ``restore`` writes back only
  the acks the journal archive does not hold (by ``action_id``): the others
  were forwarded already, and forwarded again they would be applied twice
  (decision 010, §6).

Records written by ``restore`` carry the header ``citywatch-restored``; the
archive skips them (they are on disk already), so a restart of the broker
does not double the archive.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from bus.kafka import (
    consumer_for,
    ensure_topics_for,
    group_positions,
    partition_ends,
    producer_for,
    start_client,
    topic_partitions,
)
from contract.journal import JournalError, encode, from_record, journal_key
from contract.topics import KafkaTopics, parse_topic
from foundation.errors import CitywatchError
from foundation.settings import Settings

log = logging.getLogger(__name__)

RESTORED = "citywatch-restored"
"""The header of a record ``restore`` wrote: the archive has it already."""
ARCHIVED = ("journal", "audit", "silences", "acks")
"""The archived topics, by their file names' first word (``KafkaTopics`` attribute: telemetry,
audit, silences, acks)."""
_ATTR = {"journal": "telemetry", "audit": "audit", "silences": "silences", "acks": "acks"}


class ArchiveError(CitywatchError):
    """An archive file that cannot be read back: the file, the line and why."""


def archive_dir(settings: Settings) -> Path:
    """``<paths.state_dir>/archive/<kafka.topic_prefix>``: one archive per pipeline."""
    return Path(settings.paths.state_dir) / "archive" / settings.kafka.topic_prefix


def journal_line(value: bytes | None, partition: int) -> dict[str, Any]:
    """A journal record as a replay-file line (plus its ``partition``).

    Anything that is not a well-formed reading, action or watermark is kept
    whole as ``journal_raw`` (base64): the archive never judges, and the
    worker quarantines it again after a restore.
    """
    try:
        rec = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        rec = None
    kind = rec.get("type") if isinstance(rec, dict) else None
    if kind == "reading" and isinstance(rec, dict) and isinstance(rec.get("fields"), dict):
        parts = parse_topic(rec.get("topic", ""))
        if parts is not None and (parts.district, parts.kind, parts.device_id) == (
            rec.get("district"), rec.get("kind"), rec.get("device"),
        ):  # fmt: skip
            return {
                "topic": rec["topic"],
                "payload": {**rec["fields"], "ts": rec["ts"]},
                "received_at": rec["received_at"],
                "partition": partition,
            }
    elif kind == "action" and isinstance(rec, dict):
        return {k: v for k, v in rec.items() if k != "type"} | {"partition": partition}
    elif kind == "watermark" and isinstance(rec, dict) and type(rec.get("at")) is int:
        return {"watermark": rec["at"], "partition": partition}
    return {"journal_raw": base64.b64encode(value or b"").decode(), "partition": partition}


def journal_record(line: dict[str, Any]) -> tuple[bytes | None, bytes]:
    """The (key, value) a journal line came from: ``journal_line``'s inverse, registry-free.

    A reading's device, kind and district come from its MQTT topic, which the
    bridge validated against the registry when it arrived; a later registry
    edit does not change what the journal held.
    """
    if "journal_raw" in line:
        return None, base64.b64decode(line["journal_raw"])
    if "topic" in line:
        parts = parse_topic(line["topic"])
        payload = dict(line["payload"])
        if parts is None:
            raise ValueError(f"a reading's topic {line['topic']!r} is not a telemetry topic")
        ts = payload.pop("ts")
        rec = {
            "type": "reading",
            "device": parts.device_id,
            "kind": parts.kind,
            "district": parts.district,
            "ts": ts,
            "received_at": line["received_at"],
            "fields": payload,
            "topic": line["topic"],
        }
        return journal_key(parts.district), encode(rec)
    if "action" in line:
        rec = {k: v for k, v in line.items() if k != "partition"} | {"type": "action"}
        district = rec.get("district")
        return (journal_key(district) if isinstance(district, str) else None), encode(rec)
    if "watermark" in line:
        return None, encode({"type": "watermark", "at": line["watermark"]})
    raise ValueError("not a reading, an action, a watermark or a raw record")


def other_line(key: bytes | None, value: bytes | None, partition: int) -> dict[str, Any]:
    """An audit or silences record as an archive line."""
    try:
        body: Any = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        body = {"raw": base64.b64encode(value or b"").decode()}
    return {
        "key": key.decode("utf-8", "backslashreplace") if key is not None else None,
        "value": body,
        "partition": partition,
    }


# ------------------------------------------------------------------ writing


@dataclass
class ArchiveStats:
    archived: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ARCHIVED, 0))
    skipped_restored: int = 0
    fsyncs: int = 0
    bytes: int = 0


class Archive:
    """The archive's files: append lines per topic kind and day, fsync, then say so."""

    def __init__(self, directory: Path, clock: Any = time.time) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self._day = ""
        self._files: dict[str, IO[bytes]] = {}
        self.stats = ArchiveStats()

    def day(self) -> str:
        """Today (UTC) by the clock, never before the last day written: file order is journal order."""
        today = time.strftime("%Y-%m-%d", time.gmtime(self.clock()))
        if today > self._day:
            self._day = max(today, self._latest_on_disk())
            for f in self._files.values():
                f.close()
            self._files.clear()
        return self._day

    def _latest_on_disk(self) -> str:
        days = [p.stem.split("-", 1)[1] for p in self.directory.glob("*-????-??-??.jsonl")]
        return max(days, default="")

    def write(self, lines: dict[str, list[dict[str, Any]]]) -> None:
        """Append ``lines`` (by kind) and fsync each file written: on disk when this returns."""
        day = self.day()
        touched = []
        for kind, rows in lines.items():
            if not rows:
                continue
            f = self._files.get(kind)
            if f is None:
                path = self.directory / f"{kind}-{day}.jsonl"
                new = not path.exists()
                f = self._files[kind] = open(path, "ab")  # noqa: SIM115 - kept open, closed by close()
                if new:
                    _fsync_dir(self.directory)
            data = b"".join(orjson.dumps(r) + b"\n" for r in rows)
            f.write(data)
            touched.append(f)
            self.stats.archived[kind] += len(rows)
            self.stats.bytes += len(data)
        for f in touched:
            f.flush()
            os.fsync(f.fileno())
            self.stats.fsyncs += 1

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def _commit(consumer: Any, offsets: dict[Any, int]) -> None:
    """Commit what is on disk; a commit Kafka refuses (restarting, a rebalance) is logged and the
    archive goes on: the records are on disk, and read again at worst (a repeat, never a loss)."""
    from aiokafka.errors import KafkaError

    try:
        await consumer.commit(offsets)
    except KafkaError as exc:
        log.warning("archive: commit not taken (%s); the records are on disk, they may be read again",
                    type(exc).__name__)  # fmt: skip


def _restored(headers: Any) -> bool:
    return any(k == RESTORED for k, _v in headers or ())


async def run_archive(
    settings: Settings,
    stop: asyncio.Event,
    *,
    directory: Path | None = None,
    ready: asyncio.Event | None = None,
) -> ArchiveStats:
    """``citywatch archive run``: archive until ``stop``; offsets committed only for what is on disk.

    Group ``<prefix>.archive``, from the earliest record. A broker that lost
    its topics is told and they are recreated (``bus.watch``); the archive
    then reads the new journal from its start, skipping what ``restore``
    wrote.
    """
    from bus.watch import BrokerWatch

    k = settings.kafka
    topics = KafkaTopics(k.topic_prefix)
    names = {getattr(topics, _ATTR[kind]): kind for kind in ARCHIVED}
    archive = Archive(directory or archive_dir(settings))
    await ensure_topics_for(k, wait=True, who="archive")
    consumer = consumer_for(
        k, *names, group_id=f"{k.topic_prefix}.archive", client_id="citywatch-archive",
        enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=5000,
        fetch_max_wait_ms=100,
    )  # fmt: skip
    await start_client(consumer, k.bootstrap)
    watch = asyncio.create_task(BrokerWatch(k, "archive", logger=log).run(stop))
    log.info("archive of %s in %s", k.topic_prefix, archive.directory)
    if ready is not None:
        ready.set()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            if not batch:
                continue
            lines: dict[str, list[dict[str, Any]]] = {kind: [] for kind in ARCHIVED}
            skipped = 0
            for tp, records in batch.items():
                kind = names[tp.topic]
                for r in records:
                    if _restored(r.headers):
                        skipped += 1
                        continue
                    if kind == "journal":
                        lines[kind].append(journal_line(r.value, tp.partition))
                    else:
                        lines[kind].append(other_line(r.key, r.value, tp.partition))
            if skipped:
                archive.stats.skipped_restored += skipped
                log.info(
                    "archive: %d records written by a restore skipped (on disk already)", skipped
                )
            await asyncio.to_thread(archive.write, lines)  # fsynced before the commit below
            await _commit(consumer, {tp: rs[-1].offset + 1 for tp, rs in batch.items()})
    finally:
        watch.cancel()
        await consumer.stop()
        archive.close()
        s = archive.stats
        log.info("archive stopped: %s archived, %d restored records skipped, %d fsyncs",
                 s.archived, s.skipped_restored, s.fsyncs)  # fmt: skip
    return archive.stats


# ------------------------------------------------------------------ reading back


def archive_files(directory: Path, kind: str) -> list[Path]:
    """The files of one kind, oldest day first (the order ``restore`` writes them in)."""
    return sorted(directory.glob(f"{kind}-????-??-??.jsonl"))


def kept(directory: Path) -> bool:
    """Whether ``directory`` holds any archive file (of the journal, the audit or the silences)."""
    return any(archive_files(directory, kind) for kind in ARCHIVED)


def read_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, line) of an archive file; ``ArchiveError`` names a line that is not JSON.

    A last line cut short (the machine lost power mid-write, before the fsync
    and so before the commit) is skipped: the archive writes it again.
    """
    with open(path, "rb") as f:
        data = f.read()
    rows = data.split(b"\n")
    for lineno, raw in enumerate(rows, 1):
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            if lineno == len(rows):  # no newline after it: a write cut short
                log.warning("%s:%d: a last line cut short is skipped", path, lineno)
                continue
            raise ArchiveError(f"{path}:{lineno}: not a JSON line ({exc})") from None
        if not isinstance(obj, dict):
            raise ArchiveError(f"{path}:{lineno}: not a JSON object")
        yield lineno, obj


def action_key(rec: Any) -> str | None:
    """What names one officer action on the acks topic and in the journal alike: its
    ``action_id``; for a record from before ids, its content as the forwarder copies it
    (``OfficerAction.to_dict()``). None: not an action (the forwarder quarantined it)."""
    if not isinstance(rec, dict):
        return None
    try:
        action = from_record(
            {k: v for k, v in rec.items() if k != "partition"} | {"type": "action"}
        )
    except JournalError:
        return None
    if action.action_id is not None:
        return action.action_id
    return orjson.dumps(action.to_dict(), option=orjson.OPT_SORT_KEYS).decode()


def journaled_actions(directory: Path) -> set[str]:
    """``action_key`` of every officer action the journal archive holds: forwarded already."""
    out: set[str] = set()
    for path in archive_files(directory, "journal"):
        with open(path, "rb") as f:
            for raw in f:
                if b'"action"' not in raw:  # readings and watermarks: not parsed
                    continue
                try:
                    line = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue  # a last line cut short; restore reports any other (read_lines)
                if isinstance(line, dict) and "action" in line and "topic" not in line:
                    key = action_key(line)
                    if key is not None:
                        out.add(key)
    return out


async def restore(settings: Settings, directory: Path | None = None) -> dict[str, int]:
    """Write the archive back into the broker; records written per kind.

    Each record goes to the partition it came from (by its key when that
    partition no longer exists), in file order, with the ``citywatch-restored``
    header; of the acks only those the journal archive does not hold (by
    ``action_key``), once each: the others were forwarded into the journal
    already and would be applied twice (decision 010, §6). Meant for an
    empty broker: restoring into a journal that still holds the records
    repeats them, which the detector takes as repeats (readings deduplicated
    by device and event time, actions applied once per ``action_id``), but it
    is wasted work. It ends with the marks (``streams.restored``): per journal
    partition the offset after the last record it wrote, from which a fresh
    worker takes records in the order they came.
    """
    k = settings.kafka
    directory = directory or archive_dir(settings)
    topics = KafkaTopics(k.topic_prefix)
    await ensure_topics_for(k)
    producer = producer_for(k, client_id="citywatch-archive-restore", linger_ms=20)
    await start_client(producer, k.bootstrap)
    headers = [(RESTORED, b"1")]
    written = dict.fromkeys(ARCHIVED, 0)
    last: dict[int, int] = {}  # journal partition -> offset of the last record written
    try:
        parts = {t: len(await producer.partitions_for(t) or {0}) for t in
                 (getattr(topics, _ATTR[kind]) for kind in ARCHIVED)}  # fmt: skip
        forwarded = journaled_actions(directory) if archive_files(directory, "acks") else set()
        skipped = 0
        futures = []
        for kind in ARCHIVED:
            topic = getattr(topics, _ATTR[kind])
            for path in archive_files(directory, kind):
                for lineno, line in read_lines(path):
                    if kind == "acks":
                        if (action := action_key(line.get("value"))) in forwarded:
                            skipped += 1  # the journal archive holds it: forwarded already
                            continue
                        if action is not None:
                            forwarded.add(action)  # an ack the archive read twice: once
                    try:
                        if kind == "journal":
                            key, value = journal_record(line)
                        else:
                            key = line["key"].encode() if line.get("key") is not None else None
                            value = orjson.dumps(line["value"])
                    except (KeyError, TypeError, ValueError) as exc:
                        raise ArchiveError(f"{path}:{lineno}: {exc}") from None
                    p = line.get("partition")
                    partition = p if type(p) is int and 0 <= p < parts[topic] else None
                    if partition is None and key is None:
                        partition = 0
                    futures.append(await producer.send(
                        topic, value, key=key, partition=partition, headers=headers
                    ))  # fmt: skip
                    written[kind] += 1
                    if len(futures) >= 5000:
                        last.update(_last_offsets(await asyncio.gather(*futures), topics.telemetry))
                        futures.clear()
        last.update(_last_offsets(await asyncio.gather(*futures), topics.telemetry))
    finally:
        await producer.stop()
    if skipped:
        log.info("restore: %d officer actions not written back to the acks topic "
                 "(the journal archive holds them: forwarded already)", skipped)  # fmt: skip
    from streams.restored import write_marks

    await write_marks(k, {p: last.get(p, -1) + 1 for p in range(parts[topics.telemetry])})
    return written


def _last_offsets(acked: list[Any], topic: str) -> dict[int, int]:
    """partition -> the highest offset the broker gave a record of ``topic`` among ``acked``."""
    out: dict[int, int] = {}
    for md in acked:
        if md.topic == topic:
            out[md.partition] = max(out.get(md.partition, -1), md.offset)
    return out


async def lag(settings: Settings) -> int | None:
    """Records of the archived topics not yet on disk (committed by the archive); None: no archive ran.

    Ends as ``bus.kafka.partition_ends`` reads them (past tansu's short answer, decision 004).
    """
    k = settings.kafka
    topics = KafkaTopics(k.topic_prefix)
    reader = consumer_for(k, group_id=None, enable_auto_commit=False)
    await start_client(reader, k.bootstrap)
    try:
        tps = await topic_partitions(reader, [getattr(topics, _ATTR[kind]) for kind in ARCHIVED])
    finally:
        await reader.stop()
    if not tps:
        return None
    ends = await partition_ends(k, tps)
    committed = await group_positions(k, f"{k.topic_prefix}.archive", tps)
    seen = any(c is not None for c in committed.values())
    behind = sum(max(0, ends[tp] - (committed[tp] or 0)) for tp in tps)
    return behind if seen or behind == 0 else None
