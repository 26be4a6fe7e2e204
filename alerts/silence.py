"""Silences: an officer mutes the pushes of matching cases for a while (Alertmanager's silences).

A silence is matchers on a case's labels (``alerts/matchers.py``), a window
``[starts_at, ends_at)``, its creator (a directory officer, through the gate)
and a comment. While it is active the alerts service pushes nothing about a
case it matches, and records each muted notice instead (docs/alerts.md,
"Silences and inhibition"). It touches pushes only: the case, its escalation
progress and the ledger go on exactly as without it.

Where silences live, so every process agrees:

* ``<prefix>.silences`` (Kafka, compacted, keyed by the silence's id) is the
  record: each add or expiry writes the whole silence again with a later
  ``updated_at``; the latest version of an id wins (as Alertmanager's peers
  merge their silences by ``UpdatedAt``). ``citywatch silence add|expire``
  write it after the gate accepted the act; ``silence list`` reads it; the
  alerts service reads it from the beginning at every start and follows it
  while running, so a new silence works without a restart.
* The alerts service keeps its copy in the outbox database (``silences``
  table), so it mutes from its first record after a restart, before the topic
  was read again.

Expiring follows Alertmanager: an active silence ends now, a pending one
starts and ends now, an expired one stays as it is.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from alerts.matchers import MUTE_LABELS, LabelMatcher, MatcherError, matches_all, parse_matcher
from contract.clock import DEFAULT_TIMEZONE
from contract.clock import local as local_time
from foundation.cityfile import format_duration_ms
from foundation.errors import CitywatchError

__all__ = [
    "COMMENT_MAX",
    "STATES",
    "Silence",
    "SilenceError",
    "Silences",
    "expire",
    "new_silence",
    "publish",
    "read_all",
    "scope",
]

STATES = ("pending", "active", "expired")
COMMENT_MAX = 500
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class SilenceError(CitywatchError):
    """A silence that cannot be made, found or read; the message says why and how to fix it."""


@dataclass(frozen=True)
class Silence:
    id: str
    matchers: tuple[LabelMatcher, ...]
    starts_at: int
    ends_at: int
    """Epoch ms; the silence mutes in ``[starts_at, ends_at)``."""
    created_by: str
    """The directory officer who made it (the gate authenticated them)."""
    comment: str
    created_at: int
    updated_at: int
    """The version: of two records of one id, the later ``updated_at`` wins."""
    expired_by: str = ""
    """The officer who expired it early ("" while it runs its course)."""

    def state(self, now_ms: int) -> str:
        if now_ms < self.starts_at:
            return "pending"
        return "active" if now_ms < self.ends_at else "expired"

    def active(self, now_ms: int) -> bool:
        return self.starts_at <= now_ms < self.ends_at

    def mutes(self, labels: Mapping[str, str]) -> bool:
        return matches_all(self.matchers, labels)

    @property
    def matchers_text(self) -> str:
        return ", ".join(str(m) for m in self.matchers)

    def describe(self, tz: str = DEFAULT_TIMEZONE) -> str:
        """One line for the officer, the audit record and the log."""
        return (
            f"silence {self.id}: {self.matchers_text} from {local_time(self.starts_at, tz)} "
            f"until {local_time(self.ends_at, tz)} ({format_duration_ms(self.ends_at - self.starts_at)})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "silence", "id": self.id, "matchers": [m.to_dict() for m in self.matchers],
            "starts_at": self.starts_at, "ends_at": self.ends_at, "created_by": self.created_by,
            "comment": self.comment, "created_at": self.created_at, "updated_at": self.updated_at,
            "expired_by": self.expired_by,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Silence:
        """A silence as ``to_dict`` wrote it; ``SilenceError`` for a record that is not one
        (the topic is shared: a malformed record is refused, never half-applied)."""
        try:
            sid = d["id"]
            if not isinstance(sid, str) or not _ID.fullmatch(sid):
                raise SilenceError(f"silence id {sid!r} is not a UUID")
            matchers = tuple(LabelMatcher.from_dict(m) for m in d["matchers"])
            ints = {k: d[k] for k in ("starts_at", "ends_at", "created_at", "updated_at")}
            if any(type(v) is not int for v in ints.values()):
                raise SilenceError(f"silence {sid}: times must be integer epoch ms")
            out = cls(
                id=sid, matchers=matchers, created_by=str(d["created_by"]), comment=str(d["comment"]),
                expired_by=str(d.get("expired_by") or ""), **ints,
            )  # fmt: skip
        except (KeyError, TypeError, MatcherError) as exc:
            raise SilenceError(f"not a silence record ({type(exc).__name__}: {exc})") from None
        if not matchers or out.ends_at < out.starts_at:
            raise SilenceError(f"silence {sid}: no matchers, or it ends before it starts")
        return out


def _comment(text: str | None) -> str:
    one = " ".join((text or "").split())
    if not one:
        raise SilenceError(
            'a silence needs a comment saying why (--comment "路灯箱变检修 / cabinet repair"): '
            "the officers it hides cases from read it in `citywatch silence list`"
        )
    if len(one) > COMMENT_MAX:
        raise SilenceError(f"the comment is {len(one)} characters; at most {COMMENT_MAX}")
    if _CONTROL.search(one):
        raise SilenceError("the comment may not contain control characters")
    return one


def new_silence(matchers: Iterable[str], *, created_by: str, comment: str | None, now_ms: int,
                ends_at: int, starts_at: int | None = None) -> Silence:  # fmt: skip
    """A new silence from the officer's matcher texts (``district=jinshui``), checked as
    Alertmanager checks one: at least one matcher, at least one of them not matching an empty
    label (else it would mute every case of the city), an end after its start and after now.
    A start in the past is now."""
    parsed: list[LabelMatcher] = []
    for text in matchers:
        try:
            parsed.append(parse_matcher(text, MUTE_LABELS))
        except MatcherError as exc:
            raise SilenceError(f"matcher {exc}") from None
    if not parsed:
        raise SilenceError(
            "a silence needs at least one matcher, e.g. `citywatch silence add district=jinshui "
            'rule=streetlight.fault --duration 4h --comment "..."`'
        )
    if all(m.matches_empty for m in parsed):
        raise SilenceError(
            f"{', '.join(map(str, parsed))} also matches a case without those labels, so it would "
            "mute every case of the city; add a matcher that names something, e.g. district=jinshui"
        )
    start = max(now_ms, starts_at if starts_at is not None else now_ms)
    if ends_at <= start:
        raise SilenceError(
            f"the silence would end ({local_time(ends_at)}) before it starts ({local_time(start)}); "
            "give a later --until or a --duration"
        )
    return Silence(
        id=str(uuid.uuid4()), matchers=tuple(parsed), starts_at=start, ends_at=ends_at,
        created_by=created_by, comment=_comment(comment), created_at=now_ms, updated_at=now_ms,
    )  # fmt: skip


def expire(s: Silence, officer: str, now_ms: int) -> Silence | None:
    """The silence ended now (Alertmanager's expiry); None when it had already ended."""
    state = s.state(now_ms)
    if state == "expired":
        return None
    start = now_ms if state == "pending" else s.starts_at
    return replace(s, starts_at=start, ends_at=now_ms, updated_at=max(now_ms, s.updated_at + 1),
                   expired_by=officer)  # fmt: skip


def scope(
    s: Silence | Iterable[LabelMatcher], device_district: Any = None
) -> tuple[str, ...] | None:
    """The districts a silence is confined to, or None when it may match cases anywhere.

    Confined means every case it can match lies in these districts: an ``=`` matcher on
    ``district`` names one, and an ``=`` matcher on ``device`` names the device's district
    (``device_district(device)`` from the registry; a device it does not know confines to
    nothing, so only a city-wide officer may silence it). Regular expressions and ``!=``
    confine nothing. The policy lets a district officer silence only inside their districts.
    """
    matchers = s.matchers if isinstance(s, Silence) else tuple(s)
    found: list[str] = []
    for m in matchers:
        if m.op != "=":
            continue
        if m.name == "district":
            found.append(m.value)
        elif m.name == "device" and device_district is not None:
            district = device_district(m.value)
            if district:
                found.append(district)
    return tuple(dict.fromkeys(found)) or None


class Silences:
    """The silences one process knows: the latest version of each id."""

    def __init__(self, silences: Iterable[Silence] = ()) -> None:
        self.by_id: dict[str, Silence] = {}
        for s in silences:
            self.apply(s)

    def apply(self, s: Silence) -> bool:
        """Take a version of a silence; True if it is newer than the one known."""
        known = self.by_id.get(s.id)
        if known is not None and known.updated_at >= s.updated_at:
            return False
        self.by_id[s.id] = s
        return True

    def muting(self, labels: Mapping[str, str], now_ms: int) -> list[Silence]:
        """The active silences that mute a case with these labels (oldest first)."""
        return sorted((s for s in self.by_id.values() if s.active(now_ms) and s.mutes(labels)),
                      key=lambda s: (s.created_at, s.id))  # fmt: skip

    def find(self, text: str) -> Silence:
        """By id, or by the start of one (at least 8 characters, as `silence list` shows)."""
        text = text.strip().lower()
        if text in self.by_id:
            return self.by_id[text]
        hits = [s for i, s in self.by_id.items() if len(text) >= 8 and i.startswith(text)]
        if len(hits) == 1:
            return hits[0]
        if hits:
            raise SilenceError(
                f"{text!r} is the start of {len(hits)} silences; give more of the id"
            )
        raise SilenceError(
            f"no silence {text!r}; `citywatch silence list --expired` shows every silence and its id"
        )

    def listing(self, now_ms: int, expired: bool = False) -> list[Silence]:
        """Active and pending silences (with ``expired``, ended ones too), by start."""
        return sorted((s for s in self.by_id.values() if expired or s.state(now_ms) != "expired"),
                      key=lambda s: (s.starts_at, s.id))  # fmt: skip

    def forget(self, before_ms: int) -> list[str]:
        """Drop silences that ended before ``before_ms``; their ids."""
        gone = [i for i, s in self.by_id.items() if s.ends_at < before_ms]
        for i in gone:
            del self.by_id[i]
        return gone

    def __len__(self) -> int:
        return len(self.by_id)


# ---------------------------------------------------------------------- the topic


async def publish(settings: Any, s: Silence) -> None:
    """Write one version of a silence on ``<prefix>.silences`` and wait until Kafka stored it."""
    import orjson

    from bus.kafka import ensure_topics_for, producer_for, start_client
    from contract.topics import KafkaTopics

    k = settings.kafka
    await ensure_topics_for(k)
    producer = await start_client(
        producer_for(k, client_id="citywatch-silences", linger_ms=0), k.bootstrap
    )
    try:
        body = orjson.dumps(s.to_dict(), option=orjson.OPT_SORT_KEYS)
        await producer.send_and_wait(KafkaTopics(k.topic_prefix).silences, body, key=s.id.encode())
    finally:
        await producer.stop()


async def read_all(settings: Any, timeout_s: float = 10.0) -> Silences:
    """Every silence on ``<prefix>.silences``, read from the beginning to its end now."""
    import asyncio
    import logging
    import time

    import orjson

    from bus.kafka import consumer_for, ensure_topics_for, start_client, topic_partitions
    from contract.topics import KafkaTopics

    k = settings.kafka
    await ensure_topics_for(k)
    topic = KafkaTopics(k.topic_prefix).silences
    consumer = await start_client(
        consumer_for(k, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"),
        k.bootstrap,
    )
    out = Silences()
    try:
        tps = await topic_partitions(consumer, [topic], or_first=True)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            if time.monotonic() > deadline:
                raise SilenceError(
                    f"reading {topic} did not reach its end within {timeout_s:.0f} s; try again"
                )
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    if r.value is None:
                        continue
                    try:
                        out.apply(Silence.from_dict(orjson.loads(r.value)))
                    except (SilenceError, ValueError) as exc:
                        logging.getLogger("citywatch.alerts.silence").warning(
                            "%s offset %d: skipped: %s", topic, r.offset, exc
                        )
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return out
