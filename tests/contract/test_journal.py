"""The journal codec (contract/journal.py; docs/contracts.md, "Kafka"): strict, and every refusal has a reason."""

from __future__ import annotations

import base64

import orjson
import pytest

from contract.cases import OfficerAction
from contract.journal import (
    QUARANTINE_RAW_MAX,
    QUARANTINE_REASONS,
    JournalError,
    Watermark,
    decode,
    encode,
    from_record,
    quarantine_record,
    to_record,
)
from contract.reading import Reading

READING = {
    "type": "reading", "device": "MH-1", "kind": "manhole", "district": "jinshui",
    "ts": 1_000, "received_at": 1_005, "fields": {"open": True, "tilt_deg": 3, "fw": "1.2"},
    "topic": "city/jinshui/manhole/MH-1/telemetry",
}  # fmt: skip
ACTION = {"type": "action", "action": "ack", "device": "MH-1", "at": 7, "officer": "grid-07",
          "case_id": None, "note": None}  # fmt: skip


@pytest.mark.parametrize(
    "item",
    [
        Reading("MH-1", "manhole", "jinshui", 1_000, 1_005, {"open": True, "x": [1]}, "t"),
        OfficerAction("confirm_repair", "MH-1", 7, "grid-07", "manhole:MH-1:1", "ok"),
        Watermark(123),
    ],
)
def test_what_is_written_reads_back(item: object) -> None:
    _key, rec = to_record(item)  # type: ignore[arg-type]
    assert decode(encode(rec)) == item


@pytest.mark.parametrize(
    "raw, code",
    [
        (b"{broken", "not_json"),
        (b"\xff\xfe", "not_json"),
        (None, "not_json"),
        (b"", "not_json"),
        (b"[1, 2]", "not_an_object"),
        (b"42", "not_an_object"),
        (b'{"type": "reboot"}', "unknown_type"),
        (b'{"at": 5}', "unknown_type"),
        (b'{"type": "watermark"}', "bad_record"),
        (b'{"type": "watermark", "at": "5"}', "bad_record"),
        (b'{"type": "watermark", "at": 5.5}', "bad_record"),
        (b'{"type": "watermark", "at": true}', "bad_record"),
        (encode({**READING, "ts": "1000"}), "bad_record"),
        (encode({**READING, "received_at": None}), "bad_record"),
        (encode({k: v for k, v in READING.items() if k != "device"}), "bad_record"),
        (encode({**READING, "device": "a/b"}), "bad_record"),
        (encode({**READING, "kind": "truck"}), "bad_record"),
        (encode({**READING, "fields": [1]}), "bad_record"),
        (encode({**READING, "fields": {"open": "yes"}}), "bad_record"),
        (encode({**READING, "fields": {"tilt_deg": "3"}}), "bad_record"),
        (encode({**READING, "fields": {"tilt_deg": True}}), "bad_record"),
        (encode({**READING, "topic": 5}), "bad_record"),
        (encode({**ACTION, "action": "pardon"}), "bad_record"),
        (encode({**ACTION, "at": 7.0}), "bad_record"),
        (encode({**ACTION, "officer": 3}), "bad_record"),
        (encode({**ACTION, "device": None}), "bad_record"),
    ],
)
def test_every_refusal_has_a_reason(raw: bytes | None, code: str) -> None:
    with pytest.raises(JournalError) as err:
        decode(raw)
    assert err.value.code == code and code in QUARANTINE_REASONS
    assert isinstance(err.value, ValueError)  # callers that catch ValueError still do


def test_nulls_and_unknown_extras_pass_as_they_came() -> None:
    r = from_record({**READING, "fields": {"open": None, "tilt_deg": 2.5, "nested": {"a": [1]}}})
    assert isinstance(r, Reading) and r.fields == {
        "open": None,
        "tilt_deg": 2.5,
        "nested": {"a": [1]},
    }


def test_quarantine_record_keeps_the_bytes_and_where_they_sat() -> None:
    raw = b"\x00not json"
    rec = quarantine_record("not_json", "not JSON", raw, "cw.telemetry", 3, 17, 99, b"MH-1")
    assert base64.b64decode(rec["raw_b64"]) == raw and rec["raw_bytes"] == len(raw)
    assert base64.b64decode(rec["key_b64"]) == b"MH-1"
    assert (rec["type"], rec["reason"], rec["topic"], rec["partition"], rec["offset"], rec["at"]) == (
        "quarantine", "not_json", "cw.telemetry", 3, 17, 99,
    )  # fmt: skip
    assert orjson.loads(encode(rec)) == rec
    big = quarantine_record(
        "bad_record", "x" * 5000, b"a" * (QUARANTINE_RAW_MAX + 10), "t", 0, 0, 1
    )
    assert len(base64.b64decode(big["raw_b64"])) == QUARANTINE_RAW_MAX
    assert big["raw_bytes"] == QUARANTINE_RAW_MAX + 10 and len(big["message"]) == 2000
    with pytest.raises(ValueError, match="unknown quarantine reason"):
        quarantine_record("because", "", b"", "t", 0, 0, 1)


def test_vehicle_weighing_and_camera_records_meet_under_the_fleet_key() -> None:
    """Decision 013: a truck's track, its weighings and its sightings reach one detector,
    whatever their districts; everything else stays keyed by district."""
    truck = Reading("T-1", "vehicle", "jinshui", 1, 1, {"lat": 34.7, "lon": 113.6}, "t")
    wim = Reading("WIM-1", "weighstation", "zhongmou", 1, 1, {"plate": "豫A1", "axles": 3}, "t")
    cam = Reading("CAM-1", "platecam", "erqi", 1, 1, {"plate": "豫A1"}, "t")
    cover = Reading("MH-1", "manhole", "jinshui", 1, 1, {"open": True}, "t")
    assert {to_record(r)[0] for r in (truck, wim, cam)} == {b"fleet"}
    assert to_record(cover)[0] == b"jinshui"
    ack = OfficerAction("ack", "T-1", 7, "grid-07")
    assert to_record(ack, "jinshui", "vehicle")[0] == b"fleet"
    assert to_record(ack, "jinshui", "manhole")[0] == b"jinshui"


def test_a_plate_of_the_wrong_type_in_a_journal_record_is_refused() -> None:
    rec = READING | {"device": "CAM-1", "kind": "platecam", "fields": {"plate": 12345}}
    with pytest.raises(JournalError, match="'plate' of a platecam must be text"):
        from_record(rec)
