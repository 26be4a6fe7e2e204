"""Kafka plumbing shared by the bridge and the worker: topic creation and the producer.

Topics are created explicitly before anything produces: a Kafka-protocol
broker that auto-creates on first produce picks its own partition count, and
Faust then refuses to join a table's changelog with a source topic of another
size.

A broker that does not answer when a client starts (``ensure_topics``,
``start_client``) is a ``KafkaDown``: one line naming the bootstrap servers and
how to start Kafka, instead of aiokafka's ``KafkaConnectionError`` traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NodeNotReadyError,
    TopicAlreadyExistsError,
)
from aiokafka.helpers import create_ssl_context

from contract.topics import KafkaTopics
from foundation.errors import CitywatchError, ConfigError, ServiceDown
from foundation.settings import KafkaSettings

log = logging.getLogger(__name__)

TOPIC_NAMES = (
    "telemetry", "deadletter", "quarantine", "cases", "penalties", "alerts", "acks", "audit", "silences",
)  # fmt: skip
TOPIC_CONFIGS: dict[str, dict[str, str]] = {"silences": {"cleanup.policy": "compact"}}
"""Per-topic settings at creation. Silences are read from the beginning by every alerts start and
``citywatch silence list``: compaction keeps each one's latest version however long ago it was
made, where time-based retention (7 days by default) would drop a month-long silence."""


KAFKA_SETTING = "kafka.bootstrap / CITYWATCH_KAFKA_BOOTSTRAP"
UNREACHABLE = (KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError)
"""aiokafka's ways of saying that no broker answered (as opposed to a broker refusing a request)."""

ADMIN_TIMEOUT_MS = 10_000
"""How long the admin client waits for a broker: a command run by hand learns of an outage
(a broker that accepts connections but does not answer) within seconds."""


def never_auto_create() -> None:
    """Make every aiokafka client of this process ask for metadata without creating topics.

    aiokafka sends each MetadataRequest (v4+) with ``allow_auto_topic_creation``
    true and has no setting for it. tansu then creates a topic it does not hold
    with its own default of four partitions: a bridge or worker that asks for the
    journal's metadata in the moment between a restarted broker answering and
    ``services up`` creating the topics made a four-partition journal against the
    settings' one, and every worker after refused every event (``PartitionsMismatch``;
    issue 14's harness, docs/decisions/010-durable-journal.md §10). Topics are
    citywatch's to create (``ensure_topics``, ``recreate_empty``); a client that finds
    one missing waits as for an outage. Applied when this module is imported, which
    every component that talks to Kafka does; idempotent.
    """
    from aiokafka.protocol import metadata

    init = metadata.MetadataRequest.__init__
    if getattr(init, "never_auto_create", False):
        return

    def no_auto_create(
        self: Any, topics: list[str] | None = None, allow_auto_topic_creation: bool | None = None
    ) -> None:
        init(
            self, topics, False if allow_auto_topic_creation is None else allow_auto_topic_creation
        )

    no_auto_create.never_auto_create = True  # type: ignore[attr-defined]
    metadata.MetadataRequest.__init__ = no_auto_create  # type: ignore[method-assign]


never_auto_create()


class KafkaDown(ServiceDown):
    """No Kafka broker of ``bootstrap`` answers."""

    def __init__(self, bootstrap: str, cause: object = "") -> None:
        super().__init__("Kafka", bootstrap, KAFKA_SETTING, _cause(cause))


def _cause(exc: object) -> object:
    if isinstance(exc, KafkaTimeoutError):
        return "no answer before the timeout"
    if isinstance(exc, KafkaConnectionError) and "bootstrap" in str(exc):
        return "no bootstrap server answered"  # aiokafka's text lists the addresses as tuples
    return exc


C = TypeVar("C")


async def start_client(client: C, bootstrap: str) -> C:
    """``await client.start()`` of a producer, consumer or admin client; ``KafkaDown`` when
    no broker answers (the half-started client closed, so nothing is left open)."""
    try:
        await client.start()  # type: ignore[attr-defined]
    except UNREACHABLE as exc:
        stop = getattr(client, "stop", None) or client.close  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):
            await stop()
        raise KafkaDown(bootstrap, exc) from None
    return client


def client_security(k: KafkaSettings | None) -> dict[str, Any]:
    """aiokafka's connection settings for ``kafka.security_protocol`` (docs/contracts.md, "Kafka").

    Every client citywatch makes (producers, consumers, the admin client, the
    Faust worker) connects the same way; PLAINTEXT is the embedded default on
    loopback. The password goes to aiokafka only, never to a log.
    """
    if k is None or k.security_protocol == "PLAINTEXT":
        return {}
    out: dict[str, Any] = {"security_protocol": k.security_protocol}
    if k.security_protocol in ("SSL", "SASL_SSL"):
        try:
            out["ssl_context"] = create_ssl_context(cafile=k.ca_file or None)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                None, None, f"kafka.ca_file {k.ca_file!r}: cannot load it ({exc})"
            ) from None
    if k.security_protocol.startswith("SASL_"):
        if not k.username or not k.password:
            raise ConfigError(
                None, None,
                f"kafka.security_protocol {k.security_protocol} needs kafka.username and kafka.password "
                "(CITYWATCH_KAFKA_USERNAME / CITYWATCH_KAFKA_PASSWORD)",
            )  # fmt: skip
        out.update(
            sasl_mechanism=k.sasl_mechanism,
            sasl_plain_username=k.username,
            sasl_plain_password=k.password,
        )
    return out


def faust_credentials(k: KafkaSettings | None) -> Any:
    """The same connection settings as Faust's ``broker_credentials`` (None for PLAINTEXT)."""
    import faust

    sec = client_security(k)
    if not sec:
        return None
    if sec["security_protocol"] == "SSL":
        return faust.SSLCredentials(sec["ssl_context"])
    return faust.SASLCredentials(
        username=sec["sasl_plain_username"],
        password=sec["sasl_plain_password"],
        mechanism=sec["sasl_mechanism"],
        ssl_context=sec.get("ssl_context"),
    )


# ------------------------------------------------------------------ waiting for Kafka


def kafka_outage(exc: BaseException) -> bool:
    """True when Kafka itself does not answer (down, restarting, unreachable): worth waiting for.

    A connection that fails or times out, or any error Kafka marks retriable.
    Anything else (refused credentials, a topic not allowed) is an operator's
    fix, and waiting would only hide it.
    """
    return isinstance(exc, (OSError, asyncio.TimeoutError, KafkaTimeoutError, KafkaDown)) or (
        isinstance(exc, KafkaError) and getattr(exc, "retriable", False) is True
    )


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


class Patience:
    """Waiting for a dependency that does not answer: the backoff and the operator's log lines.

    An outage is not a bug, so no traceback: one WARNING when the wait starts
    (who waits, for what, why, that nothing is lost), a reminder every
    ``remind_every_s`` while it lasts, one INFO when the dependency answers.
    The pause between attempts doubles from ``first_s`` to ``max_s``. The
    worker uses it for InfluxDB too.
    """

    def __init__(
        self,
        who: str,
        what: str,
        *,
        meanwhile: str = "",
        logger: logging.Logger | None = None,
        first_s: float = 0.5,
        max_s: float = 5.0,
        remind_every_s: float = 60.0,
    ) -> None:
        self.who, self.what, self.meanwhile = who, what, meanwhile
        self.log = logger or log
        self.first_s, self.max_s, self.remind_every_s = first_s, max_s, remind_every_s
        self.since: float | None = None
        self.failures = 0
        self._delay = first_s
        self._reminded = 0.0

    def failed(self, exc: BaseException, reason: str | None = None) -> float:
        """Count one failed attempt (logged as the rules above say); seconds to wait before the next.

        ``reason``: the whole of what went wrong, naming the dependency, when the caller
        knows it better than "<what> does not answer (<the exception's text>)".
        """
        now = time.monotonic()
        self.failures += 1
        why = reason or f"{self.what} does not answer ({_reason(exc)})"
        if self.since is None:
            self.since = self._reminded = now
            note = f"; {self.meanwhile}" if self.meanwhile else ""
            self.log.warning(
                "%s: %s; waiting for it, retrying every %g s at most%s",
                self.who, why, self.max_s, note,
            )  # fmt: skip
        elif now - self._reminded >= self.remind_every_s:
            self._reminded = now
            self.log.warning(
                "%s: still waiting for %s after %.0f s (%d attempts; %s)",
                self.who, self.what, now - self.since, self.failures, why,
            )  # fmt: skip
        delay, self._delay = self._delay, min(self._delay * 2, self.max_s)
        return delay

    def ok(self) -> float | None:
        """The dependency answered; how long it was waited for (None: it never failed)."""
        if self.since is None:
            return None
        waited = time.monotonic() - self.since
        self.log.info("%s: %s answers after %.1f s; going on", self.who, self.what, waited)
        self.since, self.failures, self._delay = None, 0, self.first_s
        return waited


_muted: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("_muted", default=None)
_BOOTSTRAP_FAILURES = (
    'Unable connect to "%s:%s": %s',
    'Unable to request metadata from "%s:%s": %s',
)


class _QuietWhileWaiting(logging.Filter):
    """aiokafka logs an ERROR for every failed bootstrap; while ``Patience`` says it once, drop them.

    Only records emitted in the context of one of our own waiting attempts
    (``_muted`` is a list there) are dropped, and kept in that list: the
    cause they name ("Connect call failed") is the reason ``Patience`` logs.
    Every other client's records are left alone.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        muted = _muted.get()
        if muted is None or record.msg not in _BOOTSTRAP_FAILURES:
            return True
        muted.append(record.getMessage())
        return False


logging.getLogger("aiokafka").addFilter(_QuietWhileWaiting())


@contextlib.contextmanager
def quiet_attempts() -> Any:
    """Keep aiokafka's per-attempt bootstrap errors out of the log within; yields what they said."""
    muted: list[str] = []
    token = _muted.set(muted)
    try:
        yield muted
    finally:
        _muted.reset(token)


# ------------------------------------------------------------------ topics


def topic_names(prefix: str) -> list[str]:
    """Every citywatch topic of ``prefix`` (``TOPIC_NAMES``)."""
    topics = KafkaTopics(prefix)
    return [getattr(topics, n) for n in TOPIC_NAMES]


async def ensure_topics(
    bootstrap: str,
    prefix: str,
    partitions: int = 1,
    *,
    security: Mapping[str, Any] | None = None,
    wait: bool = False,
    who: str = "citywatch",
) -> list[str]:
    """Create citywatch's topics if missing; return their names.

    Every topic gets ``partitions`` partitions: the worker's tables are
    co-partitioned with the telemetry topic, and acks are forwarded into it by
    device key, so all of them must agree.

    ``wait``: while Kafka does not answer (``kafka_outage``), wait for it and
    try again (``Patience``, as ``who``) instead of raising: what a
    long-running component does at its start. Without it, one attempt.
    """
    if not wait:
        return await _ensure_topics(bootstrap, prefix, partitions, security)
    patience = Patience(who, f"Kafka at {bootstrap}")
    while True:
        muted: list[str] = []
        token = _muted.set(muted)
        try:
            names = await _ensure_topics(bootstrap, prefix, partitions, security)
        except Exception as exc:
            if not kafka_outage(exc):
                raise
            cause = f"Kafka at {bootstrap} does not answer ({muted[-1]})" if muted else None
            await asyncio.sleep(patience.failed(exc, cause))
            continue
        finally:
            _muted.reset(token)
        patience.ok()
        return names


async def _ensure_topics(
    bootstrap: str, prefix: str, partitions: int, security: Mapping[str, Any] | None
) -> list[str]:
    names = topic_names(prefix)
    topics = KafkaTopics(prefix)
    configs = {getattr(topics, n): c for n, c in TOPIC_CONFIGS.items()}
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=ADMIN_TIMEOUT_MS, **(security or {})
    )
    await start_client(admin, bootstrap)  # KafkaDown (the client closed) when nobody answers
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            n,
                            num_partitions=partitions,
                            replication_factor=1,
                            topic_configs=configs.get(n, {}),
                        )
                        for n in missing
                    ]  # fmt: skip
                )
            except TopicAlreadyExistsError:
                pass
            for _ in range(50):  # wait until metadata shows them
                if set(missing) <= set(await admin.list_topics()):
                    break
                await asyncio.sleep(0.1)
    except UNREACHABLE as exc:  # the broker went away after answering once
        raise KafkaDown(bootstrap, exc) from None
    finally:
        await admin.close()
    return names


def make_producer(
    bootstrap: str,
    client_id: str = "citywatch",
    linger_ms: int = 5,
    *,
    security: Mapping[str, Any] | None = None,
) -> AIOKafkaProducer:
    """A producer tuned by bench/RESULTS.md (linger 5 ms); acks=all so an ack means stored.

    No idempotent producer and no transactions: the embedded broker (tansu)
    has none, so duplicates are tolerated downstream by deterministic ids.
    """
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        linger_ms=linger_ms,
        max_batch_size=1 << 20,
        request_timeout_ms=30_000,
        **(security or {}),
    )


# ------------------------------------------------------------------ clients from the settings


def producer_for(k: KafkaSettings, client_id: str, linger_ms: int = 5) -> AIOKafkaProducer:
    """``make_producer`` connected as ``kafka.*`` says (TLS, SASL)."""
    return make_producer(k.bootstrap, client_id, linger_ms, security=client_security(k))


def consumer_for(k: KafkaSettings, *topics: str, **options: Any) -> Any:
    """An ``AIOKafkaConsumer`` connected as ``kafka.*`` says; ``options`` are aiokafka's."""
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(*topics, bootstrap_servers=k.bootstrap, **client_security(k), **options)


async def topic_partitions(
    consumer: Any, names: Iterable[str], *, or_first: bool = False
) -> list[Any]:
    """Every partition of ``names`` the broker lists now, topic by topic in partition order.

    Asked of the broker now, not read from what the consumer learnt when it started:
    aiokafka's ``consumer.topics()`` fetches fresh metadata but returns only the names, and
    ``partitions_for_topic`` reads the client's metadata of its last refresh. So this asks
    the consumer's client for the whole cluster's metadata (``fetch_all_metadata``, what
    ``topics()`` calls) and reads the partitions from that. A topic the broker does not
    list gives none, or only partition 0 with ``or_first`` (a reader that assigns it and
    finds the topic once it is created).
    """
    from aiokafka import TopicPartition

    cluster = await consumer._client.fetch_all_metadata()
    return [
        TopicPartition(n, p)
        for n in names
        for p in sorted(cluster.partitions_for_topic(n) or ({0} if or_first else ()))
    ]


async def ensure_topics_for(
    k: KafkaSettings, *, wait: bool = False, who: str = "citywatch"
) -> list[str]:
    """``ensure_topics`` for the settings' prefix and partitions, connected as they say."""
    return await ensure_topics(
        k.bootstrap, k.topic_prefix, k.partitions, security=client_security(k), wait=wait, who=who
    )


# ------------------------------------------------------------------ where partitions end, where groups are


async def partition_ends(k: KafkaSettings, tps: list[Any]) -> dict[Any, int]:
    """Each partition's end as its records say, read once (a snapshot, not a wait).

    tansu answers ListOffsets with the first offset of the last batch plus one
    (docs/decisions/004-tansu-as-kafka-in-tests.md), so ``end_offsets`` alone
    would call a journal drained a whole batch early. One fetch from the reported
    end minus one returns the last batch, whose last offset plus one is the end;
    one fetch, because a loop to the end never finishes while producers write.
    With Kafka or Redpanda the reported end is already right and nothing moves it.
    """
    reader = consumer_for(k, group_id=None, enable_auto_commit=False)
    await start_client(reader, k.bootstrap)
    try:
        reader.assign(tps)
        ends = dict(await reader.end_offsets(tps))
        for tp in tps:
            if ends[tp] > 0:
                reader.seek(tp, ends[tp] - 1)
                if batch := (await reader.getmany(tp, timeout_ms=300)).get(tp):
                    ends[tp] = max(ends[tp], batch[-1].offset + 1)
        return ends
    finally:
        await reader.stop()


async def group_positions(k: KafkaSettings, group_id: str, tps: list[Any]) -> dict[Any, int | None]:
    """The offsets ``group_id`` committed on each partition (None: never committed there)."""
    group = consumer_for(k, group_id=group_id, enable_auto_commit=False)
    await start_client(group, k.bootstrap)
    try:
        return {tp: await group.committed(tp) for tp in tps}
    finally:
        await group.stop()


async def group_lag(k: KafkaSettings, group_id: str, tps: list[Any]) -> int | None:
    """Records of ``tps`` that ``group_id`` has not committed (None: it never committed where there is data).

    An empty partition the group never committed on is no lag; a non-empty one
    it never committed on means the consumer has not started yet: cannot tell.
    """
    ends = await partition_ends(k, tps)
    committed = await group_positions(k, group_id, tps)
    lag = 0
    for tp in tps:
        if committed[tp] is None:
            if ends[tp]:
                return None
            continue
        lag += max(0, ends[tp] - committed[tp])
    return lag


# ------------------------------------------------------------------ topics made empty again


class TopicsNotEmpty(CitywatchError):
    """Topics deleted and created again still report records: the broker did not forget them."""


EMPTY_ATTEMPTS = 3


async def partition_counts(k: KafkaSettings, names: list[str]) -> dict[str, int]:
    """How many partitions the broker lists for each topic of ``names`` (0: it has no such topic)."""
    probe = consumer_for(k, group_id=None, enable_auto_commit=False)
    await start_client(probe, k.bootstrap)
    try:
        return await _listed_counts(probe, names)
    finally:
        await probe.stop()


async def _listed_counts(consumer: Any, names: list[str]) -> dict[str, int]:
    listed = Counter(tp.topic for tp in await topic_partitions(consumer, names))
    return {n: listed[n] for n in names}


async def recreate_empty(
    k: KafkaSettings, configs: Mapping[str, Mapping[str, str]], partitions: int
) -> None:
    """Delete the topics ``configs`` names and create them again, empty, with ``partitions``.

    Each topic is first made to exist, because deleting a topic the broker
    does not hold clears nothing. tansu (v0.6.0, memory storage) acknowledges
    a produce into a topic it does not hold when the producer's metadata still
    lists it -- a producer of the broker before a restart resending its queued
    batches -- and keeps what it took where no fetch sees it: a topic created
    later under that name reports that phantom's end to ListOffsets, returns
    no record at any offset, and refuses every produce (``UnknownError``). A
    Faust table recovering from such a changelog waits for ever for an end no
    record reaches (issue 14's harness, docs/decisions/009-state-recovery.md,
    "A broker restart's phantom changelog"). Deleting the topic once it exists
    clears it. The result is checked: every partition's reported end is 0, or
    ``TopicsNotEmpty`` after ``EMPTY_ATTEMPTS`` tries.
    """
    from aiokafka import TopicPartition

    names = list(configs)
    reported: dict[Any, int] = {}
    wrong: dict[str, int] = {}
    for _attempt in range(EMPTY_ATTEMPTS):
        admin = AIOKafkaAdminClient(
            bootstrap_servers=k.bootstrap, request_timeout_ms=ADMIN_TIMEOUT_MS,
            **client_security(k),
        )  # fmt: skip
        await start_client(admin, k.bootstrap)
        try:
            new = [NewTopic(n, partitions, 1, topic_configs=dict(configs[n])) for n in names]
            missing = set(names) - set(await admin.list_topics())
            if missing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics([t for t in new if t.name in missing])
            await _until_listed(admin, names, present=True)
            await admin.delete_topics(names)
            await _until_listed(admin, names, present=False)
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
        finally:
            await admin.close()
        probe = consumer_for(k, group_id=None, enable_auto_commit=False)
        await start_client(probe, k.bootstrap)
        try:
            counts: dict[str, int] = {}
            for _ in range(50):  # until metadata shows every partition
                counts = await _listed_counts(probe, names)
                if all(c == partitions for c in counts.values()):
                    break
                await asyncio.sleep(0.1)
            wrong = {n: c for n, c in counts.items() if c != partitions}
            if not wrong:
                tps = [TopicPartition(n, p) for n in names for p in range(partitions)]
                reported = {tp: end for tp, end in (await probe.end_offsets(tps)).items() if end}
        finally:
            await probe.stop()
        if wrong:
            # a stale producer's resend landed between the delete and the create, and tansu
            # made the topic on that produce with its own default of one partition: Faust
            # would refuse the table (PartitionsMismatch) on every event
            log.warning("topics created again with the wrong partition count (%s, want %d); "
                        "deleting them again", ", ".join(f"{n}: {c}" for n, c in wrong.items()),
                        partitions)  # fmt: skip
            continue
        if not reported:
            return
        log.warning("topics created again still report records (%s); deleting them again",
                    ", ".join(f"{tp.topic}[{tp.partition}] ends at {e}"
                              for tp, e in sorted(reported.items())))  # fmt: skip
    what = (
        ", ".join(f"{n} has {c} partitions, not {partitions}" for n, c in wrong.items())
        if wrong
        else ", ".join(
            f"{tp.topic}[{tp.partition}] ends at {e}" for tp, e in sorted(reported.items())
        )
    )
    raise TopicsNotEmpty(
        f"Kafka at {k.bootstrap}: {', '.join(names)} deleted and created again "
        f"{EMPTY_ATTEMPTS} times are still not empty topics of the right size ({what}); "
        "stop what produces into them, or restart the broker"
    )


async def _until_listed(admin: AIOKafkaAdminClient, names: list[str], *, present: bool) -> None:
    for _ in range(50):
        listed = set(await admin.list_topics())
        if (set(names) <= listed) if present else not (set(names) & listed):
            return
        await asyncio.sleep(0.1)


PHANTOM_WAIT_S = 3.0
"""How long a partition's last batch may take to come back before the partition counts as a phantom."""


async def phantom_partitions(k: KafkaSettings, names: list[str]) -> dict[Any, int]:
    """Partitions of ``names`` whose reported end no record backs: {partition: reported end}.

    A partition with records has one at the reported end minus one (Kafka's
    last record; tansu's last batch, decision 004); a phantom (``recreate_empty``)
    gives nothing there. Only an empty fetch for ``PHANTOM_WAIT_S`` counts.
    """
    probe = consumer_for(k, group_id=None, enable_auto_commit=False)
    await start_client(probe, k.bootstrap)
    try:
        tps = await topic_partitions(probe, names)
        ends = {tp: e for tp, e in (await probe.end_offsets(tps)).items() if e} if tps else {}
        if not ends:
            return {}
        probe.assign(list(ends))
        for tp, end in ends.items():
            probe.seek(tp, end - 1)
        pending = set(ends)
        deadline = time.monotonic() + PHANTOM_WAIT_S
        while pending and time.monotonic() < deadline:
            got = await probe.getmany(*pending, timeout_ms=500)
            pending -= {tp for tp, records in got.items() if records}
        return {tp: ends[tp] for tp in pending}
    finally:
        await probe.stop()


async def clear_phantoms(k: KafkaSettings) -> list[str]:
    """citywatch's topics of the prefix that held a phantom, deleted and created again empty.

    For a broker just started (``services up``): the components' producers
    resend what they had queued for the broker before the restart as soon as
    it answers, and what tansu takes into a topic it does not hold yet turns
    the topic, once created, into one that refuses every produce (the
    archive's restore failed on it: ``UnknownError``). Such a partition holds
    no record, so with one partition per topic nothing is lost by recreating
    it; with several, what the others took in the moment since is.
    """
    topics = KafkaTopics(k.topic_prefix)
    configs = {getattr(topics, n): c for n, c in TOPIC_CONFIGS.items()}
    found = await phantom_partitions(k, topic_names(k.topic_prefix))
    doomed = sorted({tp.topic for tp in found})
    if doomed:
        log.warning(
            "Kafka at %s: %s report records no fetch returns (a produce the broker took before "
            "the topic existed); created again empty",
            k.bootstrap, ", ".join(f"{tp.topic}[{tp.partition}] ends at {e}" for tp, e in sorted(found.items())),
        )  # fmt: skip
        await recreate_empty(k, {n: configs.get(n, {}) for n in doomed}, k.partitions)
    return doomed
