"""Records written while the archive is restored are taken after it (decision 010, streams/restored.py).

After a broker restart the bridge does not wait for ``services up`` to write the archive back:
what it had queued is resent at once, so the new journal holds new readings ahead of the
restored history and between it. The real worker takes the history first and the rest in the
order it came, and books what the replay of everything in publishing order books; the fault
harness measured the other order as InfluxDB penalties that differed and cases never pushed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from contract.topics import KafkaTopics
from foundation.settings import Settings
from registry.devices import load_registry
from streams import journal
from streams.archive import Archive, restore
from streams.replay import replay
from streams.restored import in_restore_order, read_marks
from streams.rules import load_rules
from tests.kit.kafka import read_topic_sync
from tests.kit.mqtt import now_ms
from tests.kit.procs import Proc, wait_until

H = 3_600_000
M = 60_000


def test_the_restored_records_come_first_below_the_mark_then_the_rest_in_their_order() -> None:
    restored = [("citywatch-restored", b"1")]
    records = [
        (0, None, "new-a"),
        (1, restored, "old-1"),
        (2, restored, "old-2"),
        (3, [], "new-b"),
        (4, restored, "old-3"),
        (5, None, "new-c"),
        (6, restored, "at the mark: in order"),
    ]
    assert in_restore_order(records, 5) == [
        "old-1", "old-2", "old-3", "new-a", "new-b", "new-c", "at the mark: in order"
    ]  # fmt: skip
    assert in_restore_order(records, None) == [i for _o, _h, i in records], "never restored"
    assert in_restore_order(records, 0) == [i for _o, _h, i in records], "nothing restored"


@pytest.mark.services
def test_readings_written_while_the_archive_is_restored_book_the_publishing_orders_ledger(
    settings: Settings, registry_file: Path, unique: str, tmp_path: Path
) -> None:
    s = settings.replace("paths", registry=str(registry_file))
    k = s.kafka
    mh = f"MH-{unique}-1"
    topic = f"city/jinshui/manhole/{mh}/telemetry"
    t0 = (now_ms() // H - 10) * H
    sent = [{"topic": topic, "payload": {"ts": t0 + i * M, "open": i >= 3, "seq": i},
             "received_at": t0 + i * M} for i in range(8)]  # fmt: skip
    ticks = [{"watermark": t0 + 6 * H}]
    registry = load_registry(s.paths.registry)
    expected = replay(sent + ticks, load_rules(s.paths.rules), registry)
    want = {e["id"]: e["amount_yuan"] for e in expected.ledger.to_json_list()}
    assert len(want) == 3
    history, ahead, after = sent[:4], sent[4:6], sent[6:] + ticks

    # the archive of the broker before the restart holds the history
    kept = tmp_path / "archive"
    Archive(kept).write({"journal": [line | {"partition": 0} for line in history]})

    def load(lines: list[dict]) -> None:  # as the bridge writes: no restored header
        asyncio.run(journal.load(lines, registry, k.bootstrap, k.topic_prefix,
                                 final_watermark=False))  # fmt: skip

    load(ahead)  # resent into the new broker before `up` restored the archive
    asyncio.run(restore(s, kept))
    load(after)
    telemetry = KafkaTopics(k.topic_prefix).telemetry
    in_journal = [
        r.get("fields", {}).get("seq") for r in read_topic_sync(k.bootstrap, telemetry, 9)
    ]
    assert in_journal[:2] == [4, 5], "the resent readings stand ahead of the history"
    assert asyncio.run(read_marks(k, [0])) == {0: 6}, "the mark: after the last restored record"

    worker = Proc(["worker", "--simulation", "--session-timeout", "3"], s, tmp_path / "worker.log")
    try:
        wait_until(
            lambda: _ids(s, 3) == want, timeout=90, what="the ledger of the publishing order"
        )
        text = worker.text()
    finally:
        worker.stop()
    assert "took the 2 records written below the restore's mark 6" in text, text[-3000:]


def _ids(s: Settings, want: int) -> dict[str, int]:
    records = read_topic_sync(
        s.kafka.bootstrap, KafkaTopics(s.kafka.topic_prefix).penalties, want, 2
    )
    return {r["id"]: r["amount_yuan"] for r in records}
