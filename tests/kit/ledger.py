"""Reading what the live pipeline booked, to hold it against what replay books (decision 001).

The pipeline tests load a day into the journal, let real workers judge it, and compare: every
ledger entry by id and content, every case event byte for byte. These are the waits that
decide when the workers are done, and the two-worker run several tests share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from aiokafka.partitioner import DefaultPartitioner

from contract.journal import journal_key
from contract.topics import KafkaTopics
from foundation.settings import Settings
from streams.replay import ReplayResult
from tests.kit.kafka import read_topic_sync
from tests.kit.procs import Proc, wait_until


def case_event_bytes(result: ReplayResult) -> set[bytes]:
    """The replay's case events as the cases topic carries them (sorted keys)."""
    return {orjson.dumps(e.to_dict(), option=orjson.OPT_SORT_KEYS) for e in result.case_events}


def wait_case_events(s: Settings, expected: set[bytes], timeout: float = 90) -> None:
    """Every case event of the replay is on the cases topic: the worker has processed the journal."""
    topic = KafkaTopics(s.kafka.topic_prefix).cases

    def poll() -> bool:
        records = read_topic_sync(s.kafka.bootstrap, topic, want=10**9, timeout_s=1.0)
        got = {orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in records}
        assert got <= expected, f"case events the replay did not make: {sorted(got - expected)[:3]}"
        return got == expected

    wait_until(poll, timeout=timeout, every=0.2, what=f"{len(expected)} case events on {topic}")


def live_ledger(s: Settings, want: int, timeout: float = 90) -> dict[str, dict[str, Any]]:
    """The penalties topic by entry id once it holds ``want`` entries; an id booked twice
    with different content fails at once."""
    topic = KafkaTopics(s.kafka.topic_prefix).penalties
    got: dict[str, dict[str, Any]] = {}

    def poll() -> bool:
        records = read_topic_sync(s.kafka.bootstrap, topic, want=10**9, timeout_s=1.0)
        for rec in records:
            prior = got.setdefault(rec["id"], rec)
            assert prior == rec, f"entry {rec['id']} booked twice with different content"
        return len(got) >= want

    wait_until(poll, timeout=timeout, every=0.2, what=f"{want} ledger entries on {topic}")
    poll()  # one more look: nothing beyond the replay's entries may appear
    return got


def two_on_two_partitions(candidates: tuple[str, ...]) -> tuple[str, str]:
    """Two journal keys (districts) Kafka's default partitioner puts on different partitions of two."""
    part = DefaultPartitioner()
    by: dict[int, str] = {}
    for key in candidates:
        by.setdefault(part(journal_key(key), [0, 1], [0, 1]), key)
    assert len(by) == 2, "all the candidate keys hash to one partition"
    return by[0], by[1]


def book_with_two_workers(
    s: Settings, tmp_path: Path, result: ReplayResult, timeout: float = 150
) -> None:
    """Two simulation-mode workers (own state folders) judge the loaded journal; the live
    ledger must be the replay's, entry for entry, and every case event must appear."""
    expected = result.ledger.to_json_list()
    workers = [
        Proc(
            ["worker", "--simulation", "--session-timeout", "3"],
            s.replace("paths", state_dir=str(tmp_path / f"w{i}")),
            tmp_path / f"worker{i}.log",
        )  # fmt: skip
        for i in (1, 2)
    ]
    try:
        live = live_ledger(s, len(expected), timeout=timeout)
        wait_case_events(s, case_event_bytes(result), timeout=timeout)
    finally:
        for w in workers:
            w.stop()
    assert sorted(live) == sorted(e["id"] for e in expected)
    assert all(live[e["id"]] == e for e in expected)
    logs = [w.text() for w in workers]
    assert all("Traceback" not in text for text in logs), logs
