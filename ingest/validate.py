"""Payload validation: one MQTT message in, a ``Reading`` or a ``Rejection`` out.

``parse_message(topic, payload, received_at, registry)`` never raises. A
``Rejection`` carries a short machine ``code``, a sentence for people, the
topic and the raw bytes, and becomes a dead-letter record with
``Rejection.to_record()`` (docs/contracts.md, "MQTT": nothing is silently dropped).

Checks, in this order (the first failure is the one reported):

==================  ===========================================================
code                when
==================  ===========================================================
bad_topic           topic is not ``city/{district}/{kind}/{device_id}/telemetry``
unknown_kind        the topic's kind is not dust, manhole or streetlight
too_large           payload over ``IngestLimits.max_payload_bytes`` (4 KiB)
too_deep            objects and arrays nest deeper than ``IngestLimits.max_depth``
                    (16 levels; the payload's own object is level 1)
non_finite          a number is NaN, Infinity or overflows a double (``1e400``,
                    ``10**400`` written out)
not_json            payload is not JSON, or not UTF-8 (the message names the
                    first bad byte and its offset)
not_object          JSON, but not an object
duplicate_key       an object in the payload gives one key twice
                    (``{"open": true, "open": false}``)
device_mismatch     ``device_id`` / ``device`` / ``id`` in the payload names
                    another device than the topic
unknown_device      the topic's device is not in the registry
kind_mismatch       the registry says the device is of another kind
district_mismatch   the registry puts the device in another district
missing_ts          no ``ts`` (or ``ts`` is null)
bad_ts              ``ts`` is not integer epoch ms or RFC 3339 with an offset
future_ts           ``ts`` more than ``max_future_ms`` after ``received_at``
too_late            ``ts`` more than ``max_lateness_ms`` before ``received_at``
wrong_type          a known field has the wrong JSON type
out_of_range        a known field is outside its range (``KIND_SPECS``)
missing_field       a required field (group) is absent
bad_gateway_report  a message on ``city/gateway/<id>/deadletter`` that is not a
                    well-formed gateway report (a report's own code is one of
                    ``ingest.gateways.report.GATEWAY_CODES``: docs/gateways.md)
internal_error      a bug or a failing registry object; never expected. The bridge
                    uses it too for a message that failed after validation
                    (serialising it, producing it to Kafka): the message gives
                    the exception text, the raw bytes are kept
==================  ===========================================================

Decisions (see the tests in ``tests/ingest/test_validate.py``):

* JSON is parsed with orjson (strict RFC 8259). NaN/Infinity literals and
  numbers that overflow a double are rejected as ``non_finite`` naming the
  field; the diagnosis runs only after orjson has already failed, so it costs
  nothing on good messages. A leading UTF-8 BOM is ignored (RFC 8259 lets a
  parser do so); any other orjson failure is ``not_json``.
* Shape: nesting depth and duplicate keys are judged before anything
  serialises the payload. orjson's serialiser gives up at 254 levels, and a
  543-byte payload nesting an extra 253 levels deep once stopped the bridge
  (docs/contracts.md, "MQTT"); orjson (like most parsers) silently keeps the
  last of a key given twice, so ``{"open": true, "open": false}`` would mean
  whatever the parser picks. Every member of an object has exactly one ``:``
  outside strings, so a payload without ``[`` and with no more colons than its
  object has keys is flat (nested objects, if any, are empty) and has no
  duplicate: two byte scans on a clean payload. The colons of an RFC 3339
  ``ts`` are accounted for without stripping strings (``_colons_of_ts`` gives
  the argument). Any other payload has its strings stripped (one regex): the
  brackets left tell whether it nests deeper than the bound (``_deeper``, in
  C-speed passes, not bracket by bracket: a 4 KiB payload 2,000 levels deep is
  refused in microseconds), the colons left count the members, compared with
  the keys orjson kept; only a real duplicate is parsed again (``json.loads``
  with ``object_pairs_hook``) to name the key. A payload deeper than orjson's
  own 1024-level limit fails to parse and is measured the same way on the slow
  path, so it is ``too_deep`` too. Costs: ``bench/validate.py``.
* Huge numbers: an integer beyond 64 bits is read by orjson as a double (as
  JSON numbers are); one beyond a double's range (``10**400`` written out) is
  ``non_finite`` like ``1e400``, its text shortened in the message. Bad UTF-8
  is ``not_json`` naming the first bad byte and its offset.
* ``ts``: an integer (or integral float) of epoch milliseconds, or an RFC 3339
  string with ``Z`` or a numeric offset (``2025-11-22T16:40:00+08:00``). A
  timestamp without offset is ``bad_ts``: we will not guess whether a device
  means UTC or Beijing time. Values that look like epoch seconds or
  microseconds are ``bad_ts`` with a hint instead of ``too_late``/``future_ts``.
* Booleans must be JSON ``true``/``false``: ``0``/``1``/``"true"`` are
  ``wrong_type``. ``open`` drives a 10,000 yuan/hour clock; we do not guess.
* ``null`` for a known field means "not measured": it is dropped from
  ``Reading.fields`` (so downstream code never sees ``None`` for a known
  field) and counts as absent for the required check. Extras are kept as sent.
* Integers stay ints and floats stay floats in ``Reading.fields``.
* Speed (``bench/validate.py``): the field table is also compiled into a
  msgspec Struct per kind; ``msgspec.convert`` accepts a clean payload in C and
  only a failing one walks the Python table loop (``check_fields``), which
  names the code and field. The table stays the single source of truth; a
  property test checks the two agree. ``FAST_CHECK = False`` turns it off.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import msgspec
import orjson

from contract.clock import iso_utc
from contract.kinds import BOOL, KIND_SPECS, KINDS, NUMBER, KindSpec
from contract.kinds import UNBOUNDED as _BIG
from contract.reading import Reading
from contract.topics import parse_gateway_deadletter, parse_topic
from ingest.gateways.report import GATEWAY_CODES, parse_report

__all__ = [
    "BOOL",
    "CODES",
    "KIND_SPECS",
    "NUMBER",
    "IngestLimits",
    "KindSpec",
    "Rejection",
    "check_fields",
    "parse_message",
    "parse_ts",
]

# --------------------------------------------------------------------------- the rules, as data

CODES = (
    "bad_topic", "unknown_kind", "too_large", "too_deep", "non_finite", "not_json",
    "not_object", "duplicate_key",
    "device_mismatch", "unknown_device", "kind_mismatch", "district_mismatch",
    "missing_ts", "bad_ts", "future_ts", "too_late",
    "wrong_type", "out_of_range", "missing_field", "bad_gateway_report", "internal_error",
)  # fmt: skip
"""Every ``Rejection.code`` of MQTT validation, in check order; a gateway's report on
``city/gateway/<id>/deadletter`` gives one of ``GATEWAY_CODES`` instead (or ``bad_gateway_report``)."""
ALL_CODES = CODES + tuple(GATEWAY_CODES)

# --------------------------------------------------------------------------- public types


@dataclass(frozen=True)
class IngestLimits:
    """Limits applied by ``parse_message``.

    max_payload_bytes: larger payloads are ``too_large`` (docs/contracts.md, "MQTT": 4 KiB).
    max_future_ms: ``ts`` may be at most this far after ``received_at`` (clock skew).
    max_lateness_ms: ``ts`` may be at most this far before ``received_at``
        (buffered readings from a device that was offline are still accepted).
    identity_keys: payload keys that, when present, must name the topic's device.
    max_deadletter_raw_bytes: a ``too_large`` rejection keeps at most this many
        raw bytes (its message states the real size), so the dead-letter record
        still fits in a Kafka message.
    max_depth: objects and arrays may nest at most this many levels (the
        payload's own object is level 1, an object-valued extra level 2);
        deeper is ``too_deep``. The contract's payloads are flat. Keep it well
        under 250: orjson serialises at most 254 levels and the reading record
        puts the fields two levels down, so a deeper reading could not be
        produced (the bridge would dead-letter it as ``internal_error``).
    """

    max_payload_bytes: int = 4096
    max_future_ms: int = 5 * 60_000
    max_lateness_ms: int = 24 * 3_600_000
    identity_keys: tuple[str, ...] = ("device_id", "device", "id")
    max_deadletter_raw_bytes: int = 65_536
    max_depth: int = 16

    def __post_init__(self) -> None:
        for name in ("max_payload_bytes", "max_future_ms", "max_lateness_ms",
                     "max_deadletter_raw_bytes"):  # fmt: skip
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ValueError(f"Invalid {name!r} {value!r}; expected an integer >= 0")
        if type(self.max_depth) is not int or self.max_depth < 1:
            raise ValueError(f"Invalid 'max_depth' {self.max_depth!r}; expected an integer >= 1")
        if not isinstance(self.identity_keys, tuple) or not all(
            isinstance(k, str) for k in self.identity_keys
        ):
            raise ValueError(
                f"Invalid 'identity_keys' {self.identity_keys!r}; expected a tuple of strings"
            )


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message that failed validation; goes to the dead-letter topic."""

    code: str
    """Short machine code, one of ``CODES``."""
    message: str
    """A sentence naming the field, the value and what is allowed."""
    topic: str
    raw: bytes
    """The payload as received (truncated for ``too_large``, see ``IngestLimits``)."""
    received_at: int
    device: str | None
    """The topic's device id when the topic parsed, else None."""

    def to_record(self) -> dict[str, Any]:
        """JSON-friendly dead-letter record."""
        return {
            "type": "deadletter",
            "code": self.code,
            "message": self.message,
            "topic": self.topic,
            "raw_b64": base64.b64encode(self.raw).decode("ascii"),
            "received_at": self.received_at,
            "device": self.device,
        }


class _DeviceLike(Protocol):
    kind: str
    district: str


class _RegistryLike(Protocol):
    def get(self, device_id: str, /) -> _DeviceLike | None: ...


_DEFAULT_LIMITS = IngestLimits()
FAST_CHECK = True
"""Use the msgspec fast check before the table loop (False: table loop only; same results)."""
_convert = msgspec.convert
_ValidationError = msgspec.ValidationError
_BOM = b"\xef\xbb\xbf"
_MISSING: Any = object()
_EXPECTED_TOPIC = "city/{district}/{kind}/{device_id}/telemetry"

# --------------------------------------------------------------------------- the parser


def parse_message(
    topic: str,
    payload: bytes,
    received_at: int,
    registry: _RegistryLike | None,
    limits: IngestLimits = _DEFAULT_LIMITS,
) -> Reading | Rejection:
    """Validate one MQTT message; never raises.

    topic: the MQTT topic it arrived on.
    payload: the raw bytes (``bytearray``/``memoryview``/``str`` are accepted too).
    received_at: when the bridge received it, epoch ms (the reference for
        ``future_ts``/``too_late``).
    registry: anything with ``get(device_id) -> Device | None`` (a ``Registry``
        or a ``RegistryWatcher``); None skips the registry checks (simulator,
        benchmarks), never use None in the bridge.
    limits: see ``IngestLimits``.
    """
    try:
        return _parse(topic, payload, received_at, registry, limits)
    except Exception as exc:  # a bug, or a registry object that raised
        try:
            raw = _as_bytes(payload)
        except Exception:
            raw = b""
        parts = parse_topic(topic) if isinstance(topic, str) else None
        return Rejection(
            "internal_error",
            f"validation failed unexpectedly ({type(exc).__name__}: {exc}); please report this",
            topic if isinstance(topic, str) else repr(topic),
            raw,
            received_at,
            parts.device_id if parts is not None else None,
        )


def _gateway_report(
    gateway: str,
    topic: str,
    payload: bytes,
    received_at: int,
    registry: _RegistryLike | None,
    limits: IngestLimits,
) -> Rejection:
    """A gateway's dead-letter report as the dead letter it reports (``ingest.gateways.report``).

    The device it names is kept only when the registry has it behind this gateway
    (a gateway cannot file dead letters under another's devices).
    """
    if len(payload) > limits.max_payload_bytes:
        got: tuple[str, str, bytes, str | None] | str = (
            f"the report has {len(payload)} bytes, more than {limits.max_payload_bytes}"
        )
    else:
        got = parse_report(payload)
    if isinstance(got, str):
        return Rejection(
            "bad_gateway_report", f"gateway {gateway}: {got}", topic,
            payload[: limits.max_deadletter_raw_bytes], received_at, None,
        )  # fmt: skip
    code, message, raw, device = got
    if device is not None and registry is not None:
        known = registry.get(device)
        if known is None or getattr(known, "gateway", None) != gateway:
            message += f"; device {device} is not behind gateway {gateway} in the registry"
            device = None
    return Rejection(code, f"gateway {gateway}: {message}", topic, raw, received_at, device)


def _parse(
    topic: str,
    payload: Any,
    received_at: int,
    registry: _RegistryLike | None,
    limits: IngestLimits,
) -> Reading | Rejection:
    if type(payload) is not bytes:
        payload = _as_bytes(payload)

    # 1. topic
    parts = parse_topic(topic)
    if parts is None:
        gateway = parse_gateway_deadletter(topic)
        if gateway is not None:
            return _gateway_report(gateway, topic, payload, received_at, registry, limits)
        return Rejection(
            "bad_topic",
            f"topic {_short(topic)} does not match {_EXPECTED_TOPIC} "
            "(segments: 1-64 characters from A-Z a-z 0-9 _ . : -)",
            topic if isinstance(topic, str) else repr(topic),
            payload[: limits.max_deadletter_raw_bytes],
            received_at,
            None,
        )
    device_id = parts.device_id
    kind = parts.kind
    spec = KIND_SPECS.get(kind)
    if spec is None:
        return Rejection(
            "unknown_kind",
            f"topic kind {kind!r} is not one of {', '.join(KINDS)}",
            topic, payload[: limits.max_deadletter_raw_bytes], received_at, device_id,
        )  # fmt: skip

    # 2. size
    size = len(payload)
    if size > limits.max_payload_bytes:
        kept = limits.max_deadletter_raw_bytes
        note = f"; raw bytes truncated to the first {kept}" if size > kept else ""
        return Rejection(
            "too_large",
            f"payload is {size} bytes; at most {limits.max_payload_bytes} bytes are allowed{note}",
            topic, payload[:kept], received_at, device_id,
        )  # fmt: skip

    # 3. JSON (orjson parses at most 1024 levels; deeper is too_deep from the slow path)
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        obj = _slow_json(payload, exc, limits.max_depth)
        if type(obj) is tuple:
            return Rejection(obj[0], obj[1], topic, payload, received_at, device_id)

    # 4. shape: nesting and duplicate keys, before anything serialises the payload
    # (see "Decisions"). A payload with no '[' and no more member colons than keys is
    # flat: at most 2 levels (an empty object as an extra), no key twice.
    if (
        type(obj) is not dict
        or payload.find(b"[") >= 0  # (find: faster than `in` here)
        or ((colons := payload.count(b":")) != len(obj) and not _colons_of_ts(obj, colons, payload))
        or limits.max_depth < 2
    ):  # fmt: skip
        problem = _shape(payload, obj, limits.max_depth)
        if problem is not None:
            return Rejection(problem[0], problem[1], topic, payload, received_at, device_id)

    # 5. object
    if type(obj) is not dict:
        return Rejection(
            "not_object",
            f"payload is a JSON {_json_type(obj)}; it must be a JSON object "
            '({"ts": ..., "<field>": ...})',
            topic, payload, received_at, device_id,
        )  # fmt: skip

    # 6. identity
    for key in limits.identity_keys:
        named = obj.get(key, _MISSING)
        if named is not _MISSING and named != device_id:
            if type(named) is int and str(named) == device_id:
                continue
            return Rejection(
                "device_mismatch",
                f"payload {key!r} is {_describe(named)} but the topic's device is "
                f"{device_id!r}; a device publishes only on its own topic",
                topic, payload, received_at, device_id,
            )  # fmt: skip

    # 7. registry
    if registry is not None:
        dev = registry.get(device_id)
        if dev is None:
            where = getattr(registry, "path", None)
            where = f" ({where})" if where else ""
            return Rejection(
                "unknown_device",
                f"device {device_id!r} is not in the device registry{where}; "
                "add a row for it or fix the device's topic",
                topic, payload, received_at, device_id,
            )  # fmt: skip
        if dev.kind != kind:
            return Rejection(
                "kind_mismatch",
                f"topic kind is {kind!r} but the registry lists device {device_id!r} "
                f"as {dev.kind!r}",
                topic, payload, received_at, device_id,
            )  # fmt: skip
        if dev.district != parts.district:
            return Rejection(
                "district_mismatch",
                f"topic district is {parts.district!r} but the registry puts device "
                f"{device_id!r} in {dev.district!r}",
                topic, payload, received_at, device_id,
            )  # fmt: skip

    # 8. ts
    ts_value = obj.pop("ts", None)
    if ts_value is None:
        return Rejection(
            "missing_ts",
            "payload has no 'ts'; send the event time as integer epoch milliseconds "
            "or an RFC 3339 string such as 2025-11-22T16:40:00+08:00",
            topic, payload, received_at, device_id,
        )  # fmt: skip
    ts = parse_ts(ts_value)
    if isinstance(ts, str):
        return Rejection("bad_ts", ts, topic, payload, received_at, device_id)
    if ts - received_at > limits.max_future_ms:
        return Rejection(
            "future_ts",
            f"'ts' {iso_utc(ts)} is {_dur(ts - received_at)} after received_at "
            f"{iso_utc(received_at)}; at most {_dur(limits.max_future_ms)} ahead is allowed "
            "(check the device's clock)",
            topic, payload, received_at, device_id,
        )  # fmt: skip
    if received_at - ts > limits.max_lateness_ms:
        return Rejection(
            "too_late",
            f"'ts' {iso_utc(ts)} is {_dur(received_at - ts)} before received_at "
            f"{iso_utc(received_at)}; readings at most {_dur(limits.max_lateness_ms)} late "
            "are accepted",
            topic, payload, received_at, device_id,
        )  # fmt: skip

    # 9. fields (KIND_SPECS). Fast path: msgspec checks types and ranges in C
    # against a Struct generated from the table (0.3 µs vs ~1 µs for the Python
    # loop). Any failure, or a null, goes to the table loop, which is the
    # reference: it names the code and field, and drops known nulls.
    clean = False
    if FAST_CHECK:
        try:
            _convert(obj, spec.struct)
            clean = None not in obj.values()
        except _ValidationError:
            pass
    if not clean:
        problem = check_fields(kind, obj)
        if problem is not None:
            return Rejection(problem[0], problem[1], topic, payload, received_at, device_id)
    for group in spec.required_any:
        for name in group:
            if name in obj:
                break
        else:
            what = repr(group[0]) if len(group) == 1 else "one of " + "/".join(map(repr, group))
            return Rejection(
                "missing_field",
                f"{kind} payload needs {what} (absent or null)",
                topic, payload, received_at, device_id,
            )  # fmt: skip

    return Reading(device_id, kind, parts.district, ts, received_at, obj, topic)


def check_fields(kind: str, obj: dict[str, Any]) -> tuple[str, str] | None:
    """Check the known fields of ``obj`` against ``KIND_SPECS[kind]``, the table itself.

    Returns ``(code, message)`` for the first bad field, else None. Deletes
    known fields that are null ("not measured") from ``obj``. Required groups
    are checked by the caller.
    """
    spec = KIND_SPECS[kind]
    numbers = spec.numbers
    bools = spec.bools
    nulls = None
    for name, value in obj.items():
        rng = numbers.get(name)
        if rng is not None:
            tv = type(value)
            if (tv is float or tv is int) and rng[0] <= value <= rng[1]:
                continue
        elif name in bools:
            if type(value) is bool:
                continue
        else:
            continue  # unknown extra: kept as sent
        if value is None:
            if nulls is None:
                nulls = [name]
            else:
                nulls.append(name)
            continue
        return _field_problem(kind, name, value, rng)
    if nulls is not None:
        for name in nulls:
            del obj[name]
    return None


def _field_problem(
    kind: str, name: str, value: Any, rng: tuple[float, float] | None
) -> tuple[str, str]:
    """(code, message) for a known field whose value failed the fast check."""
    if rng is None:
        return "wrong_type", (
            f"field {name!r} is {_describe(value)}; {kind} {name!r} must be a JSON boolean "
            "true/false"
        )
    if type(value) not in (int, float):
        return "wrong_type", (
            f"field {name!r} is {_describe(value)}; {kind} {name!r} must be a JSON number "
            + _range(*rng)
        )
    if value != value or value in (_INF, _NINF):
        return "non_finite", f"field {name!r} is {value!r}; numbers must be finite"
    return "out_of_range", f"field {name!r} is {value!r}; {kind} {name!r} must be {_range(*rng)}"


# --------------------------------------------------------------------------- ts

_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:[.,][0-9]+)?"
    r"(?:[Zz]|[+-][0-9]{2}:?[0-9]{2})?"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_INF = float("inf")
_NINF = float("-inf")
_TS_HELP = (
    "send integer epoch milliseconds or an RFC 3339 string with an offset, "
    "such as 2025-11-22T16:40:00+08:00 or 2025-11-22T08:40:00Z"
)


def parse_ts(value: Any) -> int | str:
    """Event time in epoch ms, or a message saying why ``value`` is not a valid ``ts``."""
    tv = type(value)
    if tv is float and value.is_integer():  # 1.7638e12 from some JSON encoders
        value = int(value)
        tv = int
    if tv is int:
        if 1_000_000_000 <= value < 100_000_000_000:
            return f"'ts' {value} looks like epoch seconds; {_TS_HELP} (e.g. {value * 1000})"
        if value >= 100_000_000_000_000:
            return f"'ts' {value} looks like epoch microseconds or nanoseconds; {_TS_HELP}"
        if value < 0:
            return f"'ts' {value} is before 1970; {_TS_HELP}"
        epoch_ms: int = value
        return epoch_ms
    if tv is str:
        # The regex fixes the accepted shape (RFC 3339, plus '+0800' without colon);
        # fromisoformat (C, fast) then checks the calendar and computes the instant.
        if len(value) > 64 or _RFC3339.fullmatch(value) is None:
            return f"'ts' {_short(value)} is not an RFC 3339 timestamp; {_TS_HELP}"
        try:
            dt = datetime.fromisoformat(value.upper())
        except ValueError as exc:
            return f"'ts' {_short(value)} is not a valid date and time ({exc}); {_TS_HELP}"
        if dt.tzinfo is None:
            return (
                f"'ts' {_short(value)} has no UTC offset, so its instant is ambiguous; "
                "append 'Z' for UTC or '+08:00' for Beijing time"
            )
        ms: int = (dt - _EPOCH) // _MS
        if ms < 0:
            return f"'ts' {_short(value)} is before 1970; {_TS_HELP}"
        return ms
    return f"'ts' is {_describe(value)}; {_TS_HELP}"


# --------------------------------------------------------------------------- slow paths


def _as_bytes(payload: Any) -> bytes:
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode("utf-8", "surrogatepass")
    if payload is None:
        return b""
    raise TypeError(f"payload must be bytes, got {type(payload).__name__}")


class _NonFinite:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text if len(text) <= 24 else f"{text[:20]}... ({len(text)} characters)"


def _parse_float(text: str) -> Any:
    v = float(text)
    return _NonFinite(text) if v in (_INF, _NINF) else v


_MAX_DOUBLE_DIGITS = len(str(int(_BIG)))  # 309: a longer integer cannot be a finite double


def _parse_int(text: str) -> Any:
    """An integer literal; one beyond a double's range (``10**400`` written out) is non-finite.

    orjson reads integers beyond 64 bits as doubles and fails on those that overflow
    one; the length test comes first so no huge literal is ever converted.
    """
    if len(text.lstrip("-")) > _MAX_DOUBLE_DIGITS:
        return _NonFinite(text)
    v = int(text)
    return _NonFinite(text) if abs(v) > _BIG else v


def _slow_json(payload: bytes, exc: Exception, max_depth: int) -> Any:
    """After orjson failed: skip a BOM, or tell too deep, bad UTF-8 and non-finite numbers
    from other errors.

    Returns the parsed object, or ``(code, message)``.
    """
    skip = 0
    if payload.startswith(_BOM):
        try:
            return orjson.loads(payload[3:])
        except orjson.JSONDecodeError as exc2:
            exc = exc2
            skip = 3
    if _deeper(_outline(payload), max_depth):  # before json.loads below recurses into it
        return _too_deep(max_depth)
    try:
        text = payload[skip:].decode("utf-8")
    except UnicodeDecodeError as err:
        at = skip + err.start
        return (
            "not_json",
            f"payload is not valid UTF-8: byte 0x{payload[at]:02x} at offset {at} "
            f"({err.reason}); JSON text must be UTF-8",
        )
    try:
        loose = json.loads(
            text, parse_constant=_NonFinite, parse_float=_parse_float, parse_int=_parse_int
        )
    except Exception:
        loose = _MISSING
    if loose is not _MISSING:
        where = _find_non_finite(loose)
        if where is not None:
            path, text = where
            return (
                "non_finite",
                f"field {path} is {text}; numbers must be finite (leave the field out "
                "or send null when there is no measurement)",
            )
    return ("not_json", f"payload is not valid UTF-8 JSON: {exc}")


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_OUTLINE = bytes(b for b in range(256) if b not in b"{}[]:")
_PARENS = bytes.maketrans(b"[{]}", b"(())")


def _outline(payload: bytes) -> bytes:
    """The payload's brackets and colons outside strings, in order (exact for valid JSON)."""
    return _STRING.sub(b"", payload).translate(None, _NOT_OUTLINE)


def _shape(payload: bytes, obj: Any, max_depth: int) -> tuple[str, str] | None:
    """``too_deep`` or ``duplicate_key`` for a payload that is not plainly flat, else None."""
    outline = _outline(payload)
    if _deeper(outline, max_depth):
        return _too_deep(max_depth)
    if type(obj) is dict and outline.count(b":") != _key_count(obj, outline):
        key = _first_duplicate(payload)
        what = f"key {_short(key)}" if key is not None else "a key"
        return (
            "duplicate_key",
            f"{what} appears twice in one object of the payload; which one counts is "
            "ambiguous, send every key once",
        )
    return None


def _too_deep(max_depth: int) -> tuple[str, str]:
    return (
        "too_deep",
        f"payload nests objects/arrays more than {max_depth} levels deep; at most {max_depth} "
        "are allowed "
        '(a payload is one flat object: {"ts": ..., "<field>": <number or boolean>, ...})',
    )


def _deeper(outline: bytes, max_depth: int) -> bool:
    """Whether the brackets of an ``_outline`` nest more than ``max_depth`` levels.

    In C, without walking the brackets one by one: more than ``max_depth`` opening
    brackets in a row are that deep already (the usual attack, caught at once).
    Otherwise each pass deletes every adjacent open-close pair, the leaves of the
    nesting, which lowers the depth by exactly one; a pair still left after
    ``max_depth`` passes is deeper. (Unbalanced brackets, not JSON anyway, only
    count as deep when they nest so.)
    """
    parens = outline.translate(_PARENS, b":")
    if b"(" * (max_depth + 1) in parens:
        return True
    for _ in range(max_depth):
        if b"()" not in parens:
            return False
        parens = parens.replace(b"()", b"")
    return b"()" in parens


def _colons_of_ts(obj: dict[str, Any], colons: int, payload: bytes) -> bool:
    """True when the colons beyond one per key are those of a ``ts`` string: no key repeats.

    The usual RFC 3339 ``ts`` brings two or three colons; this spares it the
    string stripping. Why it is sound: ``L = orjson.dumps(ts)`` is a complete JSON
    string. Where ``L`` occurs in valid JSON, its first quote either opens a string
    (which then ends where ``L`` ends), or sits inside one (as ``\\"``; the string
    then runs at least to the end of ``L``), or closes one; the last is impossible
    because a digit cannot follow a string. So all of ``L``'s colons are inside
    strings, and the colons left for members are at most one per key orjson kept.
    """
    ts = obj.get("ts")
    return (
        type(ts) is str
        and "0" <= ts[:1] <= "9"
        and colons == len(obj) + ts.count(":")
        and payload.find(orjson.dumps(ts)) >= 0
    )


def _key_count(obj: dict[str, Any], outline: bytes) -> int:
    """The keys orjson kept, in every object of the parsed payload."""
    if outline.count(b"{") == 1:
        return len(obj)
    n = 0
    stack: list[Any] = [obj]
    while stack:
        value = stack.pop()
        if type(value) is dict:
            n += len(value)
            stack.extend(v for v in value.values() if type(v) is dict or type(v) is list)
        else:
            stack.extend(v for v in value if type(v) is dict or type(v) is list)
    return n


def _first_duplicate(payload: bytes) -> str | None:
    """The first key found twice in one object (slow; only once a duplicate is known)."""
    found: list[str] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if not found:
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    found.append(key)
                    break
                seen.add(key)
        return dict(pairs)

    try:
        json.loads(payload.removeprefix(_BOM), object_pairs_hook=pairs_hook)
    except Exception:  # orjson read it, json may still disagree (recursion): no name then
        pass
    return found[0] if found else None


def _find_non_finite(obj: Any) -> tuple[str, str] | None:
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, _NonFinite):
            return (repr(path) if path else "(the whole payload)"), value.text
        if isinstance(value, dict):
            for k, v in value.items():
                stack.append((f"{path}.{k}" if path else str(k), v))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                stack.append((f"{path}[{i}]", v))
    return None


# --------------------------------------------------------------------------- messages


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _describe(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, (list, dict)):
        return f"a JSON {_json_type(v)}"
    text = orjson.dumps(v).decode() if isinstance(v, (bool, int, float, str)) else repr(v)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} (a {_json_type(v)})"


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _range(lo: float, hi: float) -> str:
    def num(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else str(x)

    if lo > -_BIG and hi < _BIG:
        return f"between {num(lo)} and {num(hi)}"
    if lo > -_BIG:
        return f">= {num(lo)}"
    if hi < _BIG:
        return f"<= {num(hi)}"
    return "finite"


def _dur(ms: int) -> str:
    s = ms / 1000
    if s < 120:
        return f"{s:g} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 172_800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86_400:.1f} days"
