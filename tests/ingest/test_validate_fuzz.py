"""parse_message never raises: arbitrary bytes and topics give a Reading or a Rejection.

The fuzz runs against ``_parse`` (no safety net) as well as ``parse_message``,
so a bug cannot hide behind the ``internal_error`` catch-all.
"""

from __future__ import annotations

import json

import msgspec
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract.reading import Reading
from ingest.validate import (
    _DEFAULT_LIMITS,
    CODES,
    KIND_SPECS,
    Rejection,
    _parse,
    check_fields,
    parse_message,
)
from registry.devices import Device, Registry

NOW = 1_763_800_000_000
REGISTRY = Registry(
    [
        Device("D1", "dust", "jinshui", "G", "U", None, "", None, None, None, None, None),
        Device("M1", "manhole", "jinshui", "G", "U", "main", "", None, None, None, None, None),
        Device("S1", "streetlight", "erqi", "G", "U", None, "", None, None, None, None, None),
    ]
)

segments = st.sampled_from(
    ["jinshui", "erqi", "dust", "manhole", "streetlight", "D1", "M1", "S1", "x"]
)
topics = st.one_of(
    st.text(max_size=80),
    st.builds(lambda a, b, c: f"city/{a}/{b}/{c}/telemetry", segments, segments, segments),
    st.builds(lambda a, b, c: f"city/{a}/{b}/{c}/telemetry", st.text(max_size=8),
              st.text(max_size=8), st.text(max_size=8)),
)  # fmt: skip

FIELD_NAMES = sorted(
    {n for s in KIND_SPECS.values() for n in s.fields} | {"ts", "id", "device", "device_id", "x"}
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.integers(min_value=NOW - 30 * 3_600_000, max_value=NOW + 3_600_000),
    st.sampled_from(["2025-11-22T16:26:40+08:00", "2025-11-22T08:26:40Z", "2025-11-22T16:26:40",
                     "2025-13-01T00:00:00Z", "9999-12-31T23:59:59.999999-23:59",
                     "0001-01-01T00:00:00+23:59"]),
)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
objects = st.dictionaries(
    st.sampled_from(FIELD_NAMES) | st.text(max_size=6), json_values, max_size=10
)


def _encode(obj: object, how: int) -> bytes:
    if how == 0:
        return json.dumps(obj, allow_nan=True).encode()  # may contain NaN/Infinity literals
    if how == 1:
        return json.dumps(obj, allow_nan=True, ensure_ascii=False).encode("utf-8", "surrogatepass")
    try:
        return orjson.dumps(obj)  # NaN/inf become null
    except TypeError:  # integers beyond 64 bits
        return json.dumps(obj).encode()


def _check(topic: str, payload: bytes, received_at: int) -> None:
    for fn in (parse_message, lambda t, p, r, reg: _parse(t, p, r, reg, _DEFAULT_LIMITS)):
        for registry in (REGISTRY, None):
            r = fn(topic, payload, received_at, registry)
            assert isinstance(r, (Reading, Rejection))
            if isinstance(r, Rejection):
                assert r.code in CODES and r.code != "internal_error", r
                orjson.dumps(r.to_record())
            else:
                assert "ts" not in r.fields
                orjson.dumps(r.to_record())  # always serialisable for Kafka


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(topics, st.binary(max_size=300), st.integers(min_value=0, max_value=2**62))
def test_arbitrary_bytes_never_raise(topic: str, payload: bytes, received_at: int) -> None:
    _check(topic, payload, received_at)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(topics, objects | json_values, st.integers(0, 2))
def test_arbitrary_json_never_raises(topic: str, obj: object, how: int) -> None:
    _check(topic, _encode(obj, how), NOW)


field_values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=3),
    st.sampled_from([0, -0.0, 20_000, 20_000.0000001, -150, 180, 360, 100, 100.00001, 75, -60, 70]),
)  # fmt: skip


@settings(max_examples=1500)
@given(st.sampled_from(sorted(KIND_SPECS)), st.data())
def test_msgspec_fast_check_agrees_with_the_table(kind: str, data: st.DataObject) -> None:
    """The fast check must never accept what the table rejects (and should accept what it accepts)."""
    names = sorted(KIND_SPECS[kind].fields) + ["extra"]
    obj = data.draw(st.dictionaries(st.sampled_from(names), field_values, max_size=8))
    obj = orjson.loads(orjson.dumps(obj))  # as the parser would hand it over
    try:
        msgspec.convert(obj, KIND_SPECS[kind].struct)
        fast_ok = None not in obj.values()
    except msgspec.ValidationError:
        fast_ok = False
    table_ok = check_fields(kind, dict(obj)) is None and None not in obj.values()
    assert fast_ok == table_ok, obj
