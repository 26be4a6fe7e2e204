"""The live view of `citywatch run` shows a broker that lost the run's topics (issue 14)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from rich.console import Console

from bus.kafka import ensure_topics
from citywatch.run import Snapshot, _broker_view, _render
from foundation.settings import Settings
from tests.kit.kafka import PrivateKafka

pytestmark = pytest.mark.services


def _shown(snap: Snapshot) -> str:
    console = Console(width=200, record=True)
    console.print(_render(snap, 0, "publishing"))
    return console.export_text()


def test_the_live_view_shows_missing_topics_and_then_the_restart_in_red(
    settings: Settings, tmp_path: Path
) -> None:
    kafka = PrivateKafka(settings.replace("kafka", topic_prefix="cw-view-up"), tmp_path)
    s = settings.replace("kafka", bootstrap=kafka.bootstrap)
    k = s.kafka
    snap = Snapshot()
    kafka.up()
    try:
        asyncio.run(ensure_topics(k.bootstrap, k.topic_prefix, k.partitions))
        _broker_view(s, snap)
        calm = _shown(snap)
        kafka.restart()
        _broker_view(s, snap)
        missing = _shown(snap)
        asyncio.run(ensure_topics(k.bootstrap, k.topic_prefix, k.partitions))  # recreated
        _broker_view(s, snap)
        after = _shown(snap)
    finally:
        kafka.down()
    assert "topics missing" not in calm and "broker restarted" not in calm
    assert "topics missing: 9" in missing
    assert "broker restarted" in after, "it stays shown: the journal may not be back"
