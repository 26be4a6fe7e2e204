"""A hole in the acked journal offsets that Faust's commit cannot pass is found (issue 14).

Faust's stream iterator drops, without acking, a record that arrives while flow control is
off or from an older consumer generation; with two or more such offsets at the head of the
acked ones, Faust never commits again (the fault harness, seed 3: 1 of 9,576 records
committed, for good). ``streams.transport`` names such partitions so the worker reads them again.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from streams.transport import _Consumer

JOURNAL = TP("cw.telemetry", 0)
CHANGELOG = TP("cw-worker-detector-devices-changelog", 0)


def _consumer(acked: dict[TP, list[int]], committed: dict[TP, int | None]) -> Any:
    return SimpleNamespace(
        _acked=defaultdict(list, acked),
        _committed_offset=defaultdict(lambda: None, committed),
        _is_changelog_tp=lambda tp: "changelog" in tp.topic,
    )


def holes(acked: dict[TP, list[int]], committed: dict[TP, int | None]) -> dict[TP, Any]:
    return _Consumer.holes(_consumer(acked, committed))  # type: ignore[arg-type]


def test_two_offsets_never_acked_at_the_head_are_a_hole_the_commit_cannot_pass() -> None:
    assert holes({JOURNAL: [3, 4, 5]}, {JOURNAL: 1}) == {JOURNAL: (1, 3)}


def test_acks_that_follow_the_commit_are_no_hole() -> None:
    assert holes({JOURNAL: [1, 2, 3]}, {JOURNAL: 1}) == {}


def test_one_missing_offset_is_passed_by_faust_itself_so_it_is_no_hole() -> None:
    assert holes({JOURNAL: [2, 3]}, {JOURNAL: 1}) == {}


def test_a_partition_never_committed_or_with_nothing_acked_is_left_to_faust() -> None:
    assert holes({JOURNAL: [7, 8]}, {JOURNAL: None}) == {}
    assert holes({JOURNAL: []}, {JOURNAL: 1}) == {}


def test_changelogs_are_not_streams_and_are_never_named() -> None:
    assert holes({CHANGELOG: [9]}, {CHANGELOG: 1}) == {}
