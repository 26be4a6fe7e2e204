"""citywatch's records as InfluxDB line protocol: the schema writer
(docs/contracts.md, "InfluxDB"; docs/decisions/002-influxql-and-v1-write.md).

Every function returns one line (``str``, no trailing newline) or ``None`` when
the record has nothing InfluxDB could store (a reading without a numeric or
boolean field). Timestamps are epoch **milliseconds**: write with
``precision=ms`` (``store.writer.InfluxWriter`` does). ``store.read`` reads
the points back into citywatch's records.

Measurements
============

``dust`` / ``manhole`` / ``streetlight`` (``telemetry_line``)
    tags ``device, district, grid, unit`` (from the registry ``Device``; the
    reading's own district when the device is unknown); fields: the reading's
    values. Numbers are always written as **floats** (``Reading.fields`` keeps
    ``-70`` an int and ``-70.5`` a float, and InfluxDB fixes a field's type per
    shard: an int first and a float later would reject the whole point as a
    "field type conflict"). Booleans of the kind's table (``open``, ``on``) stay
    booleans. Unknown extras: numbers as floats, booleans as ``1.0``/``0.0`` (an
    extra may flip between bool and number, a known field cannot), strings,
    lists, objects and ``null`` are skipped (they stay in Kafka and the replay
    files); extras named like a tag or ``time`` are skipped. Reading values never
    become tags. time = ``reading.ts`` (event time).

``case_event`` (``case_event_line``)
    tags ``case_id, kind, rule, district, unit, state, severity``; fields
    ``device, grid, address, component_code, message, detail`` (strings;
    ``detail`` as compact JSON), ``lat, lon`` (floats, when known),
    ``opened_at`` / ``deadline`` (int ms; ``deadline`` absent when none),
    ``open`` (int: 1 while the case is open after this event, else 0).
    time = ``at``.

``case_stage`` (``case_stage_lines``, one point per stage change, docs/contracts.md "Case stages")
    tags ``case_id, kind, rule, district, unit, stage`` (filed, dispatched, handled,
    checked, closed, evaluated, extended, check_failed), ``evaluation`` (evaluated only);
    fields ``device, by, note`` (strings), ``deadline`` (int ms, when set),
    ``reworks`` / ``extensions`` (ints, the counts after the change), ``photos`` and
    ``change`` (compact JSON: the photo references; the whole change). time = the change's
    ``at``. A case event that carries no stage change writes none; a snapshot a stage
    action alone made (``detail.workflow.stage_only``) writes no ``case_event`` point.

``penalty`` (``penalty_line``)
    tags ``case_id, rule, payer, payer_type, district, entry_id``; fields
    ``amount_yuan`` (**integer**, exact), ``hour_index`` (int, -1 when none),
    ``reverses`` (string, "" when none), ``device``, ``unit`` (strings).
    time = ``accrued_at``. ``entry_id`` is a tag so two entries never share
    series and timestamp, e.g. two reversals booked at one watermark instant:
    ``sum(amount_yuan)`` over any range is the ledger's net.

``deadletter`` (``deadletter_line``)
    tags ``code, device, district`` (``unknown`` when absent / unparseable);
    fields ``count=1i``, ``message``, ``topic``. time = ``received_at``.

``quarantine`` (``quarantine_line``)
    journal records the worker could not take (``contract.journal.quarantine_record``):
    tags ``reason, topic, partition`` (the refused record's topic and partition);
    fields ``count=1i``, ``message``, ``offset`` (int). time = ``at``, the
    instant it was quarantined, which the worker keeps strictly increasing, so
    two records of one partition never share series and timestamp. The raw
    bytes stay on the Kafka topic.

Empty tag values are left out (line protocol has no empty tag value).
Escaping follows the line-protocol reference (and influxdb-client's tables):
measurement ``, `` and space; tag keys/values and field keys ``, = space``;
string field values ``"`` and ``\\``. Newlines/CR/tabs in tags and keys are
replaced by a space (the 1.x parser ends a line at a newline even when
escaped); string field values keep them. InfluxDB 1.x cannot store a backslash at the
end of a tag value or key, or right before ``, = space`` in one (it reads it as
an escape): such a backslash is written as ``/``. Any other text round-trips
(tests/store/test_points.py checks it against the real server).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from contract.cases import FINAL_STATES
from contract.kinds import KIND_SPECS
from contract.topics import parse_topic

if TYPE_CHECKING:
    from contract.reading import Reading
    from registry.devices import Device

__all__ = [
    "CASE_EVENT",
    "DEADLETTER",
    "PENALTY",
    "QUARANTINE",
    "TELEMETRY",
    "TELEMETRY_TAGS",
    "case_event_line",
    "case_lines",
    "case_stage_lines",
    "deadletter_line",
    "escape_field_string",
    "escape_key",
    "escape_measurement",
    "escape_tag_value",
    "penalty_line",
    "quarantine_line",
    "record_line",
    "telemetry_line",
]

TELEMETRY = ("dust", "manhole", "streetlight")
CASE_EVENT = "case_event"
PENALTY = "penalty"
DEADLETTER = "deadletter"
QUARANTINE = "quarantine"
AUDIT = "audit"
TELEMETRY_TAGS = ("device", "district", "grid", "unit")

_ESC_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\ ", "\r": r"\ ", "\t": r"\ "})
_ESC_KEY = str.maketrans(
    {",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\ ", "\r": r"\ ", "\t": r"\ "}
)
_ESC_STRING = str.maketrans({'"': r"\"", "\\": "\\\\"})
_NEEDS_KEY_ESC = frozenset(",= \n\r\t\\")


def escape_measurement(name: str) -> str:
    return name.translate(_ESC_MEASUREMENT)


_BAD_BACKSLASH = re.compile(r"\\(?=[,= \n\r\t]|\Z)")


def escape_key(key: str) -> str:
    """Escape a tag key, tag value or field key (see the module doc on backslashes)."""
    if _NEEDS_KEY_ESC.isdisjoint(key):
        return key
    if "\\" in key:
        key = _BAD_BACKSLASH.sub("/", key)
    return key.translate(_ESC_KEY)


escape_tag_value = escape_key


def escape_field_string(value: str) -> str:
    """The quoted form of a string field value (quotes included)."""
    return '"' + value.translate(_ESC_STRING) + '"'


def _tags(pairs: Mapping[str, Any] | list[tuple[str, Any]]) -> str:
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    out = []
    for k, v in sorted(items):  # sorted keys: what InfluxDB prefers (and stores)
        if v is None:
            continue
        s = v if isinstance(v, str) else str(v)
        if s:
            out.append(f",{k}={escape_tag_value(s)}")
    return "".join(out)


# ---------------------------------------------------------------- telemetry

_KNOWN_BOOLS = {kind: spec.bools for kind, spec in KIND_SPECS.items()}
_SKIP_FIELD = frozenset(TELEMETRY_TAGS) | {"time", ""}
_NO_BOOLS: frozenset[str] = frozenset()
_FIELD_KEY_CACHE: dict[str, str] = {}
"""field name -> ``escaped_name=`` ("" for a name that is skipped)."""
# (device id) -> (Device object, kind, prefix "measurement,tags ")
_PREFIX_CACHE: dict[str, tuple[Any, str, str]] = {}
_CACHE_MAX = 100_000


def _field_key(name: str) -> str:
    k = "" if name in _SKIP_FIELD else escape_key(name) + "="
    if len(_FIELD_KEY_CACHE) >= _CACHE_MAX:
        _FIELD_KEY_CACHE.clear()
    _FIELD_KEY_CACHE[name] = k
    return k


def _telemetry_prefix(reading: Reading, device: Device | None) -> str:
    if device is not None:
        hit = _PREFIX_CACHE.get(device.device_id)
        if hit is not None and hit[0] is device and hit[1] == reading.kind:
            return hit[2]
        tags = {
            "device": device.device_id,
            "district": device.district,
            "grid": device.grid,
            "unit": device.unit,
        }
        prefix = escape_measurement(reading.kind) + _tags(tags) + " "
        if len(_PREFIX_CACHE) >= _CACHE_MAX:
            _PREFIX_CACHE.clear()
        _PREFIX_CACHE[device.device_id] = (device, reading.kind, prefix)
        return prefix
    tags = {"device": reading.device, "district": reading.district}
    return escape_measurement(reading.kind) + _tags(tags) + " "


def telemetry_line(
    reading: Reading, device: Device | None = None, marks: Mapping[str, float] | None = None
) -> str | None:
    """One telemetry point, or None when the reading has no storable value.

    ``device`` is the registry entry (tags grid and unit come from it); without
    it only ``device`` and ``district`` (from the reading) are tagged. ``marks``
    are float fields the streams add to the reading's own (a lamp's
    ``should_lit`` and ``lit_when_should``, docs/contracts.md "InfluxDB").
    """
    bools = _KNOWN_BOOLS.get(reading.kind, _NO_BOOLS)
    keys = _FIELD_KEY_CACHE
    parts = []
    for name, v in reading.fields.items():
        key = keys.get(name)
        if key is None:
            key = _field_key(name)
        if not key:
            continue
        t = type(v)
        if t is float:
            if v - v != 0.0:  # NaN or ±inf
                continue
            parts.append(key + repr(v))
        elif t is int:
            parts.append(key + str(v))  # no "i": a float field (see module doc)
        elif t is bool or isinstance(v, bool):
            if name in bools:
                parts.append(key + ("true" if v else "false"))
            else:
                parts.append(key + ("1.0" if v else "0.0"))
        elif isinstance(v, (int, float)):  # subclasses, numpy scalars
            f = float(v)
            if math.isfinite(f):
                parts.append(key + repr(f))
    if not parts:
        return None
    if marks:
        parts.extend(f"{_field_key(k)}{float(v)!r}" for k, v in marks.items())
    return f"{_telemetry_prefix(reading, device)}{','.join(parts)} {int(reading.ts)}"


# ---------------------------------------------------------------- cases


def _str_field(name: str, value: Any) -> str:
    return f"{name}={escape_field_string(value if isinstance(value, str) else str(value))}"


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def case_event_line(event: Mapping[str, Any]) -> str:
    """One ``case_event`` point from ``CaseEvent.to_dict()`` (missing optional keys tolerated)."""
    tags = _tags(
        [
            ("case_id", event["case_id"]),
            ("kind", event.get("kind")),
            ("rule", event.get("rule")),
            ("district", event.get("district")),
            ("unit", event.get("unit")),
            ("state", event.get("state")),
            ("severity", event.get("severity")),
        ]
    )
    state = event.get("state") or ""
    detail = event.get("detail")
    message = event.get("message")
    if message is None and isinstance(detail, Mapping) and isinstance(detail.get("message"), str):
        message = detail["message"]
    fields = [f"open={0 if state in FINAL_STATES else 1}i"]
    at = int(event["at"])
    opened_at = event.get("opened_at")
    fields.append(f"opened_at={int(opened_at if opened_at is not None else at)}i")
    if event.get("deadline") is not None:
        fields.append(f"deadline={int(event['deadline'])}i")
    for name in ("device", "grid", "address", "component_code"):
        v = event.get(name)
        if v is not None and v != "":
            fields.append(_str_field(name, v))
    for name in ("lat", "lon"):
        f = _float(event.get(name))
        if f is not None:
            fields.append(f"{name}={f!r}")
    if message:
        fields.append(_str_field("message", message))
    if detail:
        text = (
            detail
            if isinstance(detail, str)
            else orjson.dumps(
                detail, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str
            ).decode()
        )
        fields.append(_str_field("detail", text))
    evidence = event.get("evidence")
    if evidence:  # the readings or officer actions that proved the change: settlements quote them
        text = orjson.dumps(
            evidence, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str
        ).decode()
        fields.append(_str_field("evidence", text[:60_000]))
    return f"{CASE_EVENT}{tags} {','.join(fields)} {at}"


CASE_STAGE = "case_stage"


def case_stage_lines(event: Mapping[str, Any]) -> list[str]:
    """The ``case_stage`` points of the stage changes a case event carries (``detail.workflow``)."""
    detail = event.get("detail")
    flow = detail.get("workflow") if isinstance(detail, Mapping) else None
    if not isinstance(flow, Mapping):
        return []
    out = []
    for c in flow.get("changes") or ():
        tags = _tags(
            [
                ("case_id", event["case_id"]),
                ("kind", event.get("kind")),
                ("rule", event.get("rule")),
                ("district", event.get("district")),
                ("unit", event.get("unit")),
                ("stage", c["change"]),
                ("evaluation", c.get("evaluation")),
            ]
        )
        fields = [
            f"reworks={int(flow.get('reworks') or 0)}i",
            f"extensions={int(flow.get('extensions') or 0)}i",
        ]
        if c.get("deadline") is not None:
            fields.append(f"deadline={int(c['deadline'])}i")
        for name in ("by", "note"):
            if c.get(name):
                fields.append(_str_field(name, c[name]))
        if event.get("device"):
            fields.append(_str_field("device", event["device"]))
        if c.get("photos"):
            fields.append(_str_field("photos", orjson.dumps(c["photos"]).decode()))
        fields.append(
            _str_field("change", orjson.dumps(c, option=orjson.OPT_SORT_KEYS, default=str).decode())
        )
        out.append(f"{CASE_STAGE}{tags} {','.join(fields)} {int(c['at'])}")
    return out


def case_lines(event: Mapping[str, Any]) -> str | None:
    """What one record of ``<prefix>.cases`` writes: its ``case_event`` point (unless a stage
    action alone made it) and its ``case_stage`` points, newline-separated."""
    detail = event.get("detail")
    flow = detail.get("workflow") if isinstance(detail, Mapping) else None
    lines = case_stage_lines(event)
    if not (isinstance(flow, Mapping) and flow.get("stage_only")):
        lines.insert(0, case_event_line(event))
    return "\n".join(lines) or None


# ---------------------------------------------------------------- ledger


def penalty_line(entry: Mapping[str, Any], unit: str | None = None) -> str:
    """One ``penalty`` point from a ledger entry (``LedgerEntry.to_dict()``).

    ``unit``: the device's property-rights unit; defaults to ``entry["unit"]``,
    else the payer of a ``property_unit`` entry, else "".
    """
    amount = entry["amount_yuan"]
    if type(amount) is not int:
        raise TypeError(
            f"amount_yuan must be an int number of yuan, got {amount!r} in entry {entry.get('id')!r}"
        )
    if unit is None:
        unit = (
            entry.get("unit")
            or (entry.get("payer") if entry.get("payer_type") == "property_unit" else "")
            or ""
        )
    tags = _tags(
        [
            ("case_id", entry["case_id"]),
            ("district", entry.get("district")),
            ("entry_id", entry["id"]),
            ("payer", entry.get("payer")),
            ("payer_type", entry.get("payer_type")),
            ("rule", entry.get("rule")),
        ]
    )
    hour = entry.get("hour_index")
    fields = (
        f"amount_yuan={amount}i,hour_index={-1 if hour is None else int(hour)}i,"
        f"{_str_field('reverses', entry.get('reverses') or '')},"
        f"{_str_field('device', entry.get('device') or '')},{_str_field('unit', unit)}"
    )
    return f"{PENALTY}{tags} {fields} {int(entry['accrued_at'])}"


# ---------------------------------------------------------------- dead letters


def deadletter_line(record: Mapping[str, Any]) -> str:
    """One ``deadletter`` point from ``Rejection.to_record()``."""
    topic = record.get("topic") or ""
    parts = parse_topic(topic) if isinstance(topic, str) and topic else None
    district = parts.district if parts is not None else "unknown"
    tags = _tags(
        [
            ("code", record.get("code") or "unknown"),
            ("device", record.get("device") or "unknown"),
            ("district", district),
        ]
    )
    fields = f"count=1i,{_str_field('message', record.get('message') or '')},{_str_field('topic', topic)}"
    return f"{DEADLETTER}{tags} {fields} {int(record['received_at'])}"


def quarantine_line(record: Mapping[str, Any]) -> str:
    """One ``quarantine`` point from ``contract.journal.quarantine_record``."""
    tags = _tags(
        [
            ("partition", record.get("partition")),
            ("reason", record.get("reason") or "unknown"),
            ("topic", record.get("topic") or "unknown"),
        ]
    )
    offset = record.get("offset")
    fields = f"count=1i,{_str_field('message', record.get('message') or '')}"
    if type(offset) is int:
        fields += f",offset={offset}i"
    return f"{QUARANTINE}{tags} {fields} {int(record['at'])}"


def audit_line(record: Mapping[str, Any]) -> str:
    """One ``audit`` point (ledger RP, kept forever) from ``contract.officers.AuditRecord``.

    Tags are what an auditor filters by; the entry's own identity is its
    (officer, credential, at) series and instant, so a redelivered record lands once.
    """
    tags = _tags(
        [
            ("action", record.get("action") or "unknown"),
            ("channel", record.get("channel") or "unknown"),
            ("credential", record.get("credential") or "none"),
            ("officer", record.get("officer") or "unknown"),
            ("outcome", record.get("outcome") or "unknown"),
        ]
    )
    fields = ",".join(
        _str_field(name, str(record.get(name) or ""))
        for name in ("case_id", "device", "reason", "client", "user_agent", "note")
    )
    fields += "," + _str_field("roles", ",".join(record.get("roles") or ()))
    extra = record.get("extra")
    if extra:  # an announcement's window, a stage act's fields, a silence (JSON)
        text = orjson.dumps(extra, option=orjson.OPT_SORT_KEYS, default=str).decode()
        fields += "," + _str_field("extra", text[:20_000])
    acted = record.get("acted_at")
    if type(acted) is int:
        fields += f",acted_at={acted}i"
    return f"{AUDIT}{tags} {fields} {int(record['at'])}"


# ---------------------------------------------------------------- dispatch


def record_line(record: Mapping[str, Any], device: Device | None = None) -> str | None:
    """Any record that travels on citywatch's Kafka topics, by its shape.

    ``{"type": "reading"}`` -> telemetry; ``{"type": "deadletter"}``; ``{"type": "quarantine"}``;
    a ledger entry (has ``amount_yuan``); a case event (has ``state`` and ``at``).
    """
    kind = record.get("type")
    if kind == "reading":
        from contract.reading import Reading

        return telemetry_line(Reading.from_record(dict(record)), device)
    if kind == "deadletter":
        return deadletter_line(record)
    if kind == "quarantine":
        return quarantine_line(record)
    if "amount_yuan" in record:
        return penalty_line(record, unit=device.unit if device is not None else None)
    if "state" in record and "at" in record:
        return case_lines(record)
    raise ValueError(f"not a citywatch record (no type/amount_yuan/state): keys {sorted(record)}")
