"""JT/T 808-2013 (道路运输车辆卫星定位系统 终端通讯协议及数据格式), with 2019 headers: the codec.

A muck truck's terminal reports to the platform over TCP in JT/T 808, binary,
not in citywatch's MQTT JSON. One message on the wire (the standard's 4.4)::

    0x7e <header> <body> <check code> 0x7e

Between the two 0x7e flags, 0x7e is sent as 0x7d 0x02 and 0x7d as 0x7d 0x01
(4.4.1); the check code is the XOR of every header and body byte, unescaped
(4.4.4). The header (4.4.3): message id (WORD), properties (WORD: body length
bits 0-9, encryption bits 10-12, subpackage bit 13, 2019's version flag bit 14),
2019 only: protocol version (BYTE); the terminal's phone number (BCD[6], 2019:
BCD[10]), the message serial (WORD), and with the subpackage bit the packet
count and number (WORD, WORD). Multi-byte integers are big-endian.

``unescape``/``decode`` check everything (framing, escapes, the check code,
the length, the header) and raise ``FrameError`` with a ``code`` (the
dead-letter reason, ``CODES``) and, when the header could be read, the
0x8001 result (``RESULT_*``) the gateway answers with. ``location_fields``
turns a 0x0200 body into the vehicle payload of docs/contracts.md,
"Vehicles"; what the status bits and vendor items mean is data
(``STATUS_FLAGS``, ``ITEMS``), the city's vendors' mapping documented in
docs/gateways.md. The frames of the standard's examples are in
``tests/ingest/test_jt808.py``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = [
    "CODES",
    "ITEMS",
    "MAX_BODY",
    "MAX_WIRE",
    "MSG_NAMES",
    "STATUS_FLAGS",
    "Frame",
    "FrameError",
    "auth_code_of",
    "bcc",
    "decode",
    "encode",
    "escape",
    "general_reply",
    "location_fields",
    "locations_of_batch",
    "phone_key",
    "registration_reply",
    "unescape",
]

FLAG = 0x7E
ESC = 0x7D
MAX_BODY = 1023
"""Bits 0-9 of the properties: a body is at most 1023 bytes."""
MAX_HEADER = 2 + 2 + 1 + 10 + 2 + 4
"""A 2019 header with the subpackage fields."""
MAX_WIRE = 2 * (MAX_HEADER + MAX_BODY + 1) + 2
"""The longest message on the wire: every byte escaped, and the two flags."""

# Message ids (the standard's table 3), the ones this gateway serves.
T_GENERAL_REPLY = 0x0001
T_HEARTBEAT = 0x0002
T_LOGOUT = 0x0003
T_REGISTER = 0x0100
T_AUTH = 0x0102
T_LOCATION = 0x0200
T_BATCH = 0x0704
P_GENERAL_REPLY = 0x8001
P_REGISTER_REPLY = 0x8100
MSG_NAMES = {
    T_GENERAL_REPLY: "terminal general reply (终端通用应答)",
    T_HEARTBEAT: "heartbeat (终端心跳)",
    T_LOGOUT: "logout (终端注销)",
    T_REGISTER: "registration (终端注册)",
    T_AUTH: "authentication (终端鉴权)",
    T_LOCATION: "location report (位置信息汇报)",
    T_BATCH: "batch location upload (定位数据批量上传)",
    P_GENERAL_REPLY: "platform general reply (平台通用应答)",
    P_REGISTER_REPLY: "registration reply (终端注册应答)",
}

# 0x8001 results (8.2): 0 success/acknowledged, 1 failure, 2 message wrong, 3 not supported.
RESULT_OK = 0
RESULT_FAILURE = 1
RESULT_WRONG = 2
RESULT_UNSUPPORTED = 3
# 0x8100 results (8.6): 0 success, 1 vehicle registered, 2 no such vehicle, 3 terminal
# registered, 4 no such terminal in the database.
REGISTER_OK = 0
REGISTER_NO_TERMINAL = 4

CODES = {
    "jt808_framing": "the bytes are not a JT/T 808 message (no 0x7e flags, too short for a header, the connection ending inside a message)",
    "jt808_escape": "0x7d followed by neither 0x01 nor 0x02 (4.4.1's escapes)",
    "jt808_bcc": "the check code (XOR of header and body) does not match",
    "jt808_length": "the body length of the properties disagrees with the message, or a message longer than any JT/T 808 message",
    "jt808_syntax": "a body malformed for its message id (too short, a BCD time that is no time, an additional item running past the body)",
    "jt808_unsupported": "a subpackaged or encrypted message (docs/gateways.md lists what is served)",
    "jt808_unknown_id": "a message id this gateway does not serve",
    "jt808_unknown_terminal": "the phone number is not a vehicle terminal behind this gateway in the registry",
    "jt808_bad_auth": "the authentication code is not the one issued at registration",
    "jt808_unauthenticated": "a report from a connection that has not authenticated (0x0102) first",
    "jt808_too_many_errors": "the connection was closed after too many bad messages in a row",
}
"""Dead-letter reasons of the JT/T 808 gateway (docs/contracts.md, "Gateway dead letters")."""

STATUS_FLAGS: dict[str, tuple[int, bool]] = {
    "acc_on": (0, True),
    "located": (1, True),
    "cover_closed": (23, False),
    "body_lifted": (22, True),
}
"""citywatch field -> (status bit, the field is true when the bit is set).

Bits 0 (ACC on) and 1 (positioned) are the standard's (table 24). The muck-truck
bits are not: JT/T 808-2013 leaves 22-31 reserved, and the city's vendors (the
渣土车 terminals of Zhengzhou's approved list) carry 举升 (body lifted) in bit 22
and 篷布/顶盖未密闭 (cover open) in bit 23. Change these two rows for another vendor's
mapping (docs/gateways.md)."""
SOUTH_BIT, WEST_BIT = 2, 3
LOAD_STATE_BITS = 8
"""Bits 8-9 of the status (2013): 00 empty, 01 half load, 11 full (10 reserved)."""
LOAD_STATES = {0: "empty", 1: "half", 3: "full"}

ITEMS: dict[int, tuple[str, int, float]] = {
    0x01: ("mileage_km", 4, 0.1),
    0x02: ("fuel_l", 2, 0.1),
    0x03: ("tacho_speed_kmh", 2, 0.1),
    0x30: ("signal_strength", 1, 1.0),
    0x31: ("satellites", 1, 1.0),
    0xE1: ("load_kg", 4, 1.0),
}
"""Additional item id (table 27) -> (citywatch field, value length in bytes, scale).

0x01 mileage (1/10 km), 0x02 fuel (1/10 L), 0x03 the tachograph's speed (1/10 km/h),
0x30/0x31 (2019) signal strength and satellites in view are the standard's. 0xE1 is
the city's vendors' load sensor (载重, DWORD kg) in the range the standard leaves to
vendors (0xE0-0xFF). An item of another id is kept as ``jt808_item_<hex id>`` (its
hex bytes); an item of a known id with another length is a syntax error."""

_GMT8 = timezone(timedelta(hours=8))
_HEAD = struct.Struct(">HH")
_LOCATION = struct.Struct(">IIIIHHH6s")


class FrameError(ValueError):
    """A message that cannot be taken: ``code`` (``CODES``), and what of its header could be read."""

    def __init__(
        self, code: str, message: str, header: Frame | None = None, result: int | None = None
    ):
        super().__init__(message)
        self.code = code
        self.header = header
        """The header when it could be read (the reply's serial and id, the dead letter's phone)."""
        self.result = result
        """The 0x8001 result to answer with; None: no answer (nothing to address it to)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One checked message: its header and its body (unescaped)."""

    msg_id: int
    props: int
    phone: str
    """The BCD digits as sent (12 in 2013, 20 in 2019); ``phone_key`` compares them."""
    serial: int
    body: bytes
    version: int | None = None
    """2019's protocol version byte; None for a 2013 header."""
    packets: tuple[int, int] | None = None

    @property
    def encrypted(self) -> bool:
        return bool(self.props & 0x1C00)

    @property
    def split(self) -> bool:
        return bool(self.props & 0x2000)


def bcc(data: bytes | bytearray) -> int:
    """The check code (4.4.4): the XOR of every byte."""
    out = 0
    for b in data:
        out ^= b
    return out


def escape(data: bytes) -> bytes:
    """0x7d -> 0x7d 0x01, then 0x7e -> 0x7d 0x02 (4.4.1)."""
    return data.replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02")


def unescape(wire: bytes) -> bytes:
    """The bytes between the flags, unescaped; ``FrameError`` (``jt808_escape``) on a bad escape."""
    if b"\x7d" not in wire:
        return wire
    out = bytearray()
    i, n = 0, len(wire)
    while i < n:
        j = wire.find(b"\x7d", i)
        if j < 0:
            out += wire[i:]
            break
        out += wire[i:j]
        nxt = wire[j + 1] if j + 1 < n else None
        if nxt == 0x01:
            out.append(ESC)
        elif nxt == 0x02:
            out.append(FLAG)
        else:
            what = "the end" if nxt is None else f"{nxt:#04x}"
            raise FrameError(
                "jt808_escape", f"0x7d at byte {j} followed by {what}, not 0x01 or 0x02"
            )
        i = j + 2
    return bytes(out)


def _bcd(data: bytes) -> str | None:
    text = data.hex()
    return text if text.isdigit() else None


def _to_bcd(digits: str, n: int) -> bytes:
    if not digits.isdigit() or len(digits) > 2 * n:
        raise ValueError(f"{digits!r}: expected at most {2 * n} digits")
    return bytes.fromhex(digits.rjust(2 * n, "0"))


def phone_key(phone: str) -> str:
    """A phone number as compared: without leading zeros (2013's BCD[6] and 2019's BCD[10] agree)."""
    return phone.lstrip("0") or "0"


def encode(
    msg_id: int,
    phone: str,
    serial: int,
    body: bytes = b"",
    *,
    version: int | None = None,
    props_extra: int = 0,
) -> bytes:
    """The wire bytes of one message (flags, escapes, check code); ``version`` makes a 2019 header."""
    if len(body) > MAX_BODY:
        raise ValueError(f"a body of {len(body)} bytes; JT/T 808 allows at most {MAX_BODY}")
    props = len(body) | props_extra
    if version is None:
        head = _HEAD.pack(msg_id, props) + _to_bcd(phone, 6)
    else:
        head = _HEAD.pack(msg_id, props | 0x4000) + bytes([version]) + _to_bcd(phone, 10)
    data = head + struct.pack(">H", serial & 0xFFFF) + body
    return b"\x7e" + escape(data + bytes([bcc(data)])) + b"\x7e"


def decode(wire: bytes) -> Frame:
    """Check the bytes between two flags (without them) and return the message.

    Order: escapes, size, check code, header, length. A message whose check
    code fails is still read as far as its header, so the reply (0x8001 result
    2) can name it.
    """
    data = unescape(wire)
    if len(data) < 13:
        raise FrameError(
            "jt808_framing",
            f"{len(data)} bytes between the flags; a header and a check code take at least 13",
        )
    if len(data) > MAX_HEADER + MAX_BODY + 1:
        raise FrameError(
            "jt808_length",
            f"{len(data)} bytes between the flags; a JT/T 808 message takes at most {MAX_HEADER + MAX_BODY + 1}",
        )
    msg_id, props = _HEAD.unpack_from(data)
    header = _header(data, msg_id, props)
    if header is None:
        raise FrameError("jt808_framing", "the header's phone number is not BCD digits")
    frame, start = header
    got, want = data[-1], bcc(data[:-1])
    if got != want:
        raise FrameError(
            "jt808_bcc",
            f"check code {got:#04x} in the message, {want:#04x} computed",
            frame,
            RESULT_WRONG,
        )
    size = props & 0x3FF
    body = data[start:-1]
    if len(body) != size:
        raise FrameError(
            "jt808_length",
            f"the properties say a body of {size} bytes, the message has {len(body)}",
            frame,
            RESULT_WRONG,
        )
    return Frame(
        frame.msg_id, props, frame.phone, frame.serial, bytes(body), frame.version, frame.packets
    )


def _header(data: bytes, msg_id: int, props: int) -> tuple[Frame, int] | None:
    if props & 0x4000:  # 2019: version byte, BCD[10]
        if len(data) < 2 + 2 + 1 + 10 + 2 + 1:
            return None
        version, phone, at = data[4], _bcd(data[5:15]), 15
    else:
        version, phone, at = None, _bcd(data[4:10]), 10
    if phone is None:
        return None
    serial = int.from_bytes(data[at : at + 2], "big")
    at += 2
    packets = None
    if props & 0x2000:
        if len(data) < at + 5:
            return None
        packets = (
            int.from_bytes(data[at : at + 2], "big"),
            int.from_bytes(data[at + 2 : at + 4], "big"),
        )
        at += 4
    return Frame(msg_id, props, phone, serial, b"", version, packets), at


# ------------------------------------------------------------------ replies


def general_reply(frame: Frame, result: int, serial: int) -> bytes:
    """0x8001 (平台通用应答): the request's serial and id, and the result (0 ok, 1 failure, 2 wrong, 3 unsupported)."""
    body = struct.pack(">HHB", frame.serial, frame.msg_id, result)
    return encode(P_GENERAL_REPLY, frame.phone, serial, body, version=frame.version)


def registration_reply(frame: Frame, result: int, serial: int, auth_code: str = "") -> bytes:
    """0x8100 (终端注册应答): the request's serial, the result and, on success, the authentication code."""
    body = struct.pack(">HB", frame.serial, result)
    if result == REGISTER_OK:
        body += auth_code.encode("ascii")
    return encode(P_REGISTER_REPLY, frame.phone, serial, body, version=frame.version)


# ------------------------------------------------------------------ bodies


def auth_code_of(frame: Frame) -> str:
    """The authentication code of a 0x0102 body (2013: the whole body; 2019: a length byte first)."""
    body = frame.body
    if frame.version is not None:
        if not body or body[0] > len(body) - 1:
            raise ValueError("a 2019 authentication body begins with the code's length")
        body = body[1 : 1 + body[0]]
    try:
        return body.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("the authentication code is not ASCII") from None


def location_fields(body: bytes) -> tuple[int, dict[str, Any]]:
    """(fix time ms, vehicle payload fields) of a 0x0200 body; ``ValueError`` names what is wrong."""
    if len(body) < _LOCATION.size:
        raise ValueError(
            f"a location body of {len(body)} bytes; its basic part takes {_LOCATION.size}"
        )
    alarm, status, lat, lon, alt, speed, heading, when = _LOCATION.unpack_from(body)
    ts = bcd_time_ms(when)
    south = status >> SOUTH_BIT & 1
    west = status >> WEST_BIT & 1
    out: dict[str, Any] = {
        "lat": -lat / 1e6 if south else lat / 1e6,
        "lon": -lon / 1e6 if west else lon / 1e6,
        "altitude_m": alt,
        "speed_kmh": speed / 10,
        "heading_deg": heading,
        "alarm": alarm,
        "status": status,
    }
    for name, (bit, when_set) in STATUS_FLAGS.items():
        out[name] = bool(status >> bit & 1) == when_set
    state = LOAD_STATES.get(status >> LOAD_STATE_BITS & 3)
    if state is not None:
        out["load_state"] = state
    at = _LOCATION.size
    while at < len(body):
        if at + 2 > len(body):
            raise ValueError(f"an additional item's header at byte {at} runs past the body")
        item, size = body[at], body[at + 1]
        value = body[at + 2 : at + 2 + size]
        if len(value) != size:
            raise ValueError(f"additional item {item:#04x} of {size} bytes runs past the body")
        known = ITEMS.get(item)
        if known is None:
            out[f"jt808_item_{item:02x}"] = value.hex()
        else:
            name, want, scale = known
            if size != want:
                raise ValueError(
                    f"additional item {item:#04x} ({name}) of {size} bytes; it takes {want}"
                )
            n = int.from_bytes(value, "big")
            out[name] = n if scale == 1.0 else round(n * scale, 6)
        at += 2 + size
    return ts, out


def locations_of_batch(body: bytes) -> tuple[int, list[bytes]]:
    """(type: 0 normal, 1 blind-area 补报; the location bodies) of a 0x0704 body."""
    if len(body) < 3:
        raise ValueError("a batch body begins with the count (WORD) and the type (BYTE)")
    count, kind = struct.unpack_from(">HB", body)
    out, at = [], 3
    for k in range(count):
        if at + 2 > len(body):
            raise ValueError(f"the batch says {count} locations, the body ends after {k}")
        size = int.from_bytes(body[at : at + 2], "big")
        item = body[at + 2 : at + 2 + size]
        if len(item) != size:
            raise ValueError(f"location {k + 1} of the batch runs past the body")
        out.append(item)
        at += 2 + size
    if at != len(body):
        raise ValueError(f"{len(body) - at} bytes after the batch's {count} locations")
    return kind, out


def bcd_time_ms(raw: bytes) -> int:
    """BCD[6] ``YYMMDDhhmmss`` in GMT+8 (the standard's time) as epoch ms."""
    text = raw.hex()
    if not text.isdigit():
        raise ValueError(f"time {text} is not BCD digits YYMMDDhhmmss")
    try:
        dt = datetime(2000 + int(text[:2]), int(text[2:4]), int(text[4:6]), int(text[6:8]),
                      int(text[8:10]), int(text[10:12]), tzinfo=_GMT8)  # fmt: skip
    except ValueError as exc:
        raise ValueError(f"time {text}: {exc}") from None
    return int(dt.timestamp()) * 1000


def bcd_time(ms: int) -> bytes:
    """The BCD[6] GMT+8 time of epoch ms (what a terminal sends)."""
    return bytes.fromhex(datetime.fromtimestamp(ms / 1000, _GMT8).strftime("%y%m%d%H%M%S"))
