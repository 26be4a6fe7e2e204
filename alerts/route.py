"""The routing file (``config/routes.yaml``): receivers, escalation policies and the route tree.

In the spirit of Alertmanager's ``route:`` block (docs/alerts.md#the-routing-file).
A notice about a case has labels (``kind, rule, severity, district, grid,
unit, device``); it enters the root route, descends into the first child
whose matchers all match (every matching child when that child has
``continue: true``) and is delivered to the receiver of the deepest route it
reached. Children inherit ``receiver``, ``group_by``, timings and
``escalation`` from their parent unless they set them. The root has no
matchers and must name a receiver: it is the default.

The file is read through the project's one reader of city-edited files,
``foundation/cityfile.py``: every mistake is a ``ConfigError`` with
``file:line:column`` and the key path (``route.routes[0].group_wait``),
raised at start, never at the first push; unknown keys are refused with the
one "did you mean" hint; every duration carries its unit (``30s``, ``5m``,
``2h``; a bare ``30`` is refused).

A receiver's channels are read from the channel modules' own option schemas
(``CHANNELS[type].OPTIONS``, docs/alerts.md#channels): nothing here knows a
channel type by name.

Text values may say ``${ENV_VAR}`` or ``${ENV_VAR:-default}``, so secrets
(robot keys, HMAC secrets, SMTP passwords) stay out of the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from alerts.channels import CHANNELS, channel_target
from alerts.channels.plugin import ChannelModule, Option
from alerts.inhibit import InhibitRule
from alerts.matchers import MUTE_LABELS, LabelMatcher, MatcherError, parse_matcher
from contract.cases import SEVERITIES
from contract.officers import OFFICER_ROLES
from foundation.cityfile import Document, Section, did_you_mean
from foundation.errors import ConfigError, read_config_text

LABELS = ("kind", "rule", "severity", "district", "grid", "unit", "device")
"""What a route can match on."""
GROUP_LABELS = (*LABELS, "case_id")
"""What a route can group by."""

TOP_KEYS = ("receivers", "escalations", "route", "inhibit_rules", "ack", "delivery", "notify",
            "district_names", "handover")  # fmt: skip
RECEIVER_KEYS = ("name", "officer", "roles", "label")
LEVEL_KEYS = ("receiver", "after", "name")
ROUTE_KEYS = ("match", "match_re", "receiver", "group_by", "group_wait", "group_interval",
              "repeat_interval", "escalation", "continue", "routes")  # fmt: skip
ACK_KEYS = ("base_url", "secret", "link_ttl", "listen", "tokens")
DELIVERY_KEYS = ("retry_initial", "retry_max", "give_up_after", "timeout")
NOTIFY_KEYS = ("overdue_every_hours", "max_cases_in_message")
INHIBIT_KEYS = ("name", "source_matchers", "target_matchers", "equal")

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_URL = re.compile(r"https?://[^/\s]+")
_NULL = "tag:yaml.org,2002:null"


# ----------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class ChannelSpec:
    """One delivery target of a receiver: its type and its (validated) options."""

    type: str
    options: dict[str, Any]
    """Every option of the type's ``OPTIONS``: as given, or its default."""
    line: int

    def __repr__(self) -> str:
        secret = {o.name for o in CHANNELS[self.type].OPTIONS if o.secret}
        shown = {k: "***" if k in secret and v is not None else v for k, v in self.options.items()}
        return f"ChannelSpec(type={self.type!r}, options={shown!r}, line={self.line})"

    @property
    def target(self) -> str:
        """What rate limits and ordering are per: the robot / URL / mailbox (the module's ``TARGET``)."""
        return channel_target(self.type, self.options)


@dataclass(frozen=True)
class Receiver:
    name: str
    channels: tuple[ChannelSpec, ...]
    officer: str
    """The directory officer this receiver's links are made for ("" : by ``roles``)."""
    label: str
    """Display name, e.g. ``金水区值班长 / Jinshui duty officer``."""
    roles: tuple[str, ...] = ()
    """Without ``officer``: links are made for the directory's officer of these roles in
    the case's district (docs/officers.md, "Links")."""


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
    inhibit_rules: list[InhibitRule] = field(default_factory=list)
    """Open cases that mute the pushes of the cases they explain (docs/alerts.md, "Silences and inhibition")."""
    handover: str | None = None
    """The receiver every stage change of a case is pushed to, in the platform's terms
    (``handover.receiver``; docs/handover.md "The outgoing webhook"); None: no hand-over push."""

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


def load_routes(path: str | os.PathLike[str]) -> RoutingConfig:
    """Read and validate a routing file; ``ConfigError(file, line, reason)`` on the first mistake."""
    file, text = read_config_text(path, "routing file")
    return parse_routes(text, file)


def parse_routes(text: str, file: str = "<routes>") -> RoutingConfig:
    """Validate a routing file given as text (``file`` only names it in errors)."""
    doc = _RoutesFile.parse(text, file)
    if doc.root is None:
        raise ConfigError(
            file, 1, "the routing file is empty; it needs at least 'receivers' and 'route'"
        )
    return doc.config()


def _known(sec: Section, keys: Iterable[str]) -> None:
    """Refuse the keys of ``sec`` that are not ``keys`` (before reading any, so a typo is named as one)."""
    for k in keys:
        sec.get(k)
    sec.finish()


class _RoutesFile(Document):
    """The routing file's schema (docs/alerts.md#the-routing-file)."""

    # ------------------------------------------------------------------ scalars

    def scalar(self, node: Node) -> Any:
        try:
            return super().scalar(node)
        except yaml.MarkedYAMLError as exc:  # e.g. an unknown !!tag
            self.fail(node, f"not valid YAML: {exc.problem or exc}")

    def text(self, node: Node, path: str, *, empty_ok: bool = False, secret: bool = False) -> str:
        """A text value with ``${ENV_VAR}`` expanded; a number is taken as written (``password: 0123``)."""
        x = self.scalar(node)
        if isinstance(x, int | float) and not isinstance(x, bool):
            x = node.value
        if not isinstance(x, str):
            self.fail(node, f"{path}: expected text, got {self.describe(node)}")

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            self.fail(
                node,
                f"{path}: environment variable {name} is not set (write ${{{name}:-default}} for a default)",
            )

        value = _ENV.sub(sub, x)
        if not empty_ok and not value.strip():
            got = "an empty value" + (
                f" (after expanding {x!r})" if x != value and not secret else ""
            )
            self.fail(node, f"{path}: expected text, got {got}")
        return value

    def text_key(self, sec: Section, key: str, default: str | None = None, *, required: bool = False,
                 empty_ok: bool = False) -> str:  # fmt: skip
        node = sec.get(key)
        if node is None:
            if required:
                self.fail(sec.node, f"{sec.key_path(key)}: missing (required)")
            return default or ""
        return self.text(node, sec.key_path(key), empty_ok=empty_ok)

    def name_of(self, node: Node, path: str, names: Iterable[str], what: str) -> str:
        """A reference to a receiver or an escalation defined earlier in the file."""
        x = self.text(node, path)
        names = list(names)
        if x not in names:
            hint = did_you_mean(x, names) or f"; defined: {', '.join(names) or '(none)'}"
            self.fail(node, f"{path}: unknown {what} {x!r}{hint}")
        return x

    def one_of(self, node: Node, path: str, options: tuple[str, ...], what: str) -> str:
        x = self.scalar(node)
        if x not in options:
            hint = did_you_mean(x, options) or f"; allowed: {', '.join(options)}"
            self.fail(node, f"{path}: unknown {what} {self.describe(node)}{hint}")
        return str(x)

    # ------------------------------------------------------------------ the file

    def config(self) -> RoutingConfig:
        top = self.section()
        _known(top, TOP_KEYS)
        for k in ("receivers", "route"):
            if k not in top.items:
                self.fail(
                    top.node,
                    f"{k}: missing (required); the routing file needs 'receivers' and 'route'",
                )
        receivers = self.receivers(top)
        escalations = self.escalations(top.sub("escalations"), receivers)

        notify = top.sub("notify") or self.section(_empty_like(top.node), "notify")
        _known(notify, NOTIFY_KEYS)
        delivery_s = top.sub("delivery") or self.section(_empty_like(top.node), "delivery")
        _known(delivery_s, DELIVERY_KEYS)
        delivery = DeliveryConfig(
            retry_initial_ms=_duration(delivery_s, "retry_initial", 1000),
            retry_max_ms=_duration(delivery_s, "retry_max", 300_000),
            give_up_after_ms=_duration(delivery_s, "give_up_after", 24 * 3600_000),
            timeout_ms=_duration(delivery_s, "timeout", 10_000),
        )
        ack = self.ack(top.sub("ack") or self.section(_empty_like(top.node), "ack"))
        district_names: dict[str, str] = {}
        names = top.sub("district_names")
        if names is not None:
            for k in names.keys():
                node = names.get(k)
                district_names[k] = "" if node is None else self.text(node, names.key_path(k))

        route_s = top.sub("route")
        if route_s is None:
            self.fail(
                top.key_node("route"), "route: expected a mapping (key: value lines), got null"
            )
        _known(route_s, ROUTE_KEYS)  # a misspelt 'receiver' is named as such, not as a missing one
        for k in ("match", "match_re"):
            if k in route_s.items:
                self.fail(
                    route_s.key_node(k),
                    f"route.{k}: the root route matches everything; put matchers on its child routes",
                )
        if route_s.get("receiver") is None:
            self.fail(
                route_s.node,
                "route.receiver: missing (required); the root route's receiver is the default",
            )
        defaults = Route(
            id="root",
            matchers=[],
            receiver="",
            group_by=("district", "rule"),
            group_wait_ms=30_000,
            group_interval_ms=300_000,
            repeat_interval_ms=4 * 3600_000,
            escalation=None,
            continue_=False,
            line=route_s.node.start_mark.line + 1,
        )
        root = self.route(route_s, "root", defaults, receivers, escalations)
        return RoutingConfig(
            file=self.file,
            root=root,
            receivers=receivers,
            escalations=escalations,
            ack=ack,
            delivery=delivery,
            overdue_every_hours=notify.whole("overdue_every_hours", 1, minimum=1),
            max_cases_in_message=notify.whole("max_cases_in_message", 10, minimum=1),
            district_names=district_names,
            inhibit_rules=self.inhibit_rules(top),
            handover=self.handover(top.sub("handover"), receivers),
        )

    def handover(self, sec: Section | None, receivers: dict[str, Receiver]) -> str | None:
        """``handover: {receiver: NAME}``: the city platform's receiver (a webhook, as a rule)."""
        if sec is None:
            return None
        _known(sec, ("receiver",))
        node = sec.get("receiver")
        if node is None:
            self.fail(sec.node, "handover.receiver: missing (required): the platform's receiver")
        name = self.name_of(node, "handover.receiver", receivers, "receiver")
        return name

    # ------------------------------------------------------------------ inhibition

    def inhibit_rules(self, top: Section) -> list[InhibitRule]:
        """``inhibit_rules``: Alertmanager's form (``source_matchers``, ``target_matchers``,
        ``equal``); its deprecated ``source_match``/``target_match`` maps are refused by name."""
        out: list[InhibitRule] = []
        if "inhibit_rules" not in top.items:
            return out
        for sec in top.sections("inhibit_rules"):
            for k in sec.keys():
                if k in ("source_match", "source_match_re", "target_match", "target_match_re"):
                    side = k.split("_")[0]
                    self.fail(sec.key_node(k), f"{sec.key_path(k)}: write {side}_matchers as a list of "
                              f"matchers instead, e.g. {side}_matchers: ['rule=\"streetlight.circuit\"']")  # fmt: skip
            _known(sec, INHIBIT_KEYS)
            source = self.matchers(sec, "source_matchers")
            target = self.matchers(sec, "target_matchers")
            equal = tuple(self.one_of(n, f"{sec.key_path('equal')}[{i}]", MUTE_LABELS, "label")
                          for i, n in enumerate(sec.nodes("equal")))  # fmt: skip
            name = self.text_key(sec, "name", "")
            out.append(InhibitRule(source, target, equal, name, sec.node.start_mark.line + 1))
        return out

    def matchers(self, sec: Section, key: str) -> tuple[LabelMatcher, ...]:
        """A non-empty list of matchers in their text form (``alerts/matchers.py``)."""
        nodes = sec.nodes(key)
        if not nodes:
            self.fail(sec.get(key) or sec.node, f"{sec.key_path(key)}: missing (required); a list of "
                      "matchers, e.g. ['rule=\"streetlight.fault\"', 'severity=~\"minor|warning\"']")  # fmt: skip
        out = []
        for i, node in enumerate(nodes):
            path = f"{sec.key_path(key)}[{i}]"
            text = self.scalar(node)
            if not isinstance(text, str):
                self.fail(node, f"{path}: expected a matcher such as 'district=\"jinshui\"', "
                                f"got {self.describe(node)}")  # fmt: skip
            try:
                out.append(parse_matcher(text, MUTE_LABELS))
            except MatcherError as exc:
                self.fail(node, f"{path}: {exc}")
        return tuple(out)

    # ------------------------------------------------------------------ receivers and their channels

    def receivers(self, top: Section) -> dict[str, Receiver]:
        if not top.nodes("receivers"):
            self.fail(
                top.items["receivers"][1],
                "receivers: expected a non-empty list of receivers ({name: ..., <channel>: {...}})",
            )
        out: dict[str, Receiver] = {}
        first: dict[str, int] = {}
        for sec in top.sections("receivers"):
            unknown = [k for k in sec.keys() if k not in (*RECEIVER_KEYS, *CHANNELS)]
            if unknown:
                k = unknown[0]
                hint = did_you_mean(k, (*RECEIVER_KEYS, *CHANNELS))
                hint = (
                    hint
                    or f"; a receiver has {', '.join(RECEIVER_KEYS)} and channels: {', '.join(CHANNELS)}"
                )
                self.fail(sec.key_node(k), f"{sec.key_path(k)}: unknown key{hint}")
            name = self.text_key(sec, "name", required=True)
            line = sec.key_node("name").start_mark.line + 1
            if name in out:
                self.fail(
                    sec.key_node("name"),
                    f"{sec.key_path('name')}: receiver {name!r} is defined twice (first on line {first[name]})",
                )
            first[name] = line
            channels: list[ChannelSpec] = []
            for ctype, module in CHANNELS.items():
                sec.get(ctype)
                if ctype not in sec.items:
                    continue
                value = sec.items[ctype][1]
                if isinstance(value, SequenceNode):
                    for j, entry in enumerate(value.value):
                        channels.append(self.channel(module, entry, f"{sec.key_path(ctype)}[{j}]"))
                else:
                    channels.append(self.channel(module, value, sec.key_path(ctype)))
            if not channels:
                self.fail(
                    sec.node,
                    f"{sec.path}: receiver {name!r} has no channel; give one of {', '.join(CHANNELS)}",
                )
            roles = []
            for node in sec.nodes("roles"):
                role = self.scalar(node)
                if role not in OFFICER_ROLES:
                    self.fail(node, f"{sec.key_path('roles')}: unknown role {role!r}; roles: "
                                    f"{', '.join(OFFICER_ROLES)}{did_you_mean(role, OFFICER_ROLES)}")  # fmt: skip
                roles.append(str(role))
            out[name] = Receiver(
                name=name,
                channels=tuple(channels),
                officer=self.text_key(sec, "officer", ""),
                label=self.text_key(sec, "label", name),
                roles=tuple(roles),
            )
        return out

    def channel(self, module: ChannelModule, node: Node, path: str) -> ChannelSpec:
        """One channel entry, read and validated from the module's ``OPTIONS`` alone."""
        if isinstance(node, ScalarNode) and node.tag == _NULL:  # ``console:`` means ``console: {}``
            node = _empty_like(node)
        sec = Section(self, node, path)
        _known(sec, (o.name for o in module.OPTIONS))
        options = {o.name: self.option(sec, o) for o in module.OPTIONS}
        return ChannelSpec(type=module.TYPE, options=options, line=node.start_mark.line + 1)

    def option(self, sec: Section, o: Option) -> Any:
        node = sec.get(o.name)
        path = sec.key_path(o.name)
        if node is None:
            if o.required:
                self.fail(sec.node, f"{path}: missing (required)")
            return o.default
        if o.kind == "whole":
            return sec.whole(o.name, o.default, minimum=o.minimum)
        if o.kind == "flag":
            return sec.flag(o.name, o.default)
        if o.kind == "duration":
            return sec.duration_ms(o.name, o.default, zero_ok=True)
        if o.kind == "headers":
            headers = Section(self, node, path)
            return {k: self.text(headers.get(k) or headers.key_node(k), headers.key_path(k), empty_ok=True)
                    for k in headers.keys()}  # fmt: skip
        if o.kind == "addresses":
            items = node.value if isinstance(node, SequenceNode) else [node]
            if not items:
                self.fail(
                    node, f"{path}: expected an e-mail address or a list of them, got an empty list"
                )
            return [self.address(item, path if item is node else f"{path}[{i}]", o.secret)
                    for i, item in enumerate(items)]  # fmt: skip
        if o.kind == "address":
            return self.address(node, path, o.secret)
        value = self.text(node, path, secret=o.secret)
        if o.kind == "url" and not _URL.match(value):
            self.fail(node, f"{path}: expected an http(s):// URL, got {_shown(value, o.secret)}")
        return value

    def address(self, node: Node, path: str, secret: bool) -> str:
        value = self.text(node, path, secret=secret)
        if "@" not in value:
            self.fail(node, f"{path}: expected an e-mail address, got {_shown(value, secret)}")
        return value

    # ------------------------------------------------------------------ escalations, ack

    def escalations(
        self, esc: Section | None, receivers: dict[str, Receiver]
    ) -> dict[str, Escalation]:
        out: dict[str, Escalation] = {}
        if esc is None:
            return out
        for name in esc.keys():
            if not esc.nodes(name):
                self.fail(
                    esc.items[name][1], f"{esc.key_path(name)}: expected a non-empty list of levels"
                )
            levels: list[Level] = []
            for lv in esc.sections(name):
                _known(lv, LEVEL_KEYS)
                rnode = lv.get("receiver")
                if rnode is None:
                    self.fail(lv.node, f"{lv.key_path('receiver')}: missing (required)")
                rec = self.name_of(rnode, lv.key_path("receiver"), receivers, "receiver")
                after_s = lv.sub("after")
                if after_s is None:
                    self.fail(lv.node, f"{lv.key_path('after')}: missing (required); per severity, "
                                       "e.g. {critical: 5m, major: 30m}")  # fmt: skip
                after: dict[str, int] = {}
                for sev in after_s.keys():
                    self.one_of(
                        after_s.key_node(sev), after_s.key_path(sev), SEVERITIES, "severity"
                    )
                    after_s.get(sev)
                    after[sev] = self.duration_ms(
                        after_s.items[sev][1], after_s.key_path(sev), zero_ok=True
                    )
                    prev = levels[-1].after_ms.get(sev) if levels else None
                    if prev is not None and after[sev] <= prev:
                        self.fail(
                            after_s.items[sev][1],
                            f"{after_s.key_path(sev)}: a level must come later than the one before it",
                        )
                levels.append(
                    Level(receiver=rec, after_ms=after, name=self.text_key(lv, "name", rec))
                )
            out[name] = Escalation(name=name, levels=tuple(levels))
        return out

    def ack(self, sec: Section) -> AckConfig:
        _known(sec, ACK_KEYS)
        listen = self.text_key(sec, "listen", "127.0.0.1:8787")
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit():
            self.fail(
                sec.get("listen") or sec.node, f"ack.listen: expected host:port, got {listen!r}"
            )
        if sec.get("tokens") is not None:
            self.fail(sec.key_node("tokens"), "ack.tokens: shared bearer tokens are gone; every "
                      "officer acts with a personal token (`citywatch officers token issue ID`, "
                      "docs/officers.md)")  # fmt: skip
        tokens: tuple[str, ...] = ()
        secret = self.text_key(sec, "secret", "", empty_ok=True)
        if not secret:
            # No secret: links are still signed, with a per-process random key (links die with a restart).
            secret = os.urandom(32).hex()
        return AckConfig(
            base_url=self.text_key(sec, "base_url", f"http://{listen}", empty_ok=True).rstrip("/"),
            secret=secret,
            link_ttl_ms=_duration(sec, "link_ttl", 2 * 3600_000),
            listen_host=host,
            listen_port=int(port),
            tokens=tokens,
        )

    # ------------------------------------------------------------------ the route tree

    def route(self, sec: Section, rid: str, parent: Route, receivers: dict[str, Receiver],
              escalations: dict[str, Escalation]) -> Route:  # fmt: skip
        _known(sec, ROUTE_KEYS)
        matchers: list[Matcher] = []
        for key in ("match", "match_re"):
            mm = sec.sub(key)
            if mm is None:
                continue
            for label in mm.keys():
                mm.get(label)
                self.one_of(mm.key_node(label), mm.key_path(label), LABELS, "label")
                matchers.append(self.matcher(key, label, mm.items[label][1], mm.key_path(label)))
        receiver = parent.receiver
        rnode = sec.get("receiver")
        if rnode is not None:
            receiver = self.name_of(rnode, sec.key_path("receiver"), receivers, "receiver")
        group_by = parent.group_by
        if "group_by" in sec.items:
            nodes = sec.nodes("group_by")
            group_by = tuple(self.one_of(n, f"{sec.key_path('group_by')}[{i}]", GROUP_LABELS, "label")
                             for i, n in enumerate(nodes))  # fmt: skip
        escalation = parent.escalation
        if "escalation" in sec.items:
            enode = sec.get("escalation")  # null: no escalation
            escalation = None if enode is None else self.name_of(enode, sec.key_path("escalation"), escalations,
                                                                  "escalation")  # fmt: skip
        route = Route(
            id=rid,
            matchers=matchers,
            receiver=receiver,
            group_by=group_by,
            group_wait_ms=_duration(sec, "group_wait", parent.group_wait_ms),
            group_interval_ms=_duration(sec, "group_interval", parent.group_interval_ms),
            repeat_interval_ms=_duration(sec, "repeat_interval", parent.repeat_interval_ms),
            escalation=escalation,
            continue_=sec.flag("continue", False),
            line=sec.node.start_mark.line + 1,
        )
        for i, child in enumerate(sec.sections("routes")):
            route.routes.append(self.route(child, f"{rid}.{i}", route, receivers, escalations))
        return route

    def matcher(self, key: str, label: str, node: Node, path: str) -> Matcher:
        if key == "match_re":
            x = self.scalar(node)
            if not isinstance(x, str):
                self.fail(node, f"{path}: expected a regular expression, got {self.describe(node)}")
            try:
                return Matcher(label, None, re.compile(x))
            except re.error as exc:
                self.fail(node, f"{path}: bad regular expression {x!r}: {exc}")
        items = node.value if isinstance(node, SequenceNode) else [node]
        if not items:
            self.fail(node, f"{path}: expected a value or a list of values, got an empty list")
        values = []
        for item in items:
            x = self.scalar(item)
            if not isinstance(x, str | int) or isinstance(x, bool):
                self.fail(
                    item, f"{path}: expected a value or a list of values, got {self.describe(item)}"
                )
            if label == "severity":
                self.one_of(item, path, SEVERITIES, "severity")
            values.append(x if isinstance(x, str) else item.value)  # a number as written (grid: 07)
        return Matcher(label, frozenset(values), None)


def _duration(sec: Section, key: str, default: int) -> int:
    """Every duration of the routing file: with its unit; ``0s`` allowed (docs/alerts.md#the-routing-file)."""
    ms = sec.duration_ms(key, default, zero_ok=True)
    assert ms is not None
    return ms


def _empty_like(node: Node) -> MappingNode:
    """An empty mapping at ``node``'s position (an absent section, or ``console:`` with nothing after it)."""
    return MappingNode(
        "tag:yaml.org,2002:map", [], start_mark=node.start_mark, end_mark=node.end_mark
    )


def _shown(value: str, secret: bool) -> str:
    return "a value not shown here (it is a secret)" if secret else repr(value)
