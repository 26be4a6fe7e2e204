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
=====================  =======  ==============================================

Every mistake raises ``foundation.errors.ConfigError(file, line, message)``
with the line of the bad entry.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

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

SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS


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
}
_COMMON_KEYS = ("kind", "device", "devices", "district", "at", "duration")
_TOP_KEYS = ("version", "start", "run_for", "seed", "garbage_share", "scenarios")


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

_SPAN = re.compile(r"\+?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?")


def parse_span(text: str) -> int:
    """``"1h30m"`` -> 5_400_000 ms. Units d, h, m, s, ms in that order; ``+`` allowed.

    Raises ``ValueError`` with the expected format.
    """
    t = text.strip().replace(" ", "") if isinstance(text, str) else ""
    m = _SPAN.fullmatch(t)
    if t in ("0", "+0"):
        return 0
    if not t or m is None or not any(m.groups()):
        raise ValueError(
            f"expected a span of sim time with units, such as 90m, 1h30m, 5h20m, 45s or 2d; "
            f"got {text!r}"
        )
    d, h, mi, s, ms = (int(g) if g else 0 for g in m.groups())
    return (((d * 24 + h) * 60 + mi) * 60 + s) * 1000 + ms


def format_span(ms: int) -> str:
    """5_400_000 -> ``"1h30m"`` (the inverse of ``parse_span``)."""
    if ms == 0:
        return "0s"
    out = []
    for unit, size in (("d", DAY_MS), ("h", HOUR_MS), ("m", MINUTE_MS), ("s", SECOND_MS)):
        q, ms = divmod(ms, size)
        if q:
            out.append(f"{q}{unit}")
    if ms:
        out.append(f"{ms}ms")
    return "".join(out)


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


def _suggest(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


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

    def fail(msg: str) -> ConfigError:
        return ConfigError(file, line, msg)

    spec = SCENARIO_KINDS.get(kind)
    if spec is None:
        raise fail(
            f"unknown scenario kind {kind!r}{_suggest(str(kind), SCENARIO_KINDS)} "
            f"(kinds: {', '.join(SCENARIO_KINDS)})"
        )
    devs = tuple(devices)
    if spec.device_kind is None:
        if devs:
            raise fail(f"{kind} acts on the whole city; remove 'device'/'devices'")
    elif not devs:
        raise fail(
            f"{kind} needs a {spec.device_kind} device: add 'device: <id>' or 'device: auto'"
        )
    for d in devs:
        if not isinstance(d, str) or not d:
            raise fail(f"device ids are text, got {d!r}")
    try:
        at_ms = at if isinstance(at, int) and not isinstance(at, bool) else parse_span(str(at))
    except ValueError as exc:
        raise fail(f"'at': {exc}") from None
    dur_ms: int | None
    if duration is None:
        if spec.duration is True:
            raise fail(f"{kind} needs 'duration' (when the repair happens, e.g. 5h20m)")
        dur_ms = None if spec.duration is False else spec.duration  # type: ignore[assignment]
    else:
        if spec.duration is False:
            raise fail(f"{kind} has no duration (the device never comes back); remove 'duration'")
        try:
            dur_ms = (
                duration
                if isinstance(duration, int) and not isinstance(duration, bool)
                else parse_span(str(duration))
            )
        except ValueError as exc:
            raise fail(f"'duration': {exc}") from None
        if dur_ms <= 0:
            raise fail("'duration' must be longer than 0")
    full: dict[str, Any] = dict(spec.params)
    for k, v in params.items():
        if k not in spec.params:
            allowed = ", ".join(list(_COMMON_KEYS) + list(spec.params))
            raise fail(
                f"{kind} has no parameter {k!r}{_suggest(k, [*_COMMON_KEYS, *spec.params])} (keys: {allowed})"
            )
        default = spec.params[k]
        if isinstance(default, bool):
            if not isinstance(v, bool):
                raise fail(f"{k!r} must be true or false, got {v!r}")
        elif isinstance(default, float):
            if isinstance(v, bool) or not isinstance(v, int | float) or not v == v or v < 0:
                raise fail(f"{k!r} must be a number >= 0, got {v!r}")
            v = float(v)
        full[k] = v
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
    import yaml

    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    def at(node: Any, msg: str) -> ConfigError:
        return ConfigError(file, node.start_mark.line + 1, msg, column=node.start_mark.column + 1)

    try:
        root = yaml.compose(text, Loader=loader_cls)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(
            file, mark.line + 1 if mark else None,
            f"invalid YAML: {getattr(exc, 'problem', None) or exc}",
            column=mark.column + 1 if mark else None,
        ) from None  # fmt: skip
    if root is None:
        return ScenarioFile([], path=file)
    if not isinstance(root, yaml.MappingNode):
        raise at(root, "expected a mapping with a 'scenarios:' list")
    loader = loader_cls("")

    def value(node: Any) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return node
        return loader.construct_object(node, deep=True)

    out = ScenarioFile([], path=file)
    seen: set[str] = set()
    for k, v in root.value:
        key = k.value if isinstance(k, yaml.ScalarNode) else "?"
        if key not in _TOP_KEYS:
            raise at(
                k, f"unknown key {key!r}{_suggest(key, _TOP_KEYS)} (keys: {', '.join(_TOP_KEYS)})"
            )
        if key in seen:
            raise at(k, f"key {key!r} appears twice")
        seen.add(key)
        x = value(v)
        if key == "version":
            if x != 1 or isinstance(x, bool):
                raise at(
                    v,
                    f"version must be 1, got {v.value if isinstance(v, yaml.ScalarNode) else x!r}",
                )
        elif key == "start":
            try:
                out = replace(
                    out, start_ms=parse_start(v.value if isinstance(v, yaml.ScalarNode) else "")
                )
            except ValueError as exc:
                raise at(v, f"'start': {exc}") from None
        elif key == "run_for":
            try:
                out = replace(
                    out, run_for_ms=parse_span(v.value if isinstance(v, yaml.ScalarNode) else "")
                )
            except ValueError as exc:
                raise at(v, f"'run_for': {exc}") from None
        elif key == "seed":
            if isinstance(x, bool) or not isinstance(x, int):
                raise at(v, f"'seed' must be a whole number, got {x!r}")
            out = replace(out, seed=x)
        elif key == "garbage_share":
            if isinstance(x, bool) or not isinstance(x, int | float) or not 0 <= x <= 1:
                raise at(
                    v, f"'garbage_share' must be a number from 0 to 1 (0.005 = 0.5%), got {x!r}"
                )
            out = replace(out, garbage_share=float(x))
        elif key == "scenarios":
            if isinstance(v, yaml.ScalarNode) and x is None:
                continue
            if not isinstance(v, yaml.SequenceNode):
                raise at(v, "'scenarios' must be a list of scenarios (each a mapping)")
            out.scenarios.extend(_scenario_node(item, file, value, at) for item in v.value)
    return out


def _scenario_node(item: Any, file: str, value: Any, at: Any) -> Scenario:
    import yaml

    if not isinstance(item, yaml.MappingNode):
        raise at(item, "each scenario must be a mapping with at least 'kind' and 'at'")
    line = item.start_mark.line + 1
    fields: dict[str, Any] = {}
    nodes: dict[str, Any] = {}
    for k, v in item.value:
        key = k.value if isinstance(k, yaml.ScalarNode) else "?"
        if key in fields:
            raise at(k, f"key {key!r} appears twice")
        nodes[key] = k
        if key in ("at", "duration"):
            # raw text: YAML 1.1 would read an unquoted 1:30 as 90
            if not isinstance(v, yaml.ScalarNode):
                raise at(v, f"{key!r} must be a span such as 1h30m")
            fields[key] = v.value if v.value not in ("", "~", "null") else None
        elif key == "devices":
            if not isinstance(v, yaml.SequenceNode):
                raise at(v, "'devices' must be a list of device ids, e.g. [SL-JS-0001, SL-JS-0002]")
            fields[key] = [str(value(x)) for x in v.value]
        else:
            x = value(v)
            if isinstance(x, yaml.Node):
                raise at(v, f"{key!r} must be a single value, not a list or mapping")
            fields[key] = x
    kind = fields.pop("kind", None)
    if kind is None:
        raise ConfigError(file, line, f"scenario lacks 'kind' (kinds: {', '.join(SCENARIO_KINDS)})")
    devices: list[str] = []
    if "device" in fields and "devices" in fields:
        raise at(nodes["devices"], "give either 'device' or 'devices', not both")
    if "device" in fields:
        devices = [str(fields.pop("device"))]
    elif "devices" in fields:
        devices = fields.pop("devices")
    if "at" not in fields or fields["at"] is None:
        raise ConfigError(
            file, line, "scenario lacks 'at' (its start after the sim start, e.g. 1h30m)"
        )
    district = fields.pop("district", None)
    if district is not None and not isinstance(district, str):
        raise at(nodes["district"], f"'district' must be a district id, got {district!r}")
    spec = SCENARIO_KINDS.get(str(kind))
    for key in fields:
        if spec is not None and key not in ("at", "duration") and key not in spec.params:
            allowed = ", ".join(list(_COMMON_KEYS) + list(spec.params))
            raise at(
                nodes[key],
                f"{kind} has no parameter {key!r}{_suggest(key, [*_COMMON_KEYS, *spec.params])} "
                f"(keys: {allowed})",
            )
    line_of = {k: n.start_mark.line + 1 for k, n in nodes.items()}
    try:
        return make_scenario(
            str(kind), devices, fields.pop("at"), fields.pop("duration", None), district,
            file, line, **fields,
        )  # fmt: skip
    except ConfigError as exc:
        # point at the offending key's line when the message names one
        for key in ("at", "duration", *fields):
            if f"'{key}'" in exc.message and key in line_of:
                raise ConfigError(file, line_of[key], exc.message) from None
        if exc.message.startswith("unknown scenario kind") and "kind" in line_of:
            raise ConfigError(file, line_of["kind"], exc.message) from None
        raise


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
                f"unknown district {s.district!r}{_suggest(s.district, district_ids)} "
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
                hint = _suggest(d, same) or (
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
