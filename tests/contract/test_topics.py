"""Topic scheme (docs/contracts.md, "MQTT") and Kafka topic names (docs/contracts.md, "Kafka")."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.topics import (
    SHARED_SUBSCRIPTION,
    KafkaTopics,
    TopicParts,
    parse_topic,
    shared_subscription,
    telemetry_topic,
)


def test_parse_topic_good() -> None:
    assert parse_topic("city/jinshui/manhole/MH-0001/telemetry") == TopicParts(
        "jinshui", "manhole", "MH-0001"
    )
    parts = parse_topic("city/erqi/truck/T:1/telemetry")
    assert parts is not None and not parts.kind_known  # shape ok; kind checked by validate


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "city/jinshui/manhole/MH-0001",
        "city/jinshui/manhole/MH-0001/telemetry/extra",
        "/city/jinshui/manhole/MH-0001/telemetry",
        "City/jinshui/manhole/MH-0001/telemetry",
        "city/jinshui/manhole/MH-0001/status",
        "city//manhole/MH-0001/telemetry",
        "city/jinshui/manhole/+/telemetry",
        "city/jinshui/manhole/#/telemetry",
        "city/jinshui/manhole/MH 0001/telemetry",
        "city/金水/manhole/MH-0001/telemetry",
        "city/jinshui/manhole/" + "x" * 65 + "/telemetry",
    ],
)
def test_parse_topic_bad(topic: str) -> None:
    assert parse_topic(topic) is None


def test_telemetry_topic_round_trips() -> None:
    t = telemetry_topic("zhengdong", "streetlight", "SL-ZD-0001")
    assert t == "city/zhengdong/streetlight/SL-ZD-0001/telemetry"
    assert parse_topic(t) == TopicParts("zhengdong", "streetlight", "SL-ZD-0001")
    with pytest.raises(ValueError, match="kind"):
        telemetry_topic("jinshui", "truck", "T1")
    with pytest.raises(ValueError, match="device_id"):
        telemetry_topic("jinshui", "dust", "a/b")


def test_subscriptions() -> None:
    assert SHARED_SUBSCRIPTION == "$share/{group}/city/#"
    assert shared_subscription("bridges") == "$share/bridges/city/#"
    with pytest.raises(ValueError):
        shared_subscription("a/b")


def test_kafka_topics() -> None:
    k = KafkaTopics()
    assert (k.telemetry, k.deadletter, k.cases, k.penalties, k.alerts, k.acks) == (
        "citywatch.telemetry", "citywatch.deadletter", "citywatch.cases",
        "citywatch.penalties", "citywatch.alerts", "citywatch.acks",
    )  # fmt: skip
    assert KafkaTopics("cw-test").telemetry == "cw-test.telemetry"
    assert KafkaTopics("cw-test").quarantine == "cw-test.quarantine"
    from bus.kafka import TOPIC_NAMES

    assert "quarantine" in TOPIC_NAMES  # created with the others, before anything produces
    with pytest.raises(ValueError, match="prefix"):
        KafkaTopics("bad prefix")


@given(st.text())
def test_parse_topic_never_raises(topic: str) -> None:
    parts = parse_topic(topic)
    if parts is not None:
        assert f"city/{parts.district}/{parts.kind}/{parts.device_id}/telemetry" == topic
