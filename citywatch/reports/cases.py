"""Case statistics for a week or a month (案件统计, docs/reports.md#cases).

Population: the cases *opened* in the period (立案数), every rule, each as of
the period's end (or now, for the current period):

* counts by kind, rule, district and grid; handling status (the state at the
  period's end: open, acknowledged, escalated, repaired, closed);
* ended = repaired or closed by then; time to repair (TTR) = end - opening,
  over the ended cases (still-open cases have no TTR yet and are counted open);
  median and p90 (numpy's linear interpolation) in hours;
* share within deadline = cases ended at or before their deadline / cases with
  a deadline that was due by the period's end or that ended (only manhole
  cases have a repair deadline; a group with none due shows no share);
* top recurring devices: devices with two or more cases in the period (dust
  warnings, notices beside a violation, not counted), most first (ties by
  device id), at most ``top``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from citywatch.reports.data import Case, PeriodData
from citywatch.reports.output import decimal_text
from citywatch.reports.output import write_csv as write_rows
from contract.clock import HOUR_MS
from contract.rules import NOTICE_RULES, rule_name

__all__ = ["CSV_COLUMNS", "CaseStats", "Group", "build_case_stats", "percentile", "write_csv"]

CSV_COLUMNS = (
    "section", "key", "name", "cases", "open", "ended", "due", "on_time", "share_on_time",
    "median_ttr_h", "p90_ttr_h",
)  # fmt: skip

STATE_ORDER = ("open", "acknowledged", "escalated", "reopened", "repaired", "closed")


def percentile(values: list[float], q: float) -> float | None:
    """numpy's default (linear) percentile; None for no values."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))


@dataclass
class Group:
    key: str
    name: str = ""
    cases: int = 0
    open: int = 0
    ended: int = 0
    due: int = 0
    on_time: int = 0
    ttr_h: list[float] = field(default_factory=list)

    def add(self, c: Case, as_of: int) -> None:
        self.cases += 1
        if c.is_final:
            self.ended += 1
            self.ttr_h.append((c.ttr_ms or 0) / HOUR_MS)
        else:
            self.open += 1
        if c.due_by(as_of):
            self.due += 1
            if c.on_time:
                self.on_time += 1

    @property
    def share_on_time(self) -> float | None:
        return self.on_time / self.due if self.due else None

    @property
    def median_h(self) -> float | None:
        return percentile(self.ttr_h, 50)

    @property
    def p90_h(self) -> float | None:
        return percentile(self.ttr_h, 90)


@dataclass
class CaseStats:
    period: Any
    total: Group
    by_kind: list[Group]
    by_rule: list[Group]
    by_district: list[Group]
    by_grid: list[Group]
    by_state: list[tuple[str, int]]
    top_devices: list[tuple[str, int, str, str]]
    """(device, cases, address, district)."""


def _groups(cases: list[Case], key: Any, as_of: int, name: Any = None) -> list[Group]:
    out: dict[str, Group] = {}
    for c in cases:
        k = key(c)
        g = out.get(k)
        if g is None:
            g = out[k] = Group(k, name(k) if name else "")
        g.add(c, as_of)
    return [out[k] for k in sorted(out)]


def build_case_stats(data: PeriodData, top: int = 10) -> CaseStats:
    from citywatch.reports.data import district_name

    as_of = data.period.as_of_ms
    cases = data.opened_in_period()
    total = Group("all", "全部")
    for c in cases:
        total.add(c, as_of)
    states: dict[str, int] = {}
    for c in cases:
        states[c.state] = states.get(c.state, 0) + 1
    rank = {s: i for i, s in enumerate(STATE_ORDER)}
    by_dev: dict[str, list[Case]] = {}
    for c in cases:
        if c.rule not in NOTICE_RULES:
            by_dev.setdefault(c.device, []).append(c)
    recurring = sorted(
        ((d, len(cs)) for d, cs in by_dev.items() if len(cs) >= 2), key=lambda x: (-x[1], x[0])
    )
    top_devices = [
        (d, n, by_dev[d][-1].address, by_dev[d][-1].district) for d, n in recurring[:top]
    ]
    kind_names = {"manhole": "窨井盖", "dust": "工地扬尘", "streetlight": "路灯", "vehicle": "渣土车辆",
                  "weighstation": "治超检测点", "platecam": "卡口"}  # fmt: skip
    return CaseStats(
        period=data.period,
        total=total,
        by_kind=_groups(cases, lambda c: c.kind, as_of, lambda k: kind_names.get(k, k)),
        by_rule=_groups(cases, lambda c: c.rule, as_of, lambda r: rule_name(r, "zh")),
        by_district=_groups(cases, lambda c: c.district, as_of, district_name),
        by_grid=_groups(cases, lambda c: c.grid, as_of),
        by_state=sorted(states.items(), key=lambda kv: (rank.get(kv[0], 99), kv[0])),
        top_devices=top_devices,
    )


def _rows(s: CaseStats) -> Iterator[list[Any]]:
    for section, groups in (("total", [s.total]), ("kind", s.by_kind), ("rule", s.by_rule),
                            ("district", s.by_district), ("grid", s.by_grid)):  # fmt: skip
        for g in groups:
            yield [section, g.key, g.name, g.cases, g.open, g.ended, g.due, g.on_time,
                   decimal_text(g.share_on_time, 4), decimal_text(g.median_h), decimal_text(g.p90_h)]  # fmt: skip
    for state, n in s.by_state:
        yield ["state", state, "", n, "", "", "", "", "", "", ""]
    for dev, n, address, _district in s.top_devices:
        yield ["device", dev, address, n, "", "", "", "", "", "", ""]


def write_csv(s: CaseStats, path: str | os.PathLike[str]) -> None:
    """UTF-8 with BOM; one row per group (``section`` = total, kind, rule, district, grid,
    state, device); figures as numbers, text neutralised (``output.write_csv``)."""
    write_rows(path, CSV_COLUMNS, _rows(s))
