"""The HJ 212-2017 gateway: dust monitors over TCP in, citywatch readings over MQTT out.

``await Hj212Gateway(settings).run(stop)`` serves until ``stop`` is set
(``citywatch gateway hj212``). docs/gateways.md is the protocol subset and the
field mapping; ``ingest.hj212`` is the codec.

* **Many long-lived connections, one asyncio loop.** Each monitor keeps a
  TCP connection open and sends a frame every few seconds to minutes; a
  connection costs a coroutine and two buffers (asyncio's ``StreamReader``
  limit is one frame, 1036 bytes, so a monitor cannot make the gateway buffer
  more). Frames are CRLF-delimited; anything that is not one frame is a bad
  frame.
* **Authenticated per frame.** The frame's MN must be a registry row whose
  ``gateway`` column names this gateway (its broker identity,
  ``mqtt.username``), and its PW the one issued for that MN
  (``registry.hj212_passwords``). The registry and the passwords are reloaded
  when their files change.
* **Published with the device's identity.** A data record (CN 2011, 2051,
  2061) becomes the dust payload of ``contract.kinds`` on the device's own
  topic ``city/<district>/dust/<device>/telemetry``, QoS 1, through one MQTT
  connection as the gateway identity, which the broker lets publish on its
  devices' topics only (docs/decisions/011-gateways-publish-over-mqtt.md). The
  bridge validates it like any device's message.
* **Answered as the standard asks, after the broker has it.** When a frame's
  Flag asks for an answer, the 9014 data reply is written only after the
  broker's PUBACK: a monitor that gets no reply resends (HJ 212's
  超时重发), so a gateway that dies with a record in flight loses nothing.
  Refusals are 9011 with the standard's QnRtn (3 PW, 4 MN, 8 CN, 9 CRC...).
* **Bad frames are dead letters, never silence.** Each goes with its reason
  (``ingest.hj212.CODES``) and raw bytes to ``city/gateway/<id>/deadletter``,
  which the bridge files on ``<prefix>.deadletter``. After
  ``hj212.max_bad_frames`` bad frames in a row a connection is closed (one
  more dead letter, ``hj212_too_many_errors``); the others are not touched.
* **Back-pressure, no unbounded buffer.** At most ``hj212.max_pending``
  publishes wait for PUBACKs (and 32 per connection); beyond that the gateway
  stops reading sockets, the kernel's buffers fill, and the monitors' sends
  block: the broker's pace is the monitors' pace.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

import orjson

from contract.topics import telemetry_topic
from foundation.errors import CitywatchError
from foundation.settings import Settings
from ingest.gateways.server import (
    Connection,
    GatewayServer,
    wall_clock_ms,
)
from ingest.hj212 import (
    DATA_CNS,
    MAX_FRAME,
    QN_BAD_CN,
    QN_BAD_MN,
    QN_BAD_PW,
    QN_UNKNOWN,
    Frame,
    FrameError,
    data_reply,
    decode,
    reading_fields,
    request_reply,
)
from registry.devices import Device, Registry
from registry.hj212_passwords import PasswordWatcher

log = logging.getLogger(__name__)


def passwords_path(settings: Settings) -> str:
    """Where the PW hashes are (``hj212.passwords``, else ``<state_dir>/hj212/passwords.json``)."""
    return settings.hj212.passwords or os.path.join(
        settings.paths.state_dir, "hj212", "passwords.json"
    )


class Hj212Gateway(GatewayServer):
    """One gateway process (see the module doc). ``port`` is the bound port once ``ready`` is set."""

    PROTOCOL = "HJ 212"

    def __init__(
        self,
        settings: Settings,
        *,
        listen: str | None = None,
        clock: Callable[[], int] = wall_clock_ms,
        registry_check_s: float = 2.0,
    ):
        h = settings.hj212
        super().__init__(
            settings, listen=listen, host=h.host, port=h.port, max_pending=h.max_pending,
            clock=clock, registry_check_s=registry_check_s,
        )  # fmt: skip
        self.pm_factor = h.pm_factor
        self.max_bad = h.max_bad_frames
        self.idle_s = h.idle_timeout_s
        served = [d for d in self.registry.current() if d.mn and d.gateway == self.identity]
        if not served:
            # the default mqtt.username is the bridge's: running as it would take its session
            raise CitywatchError(
                f"no HJ 212 monitor of {settings.paths.registry} names gateway {self.identity!r} "
                "in its 'gateway' column (with an 'mn'): set mqtt.username to the gateway's id "
                "(and its secret in mqtt.password or mqtt.password_file)"
            )
        self.passwords = PasswordWatcher(
            passwords_path(settings), check_interval_s=registry_check_s
        )
        self._by_mn: tuple[Registry | None, dict[str, Device]] = (None, {})

    def monitor(self, mn: str) -> Device | None:
        """The registry's monitor with this MN behind this gateway, None when there is none."""
        reg = self.registry.current()
        if self._by_mn[0] is not reg:
            self._by_mn = (
                reg,
                {d.mn: d for d in reg if d.mn and d.gateway == self.identity},
            )
        return self._by_mn[1].get(mn)

    def connection(self, writer: asyncio.StreamWriter, peer: str) -> _Connection:
        return _Connection(self, writer, peer)


class _Connection(Connection):
    """One monitor's TCP connection: frames in order, replies after the broker's PUBACK."""

    BAD_CREDENTIALS = "hj212_bad_pw"
    TOO_MANY = "hj212_too_many_errors"
    UNIT = "frames"
    gw: Hj212Gateway

    async def serve(self, reader: asyncio.StreamReader) -> None:
        """Frames are CRLF-delimited; at most one frame's bytes are buffered.

        A line longer than any frame is one bad frame (``hj212_length``, its
        first bytes kept), discarded as it arrives; a stream of more than
        ``max_bad_frames`` frames' worth of bytes without a CRLF is closed.
        """
        buf = bytearray()
        junk_head: bytes | None = None
        junk = 0
        while True:
            end = buf.find(b"\r\n")
            if end >= 0:
                raw = bytes(buf[: end + 2])
                del buf[: end + 2]
                if junk_head is not None:
                    ok = await self.bad(
                        "hj212_length",
                        f"a line of {junk + len(raw)} bytes: no CRLF within {MAX_FRAME} bytes "
                        "(an HJ 212 frame is at most that long)",
                        junk_head, None,
                    )  # fmt: skip
                    junk_head, junk = None, 0
                    if not ok:
                        return
                    continue
                self.gw.stats.frames += 1
                if not await self.frame(raw):
                    return
                continue
            if len(buf) > MAX_FRAME:
                if junk_head is None:
                    junk_head = bytes(buf)
                junk += len(buf) - 1
                del buf[:-1]  # keep a last b"\r": the CRLF may be split across reads
                if junk > self.gw.max_bad * MAX_FRAME:
                    await self.bad(
                        "hj212_length", f"{junk} bytes without a CRLF; the connection is closed",
                        junk_head, None,
                    )  # fmt: skip
                    self.gw.stats.closed_for_errors += 1
                    return
            try:
                chunk = await asyncio.wait_for(reader.read(4096), self.gw.idle_s)
            except TimeoutError:
                log.info(
                    "HJ 212 connection from %s idle for %d s, closed", self.peer, self.gw.idle_s
                )
                return
            if not chunk:
                if buf.strip() or junk_head is not None:
                    await self.bad(
                        "hj212_framing", "the connection ended inside a frame",
                        junk_head or bytes(buf), None,
                    )  # fmt: skip
                return
            buf += chunk

    async def frame(self, raw: bytes) -> bool:
        """Handle one frame; False when the connection is to be closed."""
        try:
            frame = decode(raw)
        except FrameError as exc:
            if exc.qn_rtn and exc.header.get("MN"):
                self.reply(request_reply(exc.header, exc.qn_rtn))
            return await self.bad(exc.code, str(exc), raw, None)
        device = self.gw.monitor(frame.mn)
        if device is None:
            self.reply(request_reply(frame, QN_BAD_MN))
            return await self.bad(
                "hj212_unknown_mn",
                f"MN {frame.mn} is not an HJ 212 monitor behind gateway {self.gw.identity} in the "
                "registry (its 'mn' and 'gateway' columns)",
                raw, None,
            )  # fmt: skip
        if not self.gw.passwords.check(frame.mn, frame.pw):
            self.reply(request_reply(frame, QN_BAD_PW))
            return await self.bad(
                "hj212_bad_pw",
                f"the PW of MN {frame.mn} is not the one issued (citywatch gateway hj212-passwords)",
                raw, device.device_id,
            )  # fmt: skip
        if frame.cn not in DATA_CNS:
            self.reply(request_reply(frame, QN_BAD_CN))
            return await self.bad(
                "hj212_unknown_cn",
                f"CN={frame.cn} is not served; this gateway takes {', '.join(DATA_CNS)} (docs/gateways.md)",
                raw, device.device_id,
            )  # fmt: skip
        if frame.pnum is not None and frame.pnum > 1:
            self.reply(request_reply(frame, QN_UNKNOWN))
            return await self.bad(
                "hj212_syntax", f"a split record (PNUM={frame.pnum}) is not supported; send unsplit frames",
                raw, device.device_id,
            )  # fmt: skip
        try:
            ts, fields = reading_fields(frame, self.gw.pm_factor)
        except ValueError as exc:
            self.reply(request_reply(frame, QN_UNKNOWN))
            return await self.bad("hj212_syntax", f"CP: {exc}", raw, device.device_id)
        self.bad_in_a_row = 0
        if "pm10" not in fields and "pm10_unjudged" in fields:
            # received well, so answered; not a measurement of the air, so not a reading
            fut = await self.gw.dead_letter(
                "hj212_unjudged",
                f"PM10 (a34002) flagged {fields.get('pm10_flag')}: not judged; kept here",
                raw, device.device_id, self.peer,
            )  # fmt: skip
        else:
            payload = orjson.dumps({"ts": ts, **fields, "mn": frame.mn})
            topic = telemetry_topic(device.district, device.kind, device.device_id)
            fut = await self.gw.publish(topic, payload)
            fut.add_done_callback(self.count_reading)
        await self.after(fut, frame)
        return True

    async def after(self, fut: asyncio.Future[None], frame: Frame) -> None:
        """Reply 9014 once the broker has the record (when the Flag asks); bounded per connection."""

        def answer(f: asyncio.Future[Any]) -> None:
            if not f.cancelled() and f.exception() is None and frame.wants_reply:
                self.reply(data_reply(frame))

        await self.hold(fut, answer)
