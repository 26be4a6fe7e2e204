"""The JT/T 808 gateway: truck terminals over TCP in, citywatch vehicle readings over MQTT out.

``await Jt808Gateway(settings).run(stop)`` serves until ``stop`` is set
(``citywatch gateway jt808``). docs/gateways.md is the protocol subset, the
status-bit mapping and the field mapping; ``ingest.jt808`` is the codec. The
sibling of ``ingest.gateways.hj212``, built the same way:

* **Many long-lived connections, one asyncio loop.** A terminal keeps one
  TCP connection open, heartbeats (0x0002) and reports its position every few
  seconds. Messages are 0x7e-delimited; at most one message's bytes (2,094 on
  the wire) are buffered per connection.
* **Authenticated per connection, as JT/T 808 does.** The header's phone
  number must be a registry row of kind ``vehicle`` whose ``phone`` column is
  that number and whose ``gateway`` column names this gateway (its broker
  identity, ``mqtt.username``). Registration (0x0100) issues a fresh
  authentication code (answered 0x8100, kept hashed: ``registry.jt808_codes``);
  authentication (0x0102) with that code opens the connection for that phone;
  everything else before it is refused. The registry and the codes are
  reloaded when their files change.
* **Published with the device's identity.** A location report (0x0200, and
  each of a batch 0x0704) becomes the vehicle payload of ``contract.kinds`` on
  the terminal's own topic ``city/<district>/vehicle/<device>/telemetry``, QoS
  1, through one MQTT connection as the gateway identity
  (docs/decisions/011-gateways-publish-over-mqtt.md); the bridge validates it
  like any device's message.
* **Answered as the standard asks, after the broker has it.** A report's
  0x8001 (result 0) is written only after the broker's PUBACK: a terminal that
  gets no reply resends (and keeps it for 补报), so a gateway that dies with a
  report in flight loses nothing. Refusals are 0x8001 with result 1 (failure),
  2 (message wrong) or 3 (not supported), and 0x8100 result 4 for an unknown
  terminal's registration.
* **Bad messages are dead letters, never silence.** Each goes with its
  reason (``ingest.jt808.CODES``) and raw bytes to
  ``city/gateway/<id>/deadletter``, which the bridge files on
  ``<prefix>.deadletter``. After ``jt808.max_bad_frames`` in a row a
  connection is closed (``jt808_too_many_errors``); the others are not touched.
* **Back-pressure, no unbounded buffer.** The HJ 212 gateway's bound: at most
  ``jt808.max_pending`` publishes wait for PUBACKs (and 32 per connection);
  beyond that the gateway stops reading sockets.
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
from ingest.gateways.report import MAX_RAW
from ingest.gateways.server import (
    Connection,
    GatewayServer,
    wall_clock_ms,
)
from ingest.jt808 import (
    MAX_WIRE,
    MSG_NAMES,
    REGISTER_NO_TERMINAL,
    REGISTER_OK,
    RESULT_FAILURE,
    RESULT_OK,
    RESULT_UNSUPPORTED,
    RESULT_WRONG,
    T_AUTH,
    T_BATCH,
    T_GENERAL_REPLY,
    T_HEARTBEAT,
    T_LOCATION,
    T_LOGOUT,
    T_REGISTER,
    Frame,
    FrameError,
    auth_code_of,
    decode,
    general_reply,
    location_fields,
    locations_of_batch,
    phone_key,
    registration_reply,
)
from registry.devices import Device, Registry
from registry.jt808_codes import AuthCodes

log = logging.getLogger(__name__)

SERVED = (T_REGISTER, T_AUTH, T_HEARTBEAT, T_LOGOUT, T_LOCATION, T_BATCH, T_GENERAL_REPLY)
"""The terminal messages this gateway takes (docs/gateways.md); any other id is answered 3."""


def auth_codes_path(settings: Settings) -> str:
    """Where the code hashes are (``jt808.auth_codes``, else ``<state_dir>/jt808/auth_codes.json``)."""
    return settings.jt808.auth_codes or os.path.join(
        settings.paths.state_dir, "jt808", "auth_codes.json"
    )


class Jt808Gateway(GatewayServer):
    """One gateway process (see the module doc). ``port`` is the bound port once ``ready`` is set."""

    PROTOCOL = "JT/T 808"

    def __init__(
        self,
        settings: Settings,
        *,
        listen: str | None = None,
        clock: Callable[[], int] = wall_clock_ms,
        registry_check_s: float = 2.0,
    ):
        j = settings.jt808
        super().__init__(
            settings, listen=listen, host=j.host, port=j.port, max_pending=j.max_pending,
            clock=clock, registry_check_s=registry_check_s,
        )  # fmt: skip
        self.max_bad = j.max_bad_frames
        self.idle_s = j.idle_timeout_s
        served = [d for d in self.registry.current() if d.phone and d.gateway == self.identity]
        if not served:
            # the default mqtt.username is the bridge's: running as it would take its session
            raise CitywatchError(
                f"no JT/T 808 terminal of {settings.paths.registry} names gateway {self.identity!r} "
                "in its 'gateway' column (with a 'phone'): set mqtt.username to the gateway's id "
                "(and its secret in mqtt.password or mqtt.password_file)"
            )
        self.codes = AuthCodes(auth_codes_path(settings), check_interval_s=registry_check_s)
        self._by_phone: tuple[Registry | None, dict[str, Device]] = (None, {})
        self._serial = 0

    def terminal(self, phone: str) -> Device | None:
        """The registry's vehicle terminal with this phone number behind this gateway, or None."""
        reg = self.registry.current()
        if self._by_phone[0] is not reg:
            self._by_phone = (
                reg,
                {
                    phone_key(d.phone): d
                    for d in reg
                    if d.phone and d.kind == "vehicle" and d.gateway == self.identity
                },
            )
        return self._by_phone[1].get(phone_key(phone))

    def next_serial(self) -> int:
        """The platform's message serial (流水号), one counter for the gateway."""
        self._serial = (self._serial + 1) & 0xFFFF
        return self._serial

    def connection(self, writer: asyncio.StreamWriter, peer: str) -> _Connection:
        return _Connection(self, writer, peer)


class _Connection(Connection):
    """One terminal's TCP connection: messages in order, report replies after the broker's PUBACK."""

    BAD_CREDENTIALS = "jt808_bad_auth"
    TOO_MANY = "jt808_too_many_errors"
    UNIT = "messages"
    gw: Jt808Gateway

    def __init__(self, gateway: Jt808Gateway, writer: asyncio.StreamWriter, peer: str):
        super().__init__(gateway, writer, peer)
        self.phone: str | None = None
        """The phone (``phone_key``) this connection authenticated as; None before 0x0102."""

    async def serve(self, reader: asyncio.StreamReader) -> None:
        """Split the stream at 0x7e; at most one message's bytes are buffered.

        Bytes outside a pair of flags are one bad frame (``jt808_framing``);
        more than ``MAX_WIRE`` bytes without a closing flag are one
        ``jt808_length``, discarded as they arrive up to the next flag; more
        than ``max_bad_frames`` messages' worth of such bytes close the connection.
        """
        buf = bytearray()
        junk_head: bytes | None = None
        junk = 0
        overlong = False
        while True:
            start = buf.find(b"\x7e")
            if start > 0 or (start < 0 and buf):
                cut = start if start > 0 else len(buf)
                if junk_head is None:
                    junk_head = bytes(buf[: min(cut, MAX_RAW)])
                junk += cut
                del buf[:cut]
                if junk > self.gw.max_bad * MAX_WIRE:
                    await self.bad(
                        "jt808_length" if overlong else "jt808_framing",
                        f"{junk} bytes outside 0x7e flags; the connection is closed",
                        junk_head, None,
                    )  # fmt: skip
                    self.gw.stats.closed_for_errors += 1
                    return
            if start >= 0 and junk_head is not None:
                code = "jt808_length" if overlong else "jt808_framing"
                why = (
                    f"{junk} bytes without a closing 0x7e (a JT/T 808 message is at most "
                    f"{MAX_WIRE} on the wire)"
                    if overlong
                    else f"{junk} bytes outside a pair of 0x7e flags"
                )
                ok = await self.bad(code, why, junk_head, None)
                junk_head, junk, overlong = None, 0, False
                if not ok:
                    return
                continue
            if start == 0:
                end = buf.find(b"\x7e", 1)
                if end == 1:  # two flags: the first closed nothing (or a message we dropped)
                    del buf[:1]
                    continue
                if end > 1:
                    raw = bytes(buf[: end + 1])
                    del buf[: end + 1]
                    self.gw.stats.frames += 1
                    if not await self.frame(raw):
                        return
                    continue
                if len(buf) > MAX_WIRE:
                    junk_head, junk, overlong = bytes(buf[:MAX_RAW]), len(buf), True
                    buf.clear()
            try:
                chunk = await asyncio.wait_for(reader.read(4096), self.gw.idle_s)
            except TimeoutError:
                log.info(
                    "JT/T 808 connection from %s idle for %d s, closed", self.peer, self.gw.idle_s
                )
                return
            if not chunk:
                if buf.strip(b"\x7e") or junk_head is not None:  # a lone flag is no message
                    await self.bad(
                        "jt808_framing", "the connection ended inside a message",
                        junk_head or bytes(buf), None,
                    )  # fmt: skip
                return
            buf += chunk

    def _device_of(self, frame: Frame | None) -> str | None:
        if frame is None:
            return None
        device = self.gw.terminal(frame.phone)
        return device.device_id if device is not None else None

    async def frame(self, raw: bytes) -> bool:
        """Handle one message (with its flags); False when the connection is to be closed."""
        try:
            frame = decode(raw[1:-1])
        except FrameError as exc:
            if exc.header is not None and exc.result is not None:
                self.answer(exc.header, exc.result)
            return await self.bad(exc.code, str(exc), raw, self._device_of(exc.header))
        name = MSG_NAMES.get(frame.msg_id, f"message {frame.msg_id:#06x}")
        if frame.split or frame.encrypted:
            self.answer(frame, RESULT_UNSUPPORTED)
            what = "subpackaged" if frame.split else "encrypted"
            return await self.bad(
                "jt808_unsupported",
                f"a {what} {name}; this gateway takes whole, unencrypted messages (docs/gateways.md)",
                raw, self._device_of(frame),
            )  # fmt: skip
        device = self.gw.terminal(frame.phone)
        if device is None:
            if frame.msg_id == T_REGISTER:
                self.reply(registration_reply(frame, REGISTER_NO_TERMINAL, self.gw.next_serial()))
            else:
                self.answer(frame, RESULT_FAILURE)
            return await self.bad(
                "jt808_unknown_terminal",
                f"phone {frame.phone} is not a vehicle terminal behind gateway {self.gw.identity} "
                "in the registry (its 'phone' and 'gateway' columns)",
                raw, None,
            )  # fmt: skip
        key = phone_key(frame.phone)
        if frame.msg_id == T_REGISTER:
            # the store's file is rewritten under a lock: off the loop, so the others go on
            issued = await asyncio.to_thread(self.gw.codes.issue, [frame.phone])
            code = issued[frame.phone]
            self.phone = None  # the code changed: authenticate with the new one
            self.bad_in_a_row = 0
            self.reply(registration_reply(frame, REGISTER_OK, self.gw.next_serial(), code))
            log.info("JT/T 808 terminal %s (%s) registered", device.device_id, self.peer)
            return True
        if frame.msg_id == T_AUTH:
            try:
                code = auth_code_of(frame)
            except ValueError as exc:
                self.answer(frame, RESULT_WRONG)
                return await self.bad("jt808_syntax", f"{name}: {exc}", raw, device.device_id)
            if not self.gw.codes.check(frame.phone, code):
                self.phone = None
                self.answer(frame, RESULT_FAILURE)
                return await self.bad(
                    "jt808_bad_auth",
                    f"the authentication code of phone {frame.phone} is not the one issued at its "
                    "registration (the terminal registers again to get a new one)",
                    raw, device.device_id,
                )  # fmt: skip
            self.phone = key
            self.bad_in_a_row = 0
            self.answer(frame, RESULT_OK)
            return True
        if frame.msg_id not in SERVED:
            self.answer(frame, RESULT_UNSUPPORTED)
            return await self.bad(
                "jt808_unknown_id",
                f"message id {frame.msg_id:#06x} is not served; this gateway takes "
                f"{', '.join(f'{m:#06x}' for m in SERVED)} (docs/gateways.md)",
                raw, device.device_id,
            )  # fmt: skip
        if self.phone != key:
            self.answer(frame, RESULT_FAILURE)
            return await self.bad(
                "jt808_unauthenticated",
                f"a {name} of phone {frame.phone} on a connection that has not authenticated "
                "as it (0x0102 first)",
                raw, device.device_id,
            )  # fmt: skip
        if frame.msg_id in (T_HEARTBEAT, T_GENERAL_REPLY, T_LOGOUT):
            self.bad_in_a_row = 0
            if frame.msg_id == T_LOGOUT:  # 注销: the terminal must register again
                await asyncio.to_thread(self.gw.codes.revoke, [frame.phone])
                self.phone = None
            if frame.msg_id != T_GENERAL_REPLY:  # a reply to a reply would never end
                self.answer(frame, RESULT_OK)
            return True
        try:
            if frame.msg_id == T_LOCATION:
                reports = [location_fields(frame.body)]
            else:
                _kind, bodies = locations_of_batch(frame.body)
                reports = [location_fields(b) for b in bodies]
        except ValueError as exc:
            self.answer(frame, RESULT_WRONG)
            return await self.bad("jt808_syntax", f"{name}: {exc}", raw, device.device_id)
        self.bad_in_a_row = 0
        topic = telemetry_topic(device.district, device.kind, device.device_id)
        futures = []
        for ts, fields in reports:
            payload = orjson.dumps({"ts": ts, **fields, "phone": frame.phone})
            fut = await self.gw.publish(topic, payload)
            fut.add_done_callback(self.count_reading)
            futures.append(fut)
        done: asyncio.Future[Any] = (
            futures[0] if len(futures) == 1 else asyncio.ensure_future(asyncio.gather(*futures))
        )
        await self.after(done, frame)
        return True

    async def after(self, fut: asyncio.Future[Any], frame: Frame) -> None:
        """Reply 0x8001 result 0 once the broker has every report; bounded per connection."""

        def answer(f: asyncio.Future[Any]) -> None:
            if not f.cancelled() and f.exception() is None:
                self.answer(frame, RESULT_OK)

        await self.hold(fut, answer)

    def answer(self, frame: Frame, result: int) -> None:
        """0x8001 to ``frame`` with ``result``."""
        self.reply(general_reply(frame, result, self.gw.next_serial()))
