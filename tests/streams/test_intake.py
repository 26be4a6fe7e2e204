"""The worker's two gates (streams/intake.py): strict decoding, and the live clock's bound
(docs/rules.md, "The clock"); and the worker's Pipeline on them, with stand-ins for Faust."""

from __future__ import annotations

import asyncio
import base64
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from contract.cases import OfficerAction
from contract.journal import Watermark, encode, to_record
from contract.reading import Reading
from streams import recovery
from streams.harness import REG, T0, H, M, reading
from streams.intake import LiveBound, Refused, decode
from streams.rules import default_rules

NOW = T0 + 10 * H
BOUND = LiveBound(skew_ms=2 * M, ts_allowance_ms=5 * M)
YEAR = 365 * 24 * H


@pytest.mark.parametrize(
    "item, ok",
    [
        (Watermark(NOW), True),
        (Watermark(NOW + 2 * M), True),  # at the bound
        (Watermark(NOW + 2 * M + 1), False),
        (Watermark(NOW + YEAR), False),
        (reading("MH-MAIN", NOW - H, NOW - H, open=True), True),  # the past is fine
        (reading("MH-MAIN", NOW, NOW + 2 * M + 1, open=True), False),  # received_at ahead
        (reading("MH-MAIN", NOW + 7 * M, NOW + M, open=True), True),  # ts within the bridge's 5 min
        (reading("MH-MAIN", NOW + 8 * M, NOW, open=True), False),  # ts ahead beyond them
        (OfficerAction("close", "MH-MAIN", NOW + M, "grid-07"), True),
        (OfficerAction("accident", "MH-MAIN", NOW + YEAR, "grid-07"), False),
    ],
)
def test_live_bound(item: Any, ok: bool) -> None:
    refused = BOUND.check(item, NOW)
    if ok:
        assert refused is None
    else:
        assert refused is not None and refused.reason == "ahead_of_clock"
        assert "past the wall clock" in refused.message


def test_decode_never_raises() -> None:
    assert decode(b"{") == Refused("not_json", decode(b"{").message)  # type: ignore[union-attr]
    assert isinstance(decode(b"[]"), Refused) and isinstance(decode(None), Refused)
    r = reading("MH-MAIN", T0, open=True)
    assert decode(encode(to_record(r)[1])) == r


# ------------------------------------------------------------------ the worker's Pipeline, no Faust


class _Topic:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[tuple[bytes | None, dict[str, Any]]] = []

    def get_topic_name(self) -> str:
        return self.name

    async def send(self, key: bytes | None = None, value: bytes = b"", **_: Any) -> Any:
        self.sent.append((key, orjson.loads(value)))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


class _Table(dict[str, Any]):
    """A Faust table as the worker uses it: setting a key sends it to the changelog (kept here,
    in order) and puts it in the store, ``data``, which the worker may trim without a send."""

    def __init__(self) -> None:
        super().__init__()
        self.changelog: list[tuple[str, Any]] = []

    @property
    def data(self) -> dict[str, Any]:
        return self

    def __setitem__(self, key: str, value: Any) -> None:
        self.changelog.append((key, value))
        super().__setitem__(key, value)


class _App:
    conf = SimpleNamespace(store="memory://")

    def Table(self, name: str, default: Any = None, **_kw: Any) -> dict[str, Any]:  # noqa: N802 - Faust's name
        return _Table()


class _Registry:
    reloads = 0

    def current(self) -> Any:
        return REG


def _pipeline(bound: LiveBound | None = None, now: int = NOW) -> Any:
    from streams.worker import Pipeline, WorkerTopics

    names = ("telemetry", "acks", "cases", "penalties", "deadletter", "quarantine", "audit")
    topics = WorkerTopics(*(_Topic(f"cw.{n}") for n in names))
    return Pipeline(_App(), default_rules(), _Registry(), topics, bound=bound, now=lambda: now)  # type: ignore[arg-type]


def _raw(item: Any) -> bytes:
    return encode(to_record(item)[1])


def test_a_non_json_record_is_quarantined_and_the_next_reading_is_processed() -> None:
    p = _pipeline()

    async def go() -> None:
        await p.take(0, 0, b"\x00{not json", b"MH-MAIN")
        await p.take(0, 1, _raw(reading("MH-MAIN", T0, open=True)), b"MH-MAIN")

    asyncio.run(go())
    [(key, q)] = p.quarantine_topic.sent
    assert key == b"MH-MAIN"
    assert (q["reason"], q["topic"], q["partition"], q["offset"]) == (
        "not_json",
        "cw.telemetry",
        0,
        0,
    )
    assert base64.b64decode(q["raw_b64"]) == b"\x00{not json"
    assert [c["state"] for _k, c in p.cases.sent] == ["open"]
    assert p.stats.quarantined == {"not_json": 1} and p.processed == 1


def test_a_detector_that_raises_quarantines_the_record_and_keeps_nothing_half_done() -> None:
    p = _pipeline()

    async def go() -> None:
        await p.take(0, 0, _raw(reading("MH-MAIN", T0, open=True)), b"MH-MAIN")
        det = p.detector(0)
        p.devices["MH-MAIN"] = orjson.dumps({"p": 0, "s": det.export_device("MH-MAIN")})

        def boom(*_a: Any) -> Any:
            det._wm = T0 + 5 * H  # half done: time moved ...
            raise RuntimeError("a bug in a rule")  # ... and then the rule raised

        det.on_watermark = boom  # type: ignore[method-assign]
        await p.take(0, 1, _raw(Watermark(T0 + 5 * H)), None)
        assert 0 not in p.detectors  # dropped: restored from the tables on the next record
        await p.take(0, 2, _raw(Watermark(T0 + 3 * H)), None)

    asyncio.run(go())
    [(_k, q)] = p.quarantine_topic.sent
    assert (q["reason"], q["offset"]) == ("detector_error", 1)
    assert "RuntimeError: a bug in a rule" in q["message"]
    # the restored detector books from the tables' state: hour 1 at T0 + 3 h, nothing beyond
    assert [e["id"] for _k, e in p.penalties.sent] == [f"manhole:MH-MAIN:{T0}:hour:1"]


def test_live_records_ahead_of_the_wall_clock_are_quarantined_and_time_stays() -> None:
    p = _pipeline(BOUND, now=NOW)

    async def go() -> None:
        await p.take(
            0, 0, _raw(reading("MH-MAIN", NOW - 5 * H, NOW - 5 * H, open=True)), b"MH-MAIN"
        )
        await p.take(0, 1, _raw(Watermark(NOW + YEAR)), None)
        await p.take(0, 2, _raw(reading("MH-SEC", NOW + YEAR, NOW + YEAR, open=True)), b"MH-SEC")
        await p.take(0, 3, _raw(OfficerAction("accident", "MH-MAIN", NOW + YEAR, "x")), b"MH-MAIN")

    asyncio.run(go())
    assert [q["reason"] for _k, q in p.quarantine_topic.sent] == ["ahead_of_clock"] * 3
    assert [q["offset"] for _k, q in p.quarantine_topic.sent] == [1, 2, 3]
    assert p.detector(0).watermark == NOW - 5 * H and p.penalties.sent == []
    ats = [q["at"] for _k, q in p.quarantine_topic.sent]
    assert ats == sorted(set(ats))  # strictly increasing: no two points share a timestamp


def test_simulation_mode_has_no_bound() -> None:
    p = _pipeline(None)
    asyncio.run(p.take(0, 0, _raw(Watermark(NOW + YEAR)), None))
    assert p.quarantine_topic.sent == [] and p.detector(0).watermark == NOW + YEAR


def test_journal_records_are_readings_as_the_detector_knows_them() -> None:
    r = reading("MH-MAIN", T0, open=True)
    item = decode(_raw(r))
    assert isinstance(item, Reading) and item == r


def test_a_checkpoint_writes_the_changed_devices_then_its_marker_alternating_their_keys() -> None:
    p = _pipeline()
    writes: list[str] = []

    class Recording(dict[str, Any]):
        def __setitem__(self, key: str, value: Any) -> None:
            writes.append(key)
            super().__setitem__(key, value)

    p.devices = Recording()

    async def go() -> None:
        await p.take(0, 0, _raw(reading("MH-MAIN", T0, open=True)), b"MH-MAIN")
        assert writes == []  # not per event (docs/decisions/017-checkpointed-state.md)
        p.checkpoint(0, 0)
        await p.take(0, 1, _raw(reading("MH-SEC", T0 + M, open=True)), b"MH-SEC")
        await p.take(0, 2, _raw(reading("MH-MAIN", T0 + 2 * M, open=False)), b"MH-MAIN")
        p.checkpoint(0, 2)

    asyncio.run(go())
    assert writes[:2] == ["MH-MAIN#0", "checkpoint:0"]
    assert sorted(writes[2:4]) == ["MH-MAIN#1", "MH-SEC#0"] and writes[4:] == ["checkpoint:0"]
    marker = orjson.loads(p.devices["checkpoint:0"])  # values are JSON bytes, not dicts
    assert (marker["o"], marker["c"]) == (2, 2)
    live = p.detector(0).export_device("MH-MAIN")
    p.forget(0)
    assert p.detector(0).export_device("MH-MAIN") == live  # restored from checkpoint 2


def _as_json(table: Any) -> dict[str, bytes]:
    return {k: orjson.dumps(recovery.record(v)) for k, v in table.items()}


def test_a_checkpoint_held_in_memory_is_a_snapshot_a_later_note_does_not_change() -> None:
    """A detector that raised, or a hole read again, restores from the table in memory
    (``Pipeline.forget``), not from the changelog: its values must share nothing with the live
    state. As dicts they did -- a case's notes list among them (decision 017, "The devices
    table's values")."""
    p = _pipeline()

    async def go() -> None:
        for k in range(40):
            await p.take(0, k, _raw(reading("DS-1", T0 + k * M, pm10=900.0)), b"DS-1")
        p.checkpoint(0, 39)
        held = _as_json(p.devices)
        note = OfficerAction("note", "DS-1", T0 + 41 * M, "grid-07", note="seen it")
        await p.take(0, 40, _raw(note), b"DS-1")
        assert b"case_id" in held["DS-1#0"], "the checkpoint holds the open dust case"
        assert _as_json(p.devices) == held, "the note changed a checkpoint already written"

    asyncio.run(go())


def test_memory_holds_a_devices_newest_slot_and_the_changelog_both() -> None:
    """A restore from the changelog needs both slots (a checkpoint a crash cut short leaves the
    other one whole); one in the process needs only the newest, since every checkpoint in
    memory is whole. Holding both cost 230 MiB at 30,000 devices (bench/RESULTS.md)."""
    p = _pipeline()

    async def go() -> None:
        await p.take(0, 0, _raw(reading("MH-MAIN", T0, open=True)), b"MH-MAIN")
        p.checkpoint(0, 0)
        await p.take(0, 1, _raw(reading("MH-MAIN", T0 + M, open=False)), b"MH-MAIN")
        p.checkpoint(0, 1)

    asyncio.run(go())
    sent = [k for k, _ in p.devices.changelog]
    assert sent == ["MH-MAIN#0", "checkpoint:0", "MH-MAIN#1", "checkpoint:0"]
    assert sorted(p.devices) == ["MH-MAIN#1", "checkpoint:0"], "memory: the newest slot only"
    live = p.detector(0).export_device("MH-MAIN")
    p.forget(0)
    assert p.detector(0).export_device("MH-MAIN") == live, "restored in the process from it"


def test_a_catch_up_hands_its_rerun_readings_over_for_their_telemetry() -> None:
    """The first record a partition is given can lie past its committed offset (a survivor's
    takeover): the records before it are only re-run, so their lines must be written too."""
    p = _pipeline()
    journal = [_raw(reading("MH-MAIN", T0 + i * M, open=i == 1)) for i in range(4)]

    async def reader(partition: int, start: int, stop: int) -> Any:
        for at in range(start, stop):
            yield at, b"MH-MAIN", journal[at], None

    p.journal_reader = reader

    async def go() -> tuple[list[Any], list[Any]]:
        item = await p.take(0, 3, journal[3], b"MH-MAIN")
        return [item], p.take_rerun()

    taken, rerun = asyncio.run(go())
    assert [r.ts for r in rerun] == [T0, T0 + M, T0 + 2 * M]
    assert taken[0].ts == T0 + 3 * M
    assert p.take_rerun() == []  # handed over once
