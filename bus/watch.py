"""Watching the broker for lost topics: a restarted embedded broker must never be idled on.

The embedded tansu keeps everything in memory (decision 004, 010): restarted,
it comes back with no topics at all. A component that goes on as if nothing
happened produces into topics that no longer exist, commits offsets nobody
can store (the worker logged ~2,800 ``UnknownTopicOrPartitionError`` lines
in five minutes, issue 14) and waits for cases that never come.

``BrokerWatch`` looks every few seconds at what the broker holds: its
cluster id (``services up`` starts tansu with a fresh one each time, so a
restart shows even when another component has already recreated the
topics) and citywatch's topics of the prefix. A loss is told once, as one
ERROR line naming the topics and what to do, the topics are recreated with
their configs (``ensure_topics``, ``TOPIC_CONFIGS``), and the component's
own ``on_loss`` runs (the worker starts afresh, the alerts service pushes an
operator alert, the bridge counts it in its metrics). While Kafka does not
answer at all the watch says nothing: that is an outage, which the
component's clients report themselves (``bus.kafka.Patience``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from bus.kafka import (
    ADMIN_TIMEOUT_MS,
    UNREACHABLE,
    KafkaDown,
    client_security,
    ensure_topics,
    kafka_outage,
    quiet_attempts,
    start_client,
    topic_names,
)
from foundation.settings import KafkaSettings

log = logging.getLogger(__name__)

WATCH_EVERY_S = 5.0
"""How often a long-running component looks (a lost broker is told within this, not minutes)."""


@dataclass(frozen=True)
class BrokerLook:
    """What one look at the broker saw."""

    cluster_id: str | None
    missing: tuple[str, ...]
    """citywatch's topics of the prefix the broker does not hold."""


@dataclass(frozen=True)
class TopicsLost:
    """The broker lost what it held: its topics are gone, or it is another broker (restarted)."""

    bootstrap: str
    missing: tuple[str, ...]
    was: str | None
    """The cluster id seen before (None: not known)."""
    now: str | None
    at_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)

    @property
    def restarted(self) -> bool:
        return self.was is not None and self.now is not None and self.was != self.now

    def describe(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} topics missing ({', '.join(self.missing)})")
        if self.restarted:
            parts.append(f"the broker restarted (cluster id {self.was} -> {self.now})")
        return "; ".join(parts)


async def look(
    bootstrap: str, prefix: str, security: Mapping[str, Any] | None = None
) -> BrokerLook:
    """The broker's cluster id and which of citywatch's topics it lacks; ``KafkaDown`` when nobody answers."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=ADMIN_TIMEOUT_MS, **(security or {})
    )
    with quiet_attempts():  # aiokafka's per-attempt connection errors: not ours to repeat
        await start_client(admin, bootstrap)
        try:
            cluster = (await admin.describe_cluster()).get("cluster_id")
            existing = set(await admin.list_topics())
        except UNREACHABLE as exc:
            raise KafkaDown(bootstrap, exc) from None
        finally:
            await admin.close()
    return BrokerLook(cluster, tuple(n for n in topic_names(prefix) if n not in existing))


async def look_for(k: KafkaSettings) -> BrokerLook:
    """``look`` for the settings' bootstrap, prefix and security."""
    return await look(k.bootstrap, k.topic_prefix, client_security(k))


OnLoss = Callable[[TopicsLost], Awaitable[None] | None]


class BrokerWatch:
    """Every ``every_s``: has the broker lost citywatch's topics? Tell once, recreate, ``on_loss``.

    ``who`` names the component in the log line. ``losses`` counts the losses
    seen, ``missing`` is what the last look lacked (before recreating), for
    metrics and status. The first look only learns the cluster id, unless
    topics are missing already (they were created before the watch started).
    """

    def __init__(
        self,
        k: KafkaSettings,
        who: str,
        *,
        every_s: float = WATCH_EVERY_S,
        on_loss: OnLoss | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.k, self.who, self.every_s, self.on_loss = k, who, every_s, on_loss
        self.log = logger or log
        self.cluster_id: str | None = None
        self.missing: tuple[str, ...] = ()
        self.losses = 0
        self.last: TopicsLost | None = None

    async def check(self) -> TopicsLost | None:
        """One look; the loss it found (already told, topics recreated, ``on_loss`` run), else None."""
        try:
            seen = await look_for(self.k)
        except Exception as exc:
            if kafka_outage(exc):
                return None  # an outage: the component's own clients say so (Patience)
            raise
        was = self.cluster_id
        self.cluster_id = seen.cluster_id or was
        self.missing = seen.missing
        restarted = was is not None and seen.cluster_id is not None and seen.cluster_id != was
        if not seen.missing and not restarted:
            return None
        loss = TopicsLost(self.k.bootstrap, seen.missing, was, seen.cluster_id)
        self.losses += 1
        self.last = loss
        self.log.error(
            "%s: Kafka at %s lost citywatch's topics: %s. What they held is gone from the broker "
            "(the embedded tansu keeps everything in memory); recreating them. The journal comes "
            "back from the archive with `citywatch archive restore` (docs/architecture.md, "
            "\"Restarts and outages\")",
            self.who, self.k.bootstrap, loss.describe(),
        )  # fmt: skip
        if seen.missing:
            try:
                with quiet_attempts():
                    await ensure_topics(
                        self.k.bootstrap, self.k.topic_prefix, self.k.partitions,
                        security=client_security(self.k),
                    )  # fmt: skip
            except Exception as exc:
                if not kafka_outage(exc):
                    raise
                self.log.warning("%s: recreating the topics failed (%s); next look in %g s",
                                 self.who, exc, self.every_s)  # fmt: skip
            else:
                self.log.info("%s: recreated %d topics of %s", self.who, len(seen.missing),
                              self.k.topic_prefix)  # fmt: skip
        if self.on_loss is not None:
            result = self.on_loss(loss)
            if inspect.isawaitable(result):
                await result
        return loss

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Look every ``every_s`` until ``stop`` is set (or cancelled)."""
        while stop is None or not stop.is_set():
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:  # the watch must never take its component down
                self.log.exception("%s: the broker watch failed once; it goes on", self.who)
            if stop is None:
                await asyncio.sleep(self.every_s)
            else:
                try:
                    await asyncio.wait_for(stop.wait(), self.every_s)
                except TimeoutError:
                    pass
