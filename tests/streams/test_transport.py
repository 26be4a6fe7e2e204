"""The worker's Faust transport: the driver's consumer, with the short fetch wait (streams/transport.py)."""

from __future__ import annotations

import asyncio

import faust

from streams import transport


def _consumer(app: faust.App):  # noqa: ANN202 - aiokafka's consumer, built as the worker builds it
    async def build():  # noqa: ANN202
        return app.consumer._thread._create_worker_consumer(app.transport)

    return asyncio.run(build())


def test_the_worker_consumer_waits_at_most_fetch_max_wait_ms_for_data() -> None:
    app = faust.App(
        "cw-transport-test", broker=f"{transport.SCHEME}://127.0.0.1:1", web_enabled=False
    )
    assert isinstance(app.transport, transport.Transport)
    consumer = _consumer(app)  # the driver's consumer thread builds it; nothing is started
    assert consumer._fetch_max_wait_ms == transport.FETCH_MAX_WAIT_MS == 50
    assert consumer._group_id == "cw-transport-test" and not consumer._enable_auto_commit


def test_faust_alone_would_wait_one_and_a_half_seconds() -> None:
    app = faust.App("cw-transport-plain", broker="kafka://127.0.0.1:1", web_enabled=False)
    consumer = _consumer(app)
    assert consumer._fetch_max_wait_ms == 1500  # what the transport exists to change
