"""Journal events held unacknowledged until their telemetry is in InfluxDB (issue 15).

The worker reads the journal once: the detect agent judges each record and
hands it here with its telemetry line (``streams.worker``). Faust commits a
journal offset only once its event is acknowledged, so an event is acked only
after its line is written: what a commit passed is in InfluxDB, as when a
second agent wrote the journal's telemetry (decision 001, "the InfluxDB sinks
flush each batch before its offsets can be committed"). Lines are written in
rounds of up to ``ROUND_LINES`` lines or ``ROUND_WITHIN_S`` (what the telemetry
sink this replaces took per batch): one InfluxDB request per round, not per
event. Only the commit waits for a round; the detector and its case events and
entries never do.

An InfluxDB outage holds the acks, not the detection: the detector books on
while up to ``MAX_HELD`` events wait, then the detect agent waits too
(back-pressure, nothing lost: their offsets are not committed and a restart
reads them again). Events of a partition the worker lost at a rebalance are
never acked by it: the partition's new owner reads them again from the
committed offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

log = logging.getLogger(__name__)

ROUND_LINES = 5000
ROUND_WITHIN_S = 0.5
"""A round of lines is written when it has this many, or this long after it started."""
MAX_HELD = 50_000
"""Events held at most while their telemetry waits for InfluxDB; then the detect agent waits."""


class LineWriter(Protocol):
    async def add(self, lines: Iterable[str]) -> None: ...
    async def flush(self) -> None: ...


class HeldAcks:
    """Acks journal events once the telemetry lines handed in with them are written.

    writer: where the lines go (``store.writer.InfluxWriter``: ``add``, ``flush``).
    ready: set once the writer may be used (InfluxDB answered and has the database).
    ack: acknowledges one Faust event: a plain function (the worker's, which does what
        ``Stream.ack`` of the agent's ``noack()`` stream does, without a coroutine per event)
        or a coroutine function.
    """

    def __init__(
        self,
        writer: LineWriter,
        ready: asyncio.Event,
        ack: Callable[[Any], Any] | Callable[[Any], Awaitable[Any]],
        *,
        max_held: int = MAX_HELD,
        round_lines: int = ROUND_LINES,
        round_within_s: float = ROUND_WITHIN_S,
    ) -> None:
        self.writer = writer
        self.ready = ready
        self.ack = ack
        self._ack_awaits = inspect.iscoroutinefunction(ack)
        self.max_held = max_held
        self.round_lines = round_lines
        self.round_within_s = round_within_s
        self._full = asyncio.Event()
        self._events: list[Any] = []
        self._lines: list[str] = []
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._lost: set[Any] = set()
        """Partitions taken away by a rebalance while the events being written were held."""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop writing and acking; what is held stays unacked (read again after a restart)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def held(self) -> int:
        return len(self._events)

    async def hold(self, event: Any, line: str | None) -> None:
        """Hold ``event`` until ``line`` (None: no telemetry) and every line before it is written."""
        if not self.put(event, line):
            await self.room()

    def put(self, event: Any, line: str | None) -> bool:
        """``hold`` without an await: False when ``max_held`` events are held now, and the
        caller must ``await room()`` before it holds another (the detect agent's fast path)."""
        task = self._task
        if task is not None and task.done() and not task.cancelled():
            exc = task.exception()
            raise RuntimeError(
                f"the telemetry writer of the detect agent stopped: {exc!r}"
            ) from exc
        self._events.append(event)
        if line:
            self._lines.append(line)
            if len(self._lines) >= self.round_lines:
                self._full.set()
        self._wake.set()
        if len(self._events) >= self.max_held:
            self._full.set()
            self._room.clear()
            return False
        return True

    async def room(self) -> None:
        """Wait until fewer than ``max_held`` events are held."""
        await self._room.wait()

    def lines(self, lines: Iterable[str]) -> None:
        """Lines with no event of their own (a catch-up's re-run records): written before any
        event held after them is acked."""
        self._lines.extend(lines)
        if len(self._lines) >= self.round_lines:
            self._full.set()
        self._wake.set()

    def revoked(self, tps: Iterable[Any]) -> None:
        """A rebalance took these topic partitions away: their held events are never acked here."""
        lost = frozenset(tps)
        if not lost:
            return
        self._lost |= lost
        self._events = [e for e in self._events if e.message.tp not in lost]

    async def _run(self) -> None:
        await self.ready.wait()
        while True:
            await self._wake.wait()
            if len(self._lines) < self.round_lines and len(self._events) < self.max_held:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.round_within_s)
            self._wake.clear()
            self._full.clear()
            events, lines = self._events, self._lines
            self._events, self._lines, self._lost = [], [], set()
            self._room.set()
            if lines:
                await self.writer.add(lines)
                await self.writer.flush()
            ack, lost = self.ack, self._lost
            if self._ack_awaits:
                for event in events:
                    if not lost or event.message.tp not in lost:
                        await ack(event)
            else:  # one call each, no coroutine: a round acks thousands of events
                for event in events:
                    if not lost or event.message.tp not in lost:
                        ack(event)
