"""The sensor-fleet simulator: a synthetic Zhengzhou publishing the real MQTT contract.

Public API (what ``citywatch simulate`` and ``citywatch run`` call)::

    from sim.simulator import (
        build_city, split_devices, load_scenario_file, load_scenarios, parse_scenario_flag,
        Simulation, DEFAULT_START_MS,
    )
    from sim.publish import run_publisher, run_load

    city = build_city(seed=7, *split_devices(300))        # or n_dust, n_manhole, n_streetlight
    city.write_registry("state/registry.csv")             # docs/contracts.md CSV, header row
    scenarios = load_scenarios("config/scenarios/default.yaml")   # ConfigError(file, line, msg)
    sim = Simulation(city, scenarios, seed=7, start_ms=DEFAULT_START_MS, garbage_share=0.005)
    for due_ms, topic, payload in sim.events(until_ms=sim.start_ms + 3_600_000): ...
    stats = run_publisher(sim.events(end_ms), "127.0.0.1", 1883, client_id="cw-sim",
                          speed=600, on_progress=print, stop_event=stop)   # -> PublishStats
    hint = sim.expected_ledger_hint(until_ms=end_ms, rules=rules)          # expected vs actual
    load = run_load(rate=5000, duration_s=10, processes=2, host="127.0.0.1", port=1883,
                    city=city)                                             # -> LoadStats

* ``build_city`` / ``City`` / ``split_devices``: ``sim.city``.
* Scenarios (file format, kinds, flags, ``auto`` devices): ``sim.scenarios``.
* Publishing, time warp, back-pressure, load mode: ``sim.publish``.

``Simulation`` turns a city and its scenarios into the sequence of messages
the fleet would send, in sim-time order: ``events(until_ms)`` yields
``(due_ms, topic, payload_bytes)`` with ``due_ms < until_ms`` (``None``: no
end) and can be called again to continue where it stopped. ``ts`` in every
payload is the sim time in epoch ms (= ``due_ms``). A fixed seed, city and
scenario list give the same sequence byte for byte; no wall clock, no global
random state is read.

Signals (all local times Asia/Shanghai, UTC+8 without DST):

* dust, every ``Cadence.dust_s`` (60 s): PM10 = the district's ambient level
  (shared by its sites: a morning peak, a slow wave, rain washes it out, a
  dust storm lifts it) + the site's own contribution (higher 07:00-20:00 when
  the site works, more with wind); PM2.5, TSP, noise, wind, temperature and
  humidity to match. Normal levels stay below the 150 µg/m³ warning.
* manhole covers, heartbeat every ``Cadence.manhole_s`` (10 min): closed,
  tilt under 3°, water level (rain raises it), battery draining per message
  (alarms cost more), RSSI. Alarms are sent when they happen, not on the beat.
* streetlights, every ``Cadence.streetlight_s`` (5 min): photocell lamps, lit
  from 1-6 minutes after sunset to 1-6 minutes before sunrise at their own
  coordinates (each lamp its own switching delay), so a healthy lamp is never
  dark inside the rules' window (sunset + 15 min to sunrise - 15 min:
  docs/rules.md); with ``lamp_on``/``lamp_off`` given, lamps on a timetable
  instead (a few minutes either side); 0.5-1.2 A when lit, dimmed to 60 % from
  23:30 to 05:00, 0 A by day; leakage of a few mA (more in rain).
* vendor garbage: a share (``garbage_share``, default 0.5 %) of routine
  messages is replaced by a malformed payload (``GARBAGE_VARIANTS``: not JSON,
  missing ts, a number as a string, NaN, epoch seconds, out-of-range sensor
  error value, 0/1 for a boolean, another device's id, a JSON array, a ts
  without offset), each of which ``ingest.validate.parse_message`` rejects.
  Scenario messages (alarms, repairs) are never garbled.
"""

from __future__ import annotations

import heapq
import json
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from contract.cases import LedgerEntry
from contract.clock import DEFAULT_TIMEZONE, LocalClock
from contract.topics import telemetry_topic
from sim.city import DISTRICTS, City, SimDevice, build_city, split_devices
from sim.scenarios import (
    HOUR_MS,
    MINUTE_MS,
    SCENARIO_KINDS,
    Scenario,
    ScenarioFile,
    format_span,
    load_scenario_file,
    load_scenarios,
    parse_scenario_flag,
    parse_span,
    resolve_scenarios,
)
from streams.daylight import SunTable
from streams.replay import ReplayResult, replay
from streams.rules import Rules, default_rules

__all__ = [
    "DEFAULT_START_MS",
    "GARBAGE_VARIANTS",
    "NO_SCENARIO",
    "SCENARIO_KINDS",
    "Cadence",
    "City",
    "Scenario",
    "ScenarioFile",
    "Simulation",
    "build_city",
    "default_city",
    "format_span",
    "load_scenario_file",
    "load_scenarios",
    "local_minute",
    "parse_scenario_flag",
    "parse_span",
    "resolve_scenarios",
    "split_devices",
]

FLEET_HORIZON_MS = 7 * 24 * 3_600_000
"""The trucks' trips are planned this far ahead of the start (a week of nights)."""

NO_SCENARIO = "(no scenario)"
"""The hint's scenario for cases on devices no scenario acted on (a healthy city has none)."""

DEFAULT_START_MS = 1_793_577_600_000
"""2026-11-02T08:00:00+08:00 (a Monday morning): runs are reproducible by default."""

_CITY_CLOCK = LocalClock(DEFAULT_TIMEZONE)
"""The simulated city's local time: Zhengzhou, the contract's ``DEFAULT_TIMEZONE``."""


Event = tuple[int, str, bytes]
TaggedEvent = tuple[int, str, bytes, str]


def local_minute(ts_ms: int) -> int:
    """Minutes after the simulated city's local midnight of an epoch-ms instant."""
    return _CITY_CLOCK.minute_of_day(ts_ms)


def _hm(text: str) -> int:
    h, _, m = text.partition(":")
    if not (h.isdigit() and m.isdigit() and int(h) < 24 and int(m) < 60):
        raise ValueError(f'Invalid local time {text!r}; expected "HH:MM" such as "18:30"')
    return int(h) * 60 + int(m)


def _in_window(minute: int, start: int, end: int) -> bool:
    """``start <= minute < end`` on a clock face (spans midnight when end < start)."""
    return start <= minute < end if start <= end else minute >= start or minute < end


@dataclass(frozen=True, slots=True)
class Cadence:
    """Seconds between routine reports, per kind (sim time)."""

    dust_s: float = 60.0
    manhole_s: float = 600.0
    streetlight_s: float = 300.0

    def __post_init__(self) -> None:
        for name in ("dust_s", "manhole_s", "streetlight_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 1:
                raise ValueError(f"Invalid {name!r} {v!r}; expected seconds >= 1")

    def ms(self, kind: str) -> int:
        """A kind's report interval; 0 for the fleet's kinds, whose messages are planned trips."""
        if kind in ("vehicle", "weighstation", "platecam"):
            return 0
        return int(1000 * {"dust": self.dust_s, "manhole": self.manhole_s,
                           "streetlight": self.streetlight_s}[kind])  # fmt: skip


# --------------------------------------------------------------------------- garbage

GARBAGE_VARIANTS = (
    "not_json", "missing_ts", "string_number", "nan", "epoch_seconds",
    "sensor_error", "int_bool", "other_device", "array", "naive_ts",
)  # fmt: skip
"""The malformed payloads vendors send, in the order they are drawn from."""

_NUMBER_FIELD = {"dust": "pm10", "manhole": "tilt_deg", "streetlight": "voltage_v",
                 "vehicle": "speed_kmh"}  # fmt: skip
_ERROR_VALUE = {"dust": ("pm10", 65535), "manhole": ("battery_pct", 255),
                "streetlight": ("voltage_v", 655.35), "vehicle": ("lat", 655.35)}  # fmt: skip


def _garble(variant: str, kind: str, device_id: str, p: dict[str, Any]) -> bytes:
    """A malformed version of payload ``p`` that validation must reject."""
    ts = p["ts"]
    if variant == "not_json":
        return orjson.dumps(p)[:-7] + b"\x00\xff"
    if variant == "missing_ts":
        return orjson.dumps({k: v for k, v in p.items() if k != "ts"})
    if variant == "string_number":
        f = _NUMBER_FIELD[kind]
        return orjson.dumps({**p, f: str(p.get(f, 1.0))})
    if variant == "nan":
        return json.dumps({**p, _NUMBER_FIELD[kind]: float("nan")}).encode()
    if variant == "epoch_seconds":
        return orjson.dumps({**p, "ts": ts // 1000})
    if variant == "sensor_error":
        f, v = _ERROR_VALUE[kind]
        return orjson.dumps({**p, f: v})
    if variant == "int_bool":
        if kind == "dust":  # no booleans: the required pm10 is "not measured"
            return orjson.dumps({**p, "pm10": None})
        f = {"manhole": "open", "vehicle": "cover_closed"}.get(kind, "on")
        return orjson.dumps({**p, f: int(bool(p.get(f)))})
    if variant == "other_device":
        return orjson.dumps({"device_id": device_id + "X", **p})
    if variant == "array":
        return orjson.dumps([p])
    if variant == "naive_ts":
        local = (ts + _CITY_CLOCK.offset_ms(ts)) // 1000
        d, s = divmod(local, 86400)
        import datetime as _dt

        day = _dt.date(1970, 1, 1) + _dt.timedelta(days=d)
        return orjson.dumps(
            {**p, "ts": f"{day.isoformat()}T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"}
        )
    raise ValueError(f"unknown garbage variant {variant!r}")


# --------------------------------------------------------------------------- the simulation

_DUST, _MANHOLE, _LAMP, _FLEET = 0, 1, 2, 3
_KIND_CODE = {"dust": _DUST, "manhole": _MANHOLE, "streetlight": _LAMP, "vehicle": _FLEET,
              "weighstation": _FLEET, "platecam": _FLEET}  # fmt: skip
_TWO_PI = 2 * math.pi
_RAMP_MS = 5 * MINUTE_MS
_STORM_RAMP_MS = 20 * MINUTE_MS
_RAIN_RAMP_MS = 15 * MINUTE_MS


class _Dev:
    """Mutable per-device state of a running simulation."""

    __slots__ = (
        "sd", "kind", "topic", "d", "interval", "battery", "silent", "abnormal",
        "episodes", "failures", "leaks", "events_at", "on_early", "off_late",
        "burns", "floods", "pours", "trips", "fleet",
    )  # fmt: skip

    def __init__(self, sd: SimDevice, interval: int, d: int) -> None:
        self.sd = sd
        self.kind = _KIND_CODE[sd.kind]
        self.topic = telemetry_topic(sd.district, sd.kind, sd.device_id)
        self.d = d
        self.interval = interval
        self.battery = sd.battery0
        self.silent: list[tuple[int, int | None]] = []
        self.abnormal: list[tuple[int, int | None, str, float]] = []
        self.episodes: list[tuple[int, int, float]] = []
        self.failures: list[tuple[int, int | None]] = []
        self.leaks: list[tuple[int, int, float]] = []
        self.burns: list[tuple[int, int]] = []
        self.trips: list[tuple[int, int]] = []
        self.floods: list[tuple[int, int, float]] = []
        self.pours: list[tuple[int, int, float]] = []
        self.events_at: set[int] = set()
        self.fleet: dict[int, dict[str, Any]] = {}
        """A truck's, station's or camera's messages by due time (sim/trucks.py)."""
        # a photocell switches a little early at dusk and a little late at dawn
        self.on_early = 1 + int(sd.phase * 5)
        self.off_late = 1 + int((sd.phase * 7) % 1 * 5)


def _active(intervals: Iterable[tuple[Any, ...]], t: int) -> tuple[Any, ...] | None:
    for iv in intervals:
        if iv[0] <= t and (iv[1] is None or t < iv[1]):
            return iv
    return None


def _ramp(t: int, start: int, end: int | None, ramp: int) -> float:
    """0..1: rises over ``ramp`` after ``start``, falls over ``ramp`` before ``end``."""
    r = min(1.0, (t - start + 1) / ramp)
    if end is not None:
        r = min(r, (end - t) / ramp)
    return max(0.0, r)


class Simulation:
    """The messages a city's fleet sends, in sim-time order (see the module doc).

    city: the fleet (``build_city``).
    scenarios: ``Scenario`` list (from ``load_scenarios`` / ``parse_scenario_flag``);
        ``auto`` devices are resolved here (``ConfigError`` with the file's line
        for an unknown or wrong-kind device). The resolved list is ``self.scenarios``.
    seed: seeds the signals and the garbage (the city has its own seed).
    start_ms: sim time of the first instant, epoch ms (``DEFAULT_START_MS``).
    speed: sim seconds per wall second for ``run_publisher`` (0 = as fast as
        possible); kept here so a caller can pass one object around.
    garbage_share: share of routine messages replaced by malformed payloads (0..1).
    cadence: report intervals per kind (``Cadence``).
    lamp_on / lamp_off: local ``"HH:MM"`` of a timetable the lamps follow (match
        a ``fixed`` streetlight schedule of the rules file); None: photocell lamps
        that follow the sun (the default rules' ``sun`` schedule).
    """

    def __init__(
        self,
        city: City,
        scenarios: Iterable[Scenario] = (),
        seed: int = 0,
        start_ms: int = DEFAULT_START_MS,
        speed: float = 60.0,
        garbage_share: float = 0.005,
        cadence: Cadence | None = None,
        lamp_on: str | None = None,
        lamp_off: str | None = None,
    ) -> None:
        if isinstance(start_ms, bool) or not isinstance(start_ms, int) or start_ms < 0:
            raise ValueError(f"Invalid start_ms {start_ms!r}; expected epoch milliseconds >= 0")
        if isinstance(speed, bool) or not isinstance(speed, int | float) or not speed >= 0:
            raise ValueError(f"Invalid speed {speed!r}; expected >= 0 (0 = as fast as possible)")
        if (
            isinstance(garbage_share, bool)
            or not isinstance(garbage_share, int | float)
            or not 0 <= garbage_share <= 1
        ):
            raise ValueError(
                f"Invalid garbage_share {garbage_share!r}; expected 0..1 (0.005 = 0.5 %)"
            )
        self.city = city
        self.seed = seed
        self.start_ms = start_ms
        self.speed = float(speed)
        self.garbage_share = float(garbage_share)
        self.cadence = cadence or Cadence()
        schedule = default_rules().streetlight
        self.photocell = lamp_on is None and lamp_off is None
        self._sun = SunTable(LocalClock(DEFAULT_TIMEZONE))
        self.lamp_on = schedule.on_minute if lamp_on is None else _hm(lamp_on)
        self.lamp_off = schedule.off_minute if lamp_off is None else _hm(lamp_off)
        self._lamp_text = (lamp_on, lamp_off)
        self.scenarios = resolve_scenarios(scenarios, city)
        self.counts = {"messages": 0, "garbage": 0, "scenario": 0}
        """Messages yielded so far; ``garbage`` and ``scenario`` are subsets."""
        self.now_ms = start_ms
        """Sim time of the last yielded event (the start before any)."""

        self._rng = random.Random(f"citywatch-sim:{seed}")
        self._fleet_rng = random.Random(f"citywatch-sim-fleet:{seed}")
        """The trucks' garbage has its own draws: adding trucks changes no other message."""
        drng = random.Random(f"citywatch-sim-districts:{seed}")
        self._dist_index = {d.id: i for i, d in enumerate(DISTRICTS)}
        nd = len(DISTRICTS)
        self._amb_base = [drng.uniform(55.0, 80.0) for _ in range(nd)]
        self._ph = [[drng.uniform(0, _TWO_PI) for _ in range(nd)] for _ in range(3)]
        self._rain: list[list[tuple[int, int | None]]] = [[] for _ in range(nd)]
        self._storms: list[tuple[int, int | None, float]] = []
        self._devs = [
            _Dev(sd, self.cadence.ms(sd.kind), self._dist_index[sd.district]) for sd in city
        ]
        by_id = {dv.sd.device_id: i for i, dv in enumerate(self._devs)}
        self._heap: list[tuple[int, int, int, str]] = []
        self._seq = 0
        for i, dv in enumerate(self._devs):
            if dv.interval:
                self._push(start_ms + int(dv.sd.phase * dv.interval), i, "")
        for s in self.scenarios:
            self._install(s, [by_id[d] for d in s.devices if d in by_id])
        if any(dv.kind == _FLEET for dv in self._devs):
            from sim.trucks import fleet_messages

            horizon = start_ms + FLEET_HORIZON_MS
            for did, msgs in fleet_messages(self.scenarios, start_ms, horizon).items():
                i = by_id.get(did)
                if i is None:
                    continue  # another slice's device
                for due, payload in msgs:
                    self._devs[i].fleet[due] = payload
                    self._push(due, i, "fleet")

    # ------------------------------------------------------------------ setup

    def _push(self, due: int, i: int, action: str) -> None:
        heapq.heappush(self._heap, (due, self._seq, i, action))
        self._seq += 1

    def _install(self, s: Scenario, idx: list[int]) -> None:
        t0 = self.start_ms + s.at_ms
        t1 = None if s.end_ms is None else self.start_ms + s.end_ms
        p = s.params
        k = s.kind
        if k == "dust_storm":
            self._storms.append((t0, t1, p["pm10"]))
        elif k == "rain":
            for d in [self._dist_index[s.district]] if s.district else range(len(DISTRICTS)):
                self._rain[d].append((t0, t1))
        for i in idx:
            dv = self._devs[i]
            if k == "dust_episode":
                assert t1 is not None
                dv.episodes.append((t0, t1, p["pm10"]))
            elif k == "dust_off":
                dv.silent.append((t0, t1))
            elif k == "cover_stolen":
                dv.abnormal.append((t0, None, "open", 0.0))
                dv.silent.append((t0 + 1, None))
                self._event(i, t0, "alarm")
            elif k in ("cover_open", "cover_tilted"):
                mode = "open" if k == "cover_open" else "tilt"
                dv.abnormal.append((t0, t1, mode, p.get("tilt_deg", 0.0)))
                self._event(i, t0, "alarm")
                assert t1 is not None
                self._event(i, t1, "restore")
            elif k == "lamp_failure":
                dv.failures.append((t0, t1))
            elif k == "circuit_trip":
                assert t1 is not None
                for other in self._devs:  # the whole circuit of the named lamp goes dark
                    if other.sd.kind == "streetlight" and (other.sd.cabinet, other.sd.circuit) == (
                        dv.sd.cabinet,
                        dv.sd.circuit,
                    ):
                        other.trips.append((t0, t1))
            elif k == "day_burner":
                assert t1 is not None
                dv.burns.append((t0, t1))
            elif k == "flooded_well":
                assert t1 is not None
                dv.floods.append((t0, t1, p["water_cm"]))
            elif k == "night_pour":
                assert t1 is not None
                dv.pours.append((t0, t1, p["noise_db"]))
            elif k == "lamp_leakage":
                assert t1 is not None
                dv.leaks.append((t0, t1, p["leakage_ma"]))
                self._event(i, t0, "alarm")
                if p.get("rain"):
                    self._rain[dv.d].append((t0, t1))

    def _event(self, i: int, t: int, action: str) -> None:
        self._devs[i].events_at.add(t)
        self._push(t, i, action)

    # ------------------------------------------------------------------ the stream

    def events(self, until_ms: int | None = None, tagged: bool = False) -> Iterator[Any]:
        """Yield ``(due_ms, topic, payload)`` for every message due before ``until_ms``.

        until_ms: exclusive end (epoch ms of sim time); None runs forever.
        tagged: yield ``(due_ms, topic, payload, tag)`` instead, ``tag`` being
            ``""`` (routine), ``"scenario"`` or ``"garbage:<variant>"``.
        Calling it again continues after the last yielded message.
        """
        heap = self._heap
        devs = self._devs
        rng = self._rng
        share = self.garbage_share
        counts = self.counts
        dumps = orjson.dumps
        while heap:
            due, _, i, action = heap[0]
            if until_ms is not None and due >= until_ms:
                return
            heapq.heappop(heap)
            dv = devs[i]
            tag = ""
            if action == "fleet":  # a truck's, station's or camera's planned message
                payload = dv.fleet.pop(due)
                if share and dv.sd.kind == "vehicle" and self._fleet_rng.random() < share:
                    variant = GARBAGE_VARIANTS[self._fleet_rng.randrange(len(GARBAGE_VARIANTS))]
                    body = _garble(variant, dv.sd.kind, dv.sd.device_id, payload)
                    tag = "garbage:" + variant
                    counts["garbage"] += 1
                else:
                    body = dumps(payload)
            elif action:
                payload = self._payload(dv, due, action)
                body = dumps(payload)
                tag = "scenario"
                counts["scenario"] += 1
            else:
                self._push(due + dv.interval, i, "")
                if dv.silent and _active(dv.silent, due) is not None:
                    continue
                if due in dv.events_at:
                    continue  # the scenario's own message stands in for this beat
                payload = self._payload(dv, due, "")
                if share and rng.random() < share:
                    variant = GARBAGE_VARIANTS[rng.randrange(len(GARBAGE_VARIANTS))]
                    body = _garble(variant, dv.sd.kind, dv.sd.device_id, payload)
                    tag = "garbage:" + variant
                    counts["garbage"] += 1
                else:
                    body = dumps(payload)
            counts["messages"] += 1
            self.now_ms = due
            if tagged:
                yield due, dv.topic, body, tag
            else:
                yield due, dv.topic, body

    # ------------------------------------------------------------------ signals

    def _payload(self, dv: _Dev, t: int, action: str) -> dict[str, Any]:
        if dv.kind == _FLEET:
            return dv.fleet.pop(t)
        if dv.kind == _DUST:
            return self._dust(dv, t)
        if dv.kind == _MANHOLE:
            return self._manhole(dv, t, action)
        return self._lamp(dv, t, action)

    def _raining(self, d: int, t: int) -> float:
        iv = _active(self._rain[d], t)
        return 0.0 if iv is None else _ramp(t, iv[0], iv[1], _RAIN_RAMP_MS)

    def ambient(self, district: str, t: int) -> float:
        """The district's ambient PM10 at ``t`` (µg/m³), noise-free."""
        d = self._dist_index[district]
        h = (t + _CITY_CLOCK.offset_ms(t)) % 86_400_000 / HOUR_MS
        level = self._amb_base[d] * (
            1
            + 0.18 * math.cos(_TWO_PI * (h - 8) / 24)
            + 0.08 * math.sin(_TWO_PI * t / (7.3 * HOUR_MS) + self._ph[0][d])
        )
        level *= 1 - 0.4 * self._raining(d, t)
        for s0, s1, extra in self._storms:
            if s0 <= t and (s1 is None or t < s1):
                level += extra * _ramp(t, s0, s1, _STORM_RAMP_MS)
        return level

    def _storm(self, t: int) -> float:
        r = 0.0
        for s0, s1, _ in self._storms:
            if s0 <= t and (s1 is None or t < s1):
                r = max(r, _ramp(t, s0, s1, _STORM_RAMP_MS))
        return r

    def _dust(self, dv: _Dev, t: int) -> dict[str, Any]:
        g = self._rng.gauss
        d = dv.d
        sd = dv.sd
        amb = self.ambient(sd.district, t)
        storm = self._storm(t)
        rain = self._raining(d, t)
        wind = max(0.2, 2.2 + 1.2 * math.sin(_TWO_PI * t / (9.1 * HOUR_MS) + self._ph[1][d])
                   + 7.0 * storm + g(0, 0.3))  # fmt: skip
        wdir = (self._ph[2][d] * 57.3 + 40 * math.sin(_TWO_PI * t / (13 * HOUR_MS)) + g(0, 8)) % 360
        minute = local_minute(t)
        working = 420 <= minute < 1200
        site = sd.base * (1.0 if working else 0.15) * (1 + 0.08 * min(wind, 6.0)) * (1 - 0.5 * rain)
        pm10 = amb * (1 + g(0, 0.03)) + site * (1 + g(0, 0.12))
        ep = _active(dv.episodes, t)
        if ep is not None:
            r = _ramp(t, ep[0], ep[1], _RAMP_MS)
            pm10 = (1 - r) * pm10 + r * ep[2] * (1 + g(0, 0.05))
        pm10 = max(1.0, pm10)
        pm25_share = 0.5 - 0.2 * storm
        h = (t + _CITY_CLOCK.offset_ms(t)) % 86_400_000 / HOUR_MS
        temp = 11 + 5 * math.sin(_TWO_PI * (h - 9) / 24) - 3 * rain + g(0, 0.3)
        hum = 55 - 15 * math.sin(_TWO_PI * (h - 9) / 24) + g(0, 2)
        hum += (97 - hum) * rain
        return {
            "ts": t,
            "pm25": round(pm10 * pm25_share * (1 + g(0, 0.05)), 1),
            "pm10": round(pm10, 1),
            "tsp": round(pm10 * 1.7 * (1 + g(0, 0.05)), 1),
            "noise_db": round(max(30.0, self._noise(dv, t, working) + g(0, 2)), 1),
            "wind_speed": round(min(wind, 74.0), 1),
            "wind_dir": round(wdir),
            "temp_c": round(temp, 1),
            "humidity": round(min(100.0, max(5.0, hum)), 1),
        }

    @staticmethod
    def _noise(dv: _Dev, t: int, working: bool) -> float:
        """The boundary's A-weighted level before noise: 68 dB(A) at work, 52 at rest, or a pour's."""
        pour = _active(dv.pours, t)
        return pour[2] if pour is not None else 52 + (16 if working else 0)

    def _manhole(self, dv: _Dev, t: int, action: str) -> dict[str, Any]:
        g = self._rng.gauss
        dv.battery = max(0.0, dv.battery - (0.05 if action else 0.01))
        ab = _active(dv.abnormal, t)
        p: dict[str, Any] = {"ts": t}
        if ab is not None and ab[2] == "open":
            p["open"] = True
            p["tilt_deg"] = round(min(180.0, 70 + abs(g(0, 10))), 1)
        elif ab is not None:
            p["open"] = False
            p["tilt_deg"] = round(min(180.0, max(0.0, ab[3] + g(0, 0.5))), 1)
        else:
            p["open"] = False
            p["tilt_deg"] = round(min(3.0, abs(g(0, 0.8))), 1)
        water = dv.sd.base + 45 * self._raining(dv.d, t)
        flood = _active(dv.floods, t)
        if flood is not None:  # rising to the flood level within 30 minutes
            water = max(water, flood[2] * min(1.0, (t - flood[0]) / (30 * MINUTE_MS)))
        p["water_level_cm"] = round(max(0.0, water + g(0, 1)), 1)
        p["battery_pct"] = round(dv.battery, 1)
        p["rssi"] = int(min(-45, max(-120, round(-78 + g(0, 6)))))
        if action:
            p["event"] = "alarm" if action == "alarm" else "restore"
        return p

    def lamp_should_be_lit(self, dv_or_id: Any, t: int) -> bool:
        """Whether the simulated lamp switches itself on at ``t`` (its photocell window)."""
        dv = dv_or_id if isinstance(dv_or_id, _Dev) else self._devs[self._index(dv_or_id)]
        if self.photocell:
            rise, down = self._sun.rise_set(dv.sd.lat, dv.sd.lon, self._sun.local_date(t))
            return t >= down + dv.on_early * MINUTE_MS or t < rise - dv.off_late * MINUTE_MS
        return _in_window(
            local_minute(t),
            (self.lamp_on - dv.on_early) % 1440,
            (self.lamp_off + dv.off_late) % 1440,
        )

    def _index(self, device_id: str) -> int:
        for i, dv in enumerate(self._devs):
            if dv.sd.device_id == device_id:
                return i
        raise KeyError(device_id)

    def _lamp(self, dv: _Dev, t: int, action: str) -> dict[str, Any]:
        g = self._rng.gauss
        rain = self._raining(dv.d, t)
        lit = self.lamp_should_be_lit(dv, t) or _active(dv.burns, t) is not None
        volt = 220 + g(0, 3)
        leak_iv = _active(dv.leaks, t)
        leak = 0.8 + abs(g(0, 0.4)) + 4 * rain
        if leak_iv is not None:
            leak = max(leak_iv[2] * 0.9, leak_iv[2] + g(0, 2))
        p: dict[str, Any] = {"ts": t, "on": lit}
        if lit:
            minute = local_minute(t)
            dim = 60 if _in_window(minute, 23 * 60 + 30, 5 * 60) else 100
            failed = _active(dv.failures, t) is not None or _active(dv.trips, t) is not None
            cur = 0.0 if failed else dv.sd.base * dim / 100 * (1 + g(0, 0.02))
            p.update(voltage_v=round(volt, 1), current_a=round(cur, 3),
                     power_w=round(volt * cur * 0.95, 1), leakage_ma=round(leak, 1), dim_pct=dim)  # fmt: skip
        else:
            p.update(voltage_v=round(volt, 1), current_a=0.0, power_w=0.0,
                     leakage_ma=round(leak if leak_iv else leak * 0.3, 1), dim_pct=0)  # fmt: skip
        if action:
            p["event"] = "alarm"
        return p

    # ------------------------------------------------------------------ expected ledger

    def rewound(self) -> Simulation:
        """A new simulation with this one's arguments, at its start: the same messages again."""
        return Simulation(
            self.city, self.scenarios, seed=self.seed, start_ms=self.start_ms, speed=self.speed,
            garbage_share=self.garbage_share, cadence=self.cadence,
            lamp_on=self._lamp_text[0], lamp_off=self._lamp_text[1],
        )  # fmt: skip

    def replay(self, until_ms: int, rules: Rules | None = None) -> ReplayResult:
        """This simulation's messages before ``until_ms`` through the real detection core.

        The messages of ``rewound().events(until_ms)`` (garbage included), each
        validated as the bridge does and fed to a ``streams.detector.Detector``
        with ``rules`` (None: ``streams.rules.default_rules()``) and the city's
        registry, in sim-time order, then the watermark ``until_ms``: exactly
        ``citywatch replay`` of the day (``streams.replay.replay``). It does
        not touch this simulation's own position in its stream.
        """
        return self._replay(until_ms, rules)[0]

    def _replay(self, until_ms: int, rules: Rules | None) -> tuple[ReplayResult, int]:
        src = self.rewound()

        def lines() -> Iterator[dict[str, Any]]:
            for due, topic, payload in src.events(until_ms):
                # received_at = ts: the bridge's --event-time clock
                yield {
                    "topic": topic,
                    "raw": payload.decode("utf-8", "replace"),
                    "received_at": due,
                }
            yield {"watermark": until_ms}

        r = rules if rules is not None else default_rules()
        return replay(lines(), r, self.city.registry()), src.counts["messages"]

    def expected_ledger_hint(self, until_ms: int, rules: Rules | None = None) -> dict[str, Any]:
        """What the ledger should hold after the run, per scenario.

        until_ms: the pipeline's final watermark (sim time, epoch ms), normally
            the run's end; a silent (stolen) cover accrues until it.
        rules: the ``streams.rules.Rules`` the pipeline runs with (None: the
            defaults, ``streams.rules.default_rules()``).

        The amounts are not estimated here: ``replay(until_ms, rules)`` runs the
        simulation's own messages through the real rules, and each case (with
        its ledger entries) is attributed to a scenario by its device: the
        latest scenario acting on that device that had begun when the case
        opened. A ``dust_storm`` acts on every dust site, ``rain`` on every
        device of its district(s); entries no scenario explains are listed
        under ``NO_SCENARIO``, so ``total_yuan`` is always the replay's net.

        Returns ``{"until_ms", "total_yuan", "messages", "rejected", "items",
        "by_scenario", "notes"}`` (``messages`` replayed; ``rejected`` by the
        validator: the vendor garbage). Each item is one (scenario, device, rule):
        ``scenario`` (``Scenario.describe()``), ``device``, ``rule`` (a
        ``contract.rules`` id; None when the scenario opened no case on the
        device), ``cases``, ``entries``, ``amount_yuan``, ``payer``,
        ``payer_type`` (None without entries), ``district``, ``exact`` (False
        for dust in ``background`` mode: the live pipeline judges a district
        only in one partition, see docs/rules.md). Every device a scenario
        names (and every dust site of a storm) has at least one item, with 0
        when nothing was booked. ``by_scenario`` sums the items per scenario.
        """
        r = rules if rules is not None else default_rules()
        result, messages = self._replay(until_ms, r)
        entries_of: dict[str, list[LedgerEntry]] = {}
        for e in result.ledger:
            entries_of.setdefault(e.case_id, []).append(e)
        cases = {c.case_id: c for c in result.cases}

        # which scenarios act on which device, and when they begin
        listed: list[list[str]] = []
        acting: dict[str, list[tuple[int, int]]] = {}
        for k, s in enumerate(self.scenarios):
            shown, acts = self._acted_on(s)
            listed.append(shown)
            for did in acts:
                acting.setdefault(did, []).append((self.start_ms + s.at_ms, k))

        def scenario_of(device: str, at: int) -> int | None:
            began = [(t0, k) for t0, k in acting.get(device, ()) if t0 <= at]
            return max(began)[1] if began else None

        background = r.dust.mode == "background"
        rows: dict[tuple[int | None, str, str | None], dict[str, Any]] = {}

        def row(k: int | None, device: str, rule: str | None) -> dict[str, Any]:
            key = (k, device, rule)
            it = rows.get(key)
            if it is None:
                sd = self.city.by_id.get(device)
                it = rows[key] = {
                    "scenario": NO_SCENARIO if k is None else self.scenarios[k].describe(),
                    "device": device, "rule": rule, "cases": 0, "entries": 0, "amount_yuan": 0,
                    "payer": None, "payer_type": None,
                    "district": sd.district if sd is not None else None,
                    "exact": not (background and sd is not None and sd.kind == "dust"),
                }  # fmt: skip
            return it

        for c in cases.values():
            k = scenario_of(c.device, c.opened_at)
            row(k, c.device, c.rule)["cases"] += 1
        for case_id, booked in entries_of.items():
            c = cases.get(case_id)
            for e in booked:
                at = c.opened_at if c is not None else e.accrued_at
                it = row(scenario_of(e.device, at), e.device, c.rule if c is not None else e.rule)
                it["entries"] += 1
                it["amount_yuan"] += e.amount_yuan
                it["payer"], it["payer_type"] = e.payer, e.payer_type
        seen = {(k, did) for k, did, _ in rows}
        for k, shown in enumerate(listed):
            for did in shown:
                if (k, did) not in seen:
                    row(k, did, None)

        position = {did: i for i, did in enumerate(self.city.by_id)}
        last = len(self.scenarios)

        def order(key: tuple[int | None, str, str | None]) -> tuple[int, int, str, str]:
            k, did, rule = key
            return (last if k is None else k, position.get(did, len(position)), did, rule or "")

        items = [rows[key] for key in sorted(rows, key=order)]
        by_scenario: dict[str, dict[str, Any]] = {}
        for it in items:
            sc = by_scenario.setdefault(it["scenario"], {
                "scenario": it["scenario"], "rule": None, "rules": [], "devices": 0, "cases": 0,
                "entries": 0, "amount_yuan": 0, "exact": True, "_devices": set(),
            })  # fmt: skip
            sc["_devices"].add(it["device"])
            if it["rule"] is not None and it["rule"] not in sc["rules"]:
                sc["rules"].append(it["rule"])
            if sc["rule"] is None and it["entries"]:
                sc["rule"] = it["rule"]
            sc["cases"] += it["cases"]
            sc["entries"] += it["entries"]
            sc["amount_yuan"] += it["amount_yuan"]
            sc["exact"] = sc["exact"] and it["exact"]
        for sc in by_scenario.values():
            sc["devices"] = len(sc.pop("_devices"))
            if sc["rule"] is None and sc["rules"]:
                sc["rule"] = sc["rules"][0]
        notes: list[str] = []
        stray = [it for it in items if it["scenario"] == NO_SCENARIO and it["amount_yuan"]]
        if stray:
            notes.append(f"{len(stray)} device(s) booked without a scenario acting on them: "
                         f"{sum(it['amount_yuan'] for it in stray):,} yuan")  # fmt: skip
        if background:
            notes.append("dust in background mode: the live pipeline matches when a district's "
                         "sites share a partition (docs/rules.md)")  # fmt: skip
        return {
            "until_ms": until_ms,
            "total_yuan": result.ledger.net(),
            "messages": messages,
            "rejected": len(result.rejected),
            "items": items,
            "by_scenario": list(by_scenario.values()),
            "notes": notes,
        }

    def _acted_on(self, s: Scenario) -> tuple[list[str], list[str]]:
        """(devices listed for ``s`` even when nothing is booked, devices whose cases ``s`` explains)."""
        if s.kind in ("truck_overload", "truck_unlicensed"):
            # the weigh station's case, the camera's sighting
            seen = [
                d.device_id for d in self.city.devices if d.kind in ("weighstation", "platecam")
            ]
            return list(s.devices), list(s.devices) + seen
        if s.devices:
            return list(s.devices), list(s.devices)
        if s.kind == "dust_storm":
            sites = [d.device_id for d in self.city.of_kind("dust")]
            return sites, sites
        wet = [d.device_id for d in self.city if s.district is None or d.district == s.district]
        return [], wet  # rain


def default_city(devices: int = 300, seed: int = 7) -> City:
    """``build_city(seed, *split_devices(devices), fleet=True)``: the CLI's default city."""
    return build_city(seed, *split_devices(devices), fleet=True)
