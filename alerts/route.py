"""The routing file (``config/routes.yaml``): receivers, escalation policies and the route tree.

In the spirit of Alertmanager's ``route:`` block. A notice about a case has
labels (``kind, rule, severity, district, grid, unit, device``); it enters the
root route, descends into the first child whose matchers all match (every
matching child when that child has ``continue: true``) and is delivered to the
receiver of the deepest route it reached. Children inherit ``receiver``,
``group_by``, timings and ``escalation`` from their parent unless they set
them. The root has no matchers and must name a receiver: it is the default.

Every mistake is a ``ConfigError`` with the file and line of the offending key
(PyYAML node marks), raised at start, never at the first push.

String values may say ``${ENV_VAR}`` or ``${ENV_VAR:-default}``, so secrets
(robot keys, HMAC secrets, SMTP passwords) stay out of the file.

The reference for every key is ``docs/alerts.md`` and the commented default
file ``config/routes.yaml``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from alerts.channels import CHANNELS, channel_target
from alerts.channels.plugin import Option
from foundation.errors import ConfigError, read_config_text

LABELS = ("kind", "rule", "severity", "district", "grid", "unit", "device")
"""What a route can match on."""
SEVERITIES = ("info", "warning", "minor", "major", "critical")

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


# ----------------------------------------------------------------------------- YAML with lines


class _Map(dict):
    """A mapping that remembers the line of itself and of each key."""

    line: int = 0
    lines: dict[str, int]


class _List(list):
    line: int = 0
    lines: list[int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    m = _Map()
    m.line = node.start_mark.line + 1
    m.lines = {}
    for k_node, v_node in node.value:
        key = loader.construct_object(k_node, deep=True)
        if not isinstance(key, str):
            raise ConfigError(loader.name, k_node.start_mark.line + 1, f"key {key!r} must be a string")
        if key in m:
            raise ConfigError(loader.name, k_node.start_mark.line + 1,
                              f"duplicate key {key!r} (first on line {m.lines[key]})")
        m[key] = loader.construct_object(v_node, deep=True)
        m.lines[key] = k_node.start_mark.line + 1
    return m


def _construct_list(loader: _Loader, node: yaml.SequenceNode) -> _List:
    out = _List(loader.construct_object(n, deep=True) for n in node.value)
    out.line = node.start_mark.line + 1
    out.lines = [n.start_mark.line + 1 for n in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_list)


def parse_duration_ms(value: Any) -> int | None:
    """``30s``, ``5m``, ``2h``, ``1h30m``, ``500ms`` or a number of seconds -> ms; None if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value * 1000) if value >= 0 else None
    if not isinstance(value, str) or not value.strip():
        return None
    m = _DURATION.fullmatch(value.strip())
    if not m or not any(m.groups()):
        return None
    h, mi, s, ms = (int(g or 0) for g in m.groups())
    return ((h * 60 + mi) * 60 + s) * 1000 + ms


# ----------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class ChannelSpec:
    """One delivery target of a receiver: its type and its (validated) options."""

    type: str
    options: dict[str, Any]
    line: int

    @property
    def target(self) -> str:
        """What rate limits and ordering are per: the robot / URL / mailbox (the module's ``TARGET``)."""
        return channel_target(self.type, self.options)


@dataclass(frozen=True)
class Receiver:
    name: str
    channels: tuple[ChannelSpec, ...]
    officer: str
    """Officer id put into this receiver's acknowledge links (default: the receiver name)."""
    label: str
    """Display name, e.g. ``金水区值班长 / Jinshui duty officer``."""


@dataclass(frozen=True)
class Level:
    receiver: str
    after_ms: dict[str, int]
    """Delay from the case opening, per severity; a severity not listed never reaches this level."""
    name: str


@dataclass(frozen=True)
class Escalation:
    name: str
    levels: tuple[Level, ...]


@dataclass(frozen=True)
class Matcher:
    label: str
    values: frozenset[str] | None
    regex: re.Pattern[str] | None

    def matches(self, labels: Mapping[str, str]) -> bool:
        v = labels.get(self.label) or ""
        if self.values is not None:
            return v in self.values
        assert self.regex is not None
        return self.regex.fullmatch(v) is not None


@dataclass
class Route:
    id: str
    """Position in the tree: ``root``, ``root.0``, ``root.0.1`` (stable while the file is)."""
    matchers: list[Matcher]
    receiver: str
    group_by: tuple[str, ...]
    group_wait_ms: int
    group_interval_ms: int
    repeat_interval_ms: int
    escalation: str | None
    continue_: bool
    line: int
    routes: list[Route] = field(default_factory=list)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


@dataclass(frozen=True)
class AckConfig:
    base_url: str
    """Public address of the ack endpoint, used to build links."""
    secret: str
    """HMAC-SHA256 key signing the links."""
    link_ttl_ms: int
    listen_host: str
    listen_port: int
    tokens: tuple[str, ...]
    """Bearer tokens accepted from integrations."""


@dataclass(frozen=True)
class DeliveryConfig:
    retry_initial_ms: int
    retry_max_ms: int
    give_up_after_ms: int
    timeout_ms: int


@dataclass
class RoutingConfig:
    file: str
    root: Route
    receivers: dict[str, Receiver]
    escalations: dict[str, Escalation]
    ack: AckConfig
    delivery: DeliveryConfig
    overdue_every_hours: int
    max_cases_in_message: int
    district_names: dict[str, str]

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """The routes a notice with these labels ends in (at least one: the default)."""
        out: list[Route] = []
        _descend(self.root, labels, out)
        return out

    def routes(self) -> list[Route]:
        out: list[Route] = []
        stack = [self.root]
        while stack:
            r = stack.pop()
            out.append(r)
            stack.extend(r.routes)
        return out

    def route(self, route_id: str) -> Route | None:
        for r in self.routes():
            if r.id == route_id:
                return r
        return None


def _descend(route: Route, labels: Mapping[str, str], out: list[Route]) -> bool:
    if not route.matches(labels):
        return False
    matched_child = False
    for child in route.routes:
        if _descend(child, labels, out):
            matched_child = True
            if not child.continue_:
                break
    if not matched_child:
        out.append(route)
    return True


# ----------------------------------------------------------------------------- loading


class _Ctx:
    def __init__(self, file: str):
        self.file = file

    def err(self, line: int | None, msg: str) -> ConfigError:
        return ConfigError(self.file, line, msg)

    def expand(self, value: Any, line: int) -> Any:
        if not isinstance(value, str):
            return value

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise self.err(line, f"environment variable {name} is not set (write ${{{name}:-default}} for a default)")

        return _ENV.sub(sub, value)

    def mapping(self, value: Any, line: int, what: str) -> _Map:
        if not isinstance(value, _Map):
            raise self.err(line, f"{what} must be a mapping (key: value lines), got {type(value).__name__}")
        return value

    def keys(self, m: _Map, allowed: tuple[str, ...], what: str) -> None:
        import difflib

        for k in m:
            if k not in allowed:
                close = difflib.get_close_matches(k, allowed, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise self.err(m.lines[k], f"unknown key '{k}' in {what}{hint}; allowed: {', '.join(allowed)}")

    def string(self, m: _Map, key: str, what: str, default: str | None = None, required: bool = False) -> str:
        if key not in m:
            if required:
                raise self.err(m.line, f"{what} needs '{key}'")
            return default or ""
        v = self.expand(m[key], m.lines[key])
        if isinstance(v, int | float) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str) or (required and not v):
            raise self.err(m.lines[key], f"{what}.{key} must be a non-empty string, got {m[key]!r}")
        return v

    def duration(self, m: _Map, key: str, what: str, default: int) -> int:
        if key not in m:
            return default
        ms = parse_duration_ms(m[key])
        if ms is None:
            raise self.err(m.lines[key], f"{what}.{key}: bad duration {m[key]!r}; write e.g. 30s, 5m, 2h, 1h30m")
        return ms

    def integer(self, m: _Map, key: str, what: str, default: int, minimum: int = 0) -> int:
        if key not in m:
            return default
        v = m[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise self.err(m.lines[key], f"{what}.{key} must be an integer >= {minimum}, got {v!r}")
        return v


TOP_KEYS = ("receivers", "escalations", "route", "ack", "delivery", "notify", "district_names")
ROUTE_KEYS = ("match", "match_re", "receiver", "group_by", "group_wait", "group_interval",
              "repeat_interval", "escalation", "continue", "routes")  # fmt: skip


def load_routes(path: str | os.PathLike[str]) -> RoutingConfig:
    """Read and validate a routing file; ``ConfigError(file, line, reason)`` on the first mistake."""
    file, text = read_config_text(path, "routing file")
    return parse_routes(text, file)


def parse_routes(text: str, file: str = "<routes>") -> RoutingConfig:
    ctx = _Ctx(file)
    loader = _Loader(text)
    loader.name = file
    try:
        doc = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        raise ConfigError(file, line, f"not valid YAML: {exc.problem or exc}", column=col) from None
    finally:
        loader.dispose()
    if doc is None:
        raise ctx.err(1, "the routing file is empty; it needs at least 'receivers' and 'route'")
    top = ctx.mapping(doc, 1, "the routing file")
    ctx.keys(top, TOP_KEYS, "the routing file")
    for k in ("receivers", "route"):
        if k not in top:
            raise ctx.err(top.line, f"the routing file needs '{k}'")

    receivers = _receivers(ctx, top["receivers"], top.lines["receivers"])
    escalations = _escalations(ctx, top.get("escalations"), top.lines.get("escalations", 1), receivers)

    notify = ctx.mapping(top.get("notify", _empty()), top.lines.get("notify", 1), "notify")
    ctx.keys(notify, ("overdue_every_hours", "max_cases_in_message"), "notify")
    delivery_m = ctx.mapping(top.get("delivery", _empty()), top.lines.get("delivery", 1), "delivery")
    ctx.keys(delivery_m, ("retry_initial", "retry_max", "give_up_after", "timeout"), "delivery")
    delivery = DeliveryConfig(
        retry_initial_ms=ctx.duration(delivery_m, "retry_initial", "delivery", 1000),
        retry_max_ms=ctx.duration(delivery_m, "retry_max", "delivery", 300_000),
        give_up_after_ms=ctx.duration(delivery_m, "give_up_after", "delivery", 24 * 3600_000),
        timeout_ms=ctx.duration(delivery_m, "timeout", "delivery", 10_000),
    )
    ack = _ack(ctx, top.get("ack", _empty()), top.lines.get("ack", 1))

    names_m = ctx.mapping(top.get("district_names", _empty()), top.lines.get("district_names", 1), "district_names")
    district_names = {str(k): str(v) for k, v in names_m.items()}

    route_m = ctx.mapping(top["route"], top.lines["route"], "route")
    if "match" in route_m or "match_re" in route_m:
        raise ctx.err(route_m.lines.get("match") or route_m.lines.get("match_re"),
                      "the root route matches everything; put matchers on its child routes")
    if "receiver" not in route_m:
        raise ctx.err(route_m.line, "the root route needs 'receiver' (the default receiver)")
    defaults = Route(
        id="root", matchers=[], receiver="", group_by=("district", "rule"), group_wait_ms=30_000,
        group_interval_ms=300_000, repeat_interval_ms=4 * 3600_000, escalation=None, continue_=False,
        line=route_m.line,
    )
    root = _route(ctx, route_m, "root", defaults, receivers, escalations)
    return RoutingConfig(
        file=file, root=root, receivers=receivers, escalations=escalations, ack=ack, delivery=delivery,
        overdue_every_hours=ctx.integer(notify, "overdue_every_hours", "notify", 1, minimum=1),
        max_cases_in_message=ctx.integer(notify, "max_cases_in_message", "notify", 10, minimum=1),
        district_names=district_names,
    )


def _empty() -> _Map:
    m = _Map()
    m.line, m.lines = 1, {}
    return m


def _receivers(ctx: _Ctx, value: Any, line: int) -> dict[str, Receiver]:
    if not isinstance(value, _List) or not value:
        raise ctx.err(line, "receivers must be a non-empty list of {name: ..., <channel>: {...}}")
    out: dict[str, Receiver] = {}
    for item, item_line in zip(value, value.lines, strict=True):
        m = ctx.mapping(item, item_line, "a receiver")
        ctx.keys(m, ("name", "officer", "label", *CHANNELS), "a receiver")
        name = ctx.string(m, "name", "a receiver", required=True)
        if name in out:
            raise ctx.err(m.lines["name"], f"receiver '{name}' is defined twice")
        channels: list[ChannelSpec] = []
        for ctype in CHANNELS:
            if ctype not in m:
                continue
            specs = m[ctype]
            spec_lines = specs.lines if isinstance(specs, _List) else [m.lines[ctype]]
            for spec, spec_line in zip(specs if isinstance(specs, _List) else [specs], spec_lines, strict=True):
                if spec is None:
                    spec = _empty()
                    spec.line = spec_line
                channels.append(_channel(ctx, ctype, spec, spec_line, f"receiver '{name}'.{ctype}"))
        if not channels:
            raise ctx.err(m.line, f"receiver '{name}' has no channel; give one of {', '.join(CHANNELS)}")
        out[name] = Receiver(
            name=name, channels=tuple(channels),
            officer=ctx.string(m, "officer", f"receiver '{name}'", default=name),
            label=ctx.string(m, "label", f"receiver '{name}'", default=name),
        )
    return out


def _channel(ctx: _Ctx, ctype: str, spec: Any, line: int, what: str) -> ChannelSpec:
    m = ctx.mapping(spec, line, what)
    schema = CHANNELS[ctype].OPTIONS
    ctx.keys(m, tuple(o.name for o in schema), what)
    for o in schema:
        if o.required and o.name not in m:
            raise ctx.err(m.line, f"{what} needs '{o.name}'")
    opts = {o.name: _option(ctx, m, o, what) if o.name in m else o.default for o in schema}
    return ChannelSpec(type=ctype, options=opts, line=m.line)


def _option(ctx: _Ctx, m: _Map, o: Option, what: str) -> Any:
    k, v, kl = o.name, m[o.name], m.lines[o.name]
    shown = "(secret)" if o.secret else repr(v)
    if o.kind == "addresses":
        items = v if isinstance(v, list) else [v]
        vals = [ctx.expand(x, kl) for x in items]
        if not vals or not all(isinstance(x, str) and "@" in x for x in vals):
            raise ctx.err(kl, f"{what}.{k} must be an address or a list of addresses, got {shown}")
        return vals
    if o.kind == "duration":
        return ctx.duration(m, k, what, 10_000)
    if o.kind == "whole":
        return ctx.integer(m, k, what, 0, minimum=o.minimum)
    if o.kind == "flag":
        if not isinstance(v, bool):
            raise ctx.err(kl, f"{what}.{k} must be true or false, got {v!r}")
        return v
    if o.kind == "headers":
        hm = ctx.mapping(v, kl, f"{what}.{k}")
        return {str(hk): str(ctx.expand(hv, hm.lines[hk])) for hk, hv in hm.items()}
    text = ctx.string(m, k, what, required=True)
    if o.kind == "url" and not re.match(r"https?://[^/\s]+", text):
        raise ctx.err(kl, f"{what}.{k} must be an http(s):// URL, got {'(secret)' if o.secret else repr(text)}")
    if o.kind == "address" and "@" not in text:
        raise ctx.err(kl, f"{what}.{k} must be an e-mail address, got {'(secret)' if o.secret else repr(text)}")
    return text


def _escalations(ctx: _Ctx, value: Any, line: int, receivers: dict[str, Receiver]) -> dict[str, Escalation]:
    if value is None:
        return {}
    m = ctx.mapping(value, line, "escalations")
    out: dict[str, Escalation] = {}
    for name, levels_v in m.items():
        what = f"escalation '{name}'"
        if not isinstance(levels_v, _List) or not levels_v:
            raise ctx.err(m.lines[name], f"{what} must be a non-empty list of levels")
        levels: list[Level] = []
        for lv, lv_line in zip(levels_v, levels_v.lines, strict=True):
            lm = ctx.mapping(lv, lv_line, f"a level of {what}")
            ctx.keys(lm, ("receiver", "after", "name"), f"a level of {what}")
            rec = ctx.string(lm, "receiver", f"a level of {what}", required=True)
            if rec not in receivers:
                raise ctx.err(lm.lines["receiver"], f"{what}: unknown receiver '{rec}'; defined: {', '.join(receivers)}")
            if "after" not in lm:
                raise ctx.err(lm.line, f"a level of {what} needs 'after' (per severity, e.g. {{critical: 5m, major: 30m}})")
            am = ctx.mapping(lm["after"], lm.lines["after"], f"{what}.after")
            after: dict[str, int] = {}
            for sev in am:
                if sev not in SEVERITIES:
                    raise ctx.err(am.lines[sev], f"{what}.after: unknown severity '{sev}'; allowed: {', '.join(SEVERITIES)}")
                after[sev] = ctx.duration(am, sev, f"{what}.after", 0)
            if levels:
                for sev, ms in after.items():
                    prev = levels[-1].after_ms.get(sev)
                    if prev is not None and ms <= prev:
                        raise ctx.err(am.lines[sev], f"{what}.after.{sev}: a level must come later than the one before it")
            levels.append(Level(receiver=rec, after_ms=after, name=ctx.string(lm, "name", what, default=rec)))
        out[name] = Escalation(name=name, levels=tuple(levels))
    return out


def _ack(ctx: _Ctx, value: Any, line: int) -> AckConfig:
    m = ctx.mapping(value, line, "ack")
    ctx.keys(m, ("base_url", "secret", "link_ttl", "listen", "tokens"), "ack")
    listen = ctx.string(m, "listen", "ack", default="127.0.0.1:8787")
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ctx.err(m.lines.get("listen", m.line), f"ack.listen must be host:port, got {listen!r}")
    tokens_v = m.get("tokens") or []
    if not isinstance(tokens_v, list):
        raise ctx.err(m.lines["tokens"], "ack.tokens must be a list of bearer tokens")
    tokens = tuple(t for t in (ctx.expand(t, m.lines["tokens"]) for t in tokens_v) if t)
    secret = ctx.string(m, "secret", "ack", default="")
    if not secret:
        # No secret: links are still signed, with a per-process random key (links die with a restart).
        secret = os.urandom(32).hex()
    return AckConfig(
        base_url=ctx.string(m, "base_url", "ack", default=f"http://{listen}").rstrip("/"),
        secret=secret,
        link_ttl_ms=ctx.duration(m, "link_ttl", "ack", 24 * 3600_000),
        listen_host=host, listen_port=int(port), tokens=tokens,
    )


def _route(
    ctx: _Ctx, m: _Map, rid: str, parent: Route, receivers: dict[str, Receiver], escalations: dict[str, Escalation]
) -> Route:
    what = f"route {rid} (line {m.line})"
    ctx.keys(m, ROUTE_KEYS, "a route")
    matchers: list[Matcher] = []
    for key in ("match", "match_re"):
        if key not in m:
            continue
        mm = ctx.mapping(m[key], m.lines[key], f"{what}.{key}")
        for label, v in mm.items():
            ll = mm.lines[label]
            if label not in LABELS:
                raise ctx.err(ll, f"{key}: unknown label '{label}'; allowed: {', '.join(LABELS)}")
            if key == "match":
                vals = v if isinstance(v, list) else [v]
                if not vals or not all(isinstance(x, str | int) and not isinstance(x, bool) for x in vals):
                    raise ctx.err(ll, f"match.{label} must be a value or a list of values, got {v!r}")
                if label == "severity":
                    for x in vals:
                        if x not in SEVERITIES:
                            raise ctx.err(ll, f"match.severity: unknown severity {x!r}; allowed: {', '.join(SEVERITIES)}")
                matchers.append(Matcher(label, frozenset(str(x) for x in vals), None))
            else:
                if not isinstance(v, str):
                    raise ctx.err(ll, f"match_re.{label} must be a regular expression string, got {v!r}")
                try:
                    rx = re.compile(v)
                except re.error as exc:
                    raise ctx.err(ll, f"match_re.{label}: bad regular expression {v!r}: {exc}") from None
                matchers.append(Matcher(label, None, rx))
    receiver = parent.receiver
    if "receiver" in m:
        receiver = ctx.string(m, "receiver", what, required=True)
        if receiver not in receivers:
            raise ctx.err(m.lines["receiver"], f"unknown receiver '{receiver}'; defined: {', '.join(receivers)}")
    group_by = parent.group_by
    if "group_by" in m:
        g = m["group_by"]
        if not isinstance(g, list) or not all(isinstance(x, str) for x in g):
            raise ctx.err(m.lines["group_by"], f"group_by must be a list of labels, got {g!r}")
        for x in g:
            if x not in (*LABELS, "case_id"):
                raise ctx.err(m.lines["group_by"], f"group_by: unknown label '{x}'; allowed: {', '.join((*LABELS, 'case_id'))}")
        group_by = tuple(g)
    escalation = parent.escalation
    if "escalation" in m:
        e = m["escalation"]
        if e is not None and e not in escalations:
            raise ctx.err(m.lines["escalation"], f"unknown escalation '{e}'; defined: {', '.join(escalations) or '(none)'}")
        escalation = e
    cont = m.get("continue", False)
    if not isinstance(cont, bool):
        raise ctx.err(m.lines["continue"], f"continue must be true or false, got {cont!r}")
    route = Route(
        id=rid, matchers=matchers, receiver=receiver, group_by=group_by,
        group_wait_ms=ctx.duration(m, "group_wait", what, parent.group_wait_ms),
        group_interval_ms=ctx.duration(m, "group_interval", what, parent.group_interval_ms),
        repeat_interval_ms=ctx.duration(m, "repeat_interval", what, parent.repeat_interval_ms),
        escalation=escalation, continue_=cont, line=m.line,
    )
    if "routes" in m:
        children = m["routes"]
        if not isinstance(children, _List):
            raise ctx.err(m.lines["routes"], "routes must be a list of routes")
        for i, (child, cl) in enumerate(zip(children, children.lines, strict=True)):
            cm = ctx.mapping(child, cl, "a route")
            route.routes.append(_route(ctx, cm, f"{rid}.{i}", route, receivers, escalations))
    return route
