"""The HJ 212 gateway on the real Mosquitto (and, for the dead letters, the real bridge and Kafka)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from contract.topics import KafkaTopics
from foundation.settings import Settings
from ingest.bridge import Bridge
from ingest.gateways.hj212 import Hj212Gateway
from ingest.hj212 import decode, encode
from registry.devices import load_registry
from registry.hj212_passwords import PasswordStore
from sim.hj212 import frame_for
from tests.kit import mqtt as kit_mqtt
from tests.kit.gateways import Listener, with_gateway
from tests.kit.gateways import wait_until as _wait
from tests.kit.kafka import read_topic
from tests.kit.mqtt import drop_session, now_ms

pytestmark = pytest.mark.services

HEADER = "device_id,kind,district,grid,unit,address,lat,lon,gateway,mn"


class City:
    """A registry of HJ 212 monitors behind one gateway, provisioned, with their PWs."""

    def __init__(self, settings: Settings, tmp: Path, unique: str, n: int):
        self.gateway = f"gw-{unique}"
        self.ids = [f"DS-{unique}-{i}" for i in range(n)]
        rows = [HEADER] + [
            f"{d},dust,jinshui,JS-G07,河南五建,工地{i},34.8,113.6,{self.gateway},M{unique}{i:05d}"
            for i, d in enumerate(self.ids)
        ]
        registry = tmp / "registry.csv"
        registry.write_text("\n".join(rows) + "\n", encoding="utf-8")
        kit_mqtt.provision_registry(registry)
        issued = PasswordStore(tmp / "hj212.json").issue(load_registry(registry))
        self.pw = {i.device_id: (i.mn, i.pw) for i in issued}
        self.settings = (
            settings.replace("paths", registry=str(registry))
            .replace("mqtt", username=self.gateway, password=kit_mqtt.secret_of(self.gateway))
            .replace("hj212", passwords=str(tmp / "hj212.json"))
        )
        self.bridge_settings = settings.replace("paths", registry=str(registry))

    def frame(self, device: str, **payload: Any) -> bytes:
        mn, pw = self.pw[device]
        return frame_for({"ts": now_ms() // 1000 * 1000, **payload}, mn, pw)


def _with_gateway(city: City, body: Callable[[Hj212Gateway], Awaitable[None]], **kw: Any) -> None:
    with_gateway(lambda: Hj212Gateway(city.settings, listen="127.0.0.1:0", **kw), body)


async def _exchange(port: int, *frames: bytes, replies: int = 1) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for f in frames:
            writer.write(f)
        await writer.drain()
        return [await asyncio.wait_for(reader.readuntil(b"\r\n"), 15) for _ in range(replies)]
    finally:
        writer.close()


@pytest.fixture
def city(settings: Settings, tmp_path: Path, unique: str) -> City:
    return City(settings, tmp_path, unique, 3)


@pytest.fixture
def listener(settings: Settings):
    lst = Listener(settings)
    yield lst
    lst.close()


def test_a_monitor_is_published_on_its_own_topic_and_answered_9014_after_the_broker_has_it(
    city: City, listener: Listener
) -> None:
    dev = city.ids[0]

    async def body(gw: Hj212Gateway) -> None:
        assert gw.port is not None
        frame = city.frame(dev, pm10=183.0, pm25=60.0, noise_db=66.0)
        (reply,) = await _exchange(gw.port, frame)
        answered = decode(reply)
        assert answered.cn == "9014" and answered.qn == decode(frame).qn
        await _wait(lambda: len(listener.on(f"/dust/{dev}/telemetry")) == 1)

    _with_gateway(city, body)
    (payload,) = listener.on(f"city/jinshui/dust/{dev}/telemetry")
    assert payload["pm10"] == pytest.approx(183.0)  # mg/m³ on the wire, µg/m³ in the contract
    assert payload["noise_db"] == pytest.approx(66.0)
    assert payload["mn"] == city.pw[dev][0] and payload["hj212_cn"] == "2011"


def _letters(listener: Listener, city: City) -> list[dict[str, Any]]:
    return listener.letters(city.gateway)


def test_bad_frames_are_dead_lettered_with_their_reason_and_bytes_and_refused_as_the_standard_says(
    city: City, listener: Listener
) -> None:
    dev = city.ids[0]
    mn, pw = city.pw[dev]
    good = city.frame(dev, pm10=80.0)
    cases = {
        "hj212_bad_pw": (good.replace(f"PW={pw}".encode(), b"PW=zzzzzz"), "3"),
        "hj212_crc": (good[:-6] + (b"0000" if good[-6:-2] != b"0000" else b"1111") + b"\r\n", "9"),
        "hj212_unknown_mn": (frame_for({"ts": now_ms(), "pm10": 1.0}, "NOBODY", pw), "4"),
        "hj212_unknown_cn": (encode(f"QN=20260101000000000;ST=22;CN=3020;PW={pw};MN={mn};Flag=5;CP=&&&&"), "8"),
    }  # fmt: skip
    # each with a valid length: recompute it after the PW replacement
    seg = cases["hj212_bad_pw"][0][6:-6].decode()
    cases["hj212_bad_pw"] = (encode(seg), "3")

    async def body(gw: Hj212Gateway) -> None:
        assert gw.port is not None
        for code, (raw, rtn) in cases.items():
            (reply,) = await _exchange(gw.port, raw)
            refused = decode(reply)
            assert (refused.cn, refused.cp) == ("9011", f"QnRtn={rtn}"), code
        (reply,) = await _exchange(gw.port, b"garbage without a frame\r\n", good)
        assert decode(reply).cn == "9014"  # garbage gets no answer; the next good frame does
        await _wait(lambda: len(_letters(listener, city)) == len(cases) + 1)

    _with_gateway(city, body)
    letters = {d["code"]: d for d in _letters(listener, city)}
    assert set(letters) == {*cases, "hj212_framing"}
    for code, (raw, _) in cases.items():
        assert base64.b64decode(letters[code]["raw_b64"]) == raw, code
        assert letters[code]["message"] and letters[code]["peer"].startswith("127.0.0.1:")
    assert (
        letters["hj212_bad_pw"]["device"] == dev and letters["hj212_unknown_mn"]["device"] is None
    )
    assert len(listener.on("/telemetry")) == 1


def test_a_value_flagged_as_maintenance_is_answered_and_kept_but_not_a_reading(
    city: City, listener: Listener
) -> None:
    dev = city.ids[1]
    mn, pw = city.pw[dev]
    raw = frame_for({"ts": now_ms(), "pm10": 950.0}, mn, pw, data_flags={"pm10": "M"})

    async def body(gw: Hj212Gateway) -> None:
        assert gw.port is not None
        (reply,) = await _exchange(gw.port, raw)
        assert decode(reply).cn == "9014"
        await _wait(lambda: len(_letters(listener, city)) == 1)

    _with_gateway(city, body)
    (letter,) = _letters(listener, city)
    assert letter["code"] == "hj212_unjudged" and letter["device"] == dev
    assert listener.on("/telemetry") == []


def test_a_device_sending_garbage_is_disconnected_after_the_bound_and_the_others_go_on(
    city: City, listener: Listener
) -> None:
    good_dev = city.ids[2]

    async def body(gw: Hj212Gateway) -> None:
        assert gw.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        greader, gwriter = await asyncio.open_connection("127.0.0.1", gw.port)
        for i in range(gw.max_bad):
            writer.write(b"\x00\x01garbage%d\r\n" % i)
            gwriter.write(city.frame(good_dev, pm10=50.0 + i))
            await writer.drain()
            await gwriter.drain()
            await asyncio.wait_for(greader.readuntil(b"\r\n"), 15)  # the good one is answered
        assert await asyncio.wait_for(reader.read(), 15) == b""  # the gateway closed it
        gwriter.write(city.frame(good_dev, pm10=99.0))
        await asyncio.wait_for(greader.readuntil(b"\r\n"), 15)
        gwriter.close()
        writer.close()
        await _wait(lambda: gw.stats.closed_for_errors == 1)
        await _wait(lambda: len(_letters(listener, city)) == gw.max_bad + 1)

    _with_gateway(city, body)
    codes = [d["code"] for d in _letters(listener, city)]
    assert codes.count("hj212_framing") == 10 and codes.count("hj212_too_many_errors") == 1


def test_a_line_longer_than_any_frame_is_a_dead_letter_and_does_not_grow_the_buffer(
    city: City, listener: Listener
) -> None:
    async def body(gw: Hj212Gateway) -> None:
        assert gw.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"#" * 5_000 + b"\r\n")
        writer.write(city.frame(city.ids[0], pm10=70.0))
        await writer.drain()
        line = await asyncio.wait_for(reader.readuntil(b"\r\n"), 15)
        assert decode(line).cn == "9014"
        writer.close()
        await _wait(lambda: len(_letters(listener, city)) == 1)

    _with_gateway(city, body)
    (letter,) = _letters(listener, city)
    assert letter["code"] == "hj212_length" and "a line of 5002 bytes" in letter["message"]


def test_a_stream_without_line_ends_is_closed_after_the_bound(
    city: City, listener: Listener
) -> None:
    async def body(gw: Hj212Gateway) -> None:
        assert gw.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        with contextlib.suppress(ConnectionError):
            for _ in range(100):
                writer.write(b"x" * 1000)
                await writer.drain()
        assert await asyncio.wait_for(reader.read(), 15) == b""
        writer.close()
        await _wait(lambda: len(_letters(listener, city)) == 1)

    _with_gateway(city, body)
    (letter,) = _letters(listener, city)
    assert letter["code"] == "hj212_length" and "closed" in letter["message"]


def test_a_gateways_dead_letter_reaches_the_journals_dead_letter_topic_through_the_bridge(
    city: City, unique: str
) -> None:
    s = city.bridge_settings.replace("mqtt", session_expiry_s=60)
    dev = city.ids[0]
    mn, pw = city.pw[dev]
    bad = encode(f"QN=20260101000000000;ST=22;CN=2011;PW=wrong1;MN={mn};Flag=5;CP=&&&&")
    topics = KafkaTopics(s.kafka.topic_prefix)

    async def main() -> None:
        bridge = Bridge(s, client_suffix="1")
        stop_b = asyncio.Event()
        btask = asyncio.create_task(bridge.run(stop_b, stats_every_s=3600))
        await asyncio.wait_for(bridge.subscribed.wait(), 30)
        gw = Hj212Gateway(city.settings, listen="127.0.0.1:0")
        stop_g = asyncio.Event()
        gtask = asyncio.create_task(gw.run(stop_g, stats_every_s=3600))
        await asyncio.wait_for(gw.ready.wait(), 20)
        try:
            assert gw.port is not None
            await _exchange(gw.port, bad)
            await _exchange(gw.port, city.frame(dev, pm10=120.0))
            dead = await read_topic(s.kafka.bootstrap, topics.deadletter, 1)
            readings = await read_topic(s.kafka.bootstrap, topics.telemetry, 1)
        finally:
            stop_g.set()
            await asyncio.wait_for(gtask, 20)
            stop_b.set()
            await asyncio.wait_for(btask, 20)
        (letter,) = dead
        assert letter["code"] == "hj212_bad_pw" and letter["device"] == dev
        assert letter["topic"] == f"city/gateway/{city.gateway}/deadletter"
        assert base64.b64decode(letter["raw_b64"]) == bad
        (reading,) = [r for r in readings if r.get("type") == "reading"]
        assert reading["device"] == dev and reading["fields"]["pm10"] == pytest.approx(120.0)

    try:
        asyncio.run(main())
    finally:
        drop_session(s.mqtt.host, s.mqtt.port, f"{s.mqtt.client_id}-1")


def test_two_thousand_monitors_connected_at_once_lose_nothing(
    settings: Settings, tmp_path: Path, unique: str, listener: Listener
) -> None:
    n = 2000
    big = City(settings, tmp_path, unique, n)

    async def body(gw: Hj212Gateway) -> None:
        assert gw.port is not None
        conns = await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", gw.port) for _ in range(n))
        )
        await _wait(lambda: gw.stats.open == n, 30)  # all open at the same time
        for (_, writer), dev in zip(conns, big.ids, strict=True):
            writer.write(big.frame(dev, pm10=100.0))
        replies = await asyncio.gather(
            *(asyncio.wait_for(r.readuntil(b"\r\n"), 60) for r, _ in conns)
        )
        assert all(decode(r).cn == "9014" for r in replies)
        for _, writer in conns:
            writer.close()
        await _wait(lambda: len(listener.on("/telemetry")) >= n, 30)

    _with_gateway(big, body)
    got = {p["mn"] for p in listener.on("/telemetry")}
    assert got == {mn for mn, _ in big.pw.values()}
    assert len(listener.on("/telemetry")) == n


def test_a_broker_that_does_not_acknowledge_stops_the_reading_and_nothing_is_lost(
    city: City, listener: Listener
) -> None:
    dev = city.ids[0]
    base = now_ms() // 1000 * 1000 - 100_000
    mn, pw = city.pw[dev]
    frames = [frame_for({"ts": base + k * 1000, "pm10": 60.0 + k}, mn, pw) for k in range(50)]
    city.settings = city.settings.replace("hj212", max_pending=5)

    async def body(gw: Hj212Gateway) -> None:
        assert gw.port is not None and gw._publisher is not None
        paho = gw._publisher.client
        paho.loop_stop()  # PUBACKs are no longer read: the broker looks stuck to the gateway
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"".join(frames))
        await writer.drain()
        await _wait(lambda: gw._pending == 5)
        await asyncio.sleep(1.0)
        assert gw._pending == 5 and gw.stats.frames <= 6, "reading must pause at the bound"
        assert gw.stats.replies == 0  # nothing is answered before the broker has it
        paho.loop_start()
        replies = [await asyncio.wait_for(reader.readuntil(b"\r\n"), 30) for _ in frames]
        assert all(decode(r).cn == "9014" for r in replies)
        writer.close()
        await _wait(lambda: len(listener.on("/telemetry")) == len(frames))

    _with_gateway(city, body)
    got = sorted(p["ts"] for p in listener.on(f"/dust/{dev}/telemetry"))
    assert got == [base + k * 1000 for k in range(50)]


def test_a_frame_whose_flag_asks_no_reply_is_published_and_not_answered(
    city: City, listener: Listener
) -> None:
    dev = city.ids[1]
    mn, pw = city.pw[dev]
    t = now_ms() // 1000 * 1000
    quiet = frame_for({"ts": t - 1000, "pm10": 40.0}, mn, pw, flag=4)
    asks = frame_for({"ts": t, "pm10": 41.0}, mn, pw, flag=5)

    async def body(gw: Hj212Gateway) -> None:
        assert gw.port is not None
        (reply,) = await _exchange(gw.port, quiet, asks)
        assert decode(reply).qn == decode(asks).qn  # the only reply is the second frame's
        await _wait(lambda: len(listener.on(f"/dust/{dev}/telemetry")) == 2)

    _with_gateway(city, body)


def test_an_address_guessing_passwords_is_locked_out_and_another_address_goes_on(
    city: City, listener: Listener
) -> None:
    from ingest.gateways.throttle import CredentialThrottle

    dev = city.ids[0]
    mn, pw = city.pw[dev]
    good = city.frame(dev, pm10=80.0)
    guess = encode(good[6:-6].decode().replace(f"PW={pw}", "PW=zzzzzz"))

    async def body(gw: Hj212Gateway) -> None:
        assert gw.port is not None
        gw.throttle = CredentialThrottle(limit=3, window_s=60, lockout_s=60)
        for _ in range(3):  # a guesser reconnects for every try, dodging the per-connection bound
            (reply,) = await _exchange(gw.port, guess)
            assert decode(reply).cp == "QnRtn=3"
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(good)  # even the right PW: the address is refused, unread
        await writer.drain()
        try:  # closed unread: an end of stream, or a reset for the bytes it never read
            assert await asyncio.wait_for(reader.read(), 10) == b"", "closed without a reply"
        except ConnectionResetError:
            pass
        writer.close()
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", gw.port, local_addr=("127.0.0.2", 0)
        )
        writer.write(good)  # the monitor itself, from its own address, is not locked out
        await writer.drain()
        assert decode(await asyncio.wait_for(reader.readuntil(b"\r\n"), 15)).cn == "9014"
        writer.close()
        assert gw.throttle.refused == 1
        await _wait(lambda: len(listener.on(f"/dust/{dev}/telemetry")) == 1)

    _with_gateway(city, body)
    assert len(listener.on(f"/dust/{dev}/telemetry")) == 1
    assert [d["code"] for d in _letters(listener, city)] == ["hj212_bad_pw"] * 3
