"""MQTT and Kafka topic names (docs/contracts.md, "MQTT"; docs/contracts.md, "Kafka").

Telemetry arrives on ``city/{district}/{kind}/{device_id}/telemetry``. The
device id in the topic is the device's identity; the district and kind in the
topic are checked against the registry by ``ingest.validate``.

A topic *segment* (district, kind, device id) is 1 to 64 characters from
``A-Z a-z 0-9 _ . : -``. That excludes the MQTT wildcards ``+`` and ``#``, the
level separator ``/``, whitespace and control characters, so every segment is
also safe as a Kafka key, an InfluxDB tag value and a file name. The registry
(``registry.devices``) applies the same rule to device and district ids, so
every registered device is addressable on a topic.

``parse_topic`` checks the *shape* only: it returns the parts for any kind
segment, and ``parse_message`` turns a kind outside ``KINDS`` into the
``unknown_kind`` rejection. Use ``TopicParts.kind_known`` to test it yourself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from contract.reading import KINDS

__all__ = [
    "BROKER_COUNTERS",
    "BROKER_DROPPED_RATE",
    "BROKER_DROPPED_TOTAL",
    "BROKER_STORED",
    "KINDS",
    "SEGMENT_PATTERN",
    "SHARED_SUBSCRIPTION",
    "TELEMETRY_FILTER",
    "KafkaTopics",
    "TopicParts",
    "gateway_deadletter_topic",
    "is_valid_segment",
    "parse_gateway_deadletter",
    "parse_topic",
    "shared_subscription",
    "telemetry_topic",
]

TELEMETRY_FILTER = "city/+/+/+/telemetry"
"""Subscription filter matching every telemetry topic."""

CITY_FILTER = "city/#"
"""What the bridge subscribes to: every topic under ``city/``, so a device that
publishes on a topic outside the scheme is dead-lettered as ``bad_topic`` (and
its vendor can be told) instead of being ignored by the broker."""

SHARED_SUBSCRIPTION = "$share/{group}/city/#"
"""MQTT v5 shared subscription of the bridges; fill ``{group}`` (see ``shared_subscription``)."""

BROKER_DROPPED_TOTAL = "$SYS/broker/publish/messages/dropped"
"""Mosquitto: messages it dropped since it started (a full subscriber queue), after PUBACKing them."""
BROKER_DROPPED_RATE = "$SYS/broker/load/publish/dropped/1min"
"""Mosquitto: drops per minute (moving average)."""
BROKER_STORED = "$SYS/broker/store/messages/count"
"""Mosquitto: messages it holds now (queued, in flight, retained): the queue depth."""
BROKER_COUNTERS = (BROKER_DROPPED_TOTAL, BROKER_DROPPED_RATE, BROKER_STORED)
"""What a bridge reads of the broker's ``$SYS`` tree (``ingest.broker_stats``), and all its ACL
grants there (never the ``$SYS/broker/log`` topics, which name clients)."""

SEGMENT_PATTERN = r"[A-Za-z0-9_.:\-]{1,64}"
"""What a district, kind or device id may look like (the whole segment)."""

_SEGMENT = re.compile(SEGMENT_PATTERN)
_KINDS = frozenset(KINDS)

# Topics are few (one per device) and arrive over and over: remember valid parses.
# Bounded: cleared when full, so a flood of distinct topics cannot grow memory.
_CACHE: dict[str, TopicParts] = {}
_CACHE_MAX = 200_000


@dataclass(frozen=True, slots=True)
class TopicParts:
    """The variable parts of a telemetry topic."""

    district: str
    kind: str
    device_id: str

    @property
    def kind_known(self) -> bool:
        """True when ``kind`` is one of ``KINDS``."""
        return self.kind in _KINDS


def is_valid_segment(value: str) -> bool:
    """True when ``value`` may be used as one topic level (see module doc)."""
    return isinstance(value, str) and _SEGMENT.fullmatch(value) is not None


def parse_topic(topic: str) -> TopicParts | None:
    """Split ``city/{district}/{kind}/{device_id}/telemetry``; None if it does not match.

    Never raises. The kind segment is not checked against ``KINDS`` here
    (see ``TopicParts.kind_known``).
    """
    if type(topic) is not str:
        return None
    cached = _CACHE.get(topic)
    if cached is not None:
        return cached
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != "city" or parts[4] != "telemetry":
        return None
    _, district, kind, device_id, _ = parts
    fm = _SEGMENT.fullmatch
    if fm(district) is None or fm(kind) is None or fm(device_id) is None:
        return None
    result = TopicParts(district, kind, device_id)
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[topic] = result
    return result


def telemetry_topic(district: str, kind: str, device_id: str) -> str:
    """The topic a device publishes telemetry on.

    Raises ``ValueError`` naming the bad argument when a part is not a valid
    segment or ``kind`` is not one of ``KINDS``.
    """
    for name, value in (("district", district), ("kind", kind), ("device_id", device_id)):
        if not is_valid_segment(value):
            raise ValueError(
                f"invalid {name} {value!r} for an MQTT topic; use 1-64 characters from "
                "A-Z a-z 0-9 _ . : -"
            )
    if kind not in _KINDS:
        raise ValueError(f"invalid kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    return f"city/{district}/{kind}/{device_id}/telemetry"


GATEWAY_DEADLETTER = "city/gateway/{gateway}/deadletter"
"""Where a protocol gateway reports a frame it could not turn into a reading
(docs/contracts.md, "Gateway dead letters"): the bridge files it on the dead-letter topic."""


def gateway_deadletter_topic(gateway: str) -> str:
    """``city/gateway/<gateway>/deadletter``; ``ValueError`` for an id that is no topic segment."""
    if not is_valid_segment(gateway):
        raise ValueError(
            f"invalid gateway id {gateway!r} for an MQTT topic; use 1-64 characters from "
            "A-Z a-z 0-9 _ . : -"
        )
    return GATEWAY_DEADLETTER.format(gateway=gateway)


def parse_gateway_deadletter(topic: str) -> str | None:
    """The gateway id of ``city/gateway/<gateway>/deadletter``, None for any other topic."""
    if type(topic) is not str or not topic.startswith("city/gateway/"):
        return None
    parts = topic.split("/")
    if len(parts) != 4 or parts[3] != "deadletter" or _SEGMENT.fullmatch(parts[2]) is None:
        return None
    return parts[2]


def shared_subscription(group: str) -> str:
    """``SHARED_SUBSCRIPTION`` for ``group`` (bridges in one group share the load)."""
    if not is_valid_segment(group):
        raise ValueError(
            f"invalid shared-subscription group {group!r}; use 1-64 characters from "
            "A-Z a-z 0-9 _ . : -"
        )
    return SHARED_SUBSCRIPTION.format(group=group)


@dataclass(frozen=True, slots=True)
class KafkaTopics:
    """Kafka topic names (docs/contracts.md, "Kafka"); ``KafkaTopics("cw-test")`` for another prefix."""

    prefix: str = "citywatch"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9._\-]{1,200}", self.prefix or ""):
            raise ValueError(
                f"invalid Kafka topic prefix {self.prefix!r}; use 1-200 characters from "
                "A-Z a-z 0-9 . _ -"
            )

    @property
    def telemetry(self) -> str:
        """Validated readings, keyed by device id."""
        return f"{self.prefix}.telemetry"

    @property
    def deadletter(self) -> str:
        """Rejected messages (``Rejection.to_record``), keyed by topic device id when known."""
        return f"{self.prefix}.deadletter"

    @property
    def quarantine(self) -> str:
        """Journal records the worker could not take (``contract.journal.quarantine_record``),
        keyed as the refused record was (docs/contracts.md, "Kafka")."""
        return f"{self.prefix}.quarantine"

    @property
    def cases(self) -> str:
        return f"{self.prefix}.cases"

    @property
    def penalties(self) -> str:
        return f"{self.prefix}.penalties"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}.alerts"

    @property
    def acks(self) -> str:
        return f"{self.prefix}.acks"

    @property
    def audit(self) -> str:
        """Every officer act, accepted or refused (``contract.officers.AuditRecord``),
        keyed by officer id (docs/officers.md, "The audit trail")."""
        return f"{self.prefix}.audit"

    @property
    def silences(self) -> str:
        """Every version of every silence (``alerts.silence.Silence``), keyed by silence id and
        compacted, so the latest version of each is kept (docs/alerts.md, "Silences and inhibition")."""
        return f"{self.prefix}.silences"
