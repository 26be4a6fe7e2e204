"""Journal events are acked only once their telemetry is written (streams/held.py, issue 15)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from streams.held import HeldAcks


@dataclass(frozen=True)
class _Message:
    tp: tuple[str, int]


@dataclass(frozen=True)
class _Event:
    offset: int
    message: _Message


def _event(offset: int, partition: int = 0) -> _Event:
    return _Event(offset, _Message(("cw.telemetry", partition)))


class _Writer:
    """Lines are 'written' when ``open`` is set; ``written`` is what got through."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.added: list[str] = []
        self.written: list[str] = []

    async def add(self, lines: Iterable[str]) -> None:
        self.added.extend(lines)

    async def flush(self) -> None:
        await self.open.wait()
        self.written = list(self.added)


def _held(writer: _Writer, acked: list[int], max_held: int = 100) -> HeldAcks:
    async def ack(event: Any) -> None:
        acked.append(event.offset)

    ready = asyncio.Event()
    ready.set()
    return HeldAcks(writer, ready, ack, max_held=max_held, round_within_s=0.0)


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def test_an_event_is_acked_only_after_its_line_is_written_and_detection_goes_on_meanwhile() -> None:
    async def go() -> tuple[list[int], list[int], list[int]]:
        writer, acked = _Writer(), []
        held = _held(writer, acked)
        held.start()
        for o in range(5):  # even offsets are readings with a line, odd ones watermarks
            await held.hold(_event(o), f"line{o}" if o % 2 == 0 else None)
        await _settle()
        while_down = list(acked)
        writer.open.set()
        await _settle()
        first = list(acked)
        await held.hold(_event(5), None)
        await _settle()
        await held.stop()
        return while_down, first, acked

    while_down, first, acked = asyncio.run(go())
    assert while_down == []  # InfluxDB away: held, nothing acked, the holder never waited
    assert first == [0, 1, 2, 3, 4] and acked == [0, 1, 2, 3, 4, 5]  # in order, once each


def test_past_max_held_the_detect_agent_waits_for_influxdb() -> None:
    async def go() -> tuple[bool, list[int]]:
        writer, acked = _Writer(), []
        held = _held(writer, acked, max_held=3)
        held.start()
        await held.hold(_event(0), "line0")
        await _settle()  # the first round took it and waits on the writer
        for o in (1, 2):
            await held.hold(_event(o), None)
        third = asyncio.ensure_future(held.hold(_event(3), None))
        await _settle()
        waited = not third.done()
        writer.open.set()
        await _settle()
        await third
        await _settle()
        await held.stop()
        return waited, acked

    waited, acked = asyncio.run(go())
    assert waited and acked == [0, 1, 2, 3]


def test_events_of_a_partition_lost_at_a_rebalance_are_never_acked_here() -> None:
    async def go() -> list[int]:
        writer, acked = _Writer(), []
        held = _held(writer, acked)
        held.start()
        await held.hold(_event(0, partition=1), "line0")
        await _settle()  # being written
        await held.hold(_event(1, partition=1), None)  # waiting for the next round
        await held.hold(_event(3, partition=0), None)
        held.revoked([("cw.telemetry", 1)])
        writer.open.set()
        await _settle()
        await held.hold(_event(5, partition=1), None)  # the partition came back
        await _settle()
        await held.stop()
        return acked

    assert asyncio.run(go()) == [3, 5]


def test_a_round_waits_for_more_lines_but_not_past_its_bound() -> None:
    async def go() -> tuple[int, int]:
        writer, acked = _Writer(), []
        writer.open.set()
        ready = asyncio.Event()
        ready.set()

        async def ack(event: Any) -> None:
            acked.append(event.offset)

        held = HeldAcks(writer, ready, ack, round_lines=3, round_within_s=0.05)
        held.start()
        await held.hold(_event(0), "line0")
        await _settle()
        early = len(acked)  # waits for two more lines or 50 ms
        await asyncio.sleep(0.2)
        late = len(acked)
        await held.stop()
        return early, late

    assert asyncio.run(go()) == (0, 1)


def test_lines_without_an_event_are_written_before_a_later_event_is_acked() -> None:
    async def go() -> tuple[list[int], list[str]]:
        writer, acked = _Writer(), []
        held = _held(writer, acked)
        held.start()
        held.lines(["rerun0", "rerun1"])  # a catch-up's re-run records
        await held.hold(_event(2), "line2")
        await _settle()
        while_down = list(acked)
        writer.open.set()
        await _settle()
        await held.stop()
        assert while_down == []
        return acked, writer.written

    acked, written = asyncio.run(go())
    assert acked == [2]
    assert written == ["rerun0", "rerun1", "line2"]


def test_a_plain_ack_function_is_called_once_per_event_in_order_without_a_coroutine() -> None:
    """The worker acks with a plain function (``Stream.ack``'s work, no coroutine per event)."""

    async def go() -> list[int]:
        writer, acked = _Writer(), []
        ready = asyncio.Event()
        ready.set()
        held = HeldAcks(writer, ready, lambda e: acked.append(e.offset), round_within_s=0.0)
        held.start()
        for o in range(4):
            assert held.put(_event(o), f"line{o}")
        writer.open.set()
        await _settle()
        await held.stop()
        return acked

    assert asyncio.run(go()) == [0, 1, 2, 3]


def test_put_says_when_the_holder_must_wait_for_room() -> None:
    async def go() -> tuple[list[bool], bool, list[int]]:
        writer, acked = _Writer(), []
        held = _held(writer, acked, max_held=2)
        said = [held.put(_event(0), None), held.put(_event(1), None)]
        room = asyncio.ensure_future(held.room())
        await _settle()
        waiting = not room.done()
        held.start()  # InfluxDB answers: the round is taken, there is room again
        writer.open.set()
        await room
        await _settle()
        await held.stop()
        return said, waiting, acked

    said, waiting, acked = asyncio.run(go())
    assert said == [True, False] and waiting and acked == [0, 1]
