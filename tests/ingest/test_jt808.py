"""The JT/T 808 codec: published frames with their check codes, round trips, and every way a message is wrong."""

from __future__ import annotations

import struct

import pytest

from ingest.jt808 import (
    CODES,
    ITEMS,
    STATUS_FLAGS,
    T_AUTH,
    T_LOCATION,
    FrameError,
    auth_code_of,
    bcc,
    decode,
    encode,
    escape,
    general_reply,
    location_fields,
    locations_of_batch,
    phone_key,
    registration_reply,
    unescape,
)
from sim.jt808 import location_body, location_message, register_message

# Frames published with their decoded fields by the xtream-codec JT/T 808 library's codec
# examples (github.com/makeclan/xtream-codec, debug UI's codec-utils.ts); each ends with its BCC.
LOCATION_2019 = bytes.fromhex(
    "7e02004026010000000001391234432900000000006f0000001601dc9a0707456246007b0042000325012922"
    "33440202006401040000000c417e"
)
BATCH_2019 = bytes.fromhex(
    "7e0704403f01000000000139123443290000000200001c000000010000000101d907f2073d336c029a002100"
    "59241029213903001c000000010000000101d907f3073d336d03090043005a241029213903f87e"
)
REPLY_8001_2019 = bytes.fromhex("7e8001400501000000000139123443290000006f020000dc7e")
REPLY_8100_2019 = bytes.fromhex(
    "7e8100400d01000000000139123443290000006f006f6b2e2e6f6b2e2e6f6bd27e"
)
FRAME_8003_2013 = bytes.fromhex("7e800300090139123443230000006f030002000300049d7e")
PHONE = "013912345678"
TS = 1_785_000_000_000


def test_published_location_report_decodes_to_its_published_fields() -> None:
    frame = decode(LOCATION_2019[1:-1])
    assert (frame.msg_id, frame.version, frame.phone, frame.serial) == (
        0x0200, 1, "00000000013912344329", 0
    )  # fmt: skip
    assert bcc(unescape(LOCATION_2019[1:-2])) == 0x41
    ts, fields = location_fields(frame.body)
    assert ts == 1738161224000  # 2025-01-29 22:33:44 GMT+8
    assert fields["alarm"] == 111 and fields["status"] == 22
    # status 22 = bits 1, 2, 4: positioned, south latitude (bit 2), so the latitude is negative
    assert fields["lat"] == -31.234567 and fields["lon"] == 121.987654
    assert (fields["altitude_m"], fields["speed_kmh"], fields["heading_deg"]) == (123, 6.6, 3)
    assert fields["located"] is True and fields["acc_on"] is False
    assert fields["mileage_km"] == 1.2 and fields["fuel_l"] == 10.0


def test_published_batch_holds_its_two_locations() -> None:
    frame = decode(BATCH_2019[1:-1])
    kind, bodies = locations_of_batch(frame.body)
    assert kind == 0 and len(bodies) == 2
    first, second = (location_fields(b)[1] for b in bodies)
    assert (first["lat"], first["lon"], first["altitude_m"], first["speed_kmh"]) == (
        31.000562, 121.451372, 666, 3.3
    )  # fmt: skip
    assert (second["lat"], second["heading_deg"]) == (31.000563, 90)


def test_platform_replies_are_byte_for_byte_the_published_ones() -> None:
    request = decode(encode(0x0200, "00000000013912344329", 111, b"", version=1)[1:-1])
    assert general_reply(request, 0, serial=0) == REPLY_8001_2019
    register = decode(encode(0x0100, "00000000013912344329", 111, b"", version=1)[1:-1])
    assert registration_reply(register, 0, 0, "ok..ok..ok") == REPLY_8100_2019


def test_a_2013_header_reads_twelve_digits() -> None:
    frame = decode(FRAME_8003_2013[1:-1])
    assert (frame.msg_id, frame.version, frame.phone, frame.serial) == (
        0x8003, None, "013912344323", 0
    )  # fmt: skip
    assert phone_key(frame.phone) == phone_key("00000000013912344323")


def test_escapes_round_trip_flag_and_escape_bytes() -> None:
    body = bytes([0x7E, 0x7D, 0x01, 0x02, 0x7E])
    wire = encode(T_AUTH, PHONE, 0x7E7D, body)
    inner = wire[1:-1]
    assert b"\x7e" not in inner
    assert escape(b"\x7e\x7d") == b"\x7d\x02\x7d\x01"
    frame = decode(inner)
    assert frame.body == body and frame.serial == 0x7E7D


def test_simulated_report_round_trips_to_the_payload() -> None:
    payload = {
        "ts": TS, "lat": 34.803012, "lon": 113.695001, "speed_kmh": 35.5, "heading_deg": 91,
        "acc_on": True, "located": True, "cover_closed": False, "body_lifted": True,
        "load_kg": 18_500, "mileage_km": 12345.6, "alarm": 0,
    }  # fmt: skip
    frame = decode(location_message(payload, PHONE, 7)[1:-1])
    ts, fields = location_fields(frame.body)
    assert ts == TS
    for name in ("lat", "lon", "speed_kmh", "heading_deg", "acc_on", "located",
                 "cover_closed", "body_lifted", "load_kg", "mileage_km"):  # fmt: skip
        assert fields[name] == payload[name], name
    assert fields["load_state"] == "full"


@pytest.mark.parametrize("name", sorted(STATUS_FLAGS))
def test_each_status_flag_reads_its_own_bit(name: str) -> None:
    bit, when_set = STATUS_FLAGS[name]
    base = struct.pack(">IIIIHHH", 0, 1 << bit, 34_000_000, 113_000_000, 0, 0, 0)
    _, fields = location_fields(base + bytes.fromhex("260101120000"))
    assert fields[name] is when_set
    assert all(fields[o] is not w for o, (b, w) in STATUS_FLAGS.items() if b != bit)


def test_unknown_additional_items_are_kept_as_hex() -> None:
    body = location_body({"ts": TS, "lat": 34.8, "lon": 113.7}) + bytes([0xEE, 2, 0xAB, 0xCD])
    _, fields = location_fields(body)
    assert fields["jt808_item_ee"] == "abcd"
    assert 0xEE not in ITEMS


def _raises(wire: bytes, code: str) -> FrameError:
    with pytest.raises(FrameError) as info:
        decode(wire)
    assert info.value.code == code and code in CODES
    return info.value


def test_a_wrong_check_code_is_refused_with_the_header_read() -> None:
    inner = bytearray(unescape(LOCATION_2019[1:-1]))
    inner[-1] ^= 0x01
    err = _raises(escape(bytes(inner)), "jt808_bcc")
    assert err.header is not None and err.header.serial == 0 and err.result == 2


def test_a_bad_escape_is_refused() -> None:
    _raises(LOCATION_2019[1:20] + b"\x7d\x03" + LOCATION_2019[20:-1], "jt808_escape")
    _raises(LOCATION_2019[1:-1] + b"\x7d", "jt808_escape")


def test_a_body_length_that_disagrees_is_refused() -> None:
    data = bytearray(unescape(encode(T_LOCATION, PHONE, 1, b"\x00" * 28)[1:-1]))
    data[3] = 27  # the properties say 27, the body has 28
    data[-1] = bcc(data[:-1])
    err = _raises(escape(bytes(data)), "jt808_length")
    assert err.result == 2


def test_too_short_and_non_bcd_headers_are_framing_errors() -> None:
    err = _raises(b"\x00\x02\x00\x00\x01", "jt808_framing")
    assert err.header is None and err.result is None
    data = bytearray(unescape(encode(0x0002, PHONE, 1)[1:-1]))
    data[4] = 0xAB
    data[-1] = bcc(data[:-1])
    _raises(escape(bytes(data)), "jt808_framing")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"\x00" * 27, "basic part takes 28"),
        (
            location_body({"ts": TS, "lat": 1, "lon": 1})[:22] + bytes.fromhex("261332120000"),
            "time",
        ),
        (location_body({"ts": TS, "lat": 1, "lon": 1}) + b"\x01\x04\x00\x00", "runs past"),
        (location_body({"ts": TS, "lat": 1, "lon": 1}) + b"\x01\x02\x00\x00", "it takes 4"),
        (location_body({"ts": TS, "lat": 1, "lon": 1}) + b"\x01", "runs past"),
    ],
)
def test_malformed_location_bodies_name_what_is_wrong(body: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        location_fields(body)


def test_a_batch_that_miscounts_is_refused() -> None:
    one = location_body({"ts": TS, "lat": 1, "lon": 1})
    with pytest.raises(ValueError, match="ends after 1"):
        locations_of_batch(struct.pack(">HBH", 2, 0, len(one)) + one)
    with pytest.raises(ValueError, match="after the batch"):
        locations_of_batch(struct.pack(">HBH", 1, 0, len(one)) + one + b"\x00")


def test_authentication_codes_of_2013_and_2019() -> None:
    assert auth_code_of(decode(encode(T_AUTH, PHONE, 1, b"abc123")[1:-1])) == "abc123"
    body = b"\x06abc123" + b"8" * 15 + b"v1".ljust(20, b"\x00")
    assert auth_code_of(decode(encode(T_AUTH, PHONE, 1, body, version=1)[1:-1])) == "abc123"


def test_simulated_registration_carries_the_plate_in_gbk() -> None:
    frame = decode(register_message(PHONE, 1, "豫A12345")[1:-1])
    assert frame.msg_id == 0x0100 and frame.body.endswith("豫A12345".encode("gbk"))
