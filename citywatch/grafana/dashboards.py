"""The six citywatch dashboards and Grafana's provisioning files, as code.

Plain dicts, built by a few helpers (docs/decisions/003-grafana-client.md says
why not grafana-foundation-sdk). What Grafana gets is exactly what is
committed under ``deploy/grafana/``; regenerate it with::

    python -m citywatch.grafana.dashboards --out deploy/grafana

(or ``write_all(path)``), and tests/citywatch/grafana checks the committed files equal
the generator's output, so a change here without regenerating fails CI.

Every panel's queries are :class:`~citywatch.grafana.queries.InfluxQL`; every
target, variable and annotation names the datasource by ``DATASOURCE_UID``.
Titles are Chinese first, then `` · `` and English.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from citywatch.grafana import (
    DATASOURCE_NAME,
    DATASOURCE_TYPE,
    DATASOURCE_UID,
    FOLDER_TITLE,
    FOLDER_UID,
    TIMEZONE,
)
from citywatch.grafana.queries import (
    DATASOURCE_REF,
    DISTRICT,
    LEAKAGE_MA,
    OPEN_CASE_LOOKBACK,
    PAYER_UNIT,
    PM10_VIOLATION,
    PM10_WARNING,
    RULES,
    TIME,
    UNIT,
    InfluxQL,
    latest_per_case,
    lit_indicator,
    rule_is,
    where,
)
from contract import rules as rule_ids

SCHEMA_VERSION = 39
"""Grafana 10.4 / 11.0 dashboard schema: 10.x opens it, later versions migrate it on load."""
YUAN = "suffix: 元"
PM10_UNIT = "suffix: µg/m³"
TAG = "citywatch"

# --------------------------------------------------------------------------- panel helpers


def thresholds(base: str, *steps: tuple[float, str]) -> dict:
    return {
        "mode": "absolute",
        "steps": [{"color": base, "value": None}, *({"color": c, "value": v} for v, c in steps)],
    }


PM10_THRESHOLDS = thresholds("green", (PM10_WARNING, "orange"), (PM10_VIOLATION, "red"))
MONEY_THRESHOLDS = thresholds("green", (1, "orange"), (100_000, "red"))

STATE_MAPPING = {
    "type": "value",
    "options": {
        "open": {"text": "待处置 open", "color": "red", "index": 0},
        "escalated": {"text": "已升级 escalated", "color": "dark-red", "index": 1},
        "reopened": {"text": "复发 reopened", "color": "purple", "index": 2},
        "acknowledged": {"text": "已受理 acknowledged", "color": "orange", "index": 3},
        "repaired": {"text": "已修复 repaired", "color": "green", "index": 4},
        "closed": {"text": "已结案 closed", "color": "blue", "index": 5},
    },
}


def by_name(field: str, **props: Any) -> dict:
    """A field override: ``by_name("deadline", unit="dateTimeFromNow")``."""
    return {
        "matcher": {"id": "byName", "options": field},
        "properties": [{"id": k.replace("_", "."), "value": v} for k, v in props.items()],
    }


def hide_fields(*names: str) -> dict:
    return {"id": "organize", "options": {"excludeByName": dict.fromkeys(names, True)}}


def sort_by(field: str, desc: bool = True) -> dict:
    return {"id": "sortBy", "options": {"sort": [{"field": field, "desc": desc}]}}


class Layout:
    """Gives panels ids and places them left to right on Grafana's 24-column grid."""

    def __init__(self) -> None:
        self.panels: list[dict] = []
        self._x = self._y = self._row_h = 0

    def add(
        self,
        type_: str,
        title: str,
        queries: Sequence[InfluxQL],
        *,
        w: int,
        h: int,
        description: str = "",
        unit: str | None = None,
        thresholds_: dict | None = None,
        mappings: list | None = None,
        custom: dict | None = None,
        overrides: Sequence[dict] = (),
        options: dict | None = None,
        transformations: Sequence[dict] = (),
        time_from: str | None = None,
        decimals: int | None = None,
    ) -> dict:
        if self._x + w > 24:
            self._x, self._y, self._row_h = 0, self._y + self._row_h, 0
        defaults: dict[str, Any] = {}
        if unit:
            defaults["unit"] = unit
        if decimals is not None:
            defaults["decimals"] = decimals
        if thresholds_:
            defaults["thresholds"] = thresholds_
            defaults["color"] = {"mode": "thresholds"}
        if mappings:
            defaults["mappings"] = mappings
        if custom:
            defaults["custom"] = custom
        panel: dict[str, Any] = {
            "id": len(self.panels) + 1,
            "type": type_,
            "title": title,
            "description": description,
            "datasource": DATASOURCE_REF,
            "gridPos": {"h": h, "w": w, "x": self._x, "y": self._y},
            "targets": [q.target(chr(ord("A") + i)) for i, q in enumerate(queries)],
            "fieldConfig": {"defaults": defaults, "overrides": list(overrides)},
            "options": options or {},
        }
        if transformations:
            panel["transformations"] = list(transformations)
        if time_from:
            panel["timeFrom"] = time_from
        self.panels.append(panel)
        self._x += w
        self._row_h = max(self._row_h, h)
        return panel


def stat_options(color_mode: str = "background") -> dict:
    return {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": color_mode,
        "graphMode": "none",
        "textMode": "value",
        "justifyMode": "center",
        "orientation": "auto",
    }


def bargauge_options() -> dict:
    return {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": True},
        "orientation": "horizontal",
        "displayMode": "gradient",
        "showUnfilled": True,
        "valueMode": "color",
        "namePlacement": "left",
    }


def table_options(sort_field: str | None = None, desc: bool = True) -> dict:
    opts: dict[str, Any] = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    if sort_field:
        opts["sortBy"] = [{"displayName": sort_field, "desc": desc}]
    return opts


def timeseries_custom(draw: str = "line", threshold_lines: bool = False) -> dict:
    custom: dict[str, Any] = {
        "drawStyle": draw,
        "lineWidth": 1,
        "fillOpacity": 10 if draw == "line" else 80,
        "showPoints": "never",
        "spanNulls": False,
    }
    if threshold_lines:
        custom["thresholdsStyle"] = {"mode": "line+area"}
    return custom


def timeseries_options() -> dict:
    return {
        "legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull", "max"]},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }


# --------------------------------------------------------------------------- dashboard skeleton


def variable(name: str, label: str, query: str) -> dict:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE_REF,
        "query": query,
        "definition": query,
        "refresh": 1,
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "sort": 1,
        "hide": 0,
        "regex": "",
        "skipUrlSync": False,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
    }


VARIABLES = [
    variable("district", "区 District", 'SHOW TAG VALUES WITH KEY = "district"'),
    variable("unit", "责任单位 Unit", f'SHOW TAG VALUES WITH KEY = "unit" WHERE {DISTRICT}'),
]


def annotation(name: str, query: str, *, color: str, text: str, tags: str, title: str = "") -> dict:
    """An InfluxQL annotation in the form every Grafana 10+ reads (and migrates)."""
    return {
        "datasource": DATASOURCE_REF,
        "enable": True,
        "hide": False,
        "iconColor": color,
        "name": name,
        "query": query,
        "textColumn": text,
        "tagsColumn": tags,
        "titleColumn": title,
    }


def dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[dict],
    *,
    time_from: str,
    refresh: str,
    annotations: Iterable[dict] = (),
) -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": [TAG],
        "timezone": TIMEZONE,
        "editable": False,
        "graphTooltip": 1,
        "refresh": refresh,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {"refresh_intervals": ["10s", "30s", "1m", "5m", "15m", "1h"]},
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "links": [
            {
                "type": "dashboards",
                "tags": [TAG],
                "asDropdown": True,
                "title": "城市运行监管 citywatch",
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "templating": {"list": [dict(v) for v in VARIABLES]},
        "annotations": {"list": list(annotations)},
        "panels": panels,
    }


# --------------------------------------------------------------------------- shared queries


def open_cases_count(*conditions: str) -> InfluxQL:
    sub = latest_per_case((), *conditions, DISTRICT, UNIT)
    return InfluxQL(f'SELECT sum("open") AS "open_cases" FROM ({sub})')


def open_cases_rows(fields: Sequence[str], *conditions: str) -> InfluxQL:
    """One row per case whose latest event leaves it open, with ``fields`` of that event."""
    sub = latest_per_case(fields, *conditions, DISTRICT, UNIT)
    cols = ", ".join(f'"{f}"' for f in ("case_id", *fields))
    return InfluxQL(f'SELECT {cols} FROM ({sub}) WHERE "open" = 1')


def penalty_sum(*conditions: str, group_by: Sequence[str] = (), alias: str = "yuan") -> InfluxQL:
    q = f'SELECT sum("amount_yuan") AS "{alias}" FROM "ledger"."penalty" WHERE {where(TIME, DISTRICT, *conditions)}'
    if group_by:
        q += " GROUP BY " + ", ".join(f'"{g}"' for g in group_by)
    return InfluxQL(q)


PROPERTY_UNIT = "\"payer_type\" = 'property_unit'"
OPENED = "\"state\" = 'open'"
"""The event that opens a case (a reopening is state ``reopened``)."""

# --------------------------------------------------------------------------- 1. command center


def command_center() -> dict:
    L = Layout()
    L.add(
        "stat",
        "开放案件 · Open cases",
        [open_cases_count()],
        w=5,
        h=4,
        description="Cases whose latest event (within 30 days) leaves them open.",
        thresholds_=thresholds("green", (1, "red")),
        options=stat_options(),
        time_from=OPEN_CASE_LOOKBACK,
    )
    L.add(
        "stat",
        "今日扣款 · Penalties today",
        [penalty_sum()],
        w=5,
        h=4,
        description="Net yuan booked since midnight city time (reversals included).",
        unit=YUAN,
        thresholds_=MONEY_THRESHOLDS,
        options=stat_options(),
        time_from="now/d",
    )
    L.add(
        "stat",
        "本月扣款 · Penalties this month",
        [penalty_sum()],
        w=5,
        h=4,
        description="Net yuan booked since the 1st of the month, city time.",
        unit=YUAN,
        thresholds_=MONEY_THRESHOLDS,
        options=stat_options(),
        time_from="now/M",
    )
    L.add(
        "stat",
        "熄灯路灯 · Dark streetlights",
        [open_cases_count(rule_is("streetlight_fault"))],
        w=5,
        h=4,
        description="Open lamp-fault cases: lamps that should be lit but draw no current.",
        thresholds_=thresholds("green", (1, "orange")),
        options=stat_options(),
        time_from=OPEN_CASE_LOOKBACK,
    )
    L.add(
        "stat",
        "死信 · Dead letters",
        [
            InfluxQL(
                f'SELECT sum("count") AS "dead_letters" FROM "deadletter" WHERE {where(TIME, DISTRICT)}'
            )
        ],
        w=4,
        h=4,
        description="Rejected payloads in the dashboard's time range.",
        thresholds_=thresholds("green", (1, "orange")),
        options=stat_options(),
    )
    map_fields = (
        "open",
        "state",
        "severity",
        "kind",
        "rule",
        "device",
        "address",
        "lat",
        "lon",
        "district",
        "unit",
    )
    L.add(
        "geomap",
        "案件地图 · Open cases map",
        [open_cases_rows(map_fields[1:])],
        w=14,
        h=14,
        description="Every device with an open case, coloured by the case's state "
        "(red open, dark red escalated, purple reopened, orange acknowledged).",
        overrides=[
            by_name("state", mappings=[STATE_MAPPING], color={"mode": "fixed", "fixedColor": "red"})
        ],
        options={
            "view": {"id": "fit", "lat": 34.75, "lon": 113.65, "zoom": 11, "allLayers": True},
            "controls": {"showZoom": True, "mouseWheelZoom": True, "showAttribution": True},
            "basemap": {"type": "default", "name": "底图 Basemap", "config": {}},
            "layers": [
                {
                    "type": "markers",
                    "name": "开放案件 Open cases",
                    "config": {
                        "showLegend": True,
                        "style": {
                            "color": {"field": "state", "fixed": "red"},
                            "size": {"fixed": 8, "min": 4, "max": 12},
                            "opacity": 0.9,
                            "symbol": {"mode": "fixed", "fixed": "img/icons/marker/circle.svg"},
                            "text": {"mode": "field", "field": "device", "fixed": ""},
                            "textConfig": {"fontSize": 10, "offsetY": -12, "textAlign": "center"},
                        },
                    },
                    "location": {"mode": "coords", "latitude": "lat", "longitude": "lon"},
                    "filterData": {"id": "byRefId", "options": "A"},
                    "tooltip": True,
                }
            ],
            "tooltip": {"mode": "details"},
        },
        time_from=OPEN_CASE_LOOKBACK,
    )
    by_kind = latest_per_case((), DISTRICT, UNIT, group_by=("kind", "district"))
    L.add(
        "table",
        "开放案件（类型×区） · Open cases by kind and district",
        [
            InfluxQL(
                f'SELECT sum("open") AS "open_cases" FROM ({by_kind}) GROUP BY "kind", "district"'
            )
        ],
        w=10,
        h=7,
        transformations=[
            {
                "id": "groupingToMatrix",
                "options": {
                    "columnField": "district",
                    "rowField": "kind",
                    "valueField": "open_cases",
                },
            }
        ],
        options=table_options(),
        time_from=OPEN_CASE_LOOKBACK,
    )
    worst = f'SELECT mean("pm10") AS "pm10" FROM "dust" WHERE {where(TIME, DISTRICT, UNIT)} GROUP BY "device"'
    L.add(
        "bargauge",
        "扬尘最严重工地 · Worst PM10 sites (60-min mean)",
        [InfluxQL(f'SELECT top("pm10", "device", 10) AS "pm10" FROM ({worst})')],
        w=10,
        h=7,
        unit=PM10_UNIT,
        decimals=0,
        thresholds_=PM10_THRESHOLDS,
        description=f"The ten sites with the highest PM10 mean over the last hour, against "
        f"the warning ({PM10_WARNING}) and violation ({PM10_VIOLATION}) levels.",
        options=bargauge_options(),
        time_from="1h",
    )
    for when, tf in (("今日", "now/d"), ("本月", "now/M")):
        en = "today" if tf == "now/d" else "this month"
        L.add(
            "bargauge",
            f"{when}扣款（按区） · Penalties {en} by district",
            [penalty_sum(group_by=("district",))],
            w=6,
            h=7,
            unit=YUAN,
            thresholds_=MONEY_THRESHOLDS,
            options=bargauge_options(),
            time_from=tf,
            transformations=[sort_by("yuan")],
        )
        L.add(
            "bargauge",
            f"{when}扣款（按单位） · Penalties {en} by unit",
            [penalty_sum(PROPERTY_UNIT, PAYER_UNIT, group_by=("payer",))],
            w=6,
            h=7,
            unit=YUAN,
            thresholds_=MONEY_THRESHOLDS,
            options=bargauge_options(),
            time_from=tf,
            transformations=[sort_by("yuan")],
        )
    L.add(
        "table",
        "熄灯路灯清单 · Dark streetlights list",
        [
            open_cases_rows(
                ("device", "address", "district", "unit", "opened_at"), rule_is("streetlight_fault")
            )
        ],
        w=12,
        h=7,
        overrides=[by_name("opened_at", unit="dateTimeAsLocal")],
        options=table_options("opened_at", desc=False),
        time_from=OPEN_CASE_LOOKBACK,
        transformations=[hide_fields("Time")],
    )
    L.add(
        "table",
        "死信（按设备） · Dead letters by device",
        [
            InfluxQL(
                f'SELECT sum("count") AS "dead_letters" FROM "deadletter" WHERE {where(TIME, DISTRICT)} '
                'GROUP BY "device", "code"'
            )
        ],
        w=12,
        h=7,
        options=table_options("dead_letters"),
        transformations=[hide_fields("Time"), sort_by("dead_letters")],
    )
    return dashboard(
        "citywatch-command",
        "指挥中心 · Command center",
        "Wall display of the urban-management command centre: open cases on the map, "
        "penalties today and this month, worst dust sites, dark lamps, rejected data.",
        L.panels,
        time_from="now-6h",
        refresh="30s",
    )


# --------------------------------------------------------------------------- 2. dust

DUST_VIOLATION_OPENED = where(TIME, rule_is("dust_violation"), OPENED, DISTRICT)


def dust() -> dict:
    L = Layout()
    L.add(
        "timeseries",
        "PM10 60分钟滑动均值 · PM10 60-min rolling mean per site",
        [
            InfluxQL(
                f'SELECT moving_average(mean("pm10"), 12) AS "pm10_60m" FROM "dust" '
                f'WHERE {where(TIME, DISTRICT, UNIT)} GROUP BY time(5m), "device" fill(none)',
                format="time_series",
                alias="$tag_device",
            )
        ],
        w=24,
        h=10,
        unit=PM10_UNIT,
        thresholds_=PM10_THRESHOLDS,
        custom=timeseries_custom(threshold_lines=True),
        options=timeseries_options(),
        description="Mean of the last twelve 5-minute means (the rule's 60-minute window) per site; "
        f"orange from {PM10_WARNING} (warning), red from {PM10_VIOLATION} (violation). "
        "Red markers: violation cases opened.",
    )
    L.add(
        "bargauge",
        "当前小时均值 · PM10 mean, last hour",
        [
            InfluxQL(
                f'SELECT mean("pm10") AS "pm10_60m" FROM "dust" WHERE {where(TIME, DISTRICT, UNIT)} GROUP BY "device"'
            )
        ],
        w=10,
        h=9,
        unit=PM10_UNIT,
        decimals=0,
        thresholds_=PM10_THRESHOLDS,
        options=bargauge_options(),
        time_from="1h",
        transformations=[sort_by("pm10_60m")],
    )
    L.add(
        "stat",
        "扬尘违规 · Violations opened",
        [
            InfluxQL(
                f'SELECT count("open") AS "violations" FROM "ledger"."case_event" WHERE {DUST_VIOLATION_OPENED} AND {UNIT}'
            )
        ],
        w=4,
        h=9,
        thresholds_=thresholds("green", (1, "red")),
        options=stat_options(),
    )
    L.add(
        "bargauge",
        "扬尘扣款（按区） · Dust penalties by district",
        [penalty_sum(rule_is("dust_violation"), group_by=("district",))],
        w=10,
        h=9,
        unit=YUAN,
        thresholds_=MONEY_THRESHOLDS,
        options=bargauge_options(),
        transformations=[sort_by("yuan")],
    )
    tamper_fields = ("device", "rule", "state", "address", "opened_at")
    L.add(
        "table",
        "疑似篡改 · Suspected tampering",
        [
            InfluxQL(
                'SELECT "case_id", "open", '
                + ", ".join(f'"{f}"' for f in tamper_fields)
                + f" FROM ({latest_per_case(tamper_fields, rule_is('tamper'), DISTRICT, UNIT)})"
            )
        ],
        w=12,
        h=8,
        description="Monitors switched off in working hours or reporting a flat line; "
        "open = 1 while the flag stands.",
        overrides=[
            by_name("opened_at", unit="dateTimeAsLocal"),
            by_name("state", mappings=[STATE_MAPPING]),
        ],
        options=table_options("opened_at"),
        transformations=[hide_fields("Time")],
    )
    L.add(
        "table",
        "扬尘案件动态 · Dust case events",
        [
            InfluxQL(
                'SELECT "device", "rule", "state", "severity", "address" FROM "ledger"."case_event" '
                f"WHERE {where(TIME, rule_is('dust_any'), DISTRICT, UNIT)} ORDER BY time DESC LIMIT 500"
            )
        ],
        w=12,
        h=8,
        overrides=[by_name("state", mappings=[STATE_MAPPING])],
        options=table_options(),
    )
    return dashboard(
        "citywatch-dust",
        "工地扬尘 · Construction dust",
        "PM10 at construction sites against the warning and violation levels, violation "
        "cases and their penalties, monitors suspected of tampering.",
        L.panels,
        time_from="now-24h",
        refresh="1m",
        annotations=[
            annotation(
                "扬尘违规 · Dust violations",
                f'SELECT "device", "address" FROM "ledger"."case_event" WHERE {DUST_VIOLATION_OPENED}',
                color="red",
                text="address",
                tags="device",
            )
        ],
    )


# --------------------------------------------------------------------------- 3. manhole

MANHOLE = "\"kind\" = 'manhole'"
OPENING_OR_ENDING = f'({OPENED} OR "open" = 0)'


def manhole() -> dict:
    L = Layout()
    L.add(
        "stat",
        "开放井盖案件 · Open manhole cases",
        [open_cases_count(MANHOLE)],
        w=6,
        h=4,
        thresholds_=thresholds("green", (1, "red")),
        options=stat_options(),
        time_from=OPEN_CASE_LOOKBACK,
    )
    L.add(
        "stat",
        "区间扣款 · Manhole penalties in range",
        [penalty_sum(rule_is("manhole_abnormal"))],
        w=6,
        h=4,
        unit=YUAN,
        thresholds_=MONEY_THRESHOLDS,
        options=stat_options(),
    )
    case_fields = ("device", "address", "district", "unit", "state", "opened_at", "deadline")
    L.add(
        "table",
        "开放案件计时 · Open cases with running clocks",
        [
            open_cases_rows(case_fields, MANHOLE),
            InfluxQL(
                'SELECT sum("amount_yuan") AS "yuan_so_far", max("hour_index") AS "hours_billed" '
                f'FROM "ledger"."penalty" WHERE {where(TIME, DISTRICT)} GROUP BY "case_id"'
            ),
        ],
        w=24,
        h=9,
        description="A: each open manhole case (deadline shown as time from now: "
        "'2 hours ago' means two hours past it). B: yuan booked so far on each case "
        "and the last billed hour past the deadline. Joined on case_id.",
        overrides=[
            by_name("deadline", unit="dateTimeFromNow"),
            by_name("opened_at", unit="dateTimeAsLocal"),
            by_name("yuan_so_far", unit=YUAN),
            by_name("state", mappings=[STATE_MAPPING]),
        ],
        transformations=[
            {"id": "joinByField", "options": {"byField": "case_id", "mode": "outer"}},
            {
                "id": "filterByValue",
                "options": {
                    "type": "include",
                    "match": "any",
                    "filters": [
                        {"fieldName": "device", "config": {"id": "isNotNull", "options": {}}}
                    ],
                },
            },
            hide_fields("Time", "Time 1", "Time 2"),
            sort_by("yuan_so_far"),
        ],
        options=table_options(),
        time_from=OPEN_CASE_LOOKBACK,
    )
    repair = (
        'SELECT elapsed("open", 1m) AS "minutes", difference("open") AS "closing" FROM "ledger"."case_event" '
        f"WHERE {where(TIME, MANHOLE, OPENING_OR_ENDING, DISTRICT, UNIT)} "
        'GROUP BY "case_id"'
    )
    L.add(
        "histogram",
        "修复用时分布 · Time to repair (hours)",
        [
            InfluxQL(
                f'SELECT first("minutes") / 60 AS "hours_to_repair" FROM ({repair}) WHERE "closing" = -1 GROUP BY "case_id"'
            )
        ],
        w=12,
        h=8,
        unit="h",
        description="Hours from a case's opening to the first event that ends it (repaired or "
        "closed), for cases opened and ended in the time range.",
        options={
            "bucketSize": 1,
            "bucketOffset": 0,
            "combine": True,
            "legend": {"showLegend": False},
        },
        custom={"fillOpacity": 80, "lineWidth": 1},
    )
    L.add(
        "bargauge",
        "产权单位扣款 · Penalties per property unit",
        [penalty_sum(PROPERTY_UNIT, PAYER_UNIT, rule_is("manhole_abnormal"), group_by=("payer",))],
        w=6,
        h=8,
        unit=YUAN,
        thresholds_=MONEY_THRESHOLDS,
        options=bargauge_options(),
        transformations=[sort_by("yuan")],
    )
    L.add(
        "table",
        "各单位案件数 · Cases opened per unit",
        [
            InfluxQL(
                'SELECT count("open") AS "cases_opened" FROM "ledger"."case_event" '
                f"WHERE {where(TIME, MANHOLE, OPENED, DISTRICT, UNIT)} "
                'GROUP BY "unit"'
            )
        ],
        w=6,
        h=8,
        options=table_options("cases_opened"),
        transformations=[hide_fields("Time")],
    )
    return dashboard(
        "citywatch-manhole",
        "窨井盖 · Manhole covers",
        "Open manhole cases with their repair deadline and the penalty clock running past it, "
        "how long repairs take, and what each property-rights unit has been charged.",
        L.panels,
        time_from="now-7d",
        refresh="1m",
    )


# --------------------------------------------------------------------------- 4. streetlights


def streetlight() -> dict:
    L = Layout()
    L.add(
        "stat",
        "灯具故障 · Open lamp faults",
        [open_cases_count(rule_is("streetlight_fault"))],
        w=6,
        h=4,
        thresholds_=thresholds("green", (1, "orange")),
        options=stat_options(),
        time_from=OPEN_CASE_LOOKBACK,
    )
    L.add(
        "stat",
        "漏电隐患 · Open leakage cases",
        [open_cases_count(rule_is("streetlight_leakage"))],
        w=6,
        h=4,
        thresholds_=thresholds("green", (1, "red")),
        options=stat_options(),
        time_from=OPEN_CASE_LOOKBACK,
    )
    lit = (
        f'SELECT {lit_indicator()} AS "lit" FROM "streetlight" WHERE {where(TIME, DISTRICT, UNIT)} '
        'GROUP BY "district", "device"'
    )
    L.add(
        "bargauge",
        "亮灯率（近15分钟） · Lighting rate, last 15 min",
        [InfluxQL(f'SELECT mean("lit") * 100 AS "lighting_rate" FROM ({lit}) GROUP BY "district"')],
        w=12,
        h=4,
        unit="percent",
        decimals=1,
        thresholds_=thresholds("red", (90, "orange"), (98, "green")),
        description="Share of lamp readings in the last 15 minutes drawing at least 0.05 A, per "
        "district. Meaningful in lighting hours only.",
        options=bargauge_options(),
        time_from="15m",
    )
    L.add(
        "timeseries",
        "亮灯率趋势 · Lighting rate per district",
        [
            InfluxQL(
                f'SELECT mean("lit") * 100 AS "lighting_rate" FROM ({lit}) WHERE $timeFilter '
                'GROUP BY time($__interval), "district" fill(none)',
                format="time_series",
                alias="$tag_district",
            )
        ],
        w=12,
        h=8,
        unit="percent",
        custom=timeseries_custom(),
        options=timeseries_options(),
    )
    L.add(
        "timeseries",
        "应亮时段亮灯率（每夜） · Lighting rate in the lit window, per night",
        [
            InfluxQL(
                'SELECT sum("lit_when_should") / sum("should_lit") * 100 AS "lighting_rate" '
                f'FROM "streetlight" WHERE {where(TIME, DISTRICT, UNIT)} '
                f"GROUP BY time(1d, 12h), \"district\" fill(none) tz('{TIMEZONE}')",
                format="time_series",
                alias="$tag_district",
            )
        ],
        w=24,
        h=8,
        unit="percent",
        decimals=1,
        description="亮灯率 as the city plan counts it: lamp readings lit inside each lamp's lit "
        "window (sunset + 15 min to sunrise - 15 min, or the district's timetable) / lamp readings "
        "inside it, per district and night (noon to noon, city time). The worker writes the marks "
        "(docs/rules.md, 'Lighting rate'); the monthly ranking prints the month's rate.",
        custom=timeseries_custom("bars"),
        options=timeseries_options(),
    )
    L.add(
        "timeseries",
        "漏电电流 · Leakage current per lamp",
        [
            InfluxQL(
                f'SELECT max("leakage_ma") AS "leakage_ma" FROM "streetlight" WHERE {where(TIME, DISTRICT, UNIT)} '
                'GROUP BY time($__interval), "device" fill(none)',
                format="time_series",
                alias="$tag_device",
            )
        ],
        w=12,
        h=8,
        unit="suffix: mA",
        thresholds_=thresholds("green", (LEAKAGE_MA, "red")),
        custom=timeseries_custom(threshold_lines=True),
        options=timeseries_options(),
    )
    fields = ("device", "rule", "state", "severity", "address", "district", "unit", "opened_at")
    L.add(
        "table",
        "开放故障与漏电 · Open faults and leakage cases",
        [
            open_cases_rows(
                fields, f"({rule_is('streetlight_fault')} OR {rule_is('streetlight_leakage')})"
            )
        ],
        w=14,
        h=8,
        overrides=[
            by_name("opened_at", unit="dateTimeAsLocal"),
            by_name("state", mappings=[STATE_MAPPING]),
        ],
        options=table_options("opened_at", desc=False),
        time_from=OPEN_CASE_LOOKBACK,
        transformations=[hide_fields("Time")],
    )
    L.add(
        "table",
        "漏电事件 · Leakage events",
        [
            InfluxQL(
                'SELECT "device", "address", "severity" FROM "ledger"."case_event" '
                f"WHERE {where(TIME, rule_is('streetlight_leakage'), OPENED, DISTRICT, UNIT)} "
                "ORDER BY time DESC"
            )
        ],
        w=10,
        h=8,
        options=table_options(),
    )
    return dashboard(
        "citywatch-streetlight",
        "路灯 · Streetlights",
        "Lamp faults and leakage (electric-shock risk) cases, leakage current, and the lighting "
        "rate per district.",
        L.panels,
        time_from="now-24h",
        refresh="1m",
    )


# --------------------------------------------------------------------------- 5. penalty ledger


def penalties() -> dict:
    L = Layout()
    L.add(
        "stat",
        "净扣款 · Net penalties",
        [penalty_sum(alias="net_yuan")],
        w=6,
        h=4,
        unit=YUAN,
        thresholds_=MONEY_THRESHOLDS,
        options=stat_options(),
        description="sum(amount_yuan) over the range: the ledger's net, reversals included.",
    )
    L.add(
        "stat",
        "冲正 · Reversals",
        [penalty_sum('"amount_yuan" < 0', alias="reversed_yuan")],
        w=6,
        h=4,
        unit=YUAN,
        thresholds_=thresholds("blue"),
        options=stat_options(),
    )
    by_district = f'SELECT sum("amount_yuan") AS "yuan" FROM "ledger"."penalty" WHERE {where(TIME, DISTRICT)} GROUP BY "district"'
    L.add(
        "table",
        "黑榜（扣款最多的区） · Black list: most deducted districts",
        [InfluxQL(f'SELECT top("yuan", "district", 5) AS "yuan" FROM ({by_district})')],
        w=6,
        h=4,
        overrides=[by_name("yuan", unit=YUAN)],
        options=table_options("yuan"),
        transformations=[hide_fields("Time"), sort_by("yuan")],
    )
    L.add(
        "table",
        "红榜（扣款最少的区） · Red list: least deducted districts",
        [InfluxQL(f'SELECT bottom("yuan", "district", 5) AS "yuan" FROM ({by_district})')],
        w=6,
        h=4,
        overrides=[by_name("yuan", unit=YUAN)],
        options=table_options("yuan", desc=False),
        description="Among districts with at least one entry in the range.",
        transformations=[hide_fields("Time"), sort_by("yuan", desc=False)],
    )
    L.add(
        "table",
        "月排名（按付款方） · Ranking by payer",
        [
            InfluxQL(
                'SELECT sum("amount_yuan") AS "yuan", count("amount_yuan") AS "entries" FROM "ledger"."penalty" '
                f'WHERE {where(TIME, DISTRICT)} GROUP BY "payer_type", "payer"'
            )
        ],
        w=12,
        h=9,
        overrides=[by_name("yuan", unit=YUAN)],
        options=table_options("yuan"),
        description="Month to date by default (the dashboard opens on this month).",
        transformations=[hide_fields("Time"), sort_by("yuan")],
    )
    L.add(
        "bargauge",
        "单位排名 · Ranking by property unit",
        [penalty_sum(PROPERTY_UNIT, PAYER_UNIT, group_by=("payer",))],
        w=12,
        h=9,
        unit=YUAN,
        thresholds_=MONEY_THRESHOLDS,
        options=bargauge_options(),
        transformations=[sort_by("yuan")],
    )
    L.add(
        "timeseries",
        "每日扣款 · Daily penalties",
        [
            InfluxQL(
                f'SELECT sum("amount_yuan") AS "yuan" FROM "ledger"."penalty" WHERE {where(TIME, DISTRICT)} '
                f"GROUP BY time(1d), \"payer_type\" fill(0) tz('{TIMEZONE}')",
                format="time_series",
                alias="$tag_payer_type",
            )
        ],
        w=24,
        h=7,
        unit=YUAN,
        custom={**timeseries_custom(draw="bars"), "stacking": {"mode": "normal"}},
        options=timeseries_options(),
    )
    L.add(
        "table",
        "扣款台账 · Ledger entries",
        [
            InfluxQL(
                'SELECT "entry_id", "case_id", "rule", "payer_type", "payer", "district", "device", '
                '"amount_yuan", "hour_index", "reverses" FROM "ledger"."penalty" '
                f"WHERE {where(TIME, DISTRICT)} ORDER BY time DESC LIMIT 1000"
            )
        ],
        w=24,
        h=10,
        overrides=[by_name("amount_yuan", unit=YUAN)],
        options=table_options(),
        description="Every entry, newest first (at most 1000); a reversal is its own entry with a "
        "negative amount and 'reverses' naming the entry it cancels.",
    )
    return dashboard(
        "citywatch-penalty",
        "扣款台账 · 月排名 · 红黑榜 · Penalty ledger and ranking",
        "The penalty ledger as booked: net per payer and district for the month so far, "
        "ranked, with the red and black lists and every entry.",
        L.panels,
        time_from="now/M",
        refresh="5m",
    )


# --------------------------------------------------------------------------- 6. vehicles


def vehicles() -> dict:
    """Muck trucks, weigh stations and cameras (docs/rules.md "muck_truck", "overload",
    "illegal_operation"): the day's cases and money, the trucks' tracks on a map, speeds."""
    L = Layout()
    for title, group, colour in (
        ("渣土车违规（今日） · Muck-truck cases today", "muck_any", "orange"),
        ("超载超限（今日） · Overloads today", "overload", "red"),
        ("非法营运（今日） · Illegal operation today", "illegal_operation", "red"),
    ):
        L.add(
            "stat",
            title,
            [
                InfluxQL(
                    'SELECT count("device") AS "cases" FROM "ledger"."case_event" '
                    f"WHERE {where(TIME, rule_is(group), OPENED, DISTRICT, UNIT)}"
                )
            ],
            w=6,
            h=4,
            thresholds_=thresholds("green", (1, colour)),
            options=stat_options(),
            time_from="now/d",
            description="Cases opened since local midnight.",
        )
    L.add(
        "stat",
        "车辆扣款（今日） · Vehicle penalties today",
        [penalty_sum(rule_is("vehicle_any"), alias="yuan")],
        w=6,
        h=4,
        unit=YUAN,
        thresholds_=MONEY_THRESHOLDS,
        options=stat_options(),
        time_from="now/d",
        description="20,000 per reckless-truck case to the company, 30,000 to each of the loading "
        "and owner districts per overload, 10,000 per illegal operator and day.",
    )
    L.add(
        "geomap",
        "车辆轨迹 · Truck tracks",
        [
            InfluxQL(
                'SELECT "lat", "lon", "speed_kmh", "device" FROM "vehicle" '
                f"WHERE {where(TIME, DISTRICT, UNIT)}"
            )
        ],
        w=14,
        h=14,
        description="Every position the trucks' terminals reported in the range, coloured by "
        "speed (green below 40 km/h, the limit inside the Fourth Ring; orange to 60; red above).",
        overrides=[
            by_name(
                "speed_kmh",
                unit="velocitykmh",
                thresholds=thresholds("green", (40, "orange"), (60, "red")),
                color={"mode": "thresholds"},
            )
        ],
        options={
            "view": {"id": "fit", "lat": 34.77, "lon": 113.75, "zoom": 11, "allLayers": True},
            "controls": {"showZoom": True, "mouseWheelZoom": True, "showAttribution": True},
            "basemap": {"type": "default", "name": "底图 Basemap", "config": {}},
            "layers": [
                {
                    "type": "markers",
                    "name": "轨迹点 Track points",
                    "config": {
                        "showLegend": True,
                        "style": {
                            "color": {"field": "speed_kmh", "fixed": "green"},
                            "size": {"fixed": 3, "min": 2, "max": 6},
                            "opacity": 0.8,
                            "symbol": {"mode": "fixed", "fixed": "img/icons/marker/circle.svg"},
                        },
                    },
                    "location": {"mode": "coords", "latitude": "lat", "longitude": "lon"},
                    "filterData": {"id": "byRefId", "options": "A"},
                    "tooltip": True,
                }
            ],
            "tooltip": {"mode": "details"},
        },
    )
    L.add(
        "table",
        "车辆案件 · Vehicle cases",
        [
            InfluxQL(
                'SELECT "rule", "device", "address", "district", "unit" FROM "ledger"."case_event" '
                f"WHERE {where(TIME, rule_is('vehicle_any'), OPENED, DISTRICT, UNIT)} "
                "ORDER BY time DESC"
            )
        ],
        w=10,
        h=7,
        overrides=[by_name("rule", mappings=[VEHICLE_RULE_MAPPING])],
        options=table_options(),
    )
    L.add(
        "bargauge",
        "车辆扣款（按责任方） · Vehicle penalties by payer",
        [penalty_sum(rule_is("vehicle_any"), group_by=("payer",))],
        w=10,
        h=7,
        unit=YUAN,
        thresholds_=MONEY_THRESHOLDS,
        options=bargauge_options(),
        description="Companies (reckless trucks, illegal operation) and districts (overloads).",
    )
    L.add(
        "timeseries",
        "车速 · Speed per truck",
        [
            InfluxQL(
                f'SELECT max("speed_kmh") AS "speed_kmh" FROM "vehicle" WHERE {where(TIME, DISTRICT, UNIT)} '
                'GROUP BY time($__interval), "device" fill(none)',
                format="time_series",
                alias="$tag_device",
            )
        ],
        w=24,
        h=8,
        unit="velocitykmh",
        thresholds_=thresholds("green", (40, "orange"), (60, "red")),
        custom=timeseries_custom(threshold_lines=True),
        options=timeseries_options(),
    )
    return dashboard(
        "citywatch-vehicles",
        "渣土车与治超 · Muck trucks and overloads",
        "Reckless muck trucks, overloaded trucks and illegal operators: the day's cases and "
        "money, every truck's track on the map, and their speeds.",
        L.panels,
        time_from="now-24h",
        refresh="1m",
    )


VEHICLE_RULE_MAPPING = {
    "type": "value",
    "options": {
        rule: {"text": f"{rule_ids.RULES[rule].zh} {rule}", "index": i}
        for i, rule in enumerate(RULES["vehicle_any"])
    },
}


# --------------------------------------------------------------------------- all of it

BUILDERS = {
    "command-center": command_center,
    "dust": dust,
    "manhole": manhole,
    "streetlight": streetlight,
    "penalty": penalties,
    "vehicles": vehicles,
}


def build_all() -> dict[str, dict]:
    """File stem → dashboard JSON model, for every dashboard."""
    return {name: build() for name, build in BUILDERS.items()}


def dashboard_json(model: dict) -> str:
    return json.dumps(model, ensure_ascii=False, indent=2) + "\n"


GENERATED = (
    "# Generated by `python -m citywatch.grafana.dashboards --out deploy/grafana`; do not edit.\n"
)


def datasource_yaml() -> str:
    """Grafana datasource provisioning. URL and database come from Grafana's own
    environment (the same names citywatch reads), so one file fits every city."""
    return (
        GENERATED
        + f"""\
# Copy to <grafana>/provisioning/datasources/ and set, in Grafana's environment,
# CITYWATCH_INFLUX_URL (as Grafana reaches InfluxDB) and CITYWATCH_INFLUX_DATABASE.
apiVersion: 1
datasources:
  - name: {DATASOURCE_NAME}
    uid: {DATASOURCE_UID}
    type: {DATASOURCE_TYPE}
    access: proxy
    url: ${{CITYWATCH_INFLUX_URL}}
    isDefault: false
    editable: false
    jsonData:
      version: InfluxQL
      dbName: ${{CITYWATCH_INFLUX_DATABASE}}
      httpMode: POST
      timeInterval: 10s
"""
    )


def provider_yaml(path: str = "/var/lib/grafana/dashboards/citywatch") -> str:
    """Grafana dashboard provider: loads every JSON file of ``path`` into the citywatch folder."""
    return (
        GENERATED
        + f"""\
# Copy to <grafana>/provisioning/dashboards/ and deploy/grafana/dashboards/*.json to {path}.
apiVersion: 1
providers:
  - name: citywatch
    orgId: 1
    folder: {FOLDER_TITLE}
    folderUid: {FOLDER_UID}
    type: file
    disableDeletion: false
    allowUiUpdates: false
    updateIntervalSeconds: 60
    options:
      path: {path}
      foldersFromFilesStructure: false
"""
    )


def artefacts() -> dict[str, str]:
    """Relative path under ``deploy/grafana`` → file content, for everything generated."""
    files = {
        f"dashboards/{name}.json": dashboard_json(model) for name, model in build_all().items()
    }
    files["provisioning/datasources/citywatch.yaml"] = datasource_yaml()
    files["provisioning/dashboards/citywatch.yaml"] = provider_yaml()
    return files


def write_all(out_dir: str | Path) -> list[Path]:
    """Write every generated file under ``out_dir`` (``deploy/grafana``); returns the paths."""
    out = Path(out_dir)
    written = []
    for rel, text in artefacts().items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m citywatch.grafana.dashboards",
        description="Regenerate citywatch's Grafana dashboards and provisioning files.",
    )
    parser.add_argument(
        "--out", default="deploy/grafana", help="output directory (default: deploy/grafana)"
    )
    args = parser.parse_args(argv)
    for path in write_all(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
