"""Simulated JT/T 808 truck terminals: the simulator's vehicle reports in the real framing.

A share of the simulated trucks (``citywatch run --jt808-share``) have JT/T 808
terminals: each opens a TCP connection to the JT/T 808 gateway, registers
(0x0100) when it has no authentication code, authenticates (0x0102), and sends
each of its positions as a 0x0200 location report (status bits and additional
items as ``ingest.jt808`` maps them: the city's vendors'), as a real terminal
would. ``location_body`` and ``location_message`` build one report;
``TerminalFleet`` keeps the connections, sends, and counts the gateway's
replies (0x8001 result 0 to a report: the broker has it).

A garbled vendor payload of the simulator (not JSON) becomes a report with a
broken check code, which the gateway dead-letters as ``jt808_bcc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ingest.jt808 import (
    ITEMS,
    LOAD_STATE_BITS,
    P_GENERAL_REPLY,
    P_REGISTER_REPLY,
    SOUTH_BIT,
    STATUS_FLAGS,
    T_AUTH,
    T_LOCATION,
    T_REGISTER,
    WEST_BIT,
    bcd_time,
    decode,
    encode,
    escape,
    unescape,
)

__all__ = [
    "TerminalFleet",
    "TerminalStats",
    "auth_message",
    "location_body",
    "location_message",
    "register_message",
]

_ITEM_OF = {name: (item, size, scale) for item, (name, size, scale) in ITEMS.items()}


def location_body(payload: Mapping[str, Any]) -> bytes:
    """A 0x0200 body of a vehicle payload (``ts`` epoch ms, ``lat``/``lon`` degrees...)."""
    status = 0
    for name, (bit, when_set) in STATUS_FLAGS.items():
        value = payload.get(name)
        if value is not None and bool(value) == when_set:
            status |= 1 << bit
    lat, lon = float(payload["lat"]), float(payload["lon"])
    if lat < 0:
        status |= 1 << SOUTH_BIT
    if lon < 0:
        status |= 1 << WEST_BIT
    if payload.get("load_kg"):
        status |= 3 << LOAD_STATE_BITS
    body = struct.pack(
        ">IIIIHHH",
        int(payload.get("alarm", 0)),
        status,
        round(abs(lat) * 1e6),
        round(abs(lon) * 1e6),
        max(0, int(payload.get("altitude_m", 110))),
        round(float(payload.get("speed_kmh", 0)) * 10),
        int(payload.get("heading_deg", 0)) % 360,
    ) + bcd_time(int(payload["ts"]))
    for name in ("mileage_km", "load_kg"):
        if payload.get(name) is not None:
            item, size, scale = _ITEM_OF[name]
            body += bytes([item, size]) + round(float(payload[name]) / scale).to_bytes(size, "big")
    return body


def location_message(payload: Mapping[str, Any], phone: str, serial: int) -> bytes:
    return encode(T_LOCATION, phone, serial, location_body(payload))


def register_message(phone: str, serial: int, plate: str, terminal_id: str = "CW00001") -> bytes:
    """0x0100 (2013): province 41 (Henan), city 0100 (Zhengzhou), maker, model, id, colour 2 (yellow), plate."""
    body = (
        struct.pack(">HH", 41, 100)
        + b"CWSIM"
        + b"CW-808".ljust(20, b"\x00")
        + terminal_id.encode("ascii")[:7].ljust(7, b"\x00")
        + bytes([2])
        + plate.encode("gbk")
    )
    return encode(T_REGISTER, phone, serial, body)


def auth_message(phone: str, serial: int, code: str) -> bytes:
    return encode(T_AUTH, phone, serial, code.encode("ascii"))


@dataclass
class TerminalStats:
    sent: int = 0
    """Location reports sent."""
    replied: int = 0
    """0x8001 result 0 to a report (the gateway had it acknowledged by the broker)."""
    refused: int = 0
    """0x8001 with another result (a garbled report...)."""
    registered: int = 0
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)


class _Terminal:
    def __init__(self, phone: str, plate: str):
        self.phone, self.plate = phone, plate
        self.code: str | None = None
        self.serial = 0
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None
        self.answers: asyncio.Queue[tuple[int, int, bytes]] = asyncio.Queue()

    def next(self) -> int:
        self.serial = (self.serial + 1) & 0xFFFF
        return self.serial


class TerminalFleet:
    """JT/T 808 terminals on their own asyncio loop in a thread; ``send`` from any thread.

    terminals: device id -> (phone, plate). Each connects at its first report,
    registers once, authenticates on every connection.
    """

    def __init__(self, host: str, port: int, terminals: Mapping[str, tuple[str, str]]):
        self.host, self.port = host, port
        self.terminals = {d: _Terminal(p, plate) for d, (p, plate) in terminals.items()}
        self.stats = TerminalStats()
        self._q: queue.Queue[tuple[str, bytes, bool] | None] = queue.Queue(maxsize=10_000)
        self._thread = threading.Thread(target=self._main, name="jt808-terminals", daemon=True)
        self._drain_s = 30.0

    def __contains__(self, device_id: object) -> bool:
        return device_id in self.terminals

    def start(self) -> None:
        self._thread.start()

    def send(self, device_id: str, payload: bytes, garbage: bool = False) -> None:
        """Queue one simulated message of a terminal (blocks when 10,000 are waiting)."""
        self._q.put((device_id, payload, garbage))

    def close(self, drain_s: float = 30.0) -> TerminalStats:
        """Send what is queued, wait up to ``drain_s`` for the replies, close the connections."""
        self._drain_s = drain_s
        self._q.put(None)
        self._thread.join(drain_s + 30)
        return self.stats

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await loop.run_in_executor(None, self._q.get)
            if item is None:
                break
            try:
                await self._send(*item)
            except Exception as exc:  # one terminal's trouble must not end the others'
                self.stats.errors.append(f"{item[0]}: {exc!r}")
        deadline = time.monotonic() + self._drain_s
        while (
            self.stats.replied + self.stats.refused < self.stats.sent
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.05)
        for t in self.terminals.values():
            if t.writer is not None:
                t.writer.close()
            if t.task is not None:
                t.task.cancel()

    async def _connect(self, t: _Terminal) -> bool:
        """Open, register if needed, authenticate; False when the gateway would not have it."""
        try:
            t.reader, t.writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            self.stats.errors.append(f"{t.phone}: {exc}")
            return False
        t.answers = asyncio.Queue()
        t.task = asyncio.create_task(self._replies(t))
        try:
            if t.code is None:
                t.writer.write(register_message(t.phone, t.next(), t.plate))
                msg_id, _serial, body = await asyncio.wait_for(t.answers.get(), 30)
                if msg_id != P_REGISTER_REPLY or body[2] != 0:
                    self.stats.errors.append(f"{t.phone}: registration refused")
                    return False
                t.code = body[3:].decode("ascii")
                self.stats.registered += 1
            t.writer.write(auth_message(t.phone, t.next(), t.code))
            _id, _serial, body = await asyncio.wait_for(t.answers.get(), 30)
            if body[4] != 0:
                t.code = None
                self.stats.errors.append(f"{t.phone}: authentication refused")
                return False
        except (TimeoutError, ConnectionError, IndexError) as exc:
            self.stats.errors.append(f"{t.phone}: {exc!r} while logging in")
            return False
        return True

    async def _send(self, device_id: str, payload: bytes, garbage: bool) -> None:
        t = self.terminals[device_id]
        try:
            data = orjson.loads(payload)
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            message = location_message(data, t.phone, 0)
        except (
            orjson.JSONDecodeError,
            KeyError,
            TypeError,
            ValueError,
            OverflowError,
            struct.error,
        ):
            garbage = True
            message = location_message(
                {"ts": int(time.time() * 1000), "lat": 0, "lon": 0}, t.phone, 0
            )
        for _ in range(3):
            if t.writer is None or t.writer.is_closing():
                if t.writer is not None:
                    self.stats.reconnects += 1
                if not await self._connect(t):
                    await asyncio.sleep(0.5)
                    continue
            assert t.writer is not None
            data = _with_serial(message, t.next())
            if garbage:
                data = _break_check(data)
            t.writer.write(data)
            try:
                await t.writer.drain()
            except ConnectionError:
                t.writer.close()
                continue
            self.stats.sent += 1
            return
        self.stats.errors.append(f"{device_id}: could not send after 3 connections")

    async def _replies(self, t: _Terminal) -> None:
        assert t.reader is not None
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, ValueError):
            while True:
                await t.reader.readuntil(b"\x7e")
                wire = await t.reader.readuntil(b"\x7e")
                while wire == b"\x7e":  # a closing flag met as an opening one
                    wire = await t.reader.readuntil(b"\x7e")
                frame = decode(wire[:-1])
                if frame.msg_id == P_GENERAL_REPLY and len(frame.body) == 5:
                    answered, result = struct.unpack_from(">H", frame.body, 2)[0], frame.body[4]
                    if answered == T_LOCATION:
                        if result == 0:
                            self.stats.replied += 1
                        else:
                            self.stats.refused += 1
                        continue
                t.answers.put_nowait((frame.msg_id, frame.serial, frame.body))


def _with_serial(message: bytes, serial: int) -> bytes:
    """The same message with another serial (re-encoded: the check code and escapes change)."""
    frame = decode(message[1:-1])
    return encode(frame.msg_id, frame.phone, serial, frame.body, version=frame.version)


def _break_check(message: bytes) -> bytes:
    """A message whose check code does not match (what a vendor's garbage becomes on this wire)."""
    data = bytearray(unescape(message[1:-1]))
    data[-1] ^= 0xFF
    return b"\x7e" + escape(bytes(data)) + b"\x7e"
