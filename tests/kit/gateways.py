"""What the gateway tests share: a listener on the real broker, a gateway run around a test body.

Both protocol gateways (``ingest.gateways.hj212``, ``ingest.gateways.jt808``) are tested the
same way: the gateway runs on a free port inside the test's event loop, devices speak to it over
TCP, and what reached Mosquitto is what the test's bridge identity receives on ``city/#``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson

from foundation.settings import Settings
from ingest.gateways.server import GatewayServer
from tests.kit.mqtt import connect, drop_session

G = TypeVar("G", bound=GatewayServer)


class Listener:
    """Everything the broker delivers under city/ (as the test's bridge identity)."""

    def __init__(self, s: Settings):
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.client, rc = connect(s.mqtt.host, s.mqtt.port, s.mqtt.username, s.mqtt.password)
        assert not rc.is_failure  # type: ignore[attr-defined]
        done = threading.Event()
        self.client.on_message = self._on
        self.client.on_subscribe = lambda *a, **k: done.set()
        self.client.subscribe(f"$share/{s.mqtt.shared_group}/city/#", qos=1)
        assert done.wait(10)
        self.session = (s.mqtt.host, s.mqtt.port, s.mqtt.username)

    def _on(self, client: Any, userdata: Any, msg: Any) -> None:
        with self.lock:
            self.messages.append((msg.topic, orjson.loads(msg.payload)))

    def on(self, topic_part: str) -> list[dict[str, Any]]:
        with self.lock:
            return [p for t, p in self.messages if topic_part in t]

    def letters(self, gateway: str) -> list[dict[str, Any]]:
        """The gateway's dead-letter reports (``city/gateway/<id>/deadletter``)."""
        return self.on(f"city/gateway/{gateway}/deadletter")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
        drop_session(*self.session)


async def wait_until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def with_gateway(make: Callable[[], G], body: Callable[[G], Awaitable[None]]) -> None:
    """Run the gateway ``make()`` builds (on a free port) around ``body``, then stop it."""

    async def main() -> None:
        gw = make()
        stop = asyncio.Event()
        task = asyncio.create_task(gw.run(stop, stats_every_s=3600))
        await asyncio.wait_for(gw.ready.wait(), 20)
        try:
            await body(gw)
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)

    asyncio.run(main())
