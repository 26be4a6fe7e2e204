"""How fast is ingest validation, against bare JSON parsing measured in the same run?

    python bench/validate.py [--n 100000] [--repeat 5]

Prints messages/s for:

* baselines: bare ``json.loads`` and bare ``orjson.loads`` (and ``msgspec.json.decode``)
  on the same payloads: parsing only, no checks;
* ``parse_message``: the chosen approach (orjson parse; field types and ranges
  checked by ``msgspec.convert`` against a Struct generated from the
  ``KIND_SPECS`` table, falling back to the table loop to name the problem;
  topic parse, registry lookup, ts checks, building the ``Reading``), and the
  same with the Python table loop only (``validate.FAST_CHECK = False``);
* the alternatives considered, each wrapped to do the same job (topic parse and
  registry lookup shared, payload checks their own, a ``Reading`` at the end):
  the same table checks on stdlib ``json.loads``; msgspec typed Structs with
  ``Meta`` constraints (+ a second, untyped decode to keep unknown extras, which
  Structs drop); pydantic v2 models (``extra="allow"``, strict) if installed.

and the ratio of each to ``orjson.loads``, the µs per message, and the share of
one bridge's transport ceiling (~20k msg/s QoS 1, bench/RESULTS.md) that validation
would use. The message mix is realistic payloads of the three kinds (a fifth with
an RFC 3339 ``ts``, whose colons the duplicate-key check accounts for without
stripping strings). Then the slow paths, one payload repeated: a flood of one kind
of bad message, and the good payloads that are not plainly flat (an array or a
nested object in an extra: strings stripped to measure depth and count members).
"""

# no `from __future__ import annotations`: msgspec and pydantic read the local classes

import argparse
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from typing import Annotated, Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import msgspec  # noqa: E402
import orjson  # noqa: E402

import ingest.validate as validate  # noqa: E402
from contract.reading import Reading  # noqa: E402
from contract.topics import parse_topic, telemetry_topic  # noqa: E402
from ingest.validate import parse_message, parse_ts  # noqa: E402
from registry.devices import Device, Registry  # noqa: E402

TRANSPORT_CEILING = 20_000  # msg/s, one bridge, QoS 1 (bench/RESULTS.md)
NOW = 1_763_800_000_000
DISTRICTS = ["jinshui", "erqi", "zhongyuan", "guancheng", "huiji", "zhengdong"]


# --------------------------------------------------------------------------- workload


def make_workload(n: int, seed: int = 7) -> tuple[Registry, list[tuple[str, bytes]]]:
    rnd = random.Random(seed)
    devices = []
    for kind, prefix, count in (
        ("dust", "DS", 300),
        ("manhole", "MH", 3000),
        ("streetlight", "SL", 3000),
    ):
        for i in range(count):
            district = DISTRICTS[i % len(DISTRICTS)]
            devices.append(
                Device(
                    f"{prefix}-{i:05d}",
                    kind,
                    district,
                    f"G{i % 40:02d}",
                    "郑州市市政工程管理处",
                    "main",
                    "",
                    34.75,
                    113.65,
                    None,
                    None,
                    None,
                )  # fmt: skip
            )
    registry = Registry(devices)
    msgs = []
    for _ in range(n):
        d = rnd.choice(devices)
        ts: Any = NOW - rnd.randint(0, 120_000)
        if rnd.random() < 0.2:
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts / 1000)) + "+00:00"
        if d.kind == "dust":
            p = {"ts": ts, "pm25": round(rnd.uniform(10, 150), 1), "pm10": round(rnd.uniform(20, 300), 1),
                 "tsp": round(rnd.uniform(50, 500), 1), "noise_db": round(rnd.uniform(40, 90), 1),
                 "wind_speed": round(rnd.uniform(0, 10), 1), "wind_dir": rnd.randint(0, 359),
                 "temp_c": round(rnd.uniform(-5, 35), 1), "humidity": round(rnd.uniform(20, 90), 1)}  # fmt: skip
        elif d.kind == "manhole":
            p = {"ts": ts, "open": rnd.random() < 0.01, "tilt_deg": round(rnd.uniform(0, 3), 2),
                 "water_level_cm": round(rnd.uniform(0, 80), 1), "battery_pct": rnd.randint(5, 100),
                 "rssi": rnd.randint(-120, -60)}  # fmt: skip
        else:
            p = {"ts": ts, "on": True, "voltage_v": round(rnd.uniform(215, 235), 1),
                 "current_a": round(rnd.uniform(0.3, 0.6), 3), "power_w": round(rnd.uniform(60, 130), 1),
                 "leakage_ma": round(rnd.uniform(0, 5), 2), "dim_pct": 100, "fw": "2.3.1"}  # fmt: skip
        msgs.append((telemetry_topic(d.district, d.kind, d.device_id), orjson.dumps(p)))
    return registry, msgs


# --------------------------------------------------------------------------- alternatives


def table_on_stdlib_json() -> Callable[..., Any]:
    """parse_message with stdlib json.loads in place of orjson (same table checks)."""

    class _StdJson:
        JSONDecodeError = json.JSONDecodeError
        loads = staticmethod(json.loads)
        dumps = staticmethod(orjson.dumps)

    def run(topic: str, payload: bytes, received_at: int, registry: Registry) -> Any:
        saved = validate.orjson
        validate.orjson = _StdJson  # type: ignore[assignment]
        try:
            return parse_message(topic, payload, received_at, registry)
        finally:
            validate.orjson = saved

    # patch once for the whole timing loop instead of per call
    def batch_runner(msgs: list[tuple[str, bytes]], registry: Registry) -> int:
        saved = validate.orjson
        validate.orjson = _StdJson  # type: ignore[assignment]
        try:
            for t, p in msgs:
                parse_message(t, p, NOW, registry)
            return len(msgs)
        finally:
            validate.orjson = saved

    run.batch = batch_runner  # type: ignore[attr-defined]
    return run


def _front(topic: str, registry: Registry, received_at: int) -> Any:
    """Shared topic + registry step for the alternatives (a str on failure)."""
    parts = parse_topic(topic)
    if parts is None:
        return "bad_topic"
    dev = registry.get(parts.device_id)
    if dev is None or dev.kind != parts.kind or dev.district != parts.district:
        return "registry"
    return parts


def _ts_window(ts_value: Any, received_at: int) -> int | None:
    ts = parse_ts(ts_value)
    if type(ts) is str or ts - received_at > 300_000 or received_at - ts > 86_400_000:
        return None
    return ts  # type: ignore[return-value]


def msgspec_structs(keep_extras: bool) -> Callable[..., Any]:
    M = msgspec.Meta
    F = Annotated[float, M(ge=0, le=20_000)]

    class Dust(msgspec.Struct):
        ts: int | str
        pm10: F
        pm25: F | None = None
        tsp: F | None = None
        noise_db: Annotated[float, M(ge=0, le=200)] | None = None
        wind_speed: Annotated[float, M(ge=0, le=75)] | None = None
        wind_dir: Annotated[float, M(ge=0, le=360)] | None = None
        temp_c: Annotated[float, M(ge=-60, le=70)] | None = None
        humidity: Annotated[float, M(ge=0, le=100)] | None = None

    class Manhole(msgspec.Struct):
        ts: int | str
        open: bool | None = None
        tilt_deg: Annotated[float, M(ge=0, le=180)] | None = None
        water_level_cm: float | None = None
        battery_pct: Annotated[float, M(ge=0, le=100)] | None = None
        rssi: Annotated[float, M(ge=-150, le=0)] | None = None

    class Streetlight(msgspec.Struct):
        ts: int | str
        on: bool | None = None
        voltage_v: Annotated[float, M(ge=0, le=500)] | None = None
        current_a: Annotated[float, M(ge=0)] | None = None
        power_w: Annotated[float, M(ge=0)] | None = None
        leakage_ma: Annotated[float, M(ge=0)] | None = None
        dim_pct: Annotated[float, M(ge=0, le=100)] | None = None

    decoders = {k: msgspec.json.Decoder(s) for k, s in
                (("dust", Dust), ("manhole", Manhole), ("streetlight", Streetlight))}  # fmt: skip
    any_decoder = msgspec.json.Decoder()

    def run(topic: str, payload: bytes, received_at: int, registry: Registry) -> Any:
        parts = _front(topic, registry, received_at)
        if type(parts) is str or len(payload) > 4096:
            return parts
        try:
            obj = decoders[parts.kind].decode(payload)
        except msgspec.MsgspecError as exc:
            return str(exc)
        if parts.kind == "manhole" and obj.open is None and obj.tilt_deg is None:
            return "missing_field"
        ts = _ts_window(obj.ts, received_at)
        if ts is None:
            return "ts"
        if keep_extras:
            fields = any_decoder.decode(payload)
            del fields["ts"]
        else:
            fields = {f: getattr(obj, f) for f in obj.__struct_fields__ if f != "ts"}
        return Reading(parts.device_id, parts.kind, parts.district, ts, received_at, fields, topic)

    return run


def pydantic_models() -> Callable[..., Any] | None:
    try:
        import pydantic
        from pydantic import BaseModel, ConfigDict, Field
    except ImportError:
        return None

    def rng(lo: float | None = None, hi: float | None = None) -> Any:
        return Annotated[float, Field(ge=lo, le=hi, allow_inf_nan=False)] | None

    cfg = ConfigDict(extra="allow", strict=True)

    class Dust(BaseModel):
        model_config = cfg
        ts: int | str
        pm10: Annotated[float, Field(ge=0, le=20_000, allow_inf_nan=False)]
        pm25: rng(0, 20_000) = None
        tsp: rng(0, 20_000) = None
        noise_db: rng(0, 200) = None
        wind_speed: rng(0, 75) = None
        wind_dir: rng(0, 360) = None
        temp_c: rng(-60, 70) = None
        humidity: rng(0, 100) = None

    class Manhole(BaseModel):
        model_config = cfg
        ts: int | str
        open: bool | None = None
        tilt_deg: rng(0, 180) = None
        water_level_cm: rng() = None
        battery_pct: rng(0, 100) = None
        rssi: rng(-150, 0) = None

    class Streetlight(BaseModel):
        model_config = cfg
        ts: int | str
        on: bool | None = None
        voltage_v: rng(0, 500) = None
        current_a: rng(0) = None
        power_w: rng(0) = None
        leakage_ma: rng(0) = None
        dim_pct: rng(0, 100) = None

    models = {"dust": Dust, "manhole": Manhole, "streetlight": Streetlight}

    def run(topic: str, payload: bytes, received_at: int, registry: Registry) -> Any:
        parts = _front(topic, registry, received_at)
        if type(parts) is str or len(payload) > 4096:
            return parts
        try:
            m = models[parts.kind].model_validate_json(payload)
        except pydantic.ValidationError as exc:
            return str(exc)
        if parts.kind == "manhole" and m.open is None and m.tilt_deg is None:  # type: ignore[attr-defined]
            return "missing_field"
        ts = _ts_window(m.ts, received_at)  # type: ignore[attr-defined]
        if ts is None:
            return "ts"
        fields = m.model_dump(exclude={"ts"}, exclude_none=True)
        return Reading(parts.device_id, parts.kind, parts.district, ts, received_at, fields, topic)

    run.version = pydantic.VERSION  # type: ignore[attr-defined]
    return run


# --------------------------------------------------------------------------- timing


def best_rate(fn: Callable[[], Any], n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="messages per run (default 100000)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per variant; the best counts")
    args = ap.parse_args()
    n, repeat = args.n, args.repeat

    registry, msgs = make_workload(n)
    payloads = [p for _, p in msgs]

    # sanity: every variant accepts the workload
    assert all(type(parse_message(t, p, NOW, registry)) is Reading for t, p in msgs[:2000])

    def loop(fn: Callable[..., Any]) -> Callable[[], Any]:
        def go() -> None:
            for t, p in msgs:
                fn(t, p, NOW, registry)

        return go

    rows: list[tuple[str, float]] = []
    json_loads, orjson_loads, msgspec_decode = json.loads, orjson.loads, msgspec.json.decode

    def bare(f: Callable[[bytes], Any]) -> Callable[[], None]:
        def go() -> None:
            for p in payloads:
                f(p)

        return go

    rows.append(("baseline: json.loads only", best_rate(bare(json_loads), n, repeat)))
    rows.append(("baseline: orjson.loads only", best_rate(bare(orjson_loads), n, repeat)))
    rows.append(("baseline: msgspec.json.decode only", best_rate(bare(msgspec_decode), n, repeat)))
    rows.append(
        ("CHOSEN parse_message (orjson+msgspec check)", best_rate(loop(parse_message), n, repeat))
    )
    validate.FAST_CHECK = False
    try:
        rows.append(
            ("alt: parse_message, table loop only", best_rate(loop(parse_message), n, repeat))
        )
    finally:
        validate.FAST_CHECK = True
    std = table_on_stdlib_json()
    rows.append(
        ("alt: same table on json.loads", best_rate(lambda: std.batch(msgs, registry), n, repeat))
    )  # type: ignore[attr-defined]
    rows.append(
        ("alt: msgspec Structs (drops extras)", best_rate(loop(msgspec_structs(False)), n, repeat))
    )
    rows.append(
        (
            "alt: msgspec Structs + dict for extras",
            best_rate(loop(msgspec_structs(True)), n, repeat),
        )
    )
    pyd = pydantic_models()
    if pyd is not None:
        assert type(pyd(*msgs[0], NOW, registry)) is Reading
        rows.append((f"alt: pydantic {pyd.version} models", best_rate(loop(pyd), n, repeat)))  # type: ignore[attr-defined]
    else:
        rows.append(("alt: pydantic v2 (not installed, skipped)", 0.0))

    # slow paths: what a flood of one kind of bad message costs
    deep = b"[" * 253 + b"]" * 253
    bad_sets = {
        "reject: not_json": b"garbage",
        "reject: non_finite (NaN, json fallback)": b'{"ts": 1763800000000, "pm10": NaN}',
        "reject: out_of_range": b'{"ts": 1763800000000, "pm10": 65535}',
        "reject: too_deep (issue 12, 543 bytes)": b'{"ts":1763800000000,"pm10":1,"x":%s}' % deep,
        "reject: too_deep (2,000 levels, slow path)": b"[" * 2000 + b"]" * 2000,
        "reject: duplicate_key": b'{"ts": 1763800000000, "pm10": 80, "pm10": 8}',
        "accept: array in an extra (shape by regex)": (
            b'{"ts": 1763800000000, "pm10": 80, "pm25": 41.5, "fw": "2.3.1", "x": [1, 2]}'
        ),
        "accept: object in an extra (shape by regex)": (
            b'{"ts": 1763800000000, "pm10": 80, "pm25": 41.5, "site": {"id": "S-1"}}'
        ),
    }
    slow_rows = []
    topic = msgs[0][0] if "dust" in msgs[0][0] else next(t for t, _ in msgs if "/dust/" in t)
    for label, payload in bad_sets.items():
        m = max(n // 5, 1000)

        def go(payload: bytes = payload, m: int = m) -> None:
            for _ in range(m):
                parse_message(topic, payload, NOW, registry)

        slow_rows.append((label, best_rate(go, m, repeat)))

    orj = rows[1][1]
    js = rows[0][1]
    print(f"citywatch ingest validation benchmark: {n} messages x {repeat} runs (best)")
    print(f"python {platform.python_version()}, orjson {orjson.__version__}, msgspec {msgspec.__version__}, "
          f"{platform.machine()}, {os.cpu_count()} cpus")  # fmt: skip
    print(
        f"{'variant':44} {'msgs/s':>11} {'µs/msg':>7} {'vs orjson':>9} {'vs json':>8} {'of 20k/s':>8}"
    )
    for label, rate in rows + slow_rows:
        if rate == 0.0:
            print(f"{label:44} {'-':>11}")
            continue
        print(
            f"{label:44} {rate:11,.0f} {1e6 / rate:7.2f} {rate / orj:8.2f}x {rate / js:7.2f}x "
            f"{100 * TRANSPORT_CEILING / rate:7.1f}%"
        )
    chosen = rows[3][1]
    print(
        f"\nchosen path: {chosen / orj:.2f}x bare orjson.loads, {chosen / js:.2f}x bare json.loads; "
        f"at the {TRANSPORT_CEILING:,} msg/s transport ceiling validation uses "
        f"{100 * TRANSPORT_CEILING / chosen:.1f}% of one core"
    )


if __name__ == "__main__":
    main()
