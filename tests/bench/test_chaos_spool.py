"""The fault harness keeps what it published on disk (bench/chaos.py ``Spool``), not in a list
that cost ~4 KB of RSS an event: what it reads back is what it was given, in order."""

from __future__ import annotations

from pathlib import Path

from bench.chaos import Spool


def test_the_spool_gives_back_every_event_in_order_and_truncates_to_the_first_n(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "published.bin")
    events = [
        (1_000 + i, f"city/jinshui/dust/DS-{i}/telemetry", bytes([i]) * (i % 5)) for i in range(50)
    ]
    for ev in events:
        spool.append(ev)
    assert len(spool) == 50 and list(spool) == events and spool.last() == events[-1]
    spool.truncate(49)  # the publisher took one event past its deadline and never sent it
    assert len(spool) == 49 and list(spool) == events[:49] and spool.last() == events[48]
    spool.truncate(10)
    assert list(spool) == events[:10] and spool.last() == events[9]
    spool.close()
    assert not (tmp_path / "published.bin").exists()
