"""A broker that lost its topics is detected and reported, never idled on (issue 14).

The broker is a real tansu restarted by citywatch's own ``services down``/``up``
(``tests.kit.kafka.PrivateKafka``): it comes back empty, with a new cluster id.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from bus.kafka import ensure_topics, topic_names
from bus.watch import BrokerWatch, TopicsLost, look
from citywatch import services
from foundation.settings import Settings
from tests.kit.kafka import PrivateKafka

pytestmark = pytest.mark.services


async def _cleanup_policy(bootstrap: str, topic: str) -> str | None:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (resp,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    entries = resp.resources[0][4]
    return next((e[1] for e in entries if e[0] == "cleanup.policy"), None)


def _watch(kafka: PrivateKafka, s: Settings, lost: list[TopicsLost]) -> BrokerWatch:
    return BrokerWatch(s.kafka, "test", on_loss=lost.append, every_s=0.2)


def test_a_restarted_broker_is_told_once_and_its_topics_come_back_with_their_configs(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # its `services up` prepares another prefix: restarted, it lacks this test's topics, as a
    # broker restarted by anything else would
    other = settings.kafka.topic_prefix + "-up"
    kafka = PrivateKafka(settings.replace("kafka", topic_prefix=other), tmp_path)
    s = settings.replace("kafka", bootstrap=kafka.bootstrap)
    k = s.kafka
    lost: list[TopicsLost] = []
    watch = _watch(kafka, s, lost)
    kafka.up()
    try:
        asyncio.run(ensure_topics(k.bootstrap, k.topic_prefix, k.partitions))
        assert asyncio.run(watch.check()) is None, "a first look only learns the cluster id"
        before = watch.cluster_id
        kafka.restart()
        status = {st.name: st for st in services.status(kafka.services.replace(
            "kafka", topic_prefix=k.topic_prefix))}["kafka"]  # fmt: skip
        assert status.healthy and status.degraded
        assert status.line().count("[topics missing: 9 of prefix") == 1, status.line()
        with caplog.at_level(logging.INFO, logger="bus.watch"):
            loss = asyncio.run(watch.check())
            assert asyncio.run(watch.check()) is None, "told once, not at every look"
        seen = asyncio.run(look(k.bootstrap, k.topic_prefix))
        policy = asyncio.run(_cleanup_policy(k.bootstrap, f"{k.topic_prefix}.silences"))
    finally:
        kafka.down()
    assert loss is not None and lost == [loss]
    assert set(loss.missing) == set(topic_names(k.topic_prefix))
    assert loss.restarted and loss.was == before and loss.now != before
    assert before is not None and before.startswith("citywatch-"), "a fresh cluster id per start"
    assert seen.missing == (), "recreated"
    assert policy == "compact", "with its configs (TOPIC_CONFIGS)"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "lost citywatch's topics" in errors[0].getMessage()
    assert "citywatch archive restore" in errors[0].getMessage()


def test_services_up_prepares_the_topics_of_its_prefix(settings: Settings, tmp_path: Path) -> None:
    kafka = PrivateKafka(settings, tmp_path)
    kafka.up()
    try:
        seen = asyncio.run(look(kafka.bootstrap, settings.kafka.topic_prefix))
        (status,) = [st for st in services.status(kafka.services) if st.name == "kafka"]
    finally:
        kafka.down()
    assert seen.missing == () and not status.degraded and status.detail == ""


def test_a_restart_is_seen_by_its_cluster_id_when_another_component_recreated_the_topics_first(
    settings: Settings, tmp_path: Path
) -> None:
    kafka = PrivateKafka(settings, tmp_path)
    k = settings.replace("kafka", bootstrap=kafka.bootstrap).kafka
    lost: list[TopicsLost] = []
    watch = BrokerWatch(k, "test", on_loss=lost.append)
    kafka.up()
    try:
        asyncio.run(ensure_topics(k.bootstrap, k.topic_prefix, k.partitions))
        asyncio.run(watch.check())
        kafka.restart()
        asyncio.run(ensure_topics(k.bootstrap, k.topic_prefix, k.partitions))  # the other one
        loss = asyncio.run(watch.check())
    finally:
        kafka.down()
    assert loss is not None and loss.missing == () and loss.restarted


def test_a_broker_that_does_not_answer_is_an_outage_not_a_loss(
    settings: Settings, tmp_path: Path
) -> None:
    kafka = PrivateKafka(settings, tmp_path)  # never started
    k = settings.replace("kafka", bootstrap=kafka.bootstrap).kafka
    lost: list[TopicsLost] = []
    assert asyncio.run(BrokerWatch(k, "test", on_loss=lost.append).check()) is None
    assert lost == []
