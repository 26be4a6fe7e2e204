"""The MQTT broker's own counters, read by the bridge: drops it acknowledged and then lost.

Mosquitto PUBACKs a QoS-1 publish as soon as it has it, and then drops it silently when a
subscriber's queue is full (``max_queued_messages``, ``max_queued_bytes``): the device is
told "delivered", no bridge ever sees the reading, and nothing downstream can notice (issue
15: at 12k msg/s offered, 12-16 % of the readings were lost this way with every citywatch
metric green). Only the broker knows, and Mosquitto says it in its ``$SYS`` tree, every
``sys_interval`` seconds, as retained messages (docs/contracts.md, "Broker counters"):

=========================================  ====================================================
``$SYS/broker/publish/messages/dropped``   messages dropped since the broker started (all subscribers)
``$SYS/broker/store/messages/count``       messages the broker holds now (queued, in flight, retained)
``$SYS/broker/load/publish/dropped/1min``  drops per minute, a moving average
=========================================  ====================================================

The bridge subscribes to them (QoS 0, beside its shared subscription; the ``bridge`` role's
ACL allows exactly these topics), keeps the latest values in its metrics, and turns a rise of
the drop counter into a *broker case* (``BrokerWatch``): one ``broker.dropped`` case event on
``<prefix>.cases``, critical, which the alerts service pushes like any case, to the city's
command center by the shipped routes. While drops go on the case is updated at most once a
minute (the count so far; no new push: the state stays ``open``); after ``quiet_ms`` without a
drop it is closed, and a later drop is a new case.

The counter is the broker's since its start, so the first value a bridge sees is a baseline,
not news: a bridge restarted after a drop logs it once (WARNING) and shows it in its metrics
but opens no case for drops it cannot date. A counter that goes down means the broker
restarted: the new value is the new baseline.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from contract.cases import CaseEvent
from contract.rules import BROKER_DROPPED
from contract.topics import BROKER_DROPPED_RATE, BROKER_DROPPED_TOTAL, BROKER_STORED

log = logging.getLogger(__name__)

QUIET_MS = 10 * 60_000
"""A drop case closes after this long without a new drop."""
UPDATE_EVERY_MS = 60_000
"""While drops go on, the open case's count is re-published at most this often."""


def parse_value(payload: bytes) -> float | None:
    """A ``$SYS`` payload as a number (Mosquitto sends decimal text, e.g. ``b"17"`` or
    ``b"0.52"``); None for anything else (another broker's format, garbage): never raises."""
    try:
        text = payload.decode("ascii").strip().split(" ")[0]
        value = float(text)
    except (UnicodeDecodeError, ValueError, IndexError):
        return None
    return value if value == value and abs(value) != float("inf") else None


@dataclasses.dataclass
class BrokerCounters:
    """The latest values read from the broker (None: not heard yet)."""

    dropped: float | None = None
    stored: float | None = None
    dropped_per_min: float | None = None
    updated_at: int | None = None
    """Wall clock (epoch ms) of the last ``$SYS`` message taken."""


class BrokerWatch:
    """The drop counter of one broker, as one bridge sees it, and the case it opens.

    ``take(topic, payload, now)`` is fed every ``$SYS`` message; ``due(now)`` returns the case
    events to publish now (opened, updated, closed). ``source`` names the bridge in the
    case (``device``) and its id, so two bridges of a group each say what they saw.
    """

    def __init__(self, source: str, broker: str, quiet_ms: int = QUIET_MS) -> None:
        self.source = source
        self.broker = broker
        self.quiet_ms = quiet_ms
        self.counters = BrokerCounters()
        self._baseline: float | None = None
        """Drop count at the last look: a rise past it is news."""
        self._case: dict[str, Any] | None = None
        self._last_drop_at = 0
        self._published_count = 0.0
        self._published_at = 0
        self._pending: list[CaseEvent] = []

    @property
    def open_case(self) -> str | None:
        """The id of the drop case open now, if any."""
        return None if self._case is None else str(self._case["case_id"])

    def take(self, topic: str, payload: bytes, now: int) -> None:
        value = parse_value(payload)
        if value is None:
            return
        c = self.counters
        c.updated_at = now
        if topic == BROKER_STORED:
            c.stored = value
        elif topic == BROKER_DROPPED_RATE:
            c.dropped_per_min = value
        elif topic == BROKER_DROPPED_TOTAL:
            c.dropped = value
            self._dropped(value, now)

    def _dropped(self, value: float, now: int) -> None:
        if self._baseline is None or value < self._baseline:
            if value > 0:
                log.warning(
                    "the MQTT broker %s has dropped %d acknowledged messages since it started "
                    "(before this bridge watched it: no case opened); see docs/contracts.md, "
                    "'Broker counters'",
                    self.broker,
                    value,
                )
            self._baseline = value
            return
        if value == self._baseline:
            return
        rise = value - self._baseline
        self._baseline = value
        self._last_drop_at = now
        if self._case is None:
            log.error(
                "the MQTT broker %s dropped %d messages it had acknowledged (its queue limit, "
                "max_queued_messages): those readings are lost; a broker case is opened",
                self.broker,
                rise,
            )
            self._case = {
                "case_id": f"{BROKER_DROPPED}:{self.source}:{now}",
                "opened_at": now,
                "dropped": rise,
                "first_total": value - rise,
            }
            self._pending.append(self._event("open", now))
        else:
            self._case["dropped"] += rise

    def due(self, now: int) -> list[CaseEvent]:
        """Case events to publish now (and forget: the caller publishes them)."""
        out, self._pending = self._pending, []
        case = self._case
        if case is None:
            return out
        if not out and now - self._last_drop_at >= self.quiet_ms:
            out.append(self._event("closed", now))
            self._case = None
        elif (
            not out
            and case["dropped"] != self._published_count
            and now - self._published_at >= UPDATE_EVERY_MS
        ):
            out.append(self._event("open", now))
        return out

    def _event(self, state: str, now: int) -> CaseEvent:
        case = self._case
        assert case is not None
        self._published_count, self._published_at = case["dropped"], now
        dropped = int(case["dropped"])
        closing = state == "closed"
        message = (
            f"no drop for {self.quiet_ms // 60_000} min; {dropped} acknowledged readings were lost"
            if closing
            else f"the broker dropped {dropped} acknowledged readings (queue limit): lost, "
            "devices were told delivered; raise max_queued_messages or add bridges"
        )
        return CaseEvent(
            case_id=case["case_id"],
            kind="broker",
            rule=BROKER_DROPPED,
            device=self.source,
            district="",
            grid="",
            unit="",
            severity="critical",
            state=state,
            at=now,
            opened_at=case["opened_at"],
            deadline=None,
            evidence=[{"broker": self.broker, "dropped_total": self._baseline}],
            component_code=None,
            address=self.broker,
            detail={
                "dropped": dropped,
                "broker": self.broker,
                "dropped_total": self._baseline,
                "stored": self.counters.stored,
                "message": message,
            },
        )
