"""Simulator scenarios: what goes wrong in the simulated city, when, and to which device.

A scenario file (``config/scenarios/default.yaml`` is the documented example)::

    version: 1
    start: "2026-11-02T08:00:00+08:00"   # optional defaults for the run;
    run_for: 30h                         # flags override them
    seed: 7
    garbage_share: 0.005
    scenarios:
      - kind: cover_open                 # open: true, repaired after `duration`
        device: MH-ZY-0001
        at: 1h                           # offset from the sim start (sim time)
        duration: 5h20m

The same scenario as a command-line flag (``parse_scenario_flag``)::

    cover_open:MH-ZY-0001@1h/5h20m
    dust_storm@24h/4h,pm10=450
    lamp_failure:SL-JS-0001+SL-JS-0002@11h/6h

``at`` and ``duration`` are sim-time spans written with units: ``90m``,
``1h30m``, ``5h20m``, ``45s``, ``2d``; ``at`` may start with ``+``. A device is
named by id, or ``auto`` (the first device of the right kind that no other
scenario uses, optionally in ``district:``), resolved against the city by
``resolve_scenarios``. Kinds (``SCENARIO_KINDS`` holds the parameters and
defaults):

=====================  =======  ==============================================
kind                   devices  what happens
=====================  =======  ==============================================
dust_episode           dust     the site's PM10 rises to ``pm10`` (320) for
                                ``duration`` (1h30m), 5-minute ramps
dust_storm             (all)    every district's ambient PM10 rises by ``pm10``
                                (450) for ``duration`` (3h): every site is high
dust_off               dust     the monitor is switched off: silent for
                                ``duration`` (none: until the end)
cover_stolen           manhole  one ``open: true`` alarm at ``at``, then silence
cover_open             manhole  ``open: true`` alarm; heartbeats stay abnormal;
                                a normal reading at exactly ``at + duration``
                                (the repair; required)
cover_tilted           manhole  the same with ``tilt_deg`` (25) instead of open
lamp_failure           lamp(s)  lit hours report ``on: true`` with no current,
                                for ``duration`` (none: until the end)
lamp_leakage           lamp     ``leakage_ma`` (38) for ``duration`` (30m);
                                ``rain`` (true) rains on its district meanwhile
rain                   (all)    rain in ``district`` (all districts if absent):
                                humidity up, water in the covers
day_burner             lamp(s)  lit (drawing current) in daylight too, for
                                ``duration`` (8h): a stuck photocell or contactor
flooded_well           manhole  water rises to ``water_cm`` (165) within 30 min
                                and stays for ``duration`` (2h)
night_pour             dust     a night concrete pour: ``noise_db`` (68) at the
                                boundary for ``duration`` (2h)
circuit_trip           lamp     the lamp's circuit trips: every lamp of its
                                cabinet's circuit dark when it should be lit,
                                for ``duration`` (2h)
truck_speeding         truck    its trip at ``at`` at ``speed_kmh`` (70)
truck_dumping          truck    its trip stops at ``fraction`` (0.4) of the
                                way and tips by the road
truck_cover_open       truck    its trip drives out loaded, cover open
truck_overload         truck    its trip carries ``gross_kg`` (33000) across
                                the weigh station
truck_unlicensed       truck    a trip of a truck without a permit, inside
                                the Fourth Ring (its own track, a camera)
=====================  =======  ==============================================

The file is read through ``foundation.cityfile`` (the one reader of every
city-edited file): every mistake raises ``foundation.errors.ConfigError`` with
``file:line:column`` of the bad key or entry and its path
(``scenarios[2].duration: ...``); unknown keys are refused with the one "did
you mean" phrasing; a span without its unit is refused (a bare ``90`` could be
seconds or minutes), a key given twice too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NoReturn

from yaml.nodes import ScalarNode

from contract.clock import HOUR_MS, MINUTE_MS
from foundation.cityfile import (
    Document,
    Section,
    did_you_mean,
    format_duration_ms,
    parse_duration_ms,
)
from foundation.errors import ConfigError, read_config_text

__all__ = [
    "SCENARIO_KINDS",
    "Scenario",
    "ScenarioFile",
    "format_span",
    "load_scenario_file",
    "load_scenarios",
    "parse_scenario_flag",
    "parse_span",
    "resolve_scenarios",
]


@dataclass(frozen=True, slots=True)
class _KindSpec:
    device_kind: str | None
    """Kind of device it acts on; None for city-wide scenarios."""
    duration: int | None | bool
    """Default duration ms; None = until the end; True = required; False = not allowed."""
    params: dict[str, Any]
    """Extra parameters and their defaults."""
    max_devices: int | None = None


SCENARIO_KINDS: dict[str, _KindSpec] = {
    "dust_episode": _KindSpec("dust", 90 * MINUTE_MS, {"pm10": 320.0}),
    "dust_storm": _KindSpec(None, 3 * HOUR_MS, {"pm10": 450.0}),
    "dust_off": _KindSpec("dust", None, {}),
    "cover_stolen": _KindSpec("manhole", False, {}),
    "cover_open": _KindSpec("manhole", True, {}),
    "cover_tilted": _KindSpec("manhole", True, {"tilt_deg": 25.0}),
    "lamp_failure": _KindSpec("streetlight", None, {}),
    "lamp_leakage": _KindSpec("streetlight", 30 * MINUTE_MS, {"leakage_ma": 38.0, "rain": True}),
    "rain": _KindSpec(None, 2 * HOUR_MS, {"district": None}),
    "day_burner": _KindSpec("streetlight", 8 * HOUR_MS, {}),
    "flooded_well": _KindSpec("manhole", 2 * HOUR_MS, {"water_cm": 165.0}),
    "night_pour": _KindSpec("dust", 2 * HOUR_MS, {"noise_db": 68.0}),
    "circuit_trip": _KindSpec("streetlight", 2 * HOUR_MS, {}, max_devices=1),
    # a truck's trip at `at` goes wrong (sim/trucks.py); the trip takes as long as it takes
    "truck_speeding": _KindSpec("vehicle", False, {"speed_kmh": 70.0}, max_devices=1),
    "truck_dumping": _KindSpec("vehicle", False, {"fraction": 0.4}, max_devices=1),
    "truck_cover_open": _KindSpec("vehicle", False, {}, max_devices=1),
    "truck_overload": _KindSpec("vehicle", False, {"gross_kg": 33_000.0}, max_devices=1),
    "truck_unlicensed": _KindSpec("vehicle", False, {}, max_devices=1),
}
_COMMON_KEYS = ("kind", "device", "devices", "district", "at", "duration")


@dataclass(frozen=True, slots=True)
class Scenario:
    """One scripted event. Times are sim-time offsets from the simulation's start."""

    kind: str
    """One of ``SCENARIO_KINDS``."""
    devices: tuple[str, ...] = ()
    """Device ids (``auto`` until ``resolve_scenarios``); empty for city-wide kinds."""
    at_ms: int = 0
    """Start, ms after the sim start."""
    duration_ms: int | None = None
    """How long it lasts, ms; None = until the end of the run."""
    params: dict[str, Any] = field(default_factory=dict)
    """Kind parameters with defaults filled in (``pm10``, ``tilt_deg``, ...)."""
    district: str | None = None
    """Restricts ``auto`` devices (and ``rain``) to one district."""
    file: str | None = field(default=None, compare=False)
    line: int | None = field(default=None, compare=False)
    """Where it was written, for error messages."""

    @property
    def end_ms(self) -> int | None:
        """End offset (``at_ms + duration_ms``), None when it lasts until the end."""
        return None if self.duration_ms is None else self.at_ms + self.duration_ms

    def describe(self) -> str:
        """One line for people: ``cover_open MH-ZY-0001 at +1h for 5h20m``."""
        who = " " + "+".join(self.devices) if self.devices else ""
        dur = f" for {format_span(self.duration_ms)}" if self.duration_ms is not None else ""
        extra = "".join(f" {k}={v}" for k, v in self.params.items() if v is not None)
        return f"{self.kind}{who} at +{format_span(self.at_ms)}{dur}{extra}"


@dataclass(frozen=True, slots=True)
class ScenarioFile:
    """A scenario file: its scenarios plus optional run defaults (None = not set)."""

    scenarios: list[Scenario]
    start_ms: int | None = None
    run_for_ms: int | None = None
    seed: int | None = None
    garbage_share: float | None = None
    path: str | None = None


# --------------------------------------------------------------------------- spans

SPAN_HELP = "a span of sim time with its unit, e.g. 90m, 1h30m, 5h20m, 45s or 2d"


def parse_span(text: str) -> int:
    """``"1h30m"`` -> 5_400_000 ms: ``foundation.cityfile.parse_duration_ms``, plus a leading ``+``.

    Units d, h, m, s, ms in that order, always written (``0`` alone is 0).
    Raises ``ValueError`` with the expected format.
    """
    t = text.strip().replace(" ", "") if isinstance(text, str) else ""
    t = t[1:] if t.startswith("+") else t
    ms = 0 if t == "0" else parse_duration_ms(t)
    if ms is None:
        raise ValueError(f"expected {SPAN_HELP}; got {text!r}")
    return ms


format_span = format_duration_ms
"""5_400_000 -> ``"1h30m"`` (the inverse of ``parse_span``)."""


def parse_start(text: str) -> int:
    """An RFC 3339 instant with offset -> epoch ms. Raises ``ValueError``."""
    try:
        dt = datetime.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        dt = None
    if dt is None or dt.tzinfo is None:
        raise ValueError(
            f"expected a date and time with offset such as 2026-11-02T08:00:00+08:00; got {text!r}"
        )
    return int(dt.timestamp() * 1000)


# --------------------------------------------------------------------------- building


def make_scenario(
    kind: str,
    devices: Iterable[str] = (),
    at: str | int = 0,
    duration: str | int | None = None,
    district: str | None = None,
    file: str | None = None,
    line: int | None = None,
    **params: Any,
) -> Scenario:
    """Build and check one scenario (``at``/``duration``: spans like ``"1h"`` or ms).

    Raises ``ConfigError(file, line, ...)`` naming what is wrong.
    """

    def fail(_key: str | None, msg: str) -> NoReturn:
        raise ConfigError(file, line, msg)

    spec = SCENARIO_KINDS.get(kind)
    if spec is None:
        fail("kind", f"unknown scenario kind {kind!r}{did_you_mean(kind, SCENARIO_KINDS)} "
                     f"(kinds: {', '.join(SCENARIO_KINDS)})")  # fmt: skip
    spans: list[int | None] = []
    for key, value in (("at", at), ("duration", duration)):
        try:
            spans.append(value if value is None or (type(value) is int) else parse_span(str(value)))
        except ValueError as exc:
            fail(key, f"'{key}': {exc}")
    full: dict[str, Any] = {}
    for k, v in params.items():
        if k not in spec.params or k == "district":
            allowed = ", ".join([*_COMMON_KEYS, *(p for p in spec.params if p != "district")])
            fail(k, f"{kind} has no parameter {k!r}"
                    f"{did_you_mean(k, [*_COMMON_KEYS, *spec.params])} (keys: {allowed})")  # fmt: skip
        default = spec.params[k]
        if isinstance(default, bool):
            if not isinstance(v, bool):
                fail(k, f"{k!r} must be true or false, got {v!r}")
        elif isinstance(default, float):
            if isinstance(v, bool) or not isinstance(v, int | float) or not v == v or v < 0:
                fail(k, f"{k!r} must be a number >= 0, got {v!r}")
            v = float(v)
        full[k] = v
    assert spans[0] is not None
    return _build(kind, list(devices), spans[0], spans[1], district, full, file, line, fail)


def _build(
    kind: str,
    devices: list[str],
    at_ms: int,
    duration_ms: int | None,
    district: str | None,
    params: dict[str, Any],
    file: str | None,
    line: int | None,
    fail: Callable[[str | None, str], NoReturn],
) -> Scenario:
    """The checks every scenario passes, from a file or a flag; ``fail(key, message)`` raises."""
    spec = SCENARIO_KINDS[kind]
    devs = tuple(devices)
    if spec.device_kind is None:
        if devs:
            fail("device" if len(devs) == 1 else "devices",
                 f"{kind} acts on the whole city; remove 'device'/'devices'")  # fmt: skip
    elif not devs:
        fail(
            None, f"{kind} needs a {spec.device_kind} device: add 'device: <id>' or 'device: auto'"
        )
    for d in devs:
        if not isinstance(d, str) or not d:
            fail("devices", f"device ids are text, got {d!r}")
    dur_ms: int | None
    if duration_ms is None:
        if spec.duration is True:
            fail(None, f"{kind} needs 'duration' (when the repair happens, e.g. 5h20m)")
        dur_ms = None if spec.duration is False else spec.duration  # type: ignore[assignment]
    else:
        if spec.duration is False:
            fail(
                "duration",
                f"{kind} has no duration (the device never comes back); remove 'duration'",
            )
        if duration_ms <= 0:
            fail("duration", "'duration' must be longer than 0")
        dur_ms = duration_ms
    full: dict[str, Any] = {k: v for k, v in spec.params.items() if k != "district"}
    full.update(params)
    if kind == "rain":
        full["district"] = district
    return Scenario(kind, devs, at_ms, dur_ms, full, district, file, line)


# --------------------------------------------------------------------------- the file


def load_scenarios(path: str | os.PathLike[str]) -> list[Scenario]:
    """The scenarios of a scenario file (see the module doc); ``ConfigError`` on a mistake."""
    return load_scenario_file(path).scenarios


def load_scenario_file(path: str | os.PathLike[str]) -> ScenarioFile:
    """The whole scenario file: scenarios and the optional run defaults."""
    name, text = read_config_text(path, "scenario file")
    return parse_scenario_text(text, name)


def parse_scenario_text(text: str, file: str = "<scenarios>") -> ScenarioFile:
    """Parse a scenario file's text (``file`` names it in errors)."""
    doc = _ScenarioDocument.parse(text, file)
    if doc.root is None:
        return ScenarioFile([], path=file)
    return doc.scenario_file()


class _ScenarioDocument(Document):
    """The scenario file's schema (the module doc), read through ``foundation.cityfile``."""

    def span(self, sec: Section, key: str) -> int | None:
        """``at``/``duration``: a span with its unit (``+`` allowed); None when absent."""
        node = sec.get(key)
        if node is None:
            return None
        path = sec.key_path(key)
        # the raw text: YAML 1.1 would read an unquoted 1:30 as 90
        raw = node.value if isinstance(node, ScalarNode) else None
        try:
            return parse_span(raw) if isinstance(raw, str) else parse_span("")
        except ValueError:
            x = self.scalar(node)
            hint = f" ({x}s or {x}m?)" if type(x) in (int, float) else ""
            self.fail(node, f"{path}: expected {SPAN_HELP}, got {self.describe(node)}{hint}")

    def scenario_file(self) -> ScenarioFile:
        top = self.section()
        v = top.get("version")
        if v is not None and (type(self.scalar(v)) is not int or self.scalar(v) != 1):
            self.fail(
                v,
                f"version: this citywatch reads scenario files of version 1, got {self.describe(v)}",
            )
        start_ms = None
        start = top.get("start")
        if start is not None:
            try:
                start_ms = parse_start(start.value if isinstance(start, ScalarNode) else "")
            except ValueError as exc:
                self.fail(start, f"start: {exc}")
        run_for_ms = self.span(top, "run_for")
        seed = top.get("seed")
        if seed is not None and type(self.scalar(seed)) is not int:
            self.fail(seed, f"seed: expected a whole number, got {self.describe(seed)}")
        share = None
        share_node = top.get("garbage_share")
        if share_node is not None:
            share = self.number(share_node, "garbage_share", zero_ok=True)
            if share > 1:
                self.fail(share_node, f"garbage_share: expected a share from 0 to 1 "
                                      f"(0.005 = 0.5 %), got {share:g}")  # fmt: skip
        scenarios = [self.scenario(sec) for sec in top.sections("scenarios")]
        top.finish()
        return ScenarioFile(
            scenarios,
            start_ms=start_ms,
            run_for_ms=run_for_ms,
            seed=None if seed is None else int(self.scalar(seed)),
            garbage_share=share,
            path=self.file,
        )

    def scenario(self, sec: Section) -> Scenario:
        line = sec.node.start_mark.line + 1

        def fail(key: str | None, message: str) -> NoReturn:
            node = sec.items[key][0] if key is not None and key in sec.items else sec.node
            self.fail(node, f"{sec.path}: {message}")

        kind_node = sec.get("kind")
        if kind_node is None:
            fail(None, f"missing 'kind' (kinds: {', '.join(SCENARIO_KINDS)})")
        kind = self.scalar(kind_node)
        spec = SCENARIO_KINDS.get(kind) if isinstance(kind, str) else None
        if spec is None:
            self.fail(
                kind_node,
                f"{sec.key_path('kind')}: unknown scenario kind {self.describe(kind_node)}"
                f"{did_you_mean(kind, SCENARIO_KINDS)} (kinds: {', '.join(SCENARIO_KINDS)})",
            )
        devices: list[str] = []
        one = sec.text("device")
        many = sec.nodes("devices")
        if one is not None and many:
            fail("devices", "give either 'device' or 'devices', not both")
        if one is not None:
            devices = [one]
        for node in many:
            x = self.scalar(node)
            if not isinstance(x, str) or not x.strip():
                self.fail(
                    node,
                    f"{sec.key_path('devices')}: expected device ids, got {self.describe(node)}",
                )
            devices.append(x)
        district = sec.text("district")
        at = self.span(sec, "at")
        if at is None:
            fail(None, "missing 'at' (its start after the sim start, e.g. 1h30m)")
        duration = self.span(sec, "duration")
        params: dict[str, Any] = {}
        for key, default in spec.params.items():
            if key == "district":
                continue
            if isinstance(default, bool):
                value: Any = sec.flag(key, default)
            else:
                value = sec.number(key, default, zero_ok=True)
            if key in sec.items:
                params[key] = value
        sec.finish()
        return _build(str(kind), devices, at, duration, district, params, self.file, line, fail)


# --------------------------------------------------------------------------- flags


def parse_scenario_flag(text: str) -> Scenario:
    """``KIND[:DEV[+DEV...]]@AT[/DURATION][,key=value...]`` -> Scenario.

    Examples: ``cover_open:MH-ZY-0001@1h/5h20m``, ``dust_storm@24h/4h,pm10=450``,
    ``rain@12h/2h,district=jinshui``. Raises ``ConfigError("--scenario", None, ...)``.
    """
    fail_file = "--scenario"
    head, *kvs = text.split(",")
    m = re.fullmatch(r"([a-z_]+)(?::([^@]+))?@([^/]+)(?:/(.+))?", head.strip())
    if m is None:
        raise ConfigError(
            fail_file, None,
            f"cannot read {text!r}; expected KIND[:DEVICE[+DEVICE]]@AT[/DURATION][,key=value], "
            "e.g. cover_open:MH-ZY-0001@1h/5h20m",
        )  # fmt: skip
    kind, devs, at_text, dur = m.groups()
    params: dict[str, Any] = {}
    district = None
    for kv in kvs:
        k, sep, v = kv.partition("=")
        k = k.strip()
        if not sep:
            raise ConfigError(fail_file, None, f"expected key=value after the comma, got {kv!r}")
        val: Any = v.strip()
        if val in ("true", "false"):
            val = val == "true"
        else:
            try:
                val = float(val)
            except ValueError:
                pass
        if k == "district":
            district = str(v.strip())
        else:
            params[k] = val
    return make_scenario(
        kind, devs.split("+") if devs else (), at_text, dur, district, fail_file, None, **params
    )


# --------------------------------------------------------------------------- resolving


def resolve_scenarios(scenarios: Iterable[Scenario], city: Any) -> list[Scenario]:
    """Replace ``auto`` devices by real ones and check every named device against ``city``.

    ``auto`` takes the first device (in city order) of the scenario's device
    kind, in its ``district`` if given, that no other scenario names. Raises
    ``ConfigError`` at the scenario's line for an unknown device, a device of
    the wrong kind, an unknown district, or no device left for ``auto``.
    """
    from sim.city import DISTRICTS

    district_ids = [d.id for d in DISTRICTS]
    items = list(scenarios)
    used = {d for s in items for d in s.devices if d != "auto"}
    out: list[Scenario] = []
    for s in items:
        spec = SCENARIO_KINDS[s.kind]
        if s.district is not None and s.district not in district_ids:
            raise ConfigError(
                s.file, s.line,
                f"unknown district {s.district!r}{did_you_mean(s.district, district_ids)} "
                f"(districts: {', '.join(district_ids)})",
            )  # fmt: skip
        devs: list[str] = []
        for d in s.devices:
            if d == "auto":
                pick = next(
                    (
                        x.device_id
                        for x in city.devices
                        if x.kind == spec.device_kind
                        and x.device_id not in used
                        and (s.district is None or x.district == s.district)
                    ),
                    None,
                )
                if pick is None:
                    where = f" in {s.district}" if s.district else ""
                    raise ConfigError(
                        s.file, s.line,
                        f"no {spec.device_kind} device left{where} for 'auto'; "
                        "make the city larger or name the device",
                    )  # fmt: skip
                used.add(pick)
                devs.append(pick)
                continue
            dev = city.by_id.get(d)
            if dev is None:
                same = [x.device_id for x in city.devices if x.kind == spec.device_kind]
                hint = did_you_mean(d, same) or (
                    f"; e.g. {', '.join(same[:3])}"
                    if same
                    else f"; the city has no {spec.device_kind} devices"
                )
                raise ConfigError(
                    s.file, s.line, f"device {d!r} is not in the simulated city{hint}"
                )
            if dev.kind != spec.device_kind:
                raise ConfigError(
                    s.file, s.line,
                    f"{s.kind} needs a {spec.device_kind} device, but {d} is a {dev.kind}",
                )  # fmt: skip
            devs.append(d)
        if len(set(devs)) != len(devs):
            raise ConfigError(s.file, s.line, "the same device is named twice")
        out.append(replace(s, devices=tuple(devs)))
    return out
