"""The broker case as the drop counter moves (ingest/broker_stats.py; docs/contracts.md,
"Broker counters"): the counter's values as Mosquitto sends them, the cases the bridge publishes."""

from __future__ import annotations

import pytest

from contract.topics import BROKER_DROPPED_RATE, BROKER_DROPPED_TOTAL, BROKER_STORED
from ingest.broker_stats import QUIET_MS, UPDATE_EVERY_MS, BrokerWatch, parse_value

T = 1_800_000_000_000


def _watch(*values: tuple[int, bytes]) -> tuple[BrokerWatch, list]:
    """Feed the drop counter at (offset ms, payload); collect the events due after each."""
    w = BrokerWatch("cw-bridge-1", "127.0.0.1:18883")
    events = []
    for dt, payload in values:
        w.take(BROKER_DROPPED_TOTAL, payload, T + dt)
        events += w.due(T + dt)
    return w, events


@pytest.mark.parametrize(
    ("payload", "value"),
    [(b"17", 17.0), (b"0.52", 0.52), (b"3 seconds", 3.0), (b"", None), (b"NaN", None),
     (b"inf", None), (b"\xff\xfe", None), (b"many", None)],
)  # fmt: skip
def test_a_sys_payload_is_a_number_or_nothing(payload: bytes, value: float | None) -> None:
    assert parse_value(payload) == value


def test_the_first_value_is_a_baseline_and_opens_no_case() -> None:
    w, events = _watch((0, b"120"))
    assert events == [] and w.open_case is None and w.counters.dropped == 120


def test_a_rise_opens_one_critical_case_with_the_drops_since() -> None:
    w, events = _watch((0, b"120"), (10_000, b"150"), (20_000, b"170"))
    assert [e.state for e in events] == ["open"]
    opened = events[0]
    assert opened.rule == "broker.dropped" and opened.kind == "broker"
    assert opened.severity == "critical" and opened.device == "cw-bridge-1"
    assert opened.detail["dropped"] == 30 and opened.case_id == w.open_case


def test_the_count_is_republished_at_most_once_a_minute_while_drops_go_on() -> None:
    w, events = _watch((0, b"0"), (10_000, b"5"), (20_000, b"9"), (10_000 + UPDATE_EVERY_MS, b"12"))
    assert [(e.state, e.detail["dropped"]) for e in events] == [("open", 5), ("open", 12)]


def test_quiet_for_ten_minutes_closes_the_case_and_a_later_drop_is_a_new_case() -> None:
    w, events = _watch((0, b"0"), (1_000, b"4"))
    events += w.due(T + 1_000 + QUIET_MS - 1)
    assert [e.state for e in events] == ["open"]
    events += w.due(T + 1_000 + QUIET_MS)
    assert [e.state for e in events] == ["open", "closed"] and w.open_case is None
    assert events[-1].detail["dropped"] == 4
    w.take(BROKER_DROPPED_TOTAL, b"6", T + 2 * QUIET_MS)
    again = w.due(T + 2 * QUIET_MS)
    assert [e.state for e in again] == ["open"] and again[0].case_id != events[0].case_id


def test_a_counter_that_goes_down_is_a_restarted_broker_and_a_new_baseline() -> None:
    w, events = _watch((0, b"50"), (10_000, b"3"), (20_000, b"3"))
    assert events == [] and w.counters.dropped == 3


def test_queue_depth_and_rate_are_kept_and_garbage_is_ignored() -> None:
    w = BrokerWatch("b", "broker")
    w.take(BROKER_STORED, b"4711", T)
    w.take(BROKER_DROPPED_RATE, b"0.25", T)
    w.take(BROKER_DROPPED_TOTAL, b"not a number", T)
    assert (w.counters.stored, w.counters.dropped_per_min, w.counters.dropped) == (4711, 0.25, None)
