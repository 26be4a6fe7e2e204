"""Simulated HJ 212-2017 dust monitors: the simulator's dust readings in the real framing.

A share of the simulated city's dust sites (``citywatch run --hj212-share``)
are HJ 212 monitors: their readings leave as CN=2011 real-time frames over a
TCP connection per monitor to the HJ 212 gateway, as a real monitor's would,
PM in mg/m³ (HJ 212's unit for dust monitors), Flag=5 (HJ 212-2017, reply
wanted). ``frame_for`` builds one frame; ``MonitorFleet`` keeps the
connections, sends, and counts the gateway's 9014 replies.

A garbled vendor payload of the simulator (not JSON) becomes a frame with a
broken CRC, which the gateway dead-letters as ``hj212_crc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from contract.clock import city_zone
from ingest.hj212 import encode

__all__ = ["FIELD_CODES", "FleetStats", "MonitorFleet", "frame_for"]

FIELD_CODES: dict[str, tuple[str, bool]] = {
    "pm10": ("a34002", True),
    "pm25": ("a34004", True),
    "tsp": ("a34001", True),
    "noise_db": ("LA", False),
    "wind_speed": ("a01007", False),
    "wind_dir": ("a01008", False),
    "temp_c": ("a01001", False),
    "humidity": ("a01002", False),
}
"""citywatch dust field -> (HJ 212 code, is a particle concentration)."""


def _stamp(ts_ms: int, with_ms: bool) -> str:
    dt = datetime.fromtimestamp(ts_ms / 1000, city_zone())
    text = dt.strftime("%Y%m%d%H%M%S")
    return text + f"{ts_ms % 1000:03d}" if with_ms else text


def frame_for(
    payload: Mapping[str, Any],
    mn: str,
    pw: str,
    *,
    cn: str = "2011",
    pm_divisor: float = 1000.0,
    flag: int = 5,
    data_flags: Mapping[str, str] | None = None,
) -> bytes:
    """One HJ 212 frame of a dust payload (``ts`` in epoch ms; PM in µg/m³ divided by ``pm_divisor``)."""
    ts = int(payload["ts"])
    suffix = "Rtd" if cn == "2011" else "Avg"
    groups = [f"DataTime={_stamp(ts, False)}"]
    for name, (code, particle) in FIELD_CODES.items():
        value = payload.get(name)
        if value is None:
            continue
        v = float(value) / pm_divisor if particle else float(value)
        mark = (data_flags or {}).get(name, "N")
        groups.append(f"{code}-{suffix}={v:.6f},{code}-Flag={mark}")
    cp = ";".join(groups)
    return encode(f"QN={_stamp(ts, True)};ST=22;CN={cn};PW={pw};MN={mn};Flag={flag};CP=&&{cp}&&")


def garbled_frame(raw: bytes, mn: str, pw: str, ts: int) -> bytes:
    """A frame whose CRC does not match (what a vendor's garbage becomes on this wire)."""
    good = frame_for({"ts": ts, "pm10": 0.0}, mn, pw)
    crc = good[-6:-2]
    bad = b"0000" if crc != b"0000" else b"FFFF"
    return good[:-6] + bad + b"\r\n"


@dataclass
class FleetStats:
    sent: int = 0
    replied: int = 0
    """9014 replies received (the gateway had the record acknowledged by the broker)."""
    refused: int = 0
    """9011 replies (a refusal: a garbled frame, a wrong PW...)."""
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)


class MonitorFleet:
    """HJ 212 monitors on their own asyncio loop in a thread; ``send`` from any thread.

    credentials: device id -> (MN, PW). One TCP connection per monitor, opened
    at its first frame and reopened if the gateway closes it.
    """

    def __init__(self, host: str, port: int, credentials: Mapping[str, tuple[str, str]]):
        self.host, self.port = host, port
        self.credentials = dict(credentials)
        self.stats = FleetStats()
        self._q: queue.Queue[tuple[str, bytes, bool] | None] = queue.Queue(maxsize=10_000)
        self._thread = threading.Thread(target=self._main, name="hj212-monitors", daemon=True)
        self._writers: dict[str, asyncio.StreamWriter] = {}
        self._readers: set[asyncio.Task[None]] = set()

    def __contains__(self, device_id: object) -> bool:
        return device_id in self.credentials

    def start(self) -> None:
        self._thread.start()

    def send(self, device_id: str, payload: bytes, garbage: bool = False) -> None:
        """Queue one simulated message of an HJ 212 monitor (blocks when 10,000 are waiting).

        garbage: the simulator garbled it (its JSON may still parse): sent with a broken CRC.
        """
        self._q.put((device_id, payload, garbage))

    def close(self, drain_s: float = 30.0) -> FleetStats:
        """Send what is queued, wait up to ``drain_s`` for the replies, close the connections."""
        self._q.put(None)
        self._drain_s = drain_s
        self._thread.join(drain_s + 30)
        return self.stats

    # ---------------------------------------------------------------- the loop

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await loop.run_in_executor(None, self._q.get)
            if item is None:
                break
            await self._send(*item)
        deadline = time.monotonic() + getattr(self, "_drain_s", 30.0)
        while (
            self.stats.replied + self.stats.refused < self.stats.sent
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.05)
        for w in self._writers.values():
            w.close()
        for t in self._readers:
            t.cancel()

    async def _send(self, device_id: str, payload: bytes, garbage: bool) -> None:
        mn, pw = self.credentials[device_id]
        try:
            frame = None if garbage else frame_for(orjson.loads(payload), mn, pw)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            frame = None
        if frame is None:
            frame = garbled_frame(payload, mn, pw, int(time.time() * 1000))
        for _ in range(3):
            writer = self._writers.get(device_id)
            if writer is None or writer.is_closing():
                try:
                    reader, writer = await asyncio.open_connection(self.host, self.port)
                except OSError as exc:
                    self.stats.errors.append(f"{device_id}: {exc}")
                    await asyncio.sleep(0.5)
                    continue
                if device_id in self._writers:
                    self.stats.reconnects += 1
                self._writers[device_id] = writer
                task = asyncio.create_task(self._replies(reader))
                self._readers.add(task)
            writer.write(frame)
            try:
                await writer.drain()
            except ConnectionError:
                writer.close()
                continue
            self.stats.sent += 1
            return
        self.stats.errors.append(f"{device_id}: could not send after 3 connections")

    async def _replies(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(
            asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError
        ):
            while True:
                line = await reader.readuntil(b"\r\n")
                if b"CN=9014" in line:
                    self.stats.replied += 1
                elif b"CN=9011" in line:
                    self.stats.refused += 1
