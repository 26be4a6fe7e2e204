"""Publishing to the real Mosquitto: every message arrives, the clock warps, load mode keeps rate.

Every simulated device publishes as itself (docs/contracts.md, "Device identity"), on its
own connection; the subscriber reads as a bridge identity, through a shared subscription.
"""

from __future__ import annotations

import itertools
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sim.city import build_city
from sim.publish import run_load, run_publisher
from sim.simulator import Simulation
from tests.kit.mqtt import bridge, provision_registry

pytestmark = pytest.mark.services


@pytest.fixture
def broker(live_services):
    return live_services.mqtt.host, live_services.mqtt.port


class Subscriber:
    """Collects every message on ``city/#`` whose device id carries ``tag`` (as a bridge does)."""

    def __init__(self, host: str, port: int, tag: str):
        self.got: list[tuple[str, bytes]] = []
        self.tag = tag
        subscribed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{tag}", protocol=mqtt.MQTTv5)
        c.username_pw_set(*bridge(f"sub-{tag}"))
        c.on_message = lambda c, u, m: (
            self.got.append((m.topic, m.payload)) if f"-{tag}-" in m.topic else None
        )
        c.on_subscribe = lambda *a: subscribed.set()
        c.on_connect = lambda c, *a: c.subscribe(f"$share/sub-{tag}/city/#", qos=1)
        c.connect(host, port)
        c.loop_start()
        assert subscribed.wait(10), "no SUBACK from Mosquitto"
        self.client = c

    def wait_for(self, n: int, timeout: float = 20) -> None:
        end = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < end:
            time.sleep(0.02)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_500_messages_reach_a_subscriber(broker, unique):
    city = build_city(1, 5, 20, 10, id_tag=unique)
    sim = Simulation(city, seed=1, garbage_share=0.02)
    events = list(itertools.islice(sim.events(None), 500))
    sub = Subscriber(*broker, unique)
    try:
        stats = run_publisher(iter(events), *broker, client_id=f"pub-{unique}", speed=0,
                              credentials=provision_registry(city.registry()))  # fmt: skip
        sub.wait_for(500)
    finally:
        sub.close()
    assert stats.published == stats.acked == 500 and stats.done
    assert sorted(sub.got) == sorted((t, p) for _, t, p in events)  # garbage too, byte for byte


@pytest.mark.serial  # times itself: 2 wall seconds, which a loaded machine stretches
def test_time_warp_publishes_on_the_warped_clock(broker, unique):
    city = build_city(2, 5, 10, 5, id_tag=unique)
    sim = Simulation(city, seed=2, garbage_share=0)
    events = list(sim.events(sim.start_ms + 3_600_000))  # one sim hour...
    progress = []
    credentials = provision_registry(city.registry())
    t = time.monotonic()
    stats = run_publisher(
        iter(events), *broker, client_id=f"pub-{unique}", speed=1800,  # ...in 2 wall seconds
        start_ms=sim.start_ms, on_progress=lambda s: progress.append((s.sim_ms, s.done)),
        progress_every_s=0.25, credentials=credentials,
    )  # fmt: skip
    elapsed = time.monotonic() - t
    assert 1.8 < elapsed < 4.0, elapsed
    assert stats.acked == len(events)
    assert stats.sim_ms == events[-1][0]
    assert len(progress) >= 5 and progress[-1] == (events[-1][0], True)
    sims = [s for s, _ in progress if s is not None]
    assert sims == sorted(sims)


@pytest.mark.serial  # times itself
def test_stop_event_stops_an_endless_run(broker, unique):
    city = build_city(3, 3, 3, 3, id_tag=unique)
    sim = Simulation(city, seed=3)
    stop = threading.Event()
    credentials = provision_registry(city.registry())
    threading.Timer(0.5, stop.set).start()
    t = time.monotonic()
    stats = run_publisher(sim.events(None), *broker, client_id=f"pub-{unique}", speed=60,
                          stop_event=stop, credentials=credentials)  # fmt: skip
    assert time.monotonic() - t < 2.0
    assert stats.done and stats.acked == stats.published


@pytest.mark.serial  # times itself: two processes holding 1,000 msg/s within 10 %
def test_load_mode_keeps_its_rate_across_processes(broker, unique):
    city = build_city(4, 20, 60, 20, id_tag=unique)
    stats = run_load(1000, 2.0, processes=2, host=broker[0], port=broker[1], city=city,
                     client_id_prefix=f"load-{unique}",
                     credentials=provision_registry(city.registry()))  # fmt: skip
    assert stats.processes == 2 and len(stats.per_process) == 2
    assert all(s.published > 800 for s in stats.per_process)
    assert 900 < stats.achieved_rate < 1100, stats


def test_unreachable_broker_is_a_connection_error():
    with pytest.raises(ConnectionError, match="127.0.0.1:1"):
        run_publisher(iter([]), "127.0.0.1", 1, connect_timeout_s=1)
