"""The InfluxQL the dashboards run, and how Grafana turns it into a request.

There is no InfluxDB query builder in any Grafana SDK for Python, and InfluxQL
read as InfluxQL is what an operator pastes into the InfluxDB shell when a panel
looks wrong; so queries are written out as text, with a handful of named
conditions (``TIME``, ``DISTRICT``, ``UNIT``, ``rule_is``) so every panel
filters the same way, and one small class, :class:`InfluxQL`, turns a query into
a Grafana target.

Grafana expands macros before it sends a query; :func:`render` does the same
expansion (``$timeFilter``, ``$__interval``, ``$__interval_ms``, template
variables in the regex form Grafana's InfluxDB datasource uses), and
:func:`resolve_range` turns a dashboard or panel time range (``now-6h``,
``now/d``, a panel's relative ``30d``) into epoch milliseconds in city time.
The tests run every panel's rendered query against a real InfluxDB with both.

Schema the queries rely on (docs/contracts.md, "InfluxDB" and the sink): telemetry ``dust``,
``manhole``, ``streetlight``, ``vehicle`` (tags device, district, grid, unit);
``case_event`` (tags case_id, kind, rule, district, unit, state, severity;
fields device, grid, address, lat, lon, opened_at, deadline, open = 1 while
the case is open after this event); ``penalty`` (tags case_id, rule, payer,
payer_type, district, entry_id; fields amount_yuan, hour_index, reverses,
device, unit); ``deadletter`` (tags code, device, district; fields count,
message).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from citywatch.grafana import DATASOURCE_TYPE, DATASOURCE_UID, TIMEZONE
from contract import rules as rule_ids
from streams.rules import default_rules

DATASOURCE_REF = {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}

# --------------------------------------------------------------------------- rule ids
# The rule tag values the panels select on: the contract's rule ids
# (contract.rules), never a spelling of their own.
RULES: dict[str, tuple[str, ...]] = {
    "dust_violation": (rule_ids.DUST,),
    "dust_warning": (rule_ids.DUST_WARNING,),
    "dust_any": (rule_ids.DUST, rule_ids.DUST_WARNING, rule_ids.DUST_FLATLINE),
    "tamper": (rule_ids.DUST_FLATLINE,),
    "manhole_abnormal": (rule_ids.MANHOLE,),
    "streetlight_fault": (rule_ids.STREETLIGHT_FAULT,),
    "streetlight_leakage": (rule_ids.STREETLIGHT_LEAKAGE,),
    "muck_any": (
        rule_ids.MUCK_SPEEDING, rule_ids.MUCK_OFF_HOURS, rule_ids.MUCK_OFF_ROUTE,
        rule_ids.MUCK_COVER_OPEN, rule_ids.MUCK_DUMPING,
    ),
    "overload": (rule_ids.OVERLOAD,),
    "illegal_operation": (rule_ids.ILLEGAL_OPERATION,),
    "vehicle_any": (
        rule_ids.MUCK_SPEEDING, rule_ids.MUCK_OFF_HOURS, rule_ids.MUCK_OFF_ROUTE,
        rule_ids.MUCK_COVER_OPEN, rule_ids.MUCK_DUMPING, rule_ids.OVERLOAD,
        rule_ids.ILLEGAL_OPERATION,
    ),
}  # fmt: skip

# Thresholds drawn on the panels: the shipped rules' defaults (streams.rules),
# so a dashboard's orange and red lines are the levels the detector judges by.
_DEFAULTS = default_rules()
PM10_WARNING = round(_DEFAULTS.dust.warning)
"""Default warning level of the 60-min PM10 mean, µg/m³ (docs/rules.md)."""
PM10_VIOLATION = round(_DEFAULTS.dust.violation)
"""Default violation level, µg/m³."""
LEAKAGE_MA = round(_DEFAULTS.streetlight.leakage_threshold_ma)
"""Leakage current at or above which a lamp is a safety case, mA."""
LIT_CURRENT_A = _DEFAULTS.streetlight.current_threshold_a
"""A lamp drawing less than this is dark (rules: streetlight.current_threshold_a)."""
OPEN_CASE_LOOKBACK = "30d"
"""Panels about *open* cases look back this far for each case's latest event:
a case with no event at all for 30 days is not shown (the streams write an
event on every state change and the manhole clock on every billed hour)."""

# --------------------------------------------------------------------------- conditions
TIME = "$timeFilter"
DISTRICT = '"district" =~ /^$district$/'
UNIT = '"unit" =~ /^$unit$/'
PAYER_UNIT = '"payer" =~ /^$unit$/'
"""Penalties carry the unit as the payer of property-unit entries (a tag); the
``unit`` *field* is not filtered on: InfluxQL drops points lacking a field
from any condition on it, and a ledger total must never lose an entry."""


def _regex_literal(values: Sequence[str]) -> str:
    return "/^(" + "|".join(_escape_regex(v) for v in values) + ")$/"


def rule_is(group: str) -> str:
    """``"rule" =~ /^(a|b)$/`` for one of :data:`RULES`."""
    return f'"rule" =~ {_regex_literal(RULES[group])}'


def where(*conditions: str) -> str:
    return " AND ".join(conditions)


def latest_per_case(fields: Sequence[str], *conditions: str, group_by: Sequence[str] = ()) -> str:
    """Subquery: each case's latest event in range, with ``open`` (1 while open)
    and the named fields/tags of that same event."""
    cols = ", ".join(['last("open") AS "open"', *(f'"{f}"' for f in fields)])
    groups = ", ".join(f'"{g}"' for g in ("case_id", *group_by))
    return f'SELECT {cols} FROM "ledger"."case_event" WHERE {where(TIME, *conditions)} GROUP BY {groups}'


def lit_indicator() -> str:
    """1 when a reading's current is at or above :data:`LIT_CURRENT_A`, else 0,
    in InfluxQL arithmetic (there is no CASE): ``k = floor(current / limit)`` is
    0 for a dark reading and at least 1 for a lit one; ``ceil(k / (k + 1))``
    folds that to 0 or 1."""
    k = f'floor("current_a" / {LIT_CURRENT_A})'
    return f"ceil({k} / ({k} + 1))"


# --------------------------------------------------------------------------- query class
@dataclass(frozen=True)
class InfluxQL:
    """One raw InfluxQL query of a panel.

    text: the query, with Grafana macros left in.
    format: ``table`` (one row per series/point, tags as columns) or
        ``time_series`` (one series per tag set, for graphs).
    alias: Grafana's series alias for ``time_series`` (e.g. ``$tag_device``).
    """

    text: str
    format: str = "table"
    alias: str | None = None

    def __post_init__(self) -> None:
        if self.format not in ("table", "time_series"):
            raise ValueError(
                f"Invalid format {self.format!r}; valid options: ('table', 'time_series')"
            )

    def target(self, ref_id: str) -> dict:
        t: dict = {
            "datasource": DATASOURCE_REF,
            "refId": ref_id,
            "rawQuery": True,
            "query": self.text,
            "resultFormat": self.format,
        }
        if self.alias:
            t["alias"] = self.alias
        return t


# --------------------------------------------------------------------------- macro expansion
ALL = None
"""Pass as a variable's value to :func:`render` for "All" (Grafana sends the
variable's ``allValue``, ``.*``)."""
ALL_VALUE = ".*"
_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")


def _escape_regex(value: str) -> str:
    """Grafana's ``escapeRegex`` (also escapes ``/``, the InfluxQL regex delimiter)."""
    return _REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), value)


def format_variable(value: str | Sequence[str] | None) -> str:
    """A multi-value, include-All variable as Grafana's InfluxDB datasource
    writes it into a query: All → ``.*``; one value → that value regex-escaped;
    several → ``(a|b)``."""
    if value is None:
        return ALL_VALUE
    if isinstance(value, str):
        return _escape_regex(value)
    if len(value) == 1:
        return _escape_regex(value[0])
    return "(" + "|".join(_escape_regex(v) for v in value) + ")"


def render(
    query: str,
    *,
    start_ms: int,
    end_ms: int,
    interval: str = "1m",
    variables: Mapping[str, str | Sequence[str] | None] | None = None,
) -> str:
    """Expand Grafana's macros in ``query`` as Grafana does before sending it.

    ``$timeFilter`` becomes ``time >= <start>ms and time <= <end>ms`` (Grafana's
    exact form); ``$__interval``/``$__interval_ms`` the given interval; each
    ``$name``/``${name}`` of ``variables`` its :func:`format_variable` form.
    A macro left unexpanded raises ``ValueError`` naming it.
    """
    out = query.replace("$timeFilter", f"time >= {start_ms}ms and time <= {end_ms}ms")
    out = out.replace("$__interval_ms", str(_duration_ms(interval)))
    out = out.replace("$__interval", interval)
    # longest names first, so $unit_x is not eaten by $unit
    for name in sorted(variables or {}, key=len, reverse=True):
        text = format_variable((variables or {})[name])
        out = out.replace("${" + name + "}", text).replace("$" + name, text)
    left = re.search(r"\$\{?[A-Za-z_]\w*", out)
    if left:
        raise ValueError(f"macro {left.group(0)} left unexpanded in: {out}")
    return out


_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def _duration_ms(text: str) -> int:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d|w)", text)
    if not m:
        raise ValueError(f"Invalid duration {text!r}; use e.g. 30s, 5m, 1h, 7d")
    return int(m.group(1)) * _UNITS_MS[m.group(2)]


def resolve_range(
    time_from: str, time_to: str = "now", *, now_ms: int, tz: str = TIMEZONE
) -> tuple[int, int]:
    """A Grafana time range as epoch ms, in the dashboard's time zone.

    Understands what these dashboards use: ``now``, ``now-<n><unit>``,
    ``now/d``, ``now/w`` (weeks start Monday), ``now/M``, ``now/y`` and a
    panel's relative time override written without ``now-`` (``30d``, ``1h``).
    Units s, m, h, d, w, M, y.
    """
    return _point(time_from, now_ms, tz), _point(time_to, now_ms, tz)


def _point(expr: str, now_ms: int, tz: str) -> int:
    if re.fullmatch(r"\d+[smhdwMy]", expr):
        expr = "now-" + expr
    m = re.fullmatch(r"now(?:-(\d+)([smhdwMy]))?(?:/([dwMy]))?", expr)
    if not m:
        raise ValueError(f"Unsupported time expression {expr!r}")
    t = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(tz))
    if m.group(1):
        n, unit = int(m.group(1)), m.group(2)
        if unit == "M":
            months = t.year * 12 + t.month - 1 - n
            t = t.replace(year=months // 12, month=months % 12 + 1)
        elif unit == "y":
            t = t.replace(year=t.year - n)
        else:
            t = t - timedelta(milliseconds=n * _UNITS_MS[unit])
    start_of = m.group(3)
    if start_of:
        t = t.replace(hour=0, minute=0, second=0, microsecond=0)
        if start_of == "w":
            t = t - timedelta(days=t.weekday())
        elif start_of == "M":
            t = t.replace(day=1)
        elif start_of == "y":
            t = t.replace(month=1, day=1)
    return int(t.timestamp() * 1000)
