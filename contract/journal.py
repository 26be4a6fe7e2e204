"""The journal's records: what travels on ``<prefix>.telemetry`` (docs/contracts.md, "Journal").

Three record types, the detector's whole input: ``reading`` (from the
bridges), ``action`` (officer actions, forwarded from ``<prefix>.acks``) and
``watermark`` (time passing with no reading). Writers and readers of the
journal (the bridge, ``citywatch journal load``, the worker, replay) all go
through this codec, so a record means the same thing everywhere.

Reading the journal is strict (``decode`` / ``from_record``): a record that
is not JSON, not an object, of an unknown type, or with a missing or
ill-typed field raises ``JournalError`` with a reason code, and the worker
quarantines it (``quarantine_record``, on ``<prefix>.quarantine``) instead of
stopping (docs/contracts.md, "Kafka"). Nothing is coerced: ``"ts": "17"`` or
``"at": 1.5`` is refused, not turned into a number.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any

import orjson

from contract.cases import OfficerAction
from contract.kinds import BOOL, FLEET_KINDS, KIND_SPECS, KINDS, TEXT
from contract.reading import Reading
from contract.topics import is_valid_segment

__all__ = [
    "QUARANTINE_RAW_MAX",
    "QUARANTINE_REASONS",
    "JournalError",
    "JournalItem",
    "Watermark",
    "decode",
    "encode",
    "from_record",
    "quarantine_record",
    "to_record",
]


@dataclass(frozen=True, slots=True)
class Watermark:
    """Time passes with no reading (a silent city)."""

    at: int


JournalItem = Reading | OfficerAction | Watermark

QUARANTINE_REASONS: dict[str, str] = {
    "not_json": "the record's bytes are not JSON (or not UTF-8)",
    "not_an_object": "JSON, but not an object",
    "unknown_type": "an object whose 'type' is not reading, action or watermark",
    "bad_record": "a field of its type is missing or of the wrong type",
    "ahead_of_clock": "live mode: its time is past the wall clock plus the allowed skew",
    "detector_error": "the detector raised on it (the exception text is the message)",
}
"""Why a record went to ``<prefix>.quarantine``: the ``reason`` of the record and its tag in InfluxDB."""


class JournalError(ValueError):
    """A journal record the detector cannot take; ``code`` is one of ``QUARANTINE_REASONS``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def journal_key(district: str) -> bytes:
    """The journal's Kafka key: the district (docs/contracts.md, "Kafka"; decision 007).

    Everything a district's rules judge together -- its dust sites against their
    ambient, the lamps of one circuit -- then meets in one partition, whatever
    the partition count, and a device's records stay in order (a device never
    changes district without a registry edit)."""
    return district.encode()


FLEET_KEY = b"fleet"
"""The key of every vehicle, weigh-station and camera record (decision 013): a truck's track,
its weighings and its sightings meet in one detector, which a weighing's loading district and
a day's one illegal-operation case need. A district called ``fleet`` would only share the
fleet's partition, which is harmless: records that must meet still meet."""


def to_record(
    item: JournalItem, district: str | None = None, kind: str | None = None
) -> tuple[bytes | None, dict[str, Any]]:
    """(Kafka key, record) of one journal item: readings and actions keyed by district.

    An action names only its device: the caller gives its ``district`` from the
    registry (an action for a device the registry does not know is keyed by the
    device and refused by the detector), and its ``kind``: an action on a vehicle, weigh
    station or camera goes with the fleet's records (``FLEET_KEY``).
    """
    if isinstance(item, Reading):
        if item.kind in FLEET_KINDS:
            return FLEET_KEY, item.to_record()
        return journal_key(item.district), item.to_record()
    if isinstance(item, OfficerAction):
        if kind in FLEET_KINDS:
            return FLEET_KEY, item.to_dict() | {"type": "action"}
        key = journal_key(district) if district else item.device.encode()
        return key, item.to_dict() | {"type": "action"}
    return None, {"type": "watermark", "at": item.at}


def _bad(kind: str, name: str, want: str, rec: dict[str, Any]) -> JournalError:
    got = rec[name] if name in rec else "<missing>"
    return JournalError("bad_record", f"{kind} record: {name!r} must be {want}, got {got!r:.80}")


def _ms(rec: dict[str, Any], kind: str, name: str) -> int:
    v = rec.get(name)
    if type(v) is not int:
        raise _bad(kind, name, "integer epoch ms", rec)
    return v


def _segment(rec: dict[str, Any], kind: str, name: str) -> str:
    v = rec.get(name)
    if not isinstance(v, str) or not is_valid_segment(v):
        raise _bad(kind, name, "an id (1-64 of A-Z a-z 0-9 _ . : -)", rec)
    return v


def _optional_text(rec: dict[str, Any], kind: str, name: str) -> str | None:
    v = rec.get(name)
    if v is not None and not isinstance(v, str):
        raise _bad(kind, name, "text or null", rec)
    return v


def _want(typ: str) -> str:
    return {BOOL: "true or false", TEXT: "text of the allowed length"}.get(typ, "a finite number")


def _reading(rec: dict[str, Any]) -> Reading:
    device = _segment(rec, "reading", "device")
    kind = rec.get("kind")
    if kind not in KINDS:
        raise _bad("reading", "kind", f"one of {', '.join(KINDS)}", rec)
    district = _segment(rec, "reading", "district")
    ts = _ms(rec, "reading", "ts")
    received_at = _ms(rec, "reading", "received_at")
    fields = rec.get("fields", {})
    if fields is None:
        fields = {}
    if not isinstance(fields, dict):
        raise _bad("reading", "fields", "an object", rec)
    spec = KIND_SPECS[kind].fields
    for name, v in fields.items():
        rule = spec.get(name)
        if rule is None or v is None:
            continue  # unknown extras are kept as they came (docs/contracts.md, "MQTT")
        if rule[0] == BOOL:
            ok = type(v) is bool
        elif rule[0] == TEXT:
            ok = type(v) is str and int(rule[1]) <= len(v) <= int(rule[2])
        else:
            ok = type(v) in (int, float) and math.isfinite(v)
        if not ok:
            raise JournalError(
                "bad_record",
                f"reading record: field {name!r} of a {kind} must be "
                f"{_want(rule[0])}, got {v!r:.80}",
            )
    topic = rec.get("topic", "")
    if not isinstance(topic, str):
        raise _bad("reading", "topic", "text", rec)
    return Reading(device, kind, district, ts, received_at, dict(fields), topic)


def _action(rec: dict[str, Any]) -> OfficerAction:
    device = _segment(rec, "action", "device")
    at = _ms(rec, "action", "at")
    officer = _optional_text(rec, "action", "officer") or ""
    case_id = _optional_text(rec, "action", "case_id")
    note = _optional_text(rec, "action", "note")
    action = rec.get("action")
    if not isinstance(action, str):
        raise _bad("action", "action", "text", rec)
    role = _optional_text(rec, "action", "role") or ""
    channel = _optional_text(rec, "action", "channel") or ""
    credential = _optional_text(rec, "action", "credential") or ""
    reason = _optional_text(rec, "action", "reason")
    recorded_at = None if rec.get("recorded_at") is None else _ms(rec, "action", "recorded_at")
    works_from = None if rec.get("works_from") is None else _ms(rec, "action", "works_from")
    works_until = None if rec.get("works_until") is None else _ms(rec, "action", "works_until")
    deadline = None if rec.get("deadline") is None else _ms(rec, "action", "deadline")
    passed = rec.get("passed")
    if passed is not None and type(passed) is not bool:
        raise _bad("action", "passed", "true, false or null", rec)
    photos = rec.get("photos") or []
    if not isinstance(photos, list):
        raise _bad("action", "photos", "a list of text", rec)
    action_id = _optional_text(rec, "action", "action_id")
    try:
        return OfficerAction(
            action,
            device,
            at,
            officer,
            case_id,
            note,
            role,
            channel,
            credential,
            reason,
            recorded_at,
            works_from,
            works_until,
            deadline,
            passed,
            tuple(photos),
            action_id,
        )
    except ValueError as exc:
        raise JournalError("bad_record", f"action record: {exc}") from None


def from_record(rec: Any) -> JournalItem:
    """The inverse of ``to_record``; raises ``JournalError`` (a ValueError) on anything else."""
    if not isinstance(rec, dict):
        raise JournalError(
            "not_an_object", f"a journal record is a JSON object, got {type(rec).__name__}"
        )
    kind = rec.get("type")
    if kind == "reading":
        return _reading(rec)
    if kind == "action":
        return _action(rec)
    if kind == "watermark":
        return Watermark(_ms(rec, "watermark", "at"))
    raise JournalError("unknown_type", f"journal record of unknown type {kind!r:.80}")


def decode(raw: bytes | None) -> JournalItem:
    """One journal record's bytes as the detector's input; ``JournalError`` when it cannot be."""
    if raw is None:
        raise JournalError("not_json", "an empty record (no value)")
    try:
        rec = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise JournalError("not_json", f"not JSON: {exc}") from None
    return from_record(rec)


def encode(rec: dict[str, Any]) -> bytes:
    """A record's bytes on Kafka: sorted keys, so the same record is the same bytes."""
    return orjson.dumps(rec, option=orjson.OPT_SORT_KEYS)


QUARANTINE_RAW_MAX = 256 * 1024
"""At most this many bytes of a refused record are kept in its quarantine record
(``raw_bytes`` says how long it was): the quarantine record must fit in one Kafka message."""


def quarantine_record(
    reason: str, message: str, raw: bytes | None, topic: str, partition: int, offset: int,
    at: int, key: bytes | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The record a refused journal record becomes on ``<prefix>.quarantine``.

    ``raw`` / ``key``: the refused record's value and key as they were (base64;
    the value cut at ``QUARANTINE_RAW_MAX`` bytes), so it can be read, fixed and
    fed again; ``topic``/``partition``/``offset``: where it sits; ``at``: when it
    was quarantined (epoch ms, the worker's clock).
    """
    if reason not in QUARANTINE_REASONS:
        raise ValueError(
            f"unknown quarantine reason {reason!r}; reasons: {', '.join(QUARANTINE_REASONS)}"
        )
    value = raw or b""
    return {
        "type": "quarantine",
        "reason": reason,
        "message": message[:2000],
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "raw_b64": base64.b64encode(value[:QUARANTINE_RAW_MAX]).decode("ascii"),
        "raw_bytes": len(value),
        "key_b64": None if key is None else base64.b64encode(key[:1024]).decode("ascii"),
        "at": at,
    }
