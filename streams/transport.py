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
fetcher in ``start()``). Nothing else of the driver changes.
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as driver

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


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(driver.Transport):
    Consumer = _Consumer


TRANSPORTS[SCHEME] = f"{__name__}:Transport"
