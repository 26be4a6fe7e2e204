"""parse_message: every bad input with its reason code, and the good cases.

The table reads like the contract (docs/contracts.md, "MQTT"): topic, then payload, then the
code it must be rejected with (or None when it must be accepted).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import orjson
import pytest

import ingest.validate as validate
from contract.reading import Reading
from ingest.gateways.report import report_payload
from ingest.validate import CODES, KIND_SPECS, IngestLimits, Rejection, parse_message, parse_ts
from registry.devices import Device, Registry

NOW = 1_763_800_000_000  # 2025-11-22T08:26:40Z = 16:26:40 Beijing time
MIN = 60_000
HOUR = 3_600_000

DUST = "city/jinshui/dust/DS-JS-001/telemetry"
MANHOLE = "city/jinshui/manhole/MH-JS-0001/telemetry"
LIGHT = "city/zhongyuan/streetlight/SL-ZY-0001/telemetry"
GATEWAY_DL = "city/gateway/gw-1/deadletter"


def _dev(device_id: str, kind: str, district: str) -> Device:
    return Device(device_id, kind, district, "G1", "郑州市市政工程管理处", None, "", None, None,
                  None, None, None)  # fmt: skip


REGISTRY = Registry(
    [
        _dev("DS-JS-001", "dust", "jinshui"),
        _dev("MH-JS-0001", "manhole", "jinshui"),
        _dev("SL-ZY-0001", "streetlight", "zhongyuan"),
        _dev("17", "manhole", "erqi"),
    ],
    path="registry.csv",
)


@pytest.fixture(autouse=True, params=[True, False], ids=["fast", "table"])
def fast_check(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every case runs with the msgspec fast check and with the table loop alone."""
    monkeypatch.setattr(validate, "FAST_CHECK", request.param)


def j(**kw: object) -> bytes:
    return json.dumps(kw, ensure_ascii=False).encode()


def dust(**kw: object) -> bytes:
    return j(ts=NOW, pm10=80, **kw)


def deep(levels: int, ts: int = NOW) -> bytes:
    """A manhole reading with an extra nested ``levels`` deep (the payload itself is level 1)."""
    return b'{"ts":%d,"open":true,"x":%s%s}' % (ts, b"[" * (levels - 1), b"]" * (levels - 1))


def nested(levels: int) -> object:
    """A value nesting ``levels`` objects/arrays deep, alternating."""
    value: object = 1
    for i in range(levels):
        value = [value] if i % 2 else {"k": value}
    return value


ISSUE_12 = deep(254)
"""The 543-byte payload of issue 12 (an extra nested 253 levels below the payload) that once
made orjson.dumps raise in the bridge, forever, on every redelivery."""


BAD = [
    # (id, topic, payload, code)
    ("topic not matching the scheme", "city/jinshui/dust/DS-JS-001", dust(), "bad_topic"),
    ("topic with wildcard", "city/jinshui/dust/+/telemetry", dust(), "bad_topic"),
    ("topic of another tree", "factory/jinshui/dust/DS-JS-001/telemetry", dust(), "bad_topic"),
    ("topic empty segment", "city//dust/DS-JS-001/telemetry", dust(), "bad_topic"),
    ("unknown kind in topic", "city/jinshui/truck/DS-JS-001/telemetry", dust(), "unknown_kind"),
    ("payload over 4 KiB", DUST, dust(note="x" * 4100), "too_large"),
    ("not JSON", DUST, b"pm10=80", "not_json"),
    ("truncated JSON", DUST, b'{"ts": 1763800000000, "pm10": 8', "not_json"),
    ("not UTF-8", DUST, b'{"ts": 1763800000000, "pm10": 80, "x": "\xff"}', "not_json"),
    ("empty payload", DUST, b"", "not_json"),
    ("NaN literal", DUST, b'{"ts": 1763800000000, "pm10": NaN}', "non_finite"),
    ("Infinity literal", DUST, b'{"ts": 1763800000000, "pm10": Infinity}', "non_finite"),
    (
        "-Infinity in an extra",
        DUST,
        b'{"ts": 1763800000000, "pm10": 1, "x": [-Infinity]}',
        "non_finite",
    ),
    ("number overflowing a double", DUST, b'{"ts": 1763800000000, "pm10": 1e400}', "non_finite"),
    (
        "surrogate encoded in UTF-8",
        DUST,
        b'{"ts": 1763800000000, "pm10": 1, "x": "\xed\xa0\x80"}',
        "not_json",
    ),
    (
        "truncated UTF-8 sequence",
        DUST,
        b'{"ts": 1763800000000, "pm10": 1, "x": "\xe4\xb8"}',
        "not_json",
    ),
    ("overlong UTF-8", DUST, b'{"ts": 1763800000000, "pm10": 1, "x": "\xc0\xaf"}', "not_json"),
    (
        "lone surrogate escape",
        DUST,
        b'{"ts": 1763800000000, "pm10": 1, "x": "\\ud800"}',
        "not_json",
    ),
    ("two BOMs", DUST, b"\xef\xbb\xbf\xef\xbb\xbf" + dust(), "not_json"),
    ("UTF-16 BOM", DUST, b"\xff\xfe" + dust(), "not_json"),
    ("BOM then bad UTF-8", DUST, b"\xef\xbb\xbf" + dust(x="?").replace(b"?", b"\xff"), "not_json"),
    (
        "integer overflowing a double",
        DUST,
        b'{"ts": 1763800000000, "pm10": 1%s}' % (b"0" * 400),
        "non_finite",
    ),
    (
        "negative integer overflowing",
        DUST,
        b'{"ts": 1763800000000, "pm10": 1, "x": -%s}' % (b"9" * 309),
        "non_finite",
    ),
    (
        "integer ts overflowing a double",
        DUST,
        b'{"ts": 1%s, "pm10": 1}' % (b"0" * 320),
        "non_finite",
    ),
    ("issue 12: an extra 253 levels below the payload, 543 bytes", MANHOLE, ISSUE_12, "too_deep"),
    ("one level over the bound", DUST, dust(x=nested(16)), "too_deep"),
    ("deeper than orjson parses (1024)", DUST, deep(1500), "too_deep"),
    ("deep and not JSON", DUST, b"[" * 2000, "too_deep"),
    ("deep array, not an object", DUST, b"[" * 20 + b"]" * 20, "too_deep"),
    (
        "deep with NaN inside",
        DUST,
        b'{"ts": 1763800000000, "pm10": 1, "x": %sNaN%s}' % (b"[" * 20, b"]" * 20),
        "too_deep",
    ),
    ("JSON but not an object: array", DUST, b"[1, 2]", "not_object"),
    ("JSON but not an object: number", DUST, b"80", "not_object"),
    ("JSON but not an object: string", DUST, b'"pm10"', "not_object"),
    (
        "duplicate key",
        MANHOLE,
        b'{"ts": 1763800000000, "open": true, "open": false}',
        "duplicate_key",
    ),
    (
        "duplicate key spelt with an escape",
        MANHOLE,
        b'{"ts": 1763800000000, "open": true, "op\\u0065n": false}',
        "duplicate_key",
    ),
    (
        "duplicate ts",
        MANHOLE,
        b'{"ts": 1763800000000, "open": true, "ts": 1763799000000}',
        "duplicate_key",
    ),
    (
        "duplicate key with spaces around the colon",
        MANHOLE,
        b'{ "ts" : 1763800000000 , "open" : true , "open" : false }',
        "duplicate_key",
    ),
    (
        "duplicate key beside an RFC 3339 ts",
        MANHOLE,
        b'{"ts": "2025-11-22T16:26:40+08:00", "open": true, "open": false}',
        "duplicate_key",
    ),
    (
        "duplicate key, ts colons escaped",
        MANHOLE,
        b'{"ts": "2025-11-22T16\\u003a26\\u003a40+08\\u003a00", "open": true, "open": false}',
        "duplicate_key",
    ),
    (
        "duplicate key, ts colons escaped, decoy string",
        MANHOLE,
        b'{"ts": "2025-11-22T16\\u003a26\\u003a40+08\\u003a00", "open": true, "open": false, "n": 1}',
        "duplicate_key",
    ),
    (
        "duplicate key, colon-only ts",
        MANHOLE,
        b'{"ts":"\\u003a","open":true,"open":false}',
        "duplicate_key",
    ),
    (
        "duplicate key in a nested extra",
        DUST,
        b'{"ts": 1763800000000, "pm10": 1, "x": {"a": 1, "a": 2}}',
        "duplicate_key",
    ),
    (
        "duplicate key in an object in an array",
        DUST,
        b'{"ts": 1763800000000, "pm10": 1, "x": [{"a": 1, "b": {"c": 1, "c": 1}}]}',
        "duplicate_key",
    ),
    (
        "duplicate key with a colon in a string",
        MANHOLE,
        b'{"ts": 1763800000000, "open": true, "fw": "a:b", "open": false}',
        "duplicate_key",
    ),
    (
        "duplicate key after a BOM",
        MANHOLE,
        b'\xef\xbb\xbf{"ts": 1763800000000, "open": true, "open": false}',
        "duplicate_key",
    ),
    ("payload names another device", DUST, dust(device_id="DS-JS-002"), "device_mismatch"),
    ("payload 'device' names another", DUST, dust(device="DS-JS-002"), "device_mismatch"),
    ("payload 'id' names another", DUST, dust(id="X"), "device_mismatch"),
    ("unknown device", "city/jinshui/dust/DS-JS-999/telemetry", dust(), "unknown_device"),
    ("registry kind differs", "city/jinshui/dust/MH-JS-0001/telemetry", dust(), "kind_mismatch"),
    (
        "registry district differs",
        "city/erqi/dust/DS-JS-001/telemetry",
        dust(),
        "district_mismatch",
    ),
    ("missing ts", DUST, j(pm10=80), "missing_ts"),
    ("null ts", DUST, j(ts=None, pm10=80), "missing_ts"),
    ("unparseable ts", DUST, j(ts="yesterday", pm10=80), "bad_ts"),
    ("ts without UTC offset", DUST, j(ts="2025-11-22T16:26:40", pm10=80), "bad_ts"),
    ("ts impossible date", DUST, j(ts="2025-02-30T08:00:00Z", pm10=80), "bad_ts"),
    ("ts in seconds", DUST, j(ts=NOW // 1000, pm10=80), "bad_ts"),
    ("ts in microseconds", DUST, j(ts=NOW * 1000, pm10=80), "bad_ts"),
    ("ts fractional ms", DUST, j(ts=NOW + 0.5, pm10=80), "bad_ts"),
    ("ts boolean", DUST, j(ts=True, pm10=80), "bad_ts"),
    ("ts as digit string", DUST, j(ts=str(NOW), pm10=80), "bad_ts"),
    ("future ts", DUST, j(ts=NOW + 5 * MIN + 1, pm10=80), "future_ts"),
    ("future ts via offset", DUST, j(ts="2025-11-22T16:40:00Z", pm10=80), "future_ts"),
    ("too-late ts", DUST, j(ts=NOW - 24 * HOUR - 1, pm10=80), "too_late"),
    ("a string where a number belongs", DUST, j(ts=NOW, pm10="80"), "wrong_type"),
    ("a bool where a number belongs", DUST, j(ts=NOW, pm10=True), "wrong_type"),
    ("a list where a number belongs", DUST, j(ts=NOW, pm10=[80]), "wrong_type"),
    ("0/1 is not a boolean", MANHOLE, j(ts=NOW, open=1), "wrong_type"),
    ('"true" is not a boolean', MANHOLE, j(ts=NOW, open="true"), "wrong_type"),
    ("streetlight on as string", LIGHT, j(ts=NOW, on="on"), "wrong_type"),
    ("negative pm10", DUST, j(ts=NOW, pm10=-1), "out_of_range"),
    ("pm10 sensor error value", DUST, j(ts=NOW, pm10=65535), "out_of_range"),
    ("humidity over 100", DUST, dust(humidity=100.5), "out_of_range"),
    ("wind_dir over 360", DUST, dust(wind_dir=361), "out_of_range"),
    ("temp below -60", DUST, dust(temp_c=-61), "out_of_range"),
    ("tilt over 180", MANHOLE, j(ts=NOW, tilt_deg=181), "out_of_range"),
    ("rssi positive", MANHOLE, j(ts=NOW, open=False, rssi=5), "out_of_range"),
    ("battery over 100", MANHOLE, j(ts=NOW, open=False, battery_pct=101), "out_of_range"),
    ("voltage over 500", LIGHT, j(ts=NOW, voltage_v=501), "out_of_range"),
    ("negative leakage", LIGHT, j(ts=NOW, leakage_ma=-0.1), "out_of_range"),
    ("dust without pm10", DUST, j(ts=NOW, pm25=40), "missing_field"),
    ("dust with null pm10", DUST, j(ts=NOW, pm10=None), "missing_field"),
    ("manhole without open or tilt", MANHOLE, j(ts=NOW, battery_pct=80), "missing_field"),
    ("gateway report not JSON", GATEWAY_DL, b"{not json", "bad_gateway_report"),
    (
        "gateway report of an unknown code",
        GATEWAY_DL,
        j(code="whatever", message="m"),
        "bad_gateway_report",
    ),
    (
        "gateway report with bad base64",
        GATEWAY_DL,
        j(code="hj212_crc", message="m", raw_b64="%%"),
        "bad_gateway_report",
    ),
]


def test_a_gateways_report_becomes_the_dead_letter_it_reports_with_the_frames_bytes() -> None:
    frame = b"##0004abcd0000\r\n"
    report = report_payload(
        "hj212_crc", "CRC 0000 in the frame", frame, NOW, "DS-0001", "10.0.0.9:4001"
    )
    r = parse_message(GATEWAY_DL, report, NOW, None)
    assert isinstance(r, Rejection)
    assert (r.code, r.raw, r.device, r.topic) == ("hj212_crc", frame, "DS-0001", GATEWAY_DL)
    assert "gateway gw-1" in r.message and "10.0.0.9:4001" in r.message


def test_a_gateway_cannot_file_dead_letters_under_a_device_it_does_not_serve() -> None:
    report = report_payload("hj212_bad_pw", "wrong PW", b"x", NOW, "DS-0001", "p")
    r = parse_message(GATEWAY_DL, report, NOW, REGISTRY)
    assert isinstance(r, Rejection) and r.code == "hj212_bad_pw" and r.device is None
    assert "not behind gateway gw-1" in r.message


@pytest.mark.parametrize("topic,payload,code", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_rejected_with_its_code(topic: str, payload: bytes, code: str) -> None:
    result = parse_message(topic, payload, NOW, REGISTRY)
    assert isinstance(result, Rejection), result
    assert result.code == code, result.message
    assert result.code in CODES
    assert result.topic == topic
    assert result.received_at == NOW
    assert result.raw == payload  # the dead letter keeps the bytes as received
    assert result.message and len(result.message) < 400
    no_device = ("bad_topic", "bad_gateway_report")
    assert result.device == (None if code in no_device else topic.split("/")[3])


def test_every_code_in_the_table_is_exercised() -> None:
    assert {b[3] for b in BAD} == set(CODES) - {"internal_error"}


def test_every_code_is_documented_in_check_order() -> None:
    doc = validate.__doc__ or ""
    table = [
        line.split()[0]
        for line in doc.splitlines()
        if line.split()[:1] and line.split()[0] in CODES
    ]
    assert table == list(CODES)
    page = (Path(__file__).resolve().parents[2] / "docs" / "contracts.md").read_text(
        encoding="utf-8"
    )
    mqtt = page.split("## MQTT", 1)[1].split("\n## ", 1)[0]
    listed = next(line for line in mqtt.splitlines() if line.startswith("- Dead-letter reasons"))
    assert listed.split(":", 1)[1].strip(" .").split(", ") == [f"`{c}`" for c in CODES]


def test_messages_name_field_value_and_what_is_allowed() -> None:
    r = parse_message(DUST, j(ts=NOW, pm10="80"), NOW, REGISTRY)
    assert isinstance(r, Rejection)
    assert "'pm10'" in r.message and '"80"' in r.message and "a string" in r.message
    assert "number between 0 and 20000" in r.message
    r = parse_message(DUST, dust(humidity=120), NOW, REGISTRY)
    assert isinstance(r, Rejection)
    assert "'humidity' is 120" in r.message and "between 0 and 100" in r.message
    r = parse_message(DUST, b'{"ts": 1763800000000, "pm10": NaN}', NOW, REGISTRY)
    assert isinstance(r, Rejection) and "'pm10' is NaN" in r.message
    r = parse_message(DUST, j(ts="2025-11-22T16:26:40", pm10=1), NOW, REGISTRY)
    assert isinstance(r, Rejection) and "+08:00" in r.message and "'Z'" in r.message
    r = parse_message(DUST, j(ts=NOW // 1000, pm10=1), NOW, REGISTRY)
    assert isinstance(r, Rejection) and "epoch seconds" in r.message and str(NOW) in r.message
    r = parse_message("city/jinshui/dust/DS-JS-999/telemetry", dust(), NOW, REGISTRY)
    assert isinstance(r, Rejection) and "registry.csv" in r.message


def test_issue_12_payload_is_too_deep_before_anything_serialises_it() -> None:
    assert len(ISSUE_12) == 543
    # what the bridge once did with it: accepted, then orjson.dumps raised in the bridge
    r = parse_message(MANHOLE, ISSUE_12, NOW, REGISTRY, IngestLimits(max_depth=1000))
    assert isinstance(r, Reading)
    with pytest.raises(TypeError, match="Recursion limit"):
        orjson.dumps(r.to_record())
    r = parse_message(MANHOLE, ISSUE_12, NOW, REGISTRY)
    assert isinstance(r, Rejection) and r.code == "too_deep"
    assert "more than 16 levels deep" in r.message and "at most 16" in r.message
    assert r.raw == ISSUE_12
    orjson.dumps(r.to_record())  # the dead letter itself serialises


def test_depth_bound_is_configurable() -> None:
    flat, two, three = dust(), dust(x={}), dust(x={"a": []})
    for limit, accepted in ((1, [flat]), (2, [flat, two]), (3, [flat, two, three])):
        limits = IngestLimits(max_depth=limit)
        for payload in (flat, two, three):
            r = parse_message(DUST, payload, NOW, REGISTRY, limits)
            assert isinstance(r, Reading) == (payload in accepted), (limit, payload, r)
            if not isinstance(r, Reading):
                assert r.code == "too_deep" and f"at most {limit} " in r.message
    for bad in (0, -1, 1.5, "16"):
        with pytest.raises(ValueError, match="max_depth"):
            IngestLimits(max_depth=bad)  # type: ignore[arg-type]


def test_shape_and_encoding_messages_say_what_is_wrong() -> None:
    r = parse_message(MANHOLE, b'{"ts": %d, "open": true, "open": false}' % NOW, NOW, REGISTRY)
    assert isinstance(r, Rejection) and r.code == "duplicate_key"
    assert "'open' appears twice" in r.message and "ambiguous" in r.message
    r = parse_message(DUST, b'{"ts": %d, "pm10": 1, "x": "\xff"}' % NOW, NOW, REGISTRY)
    assert isinstance(r, Rejection) and r.code == "not_json"
    assert "not valid UTF-8" in r.message and "0xff at offset 39" in r.message
    r = parse_message(DUST, b'{"ts": %d, "pm10": 1%s}' % (NOW, b"0" * 400), NOW, REGISTRY)
    assert isinstance(r, Rejection) and r.code == "non_finite"
    assert "'pm10' is 10000000000000000000... (401 characters)" in r.message
    assert len(r.message) < 200
    r = parse_message(DUST, b"[" * 3000, NOW, REGISTRY, IngestLimits(max_payload_bytes=4000))
    assert isinstance(r, Rejection) and r.code == "too_deep" and "more than 16" in r.message


def test_too_large_keeps_a_bounded_raw() -> None:
    big = b'{"ts": 1, "x": "' + b"a" * 200_000 + b'"}'
    r = parse_message(DUST, big, NOW, REGISTRY)
    assert isinstance(r, Rejection) and r.code == "too_large"
    assert len(r.raw) == 65_536 and str(len(big)) in r.message
    # exactly at the limit is fine
    at_limit = dust(note="")
    at_limit = dust(note="x" * (4096 - len(at_limit)))
    assert len(at_limit) == 4096
    assert isinstance(parse_message(DUST, at_limit, NOW, REGISTRY), Reading)


def test_deadletter_record_is_json_and_round_trips_raw() -> None:
    payload = b'{"ts": 1763800000000, "pm10": NaN}'
    r = parse_message(DUST, payload, NOW, REGISTRY)
    assert isinstance(r, Rejection)
    rec = r.to_record()
    assert set(rec) == {"type", "code", "message", "topic", "raw_b64", "received_at", "device"}
    assert rec["type"] == "deadletter" and rec["device"] == "DS-JS-001"
    assert base64.b64decode(rec["raw_b64"]) == payload
    assert orjson.loads(orjson.dumps(rec)) == rec


# ----------------------------------------------------------------------------- good cases

GOOD = [
    # (id, topic, payload, expected ts, expected fields)
    ("epoch ms", DUST, j(ts=NOW, pm10=80, pm25=41.5), NOW, {"pm10": 80, "pm25": 41.5}),
    ("RFC 3339 +08:00", DUST, j(ts="2025-11-22T16:26:40+08:00", pm10=80), NOW, {"pm10": 80}),
    ("RFC 3339 Z with ms", DUST, j(ts="2025-11-22T08:26:39.250Z", pm10=80), NOW - 750, {"pm10": 80}),
    ("RFC 3339 lowercase t/z, µs", DUST, j(ts="2025-11-22t08:26:39.250999z", pm10=1), NOW - 750, {"pm10": 1}),
    ("RFC 3339 negative offset", DUST, j(ts="2025-11-22T03:26:40-05:00", pm10=1), NOW, {"pm10": 1}),
    ("integral float ms", DUST, j(ts=float(NOW), pm10=1), NOW, {"pm10": 1}),
    ("extras kept", DUST, j(ts=NOW, pm10=80, fw="2.1.3", site={"名称": "工地"}, seq=7), NOW,
     {"pm10": 80, "fw": "2.1.3", "site": {"名称": "工地"}, "seq": 7}),
    ("null known field dropped", DUST, j(ts=NOW, pm10=80, noise_db=None, x=None), NOW,
     {"pm10": 80, "x": None}),
    ("late but within 24 h keeps event time", DUST, j(ts=NOW - 23 * HOUR, pm10=80), NOW - 23 * HOUR,
     {"pm10": 80}),
    ("exactly 24 h late", DUST, j(ts=NOW - 24 * HOUR, pm10=80), NOW - 24 * HOUR, {"pm10": 80}),
    ("clock skew within 5 min", DUST, j(ts=NOW + 5 * MIN, pm10=80), NOW + 5 * MIN, {"pm10": 80}),
    ("payload names its own device", DUST, dust(device_id="DS-JS-001"), NOW,
     {"pm10": 80, "device_id": "DS-JS-001"}),
    ("numeric id equal to topic id", "city/erqi/manhole/17/telemetry", j(ts=NOW, id=17, open=True),
     NOW, {"id": 17, "open": True}),
    ("all dust fields at their bounds", DUST,
     j(ts=NOW, pm25=0, pm10=20000, tsp=0, noise_db=200, wind_speed=75, wind_dir=360, temp_c=-60,
       humidity=0), NOW,
     {"pm25": 0, "pm10": 20000, "tsp": 0, "noise_db": 200, "wind_speed": 75, "wind_dir": 360,
      "temp_c": -60, "humidity": 0}),
    ("manhole open only", MANHOLE, j(ts=NOW, open=True), NOW, {"open": True}),
    ("manhole tilt only", MANHOLE, j(ts=NOW, tilt_deg=16.5, water_level_cm=-3, rssi=-97), NOW,
     {"tilt_deg": 16.5, "water_level_cm": -3, "rssi": -97}),
    ("streetlight full", LIGHT,
     j(ts=NOW, on=True, voltage_v=221.4, current_a=0.45, power_w=99.6, leakage_ma=2.1, dim_pct=80),
     NOW, {"on": True, "voltage_v": 221.4, "current_a": 0.45, "power_w": 99.6, "leakage_ma": 2.1,
           "dim_pct": 80}),
    ("streetlight heartbeat", LIGHT, j(ts=NOW), NOW, {}),
    ("UTF-8 BOM tolerated", DUST, b"\xef\xbb\xbf" + dust(), NOW, {"pm10": 80}),
    ("nesting at the bound (16 levels)", DUST, dust(x=nested(15)), NOW, {"pm10": 80, "x": nested(15)}),
    ("colons inside strings are no members", DUST, j(ts="2025-11-22T16:26:40+08:00", pm10=80,
     note="a:b:c", site={"k:1": "v:2"}), NOW, {"pm10": 80, "note": "a:b:c", "site": {"k:1": "v:2"}}),
    ("one key in two objects is no duplicate", DUST, dust(a={"k": 1}, b=[{"k": 2}, {"k": 3}]), NOW,
     {"pm10": 80, "a": {"k": 1}, "b": [{"k": 2}, {"k": 3}]}),
    ("the same key once per nesting level", DUST, dust(pm10x={"pm10": {"pm10": 1}}), NOW,
     {"pm10": 80, "pm10x": {"pm10": {"pm10": 1}}}),
    ("RFC 3339 ts with escaped colons", DUST,
     b'{"ts": "2025-11-22T16\\u003a26:40+08:00", "pm10": 80}', NOW, {"pm10": 80}),
    ("empty nested objects", DUST, dust(x={}, y=[]), NOW, {"pm10": 80, "x": {}, "y": []}),
    ("integer beyond 64 bits reads as a double", DUST, b'{"ts": 1763800000000, "pm10": 80, "x": %d}' % 2**70,
     NOW, {"pm10": 80, "x": float(2**70)}),
    ("tiny number underflows to 0", DUST, b'{"ts": 1763800000000, "pm10": 1e-400}', NOW, {"pm10": 0.0}),
]  # fmt: skip


@pytest.mark.parametrize("topic,payload,ts,fields", [g[1:] for g in GOOD], ids=[g[0] for g in GOOD])
def test_good_input_gives_a_reading(topic: str, payload: bytes, ts: int, fields: dict) -> None:
    r = parse_message(topic, payload, NOW, REGISTRY)
    assert isinstance(r, Reading), r
    _, district, kind, device, _ = topic.split("/")
    assert (r.device, r.kind, r.district, r.topic) == (device, kind, district, topic)
    assert r.ts == ts
    assert r.received_at == NOW
    assert r.fields == fields
    assert "ts" not in r.fields
    assert {k: type(v) for k, v in r.fields.items()} == {k: type(v) for k, v in fields.items()}
    # the record survives the Kafka hop
    assert Reading.from_record(orjson.loads(orjson.dumps(r.to_record()))) == r


def test_registry_none_skips_registry_checks() -> None:
    r = parse_message("city/huiji/dust/NOT-REGISTERED/telemetry", dust(), NOW, None)
    assert isinstance(r, Reading)


def test_limits_are_configurable() -> None:
    strict = IngestLimits(max_payload_bytes=10, max_future_ms=0, max_lateness_ms=HOUR)
    assert parse_message(DUST, dust(), NOW, REGISTRY, strict).code == "too_large"  # type: ignore[union-attr]
    loose = IngestLimits(max_future_ms=0, max_lateness_ms=HOUR)
    assert parse_message(DUST, j(ts=NOW + 1, pm10=1), NOW, REGISTRY, loose).code == "future_ts"  # type: ignore[union-attr]
    assert (
        parse_message(DUST, j(ts=NOW - HOUR - 1, pm10=1), NOW, REGISTRY, loose).code == "too_late"
    )  # type: ignore[union-attr]
    no_id_check = IngestLimits(identity_keys=("device_id",))
    assert isinstance(parse_message(DUST, dust(id=12345), NOW, REGISTRY, no_id_check), Reading)
    with pytest.raises(ValueError, match="max_payload_bytes"):
        IngestLimits(max_payload_bytes=-1)


def test_payload_types_accepted() -> None:
    for p in (bytearray(dust()), memoryview(dust()), dust().decode()):
        r = parse_message(DUST, p, NOW, REGISTRY)  # type: ignore[arg-type]
        assert isinstance(r, Reading)


def test_a_registry_that_raises_gives_internal_error_not_an_exception() -> None:
    class Broken:
        def get(self, device_id: str) -> None:
            raise RuntimeError("boom")

    r = parse_message(DUST, dust(), NOW, Broken())  # type: ignore[arg-type]
    assert isinstance(r, Rejection) and r.code == "internal_error" and "boom" in r.message


def test_parse_ts_examples() -> None:
    assert parse_ts("1970-01-01T00:00:00Z") == 0
    assert parse_ts("2025-11-22T16:26:40.1+08:00") == NOW + 100
    assert parse_ts("2025-11-22 08:26:40Z") == NOW  # RFC 3339 allows a space
    assert isinstance(parse_ts("2025-11-22T24:00:00Z"), str)
    assert isinstance(parse_ts("２０２５-11-22T08:26:40Z"), str)  # full-width digits


def test_spec_table_is_well_formed() -> None:
    for kind, spec in KIND_SPECS.items():
        for name, (typ, lo, hi) in spec.fields.items():
            assert typ in ("number", "bool"), (kind, name)
            assert lo <= hi, (kind, name)
        for group in spec.required_any:
            assert all(f in spec.fields for f in group)
