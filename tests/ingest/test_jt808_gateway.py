"""The JT/T 808 gateway on the real Mosquitto (and, for the dead letters, the real bridge and Kafka)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from contract.topics import KafkaTopics
from foundation.settings import Settings
from ingest.bridge import Bridge
from ingest.gateways.jt808 import Jt808Gateway
from ingest.jt808 import (
    P_GENERAL_REPLY,
    P_REGISTER_REPLY,
    T_HEARTBEAT,
    T_LOCATION,
    T_LOGOUT,
    Frame,
    bcc,
    decode,
    encode,
    escape,
    unescape,
)
from registry.jt808_codes import AuthCodes
from sim.jt808 import auth_message, location_body, location_message, register_message
from tests.kit import mqtt as kit_mqtt
from tests.kit.gateways import Listener, with_gateway
from tests.kit.gateways import wait_until as _wait
from tests.kit.kafka import read_topic
from tests.kit.mqtt import drop_session, now_ms

pytestmark = pytest.mark.services

HEADER = "device_id,kind,district,grid,unit,address,lat,lon,gateway,phone"


class Fleet:
    """A registry of JT/T 808 truck terminals behind one gateway, provisioned."""

    def __init__(self, settings: Settings, tmp: Path, unique: str, n: int):
        self.gateway = f"gw-{unique}"
        self.ids = [f"T-{unique}-{i}" for i in range(n)]
        self.phones = {d: f"0139{i:08d}" for i, d in enumerate(self.ids)}
        rows = [HEADER] + [
            f"{d},vehicle,jinshui,JS-FLEET,郑州顺达渣土运输有限公司,车载终端{i},34.8,113.6,"
            f"{self.gateway},{self.phones[d]}"
            for i, d in enumerate(self.ids)
        ]
        registry = tmp / "registry.csv"
        registry.write_text("\n".join(rows) + "\n", encoding="utf-8")
        kit_mqtt.provision_registry(registry)
        self.codes_path = tmp / "jt808.json"
        self.settings = (
            settings.replace("paths", registry=str(registry))
            .replace("mqtt", username=self.gateway, password=kit_mqtt.secret_of(self.gateway))
            .replace("jt808", auth_codes=str(self.codes_path))
        )
        self.bridge_settings = settings.replace("paths", registry=str(registry))

    def report(self, device: str, serial: int = 1, **payload: Any) -> bytes:
        body = {"ts": now_ms() // 1000 * 1000, "lat": 34.80301, "lon": 113.695, **payload}
        return location_message(body, self.phones[device], serial)


def _with_gateway(fleet: Fleet, body: Callable[[Jt808Gateway], Awaitable[None]]) -> None:
    with_gateway(lambda: Jt808Gateway(fleet.settings, listen="127.0.0.1:0"), body)


class Terminal:
    """One TCP connection speaking JT/T 808 to the gateway."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Terminal:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, *messages: bytes) -> None:
        self.writer.write(b"".join(messages))
        await self.writer.drain()

    async def answer(self, timeout: float = 15) -> Frame:
        await asyncio.wait_for(self.reader.readuntil(b"\x7e"), timeout)
        wire = await asyncio.wait_for(self.reader.readuntil(b"\x7e"), timeout)
        return decode(wire[:-1])

    async def login(self, phone: str, plate: str = "豫A12345") -> str:
        await self.send(register_message(phone, 1, plate))
        reply = await self.answer()
        assert reply.msg_id == P_REGISTER_REPLY and reply.body[2] == 0
        code = reply.body[3:].decode("ascii")
        await self.send(auth_message(phone, 2, code))
        assert _result(await self.answer()) == (2, 0x0102, 0)
        return code

    def close(self) -> None:
        self.writer.close()


def _result(reply: Frame) -> tuple[int, int, int]:
    """(answered serial, answered id, result) of a 0x8001."""
    assert reply.msg_id == P_GENERAL_REPLY
    serial, msg_id, result = struct.unpack(">HHB", reply.body)
    return serial, msg_id, result


def _letters(listener: Listener, fleet: Fleet) -> list[dict[str, Any]]:
    return listener.letters(fleet.gateway)


@pytest.fixture
def fleet(settings: Settings, tmp_path: Path, unique: str) -> Fleet:
    return Fleet(settings, tmp_path, unique, 3)


@pytest.fixture
def listener(settings: Settings):
    lst = Listener(settings)
    yield lst
    lst.close()


def test_registration_then_authentication_then_a_report_published_on_the_terminals_topic(
    fleet: Fleet, listener: Listener
) -> None:
    dev = fleet.ids[0]
    phone = fleet.phones[dev]

    async def body(gw: Jt808Gateway) -> None:
        assert gw.port is not None
        t = await Terminal.open(gw.port)
        code = await t.login(phone)
        assert len(code) == 16 and code not in fleet.codes_path.read_text()  # kept hashed
        await t.send(encode(T_HEARTBEAT, phone, 3))
        assert _result(await t.answer()) == (3, T_HEARTBEAT, 0)
        await t.send(
            fleet.report(dev, 4, speed_kmh=42.5, heading_deg=270, acc_on=True, located=True,
                         cover_closed=False, body_lifted=False, load_kg=21_000,
                         mileage_km=1234.5)
        )  # fmt: skip
        assert _result(await t.answer()) == (4, T_LOCATION, 0)
        t.close()
        await _wait(lambda: len(listener.on(f"/vehicle/{dev}/telemetry")) == 1)

    _with_gateway(fleet, body)
    (payload,) = listener.on(f"city/jinshui/vehicle/{dev}/telemetry")
    assert (payload["lat"], payload["lon"], payload["speed_kmh"]) == (34.80301, 113.695, 42.5)
    assert payload["acc_on"] is True and payload["cover_closed"] is False
    assert payload["load_kg"] == 21_000 and payload["mileage_km"] == 1234.5
    assert payload["phone"] == phone and payload["heading_deg"] == 270


def test_a_batch_publishes_each_location_and_is_answered_once_the_broker_has_all(
    fleet: Fleet, listener: Listener
) -> None:
    dev = fleet.ids[1]
    phone = fleet.phones[dev]
    t0 = now_ms() // 1000 * 1000 - 60_000
    items = [location_body({"ts": t0 + k * 10_000, "lat": 34.8, "lon": 113.6 + k / 1000})
             for k in range(3)]  # fmt: skip
    batch = struct.pack(">HB", 3, 1) + b"".join(struct.pack(">H", len(i)) + i for i in items)

    async def body(gw: Jt808Gateway) -> None:
        assert gw.port is not None
        t = await Terminal.open(gw.port)
        await t.login(phone)
        await t.send(encode(0x0704, phone, 9, batch))
        assert _result(await t.answer()) == (9, 0x0704, 0)
        t.close()
        await _wait(lambda: len(listener.on(f"/vehicle/{dev}/telemetry")) == 3)

    _with_gateway(fleet, body)
    assert sorted(p["ts"] for p in listener.on(f"/vehicle/{dev}/telemetry")) == [
        t0, t0 + 10_000, t0 + 20_000
    ]  # fmt: skip


def _broken_check(message: bytes) -> bytes:
    data = bytearray(unescape(message[1:-1]))
    data[-1] ^= 0x5A
    return b"\x7e" + escape(bytes(data)) + b"\x7e"


def _with_props(message: bytes, extra: int) -> bytes:
    data = bytearray(unescape(message[1:-1]))
    data[2] |= extra >> 8
    data[-1] = bcc(data[:-1])
    return b"\x7e" + escape(bytes(data)) + b"\x7e"


def test_bad_messages_are_dead_lettered_with_their_reason_and_bytes_and_answered_as_the_standard_says(
    fleet: Fleet, listener: Listener
) -> None:
    dev, other = fleet.ids[0], fleet.ids[1]
    phone = fleet.phones[dev]
    good = fleet.report(dev, 20)
    length = bytearray(unescape(good[1:-1]))
    length[3] -= 1
    length[-1] = bcc(length[:-1])
    # code -> (message, the reply: None, or (msg id, result))
    authed = {
        "jt808_bcc": (_broken_check(good), (P_GENERAL_REPLY, 2)),
        "jt808_length": (b"\x7e" + escape(bytes(length)) + b"\x7e", (P_GENERAL_REPLY, 2)),
        "jt808_escape": (good[:10] + b"\x7d\x05" + good[10:], None),
        "jt808_syntax": (encode(T_LOCATION, phone, 21, b"\x00" * 20), (P_GENERAL_REPLY, 2)),
        "jt808_unknown_id": (encode(0x0900, phone, 22, b"\x01hello"), (P_GENERAL_REPLY, 3)),
        "jt808_unsupported": (_with_props(encode(T_LOCATION, phone, 23, b""), 0x0400),
                              (P_GENERAL_REPLY, 3)),
        "jt808_unauthenticated": (fleet.report(other, 24), (P_GENERAL_REPLY, 1)),
    }  # fmt: skip
    fresh = {
        "jt808_unknown_terminal": (register_message("099999999999", 1, "豫A99999"),
                                   (P_REGISTER_REPLY, 4)),
        "jt808_bad_auth": (auth_message(phone, 2, "not-the-code"), (P_GENERAL_REPLY, 1)),
    }  # fmt: skip

    async def body(gw: Jt808Gateway) -> None:
        assert gw.port is not None
        for code, (raw, want) in fresh.items():
            t = await Terminal.open(gw.port)
            await t.send(raw)
            reply = await t.answer()
            assert want is not None
            assert reply.msg_id == want[0], code
            got = reply.body[2] if want[0] == P_REGISTER_REPLY else _result(reply)[2]
            assert got == want[1], code
            t.close()
        t = await Terminal.open(gw.port)
        await t.login(phone)
        for code, (raw, want) in authed.items():
            await t.send(raw, b"garbage outside flags" if code == "jt808_escape" else b"")
            if want is not None:
                assert _result(await t.answer())[2] == want[1], code
        await t.send(good)  # the connection still serves: 9 bad messages < the bound of 10
        assert _result(await t.answer()) == (20, T_LOCATION, 0)
        t.close()
        await _wait(lambda: len(_letters(listener, fleet)) == len(authed) + len(fresh) + 1)

    _with_gateway(fleet, body)
    letters = {d["code"]: d for d in _letters(listener, fleet)}
    assert set(letters) == {*authed, *fresh, "jt808_framing"}
    for code, (raw, _) in {**authed, **fresh}.items():
        assert base64.b64decode(letters[code]["raw_b64"]) == raw, code
        assert letters[code]["message"] and letters[code]["peer"].startswith("127.0.0.1:")
    assert letters["jt808_bad_auth"]["device"] == dev
    assert letters["jt808_unknown_terminal"]["device"] is None
    assert base64.b64decode(letters["jt808_framing"]["raw_b64"]) == b"garbage outside flags"
    assert len(listener.on("/telemetry")) == 1


def test_a_new_registration_replaces_the_code_and_logout_revokes_it_and_a_lone_flag_is_no_letter(
    fleet: Fleet, listener: Listener
) -> None:
    dev = fleet.ids[2]
    phone = fleet.phones[dev]

    async def body(gw: Jt808Gateway) -> None:
        assert gw.port is not None
        t = await Terminal.open(gw.port)
        first = await t.login(phone)
        second = await t.login(phone)
        assert first != second
        await t.send(auth_message(phone, 5, first))
        assert _result(await t.answer())[2] == 1  # the old code is refused
        await t.send(auth_message(phone, 6, second))
        assert _result(await t.answer())[2] == 0
        await t.send(encode(T_LOGOUT, phone, 7))
        assert _result(await t.answer()) == (7, T_LOGOUT, 0)
        await t.send(auth_message(phone, 8, second))
        assert _result(await t.answer())[2] == 1  # logged out: register again
        await t.send(b"\x7e")  # a terminal that opens its next message and hangs up
        t.close()
        await _wait(lambda: len(_letters(listener, fleet)) == 2)
        await asyncio.sleep(0.5)

    _with_gateway(fleet, body)
    assert [d["code"] for d in _letters(listener, fleet)] == ["jt808_bad_auth"] * 2


def test_a_terminal_sending_garbage_is_disconnected_after_the_bound_and_the_others_go_on(
    fleet: Fleet, listener: Listener
) -> None:
    good_dev = fleet.ids[2]

    async def body(gw: Jt808Gateway) -> None:
        assert gw.port is not None
        bad = await Terminal.open(gw.port)
        good = await Terminal.open(gw.port)
        await good.login(fleet.phones[good_dev])
        for i in range(gw.max_bad):
            await bad.send(b"\x7e\x00\x01garbage%d\x7e" % i)
            await good.send(fleet.report(good_dev, 100 + i))
            assert _result(await good.answer())[2] == 0  # the good one is answered
        assert await asyncio.wait_for(bad.reader.read(), 15) == b""  # the gateway closed it
        await good.send(fleet.report(good_dev, 200))
        assert _result(await good.answer()) == (200, T_LOCATION, 0)
        good.close()
        bad.close()
        await _wait(lambda: gw.stats.closed_for_errors == 1)
        await _wait(lambda: len(_letters(listener, fleet)) == gw.max_bad + 1)

    _with_gateway(fleet, body)
    codes = [d["code"] for d in _letters(listener, fleet)]
    assert codes.count("jt808_framing") == 10 and codes.count("jt808_too_many_errors") == 1
    assert len(listener.on(f"/vehicle/{good_dev}/telemetry")) == 11


def test_a_message_longer_than_any_is_a_dead_letter_and_the_next_one_is_served(
    fleet: Fleet, listener: Listener
) -> None:
    dev = fleet.ids[0]

    async def body(gw: Jt808Gateway) -> None:
        assert gw.port is not None
        t = await Terminal.open(gw.port)
        await t.login(fleet.phones[dev])
        await t.send(b"\x7e" + b"\x01" * 5_000 + b"\x7e", fleet.report(dev, 30))
        assert _result(await t.answer()) == (30, T_LOCATION, 0)
        t.close()
        await _wait(lambda: len(_letters(listener, fleet)) == 1)

    _with_gateway(fleet, body)
    (letter,) = _letters(listener, fleet)
    assert letter["code"] == "jt808_length" and "without a closing 0x7e" in letter["message"]


def test_a_stream_without_flags_is_closed_after_the_bound(fleet: Fleet, listener: Listener) -> None:
    async def body(gw: Jt808Gateway) -> None:
        assert gw.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        with contextlib.suppress(ConnectionError):
            for _ in range(100):
                writer.write(b"x" * 1000)
                await writer.drain()
        assert await asyncio.wait_for(reader.read(), 15) == b""
        writer.close()
        await _wait(lambda: len(_letters(listener, fleet)) == 1)

    _with_gateway(fleet, body)
    (letter,) = _letters(listener, fleet)
    assert letter["code"] == "jt808_framing" and "closed" in letter["message"]


def test_a_gateways_dead_letter_reaches_the_journals_dead_letter_topic_through_the_bridge(
    fleet: Fleet,
) -> None:
    s = fleet.bridge_settings.replace("mqtt", session_expiry_s=60)
    dev = fleet.ids[0]
    phone = fleet.phones[dev]
    topics = KafkaTopics(s.kafka.topic_prefix)
    bad = auth_message(phone, 1, "wrong")

    async def main() -> None:
        bridge = Bridge(s, client_suffix="1")
        stop_b = asyncio.Event()
        btask = asyncio.create_task(bridge.run(stop_b, stats_every_s=3600))
        await asyncio.wait_for(bridge.subscribed.wait(), 30)
        gw = Jt808Gateway(fleet.settings, listen="127.0.0.1:0")
        stop_g = asyncio.Event()
        gtask = asyncio.create_task(gw.run(stop_g, stats_every_s=3600))
        await asyncio.wait_for(gw.ready.wait(), 20)
        try:
            assert gw.port is not None
            t = await Terminal.open(gw.port)
            await t.send(bad)
            await t.answer()
            await t.login(phone)
            await t.send(fleet.report(dev, 3, speed_kmh=30.0))
            await t.answer()
            t.close()
            dead = await read_topic(s.kafka.bootstrap, topics.deadletter, 1)
            readings = await read_topic(s.kafka.bootstrap, topics.telemetry, 1)
        finally:
            stop_g.set()
            await asyncio.wait_for(gtask, 20)
            stop_b.set()
            await asyncio.wait_for(btask, 20)
        (letter,) = dead
        assert letter["code"] == "jt808_bad_auth" and letter["device"] == dev
        assert base64.b64decode(letter["raw_b64"]) == bad
        (reading,) = [r for r in readings if r.get("type") == "reading"]
        assert reading["device"] == dev and reading["fields"]["speed_kmh"] == 30.0

    try:
        asyncio.run(main())
    finally:
        drop_session(s.mqtt.host, s.mqtt.port, f"{s.mqtt.client_id}-1")


def test_two_thousand_terminals_connected_at_once_lose_nothing(
    settings: Settings, tmp_path: Path, unique: str, listener: Listener
) -> None:
    n = 2000
    big = Fleet(settings, tmp_path, unique, n)
    codes = AuthCodes(big.codes_path).issue(big.phones.values())  # registered earlier

    async def body(gw: Jt808Gateway) -> None:
        assert gw.port is not None
        conns = await asyncio.gather(*(Terminal.open(gw.port) for _ in range(n)))
        await _wait(lambda: gw.stats.open == n, 30)  # all open at the same time
        for t, dev in zip(conns, big.ids, strict=True):
            phone = big.phones[dev]
            t.writer.write(auth_message(phone, 1, codes[phone]) + big.report(dev, 2))
        answers = await asyncio.gather(*(_two(t) for t in conns))
        assert all(a == [(1, 0x0102, 0), (2, T_LOCATION, 0)] for a in answers)
        for t in conns:
            t.close()
        await _wait(lambda: len(listener.on("/telemetry")) >= n, 30)

    _with_gateway(big, body)
    got = {p["phone"] for p in listener.on("/telemetry")}
    assert got == set(big.phones.values())
    assert len(listener.on("/telemetry")) == n


async def _two(t: Terminal) -> list[tuple[int, int, int]]:
    return [_result(await t.answer(60)), _result(await t.answer(60))]


def test_a_broker_that_does_not_acknowledge_stops_the_reading_and_nothing_is_lost(
    fleet: Fleet, listener: Listener
) -> None:
    dev = fleet.ids[0]
    phone = fleet.phones[dev]
    base = now_ms() // 1000 * 1000 - 100_000
    reports = [
        location_message({"ts": base + k * 1000, "lat": 34.8, "lon": 113.6}, phone, 10 + k)
        for k in range(50)
    ]
    fleet.settings = fleet.settings.replace("jt808", max_pending=5)

    async def body(gw: Jt808Gateway) -> None:
        assert gw.port is not None and gw._publisher is not None
        t = await Terminal.open(gw.port)
        await t.login(phone)
        replies_before = gw.stats.replies
        paho = gw._publisher.client
        paho.loop_stop()  # PUBACKs are no longer read: the broker looks stuck to the gateway
        await t.send(*reports)
        await _wait(lambda: gw._pending == 5)
        await asyncio.sleep(1.0)
        assert gw._pending == 5 and gw.stats.frames <= 2 + 6, "reading must pause at the bound"
        assert gw.stats.replies == replies_before  # nothing is answered before the broker has it
        paho.loop_start()
        answered = [_result(await t.answer(30)) for _ in reports]
        assert answered == [(10 + k, T_LOCATION, 0) for k in range(50)]
        t.close()
        await _wait(lambda: len(listener.on("/telemetry")) == len(reports))

    _with_gateway(fleet, body)
    got = sorted(p["ts"] for p in listener.on(f"/vehicle/{dev}/telemetry"))
    assert got == [base + k * 1000 for k in range(50)]
