"""parse_message never raises: arbitrary bytes and topics give a Reading or a Rejection.

The fuzz runs against ``_parse`` (no safety net) as well as ``parse_message``,
so a bug cannot hide behind the ``internal_error`` catch-all.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import random
import time

import msgspec
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract.reading import Reading
from contract.topics import KafkaTopics, telemetry_topic
from ingest.bridge import kafka_record
from ingest.validate import (
    _DEFAULT_LIMITS,
    CODES,
    KIND_SPECS,
    Rejection,
    _deeper,
    _outline,
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


# ------------------------------------------------------------------ 100,000 hostile payloads
#
# A seeded generator (hypothesis is far too slow for this many): payloads built as text,
# each a reading of one of the registry's devices with, at random, every JSON type in every
# field, deep nesting, duplicate keys (plain, escaped, nested), huge numbers (1e400 and
# 10**400 written out), NaN/Infinity literals, very long strings, then byte damage: BOMs,
# bad UTF-8 (0xff, truncated sequences, surrogates, overlong forms), truncation, flips.
# Every input must end as a Reading whose Kafka record serialises and reads back, or a
# Rejection with a known code (never internal_error) whose dead letter serialises; an
# independent judge (stdlib json with object_pairs_hook) checks the shape verdicts.

FUZZ_PAYLOADS = 100_000
FUZZ_SEED = int(os.environ.get("CITYWATCH_FUZZ_SEED", "12"))
FUZZ_TOPICS = KafkaTopics("fuzz")
DEVICES = [("D1", "dust", "jinshui"), ("M1", "manhole", "jinshui"), ("S1", "streetlight", "erqi")]
_STRINGS = ['""', '"a"', '"2.3.1"', '"a:b:c"', '"\\u003a"', '"\\"q\\""', '"\\\\"', '"名称"',
            '"\\ud800"', '"\\ud83d\\ude00"', '"tab\\t"', '"{[:]}"', '"\\u0000"']  # fmt: skip
_NUMBERS = ["0", "-0", "1", "-1", "1.5", "80", "65535", "20000", "20000.0001", "-150", "181",
            "9223372036854775807", "9223372036854775808", "18446744073709551615",
            "18446744073709551616", "-9223372036854775809", "1e308", "1.7976931348623157e308",
            "1.8e308", "1e400", "-1e400", "1E400", "1e-400", "1" + "0" * 400, "-" + "9" * 309,
            "9" * 308, "0.1e1", "1e2", "NaN", "Infinity", "-Infinity", "nan", "inf",
            "01", "1.", ".5", "+1", "0x10"]  # fmt: skip
_TS = ["{now}", "{now}.0", "{now}.5", '"2025-11-22T16:26:40+08:00"', '"2025-11-22T08:26:40Z"',
       '"2025-11-22T16\\u003a26:40+08:00"', '"2025-11-22T16:26:40"', '"{now}"', "null", "true",
       "[{now}]", '{{"t": {now}}}', "1763800000", "1763800000000000", "1e400", "NaN", '""',
       '"\\u003a"', '"1:2:3"']  # fmt: skip
_BAD_BYTES = [b"\xff", b"\xfe", b"\xc3", b"\xe4\xb8", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80",
              b"\x80", b"\x00", b"\xef\xbb\xbf"]  # fmt: skip


class _Fuzz:
    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.now = str(NOW - 60_000)
        # values are drawn from a pool made once (making each anew would be most of the cost)
        self.pool = [self.make_value() for _ in range(4000)]

    def value(self) -> str:
        return self.r.choice(self.pool)

    def make_value(self, depth: int = 0) -> str:
        r = self.r.random()
        if r < 0.30:
            return self.r.choice(_NUMBERS)
        if r < 0.45:
            return self.r.choice(_STRINGS)
        if r < 0.55:
            return self.r.choice(("true", "false", "null"))
        if r < 0.58:
            return '"' + "x" * self.r.choice((100, 1000, 3900, 5000)) + '"'
        if r < 0.66:
            return self.deep(self.r.choice((2, 15, 16, 17, 30, 253, 254, 300, 1100, 2000)))
        if depth > 3:
            return "1"
        if r < 0.83:
            return (
                "["
                + ",".join(self.make_value(depth + 1) for _ in range(self.r.randint(0, 3)))
                + "]"
            )
        keys = [self.r.choice(('"a"', '"b"', '"k:1"', '"a"', '"\\u0061"')) for _ in range(3)]
        members = [f"{k}:{self.make_value(depth + 1)}" for k in keys[: self.r.randint(0, 3)]]
        return "{" + ",".join(members) + "}"

    def deep(self, levels: int) -> str:
        """``levels`` arrays and objects, mixed, around a 1."""
        opens = [self.r.choice(("[", '{"k":')) for _ in range(levels)]
        return "".join(opens) + "1" + "".join("]" if o == "[" else "}" for o in reversed(opens))

    def payload(self) -> tuple[str, bytes]:
        r = self.r
        device, kind, district = r.choice(DEVICES)
        spec = KIND_SPECS[kind]
        members = [("ts", r.choice(_TS).format(now=self.now) if r.random() < 0.4 else self.now)]
        for name, (typ, lo, hi) in spec.fields.items():
            if r.random() < 0.5:
                continue
            if r.random() < 0.75:  # a good value most of the time, so readings get through
                good = (
                    r.choice(("true", "false"))
                    if typ == "bool"
                    else repr(r.uniform(lo, min(hi, lo + 100)))
                )
                members.append((name, good))
            else:
                members.append((name, self.value()))
        named = {n for n, _ in members}
        if kind == "manhole" and "open" not in named and r.random() < 0.8:
            members.append(("open", r.choice(("true", "false"))))
        if kind == "dust" and "pm10" not in named and r.random() < 0.8:
            members.append(("pm10", "80"))
        for _ in range(r.choice((0, 0, 1, 2))):
            members.append((r.choice(("fw", "site", "x", "device_id", "id", "名称")), self.value()))
        if r.random() < 0.12:  # a key twice, as sent or spelt with an escape
            name, value = r.choice(members)
            spelt = name if r.random() < 0.7 else "".join(f"\\u{ord(c):04x}" for c in name)
            members.insert(r.randint(0, len(members)), (spelt, r.choice((value, self.value()))))
        r.shuffle(members)
        sep = r.choice((":", ": ", " : "))
        text = "{" + ", ".join(f'"{k}"{sep}{v}' for k, v in members) + "}"
        if r.random() < 0.02:  # not an object at all
            text = r.choice((self.value(), "[" + text + "]", self.now))
        payload = text.encode("utf-8", "surrogatepass")
        if r.random() < 0.25:
            payload = self.damage(payload)
        topic = telemetry_topic(district, kind, device)
        if r.random() < 0.05:
            other = r.choice(DEVICES)
            topic = r.choice((telemetry_topic(other[2], kind, device), f"city/{district}/{kind}/{device}",
                              telemetry_topic(district, other[1], device), telemetry_topic(district, kind, "X9")))  # fmt: skip
        return topic, payload

    def damage(self, payload: bytes) -> bytes:
        r = self.r
        how = r.randrange(6)
        at = r.randrange(len(payload) + 1)
        if how == 0:
            return (
                r.choice((b"\xef\xbb\xbf", b"\xef\xbb\xbf\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"))
                + payload
            )
        if how == 1:  # bad bytes inside a string
            quote = payload.find(b'"', at)
            at = quote + 1 if quote >= 0 else at
            return payload[:at] + r.choice(_BAD_BYTES) + payload[at:]
        if how == 2:
            return payload[:at]
        if how == 3:
            return payload[:at] + bytes([r.randrange(256)]) + payload[at + 1 :]
        if how == 4:
            return payload[:at] + bytes([r.randrange(256)]) + payload[at:]
        return payload[:at] + r.choice(_BAD_BYTES) + payload[at:]


def _judge(payload: bytes) -> tuple[int, bool, bool] | None:
    """(depth, has a duplicate key, is an object) by an independent parser, when orjson
    reads the payload."""
    body = payload[3:] if payload.startswith(b"\xef\xbb\xbf") else payload
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    dup = False

    def pairs(items: list) -> tuple:  # every member kept, so a repeated key hides nothing
        nonlocal dup
        keys = [k for k, _ in items]
        dup = dup or len(set(keys)) != len(keys)
        return tuple(v for _, v in items)

    obj = json.loads(body, object_pairs_hook=pairs)
    depth, stack = 0, [(obj, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, (tuple, list)):  # an object (its values) or an array
            depth = max(depth, level)
            stack.extend((v, level + 1) for v in value)
    return depth, dup, isinstance(obj, tuple)


_BEFORE_SHAPE = {"bad_topic", "unknown_kind", "too_large"}
_SHAPE = {"too_deep", "duplicate_key"}
"""The independent judge sees every reading, one shape verdict in 2, any other one in 8."""


def test_100k_generated_payloads_through_validation_and_the_bridge_serialisation() -> None:
    fuzz = _Fuzz(FUZZ_SEED)
    outcomes: collections.Counter[str] = collections.Counter()
    started = time.perf_counter()
    for i in range(FUZZ_PAYLOADS):
        topic, payload = fuzz.payload()
        # the pure function without its safety net, so a bug cannot hide as internal_error
        result = _parse(topic, payload, NOW, REGISTRY, _DEFAULT_LIMITS)
        where = f"payload #{i} (seed {FUZZ_SEED}) on {topic}: {payload[:300]!r}"
        kafka_topic, _key, value = kafka_record(result, FUZZ_TOPICS, event_time=bool(i % 2))
        record = orjson.loads(value)
        if isinstance(result, Rejection):
            assert result.code in CODES and result.code != "internal_error", (where, result)
            assert kafka_topic == FUZZ_TOPICS.deadletter and record["code"] == result.code, where
            assert base64.b64decode(record["raw_b64"]) == result.raw, where
            outcomes[result.code] += 1
        else:
            assert isinstance(result, Reading), where
            assert kafka_topic == FUZZ_TOPICS.telemetry, where
            back = Reading.from_record(record)
            assert back.fields == result.fields and back.ts == result.ts, where
            outcomes["reading"] += 1
        if i % 10 == 0:  # the safety net gives the same verdict
            again = parse_message(topic, payload, NOW, REGISTRY)
            assert type(again) is type(result) and getattr(again, "code", None) == getattr(
                result, "code", None
            ), where
        code = getattr(result, "code", None)
        if code in _BEFORE_SHAPE or (code is not None and i % (2 if code in _SHAPE else 8)):
            continue
        judged = _judge(payload)
        if judged is None:
            assert code is not None, where  # what orjson cannot read is never a reading
            continue
        depth, dup, is_object = judged
        if depth > _DEFAULT_LIMITS.max_depth:
            assert code == "too_deep", (where, code)
        elif dup and is_object:
            assert code == "duplicate_key", (where, code)
        else:
            assert code not in ("too_deep", "duplicate_key"), (where, code)
    elapsed = time.perf_counter() - started
    print(f"{FUZZ_PAYLOADS} payloads in {elapsed:.1f} s: {dict(outcomes.most_common())}")
    # the generator reaches every corner it is meant to
    for code in ("reading", "too_deep", "duplicate_key", "non_finite", "not_json", "not_object",
                 "too_large", "wrong_type", "out_of_range", "bad_ts", "bad_topic"):  # fmt: skip
        assert outcomes[code] >= 100, (code, outcomes)


def _tree(r: random.Random, depth: int, width: int) -> str:
    """A random JSON value of arrays and objects nesting exactly ``depth`` levels."""
    if depth == 0:
        return r.choice(("1", '"[{"', "null"))
    kids = [_tree(r, depth - 1, width)] + [
        _tree(r, r.randrange(depth), width) for _ in range(r.randrange(width))
    ]
    r.shuffle(kids)
    if r.random() < 0.5:
        return "[" + ",".join(kids) + "]"
    return "{" + ",".join(f'"k{i}:":{k}' for i, k in enumerate(kids)) + "}"


def test_the_depth_check_agrees_with_the_exact_depth() -> None:
    """``_deeper`` deletes leaf pairs pass by pass; the reference walks bracket by bracket."""
    r = random.Random(3)
    for _ in range(3000):
        depth = r.randint(1, 24)
        text = _tree(r, depth, r.choice((1, 2, 3)))
        outline = _outline(text.encode())
        assert outline.count(b"{") + outline.count(b"[") >= depth
        for bound in (1, 2, depth - 1, depth, depth + 1, 16):
            if bound >= 1:
                assert _deeper(outline, bound) == (depth > bound), (text, bound)
    # unbalanced brackets (not JSON) are deep only when they nest so
    assert not _deeper(_outline(b'{"a": [1'), 2) and not _deeper(_outline(b"]]]][[[["), 4)
    assert _deeper(_outline(b"[" * 17), 16)
    siblings = [b"[[]," * n + b"1" + b"]" * n for n in (15, 16)]  # 16, 17 deep; runs of 1-2
    assert [_deeper(_outline(p), 16) for p in siblings] == [False, True]
