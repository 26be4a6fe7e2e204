"""A Kafka or MQTT broker that does not answer is a ``ServiceDown`` from the client that tried
(bus/kafka.py, bus/mqtt.py), not a library's traceback."""

from __future__ import annotations

import asyncio
import gc
import warnings

import pytest

from bus.kafka import KafkaDown, ensure_topics, make_producer, start_client
from bus.mqtt import probe
from foundation.errors import ServiceDown
from foundation.settings import load_settings
from tests.kit.influxd import free_port


def test_creating_topics_on_a_closed_port_says_kafka_does_not_answer() -> None:
    port = free_port()
    with pytest.raises(KafkaDown) as err:
        asyncio.run(ensure_topics(f"127.0.0.1:{port}", "cw-outage"))
    assert isinstance(err.value, ServiceDown)
    assert str(err.value) == (
        f"Kafka at 127.0.0.1:{port} does not answer (no bootstrap server answered); start it "
        "with `citywatch services up` (or check kafka.bootstrap / CITYWATCH_KAFKA_BOOTSTRAP)"
    )


def test_a_producer_that_cannot_start_is_an_outage_and_is_closed() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"

    async def go() -> None:
        producer = make_producer(bootstrap)
        with pytest.raises(KafkaDown, match=f"Kafka at {bootstrap} does not answer"):
            await start_client(producer, bootstrap)
        del producer

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(go())
        gc.collect()
    assert not [w for w in caught if "Unclosed" in str(w.message)], [str(w.message) for w in caught]


def test_probing_a_closed_broker_port_names_the_broker_without_the_urls_password() -> None:
    port = free_port()
    m = load_settings(
        None, env={"CITYWATCH_MQTT_URL": f"mqtt://bridge:pa55word-9x@127.0.0.1:{port}"}
    ).mqtt
    with pytest.raises(ServiceDown) as err:
        probe(m, timeout=2)
    assert str(err.value) == (
        f"the MQTT broker at 127.0.0.1:{port} does not answer (Connection refused); start it "
        "with `citywatch services up` (or check mqtt.url / CITYWATCH_MQTT_URL)"
    )
