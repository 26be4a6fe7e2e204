"""Faust's aiokafka transport with a fetch wait the worker chooses (issue 15).

Faust's aiokafka driver builds the worker's consumer with ``fetch_max_wait_ms=1500``
written into the call (faust/transport/drivers/aiokafka.py,
``AIOKafkaConsumerThread._create_worker_consumer``), and tansu does not answer a
waiting fetch when data arrives: a reading sat up to 1.5 s before the detector
saw it (a standalone produce -> consume probe: p50 4 ms at a 10 ms wait, 378 ms
at 1,500 ms). This transport is the driver with one change, registered under the
URL scheme ``citywatch-kafka://`` (the way Faust finds transports, its
``TRANSPORTS`` mapping): the consumer is built by the driver's own code, then
given ``FETCH_MAX_WAIT_MS`` before it starts (aiokafka hands the value to its
fetcher in ``start()``).

Two more changes make a restarted worker correct (issue 14, docs/decisions/009-state-recovery.md):

- Faust's table recovery reads each changelog up to the end the broker reports;
  tansu reports the first offset of the last batch plus one (decision 004), so
  recovery stopped before the changelog's last batch. The consumer's
  ``highwaters`` here is pushed past the last batch (``streams.recovery.true_ends``).
- After a rebalance Faust resumes the stream partitions and *then* seeks them
  to their committed offsets (``Recovery.on_recovery_completed``), and between
  the assignment and its own pause the fetcher may still deliver them; a record
  taken before that seek left a hole in Faust's acked offsets below the
  committed one, and the worker never committed again (the journal lag stayed
  at ~1,700 records and their readings never reached InfluxDB). Here a newly
  assigned stream partition stays paused until ``perform_seek`` has placed it.
- Faust's stream iterator drops a record that arrives while flow control is off
  or from an older consumer generation, without tracking or acking it; nothing
  fetches it again unless a rebalance seeks. Its offset is then a hole in the
  acked offsets, and Faust's commit (``Consumer._new_offset``) waits for ever
  for a hole of two or more at the head (issue 14's harness, seed 3: a worker
  restored past its group's commit after three kills in a row committed 1 of
  9,576 records and never moved). ``holes`` names such partitions and
  ``reread`` seeks one back to its committed offset: the records come again,
  the ones already taken are taken again as any re-delivery is (decision 001),
  and the commit moves (``streams.worker``'s ``reread_holes`` timer).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import aiokafka
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as driver
from faust.types import TP

from streams.recovery import true_ends

log = logging.getLogger(__name__)

__all__ = ["FETCH_MAX_WAIT_MS", "SCHEME", "Transport"]

FETCH_MAX_WAIT_MS = 50
"""How long the broker may hold the worker's fetch for more data: the floor of a case's latency
at low load (the alerts service's consumer uses the same, alerts/service.py)."""
SCHEME = "citywatch-kafka"


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by start() for its Fetcher
        return consumer

    def side_consumer(self) -> aiokafka.AIOKafkaConsumer:
        """A consumer outside the group, connected as the worker's, for reads of its own."""
        conf = self.app.conf
        return aiokafka.AIOKafkaConsumer(
            bootstrap_servers=driver.server_list(self.transport.url, self.transport.default_port),
            group_id=None,
            enable_auto_commit=False,
            client_id=f"{conf.broker_client_id}-recovery",
            **driver.credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context),
        )

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        reported = await super()._highwaters(partitions)
        if self.consumer.in_transaction:
            return reported
        return await true_ends(self.side_consumer, reported)


class _Consumer(driver.Consumer):
    """Faust's consumer, with new stream partitions paused until they are sought."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._unsought: set[TP] = set()  # assigned, not yet at their committed offset
        self._held: set[TP] = set()  # of those, the ones Faust asked to resume
        super().__init__(*args, **kwargs)

    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        self._unsought = {tp for tp in assigned if not self._is_changelog_tp(tp)}
        self._held = set()
        self._buffered_partitions.difference_update(self._unsought)
        await super().on_partitions_assigned(assigned, generation_id)

    def _set_active_tps(self, tps: Iterable[TP]) -> set[TP]:
        return super()._set_active_tps({tp for tp in tps if tp not in self._unsought})

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        tps = set(tps)
        self._held |= tps & self._unsought
        super().resume_partitions(tps - self._unsought)

    def on_buffer_drop(self, tp: TP) -> None:
        if tp in self._unsought:  # a full stream buffer drained: still not sought
            self._buffered_partitions.discard(tp)
            return
        super().on_buffer_drop(tp)

    async def perform_seek(self) -> None:
        """Seek to the committed offsets; then let go of what Faust asked to resume.

        Faust also seeks from ``getmany`` while the flow is stopped in a rebalance,
        before recovery asked for anything: that seek releases nothing.
        """
        await super().perform_seek()
        if not self._held:
            return
        held, self._unsought, self._held = self._held, set(), set()
        log.info("stream partitions at their committed offsets, resumed: %s", sorted(held))
        super().resume_partitions(held)

    def holes(self) -> dict[TP, tuple[int, int]]:
        """Stream partitions whose commit cannot move: {tp: (committed, lowest acked offset)}.

        Faust commits the first run of consecutive acked offsets unless the lowest is more
        than one past the committed offset; then it commits nothing until the hole is acked.
        """
        out: dict[TP, tuple[int, int]] = {}
        for tp, acked in list(self._acked.items()):
            committed = self._committed_offset.get(tp)
            if not acked or committed is None or self._is_changelog_tp(tp):
                continue
            low = min(acked)
            if low - committed > 1:
                out[tp] = (committed, low)
        return out

    async def reread(self, tp: TP, offset: int) -> None:
        """Fetch ``tp`` again from ``offset`` (its committed offset): what fell in a hole."""
        await self.seek(tp, offset)


class Transport(driver.Transport):
    Consumer = _Consumer


TRANSPORTS[SCHEME] = f"{__name__}:Transport"
