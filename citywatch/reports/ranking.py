"""The monthly district ranking (月排名) and the red and black lists (红黑榜).

The score (docs/reports.md#ranking) is on 100 points, higher is better, and
depends only on the district's own figures (so it means the same from month to
month and a district can improve without another getting worse)::

    score = 100 - 25 * min(1, C / C_ref)        C: cases per 1,000 devices
                - 25 * min(1, P / P_ref)        P: net penalties (yuan) per 1,000 devices
                - 25 * T                        T: min(1, median time to repair / M_ref);
                                                   0 with no case, 1 with cases but none ended
                - 25 * (1 - S)                  S: share handled within deadline (1 if none due)

with the references C_ref = 10 cases, P_ref = 1,000,000 yuan, M_ref = 24 h
(``ScoreRef``). Cases are those opened in the month (every rule except the
``dust.warning`` notices), device counts come from the registry, penalties are
the month's ledger entries whose ``district`` is the district (whoever pays:
its government or a property unit there). A district without devices in the
registry scores C and P as 1 if it has cases (resp. penalties), else 0.

Ranks: score descending, then C ascending, then the district id. The red list
is the best 3, the black list the worst 3 (worst first); with fewer than 6
districts each list has ``n // 2``. "Change" compares with the previous month
computed the same way (positive rank change = moved up); a previous month
without any case or entry has no ranking ("—").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from citywatch.reports.cases import NOTICE_RULES, percentile
from citywatch.reports.data import PeriodData, district_name
from citywatch.reports.output import decimal_text
from citywatch.reports.output import write_csv as write_rows
from contract.clock import HOUR_MS

__all__ = [
    "CSV_COLUMNS",
    "EXCLUDED_RULES",
    "DistrictRow",
    "Ranking",
    "ScoreRef",
    "build_ranking",
    "score",
    "write_csv",
]

EXCLUDED_RULES = NOTICE_RULES
"""Case rules that are notices, not cases, for the ranking."""

CSV_COLUMNS = (
    "rank", "district", "name", "devices", "cases", "cases_per_1000", "penalty_yuan", "penalty_per_1000_yuan",
    "median_ttr_h", "due", "on_time", "share_on_time", "score", "list", "prev_rank", "rank_change",
    "prev_score", "score_change", "lighting_rate",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ScoreRef:
    cases_per_1000: float = 10.0
    penalty_per_1000_yuan: float = 1_000_000.0
    median_ttr_h: float = 24.0
    weight: float = 25.0


@dataclass
class DistrictRow:
    district: str
    name: str
    devices: int
    cases: int
    penalty_yuan: int
    ttr_h: list[float]
    due: int
    on_time: int
    ended: int
    score: float = 0.0
    rank: int = 0
    list: str = ""
    """``red``, ``black`` or ""."""
    prev_rank: int | None = None
    prev_score: float | None = None
    lighting_rate: float | None = None
    """亮灯率: lamp readings lit inside the lit window / inside it (None: no lamp telemetry).
    Shown beside the score, not in it: the score's formula is the published one."""

    @property
    def cases_per_1000(self) -> float | None:
        return self.cases * 1000 / self.devices if self.devices else None

    @property
    def penalty_per_1000(self) -> float | None:
        return self.penalty_yuan * 1000 / self.devices if self.devices else None

    @property
    def median_ttr_h(self) -> float | None:
        return percentile(self.ttr_h, 50)

    @property
    def share_on_time(self) -> float | None:
        return self.on_time / self.due if self.due else None

    @property
    def rank_change(self) -> int | None:
        return None if self.prev_rank is None else self.prev_rank - self.rank

    @property
    def score_change(self) -> float | None:
        return None if self.prev_score is None else round(self.score - self.prev_score, 2)


@dataclass
class Ranking:
    period: Any
    rows: list[DistrictRow]
    """By rank."""
    red: list[DistrictRow]
    black: list[DistrictRow]
    """Worst first."""
    has_previous: bool


def _ratio(value: float | None, count: int, ref: float) -> float:
    if value is None:  # no devices in the registry
        return 1.0 if count else 0.0
    return min(1.0, max(0.0, value / ref))


def score(r: DistrictRow, ref: ScoreRef = ScoreRef()) -> float:
    """The documented score (module doc), rounded to 2 decimals."""
    c = _ratio(r.cases_per_1000, r.cases, ref.cases_per_1000)
    p = _ratio(r.penalty_per_1000, r.penalty_yuan, ref.penalty_per_1000_yuan)
    m = r.median_ttr_h
    t = (1.0 if r.cases else 0.0) if m is None else min(1.0, m / ref.median_ttr_h)
    s = r.share_on_time
    s = 1.0 if s is None else s
    return round(100.0 - ref.weight * (c + p + t + (1.0 - s)), 2)


def _rows(data: PeriodData, devices: dict[str, int], ref: ScoreRef) -> list[DistrictRow]:
    as_of = data.period.as_of_ms
    cases = [c for c in data.opened_in_period() if c.rule not in EXCLUDED_RULES]
    districts = set(devices) | {c.district for c in cases} | {e.district for e in data.entries}
    districts.discard("")
    rows = {
        d: DistrictRow(d, district_name(d), devices.get(d, 0), 0, 0, [], 0, 0, 0) for d in districts
    }
    for c in cases:
        r = rows[c.district]
        r.cases += 1
        if c.is_final:
            r.ended += 1
            r.ttr_h.append((c.ttr_ms or 0) / HOUR_MS)
        if c.due_by(as_of):
            r.due += 1
            r.on_time += c.on_time
    for e in data.entries:
        if e.district:
            rows[e.district].penalty_yuan += e.amount_yuan
    out = list(rows.values())
    for r in out:
        r.score = score(r, ref)
    cpt = lambda r: r.cases_per_1000 if r.cases_per_1000 is not None else float(r.cases) * 1e9  # noqa: E731
    out.sort(key=lambda r: (-r.score, cpt(r), r.district))
    for i, r in enumerate(out, 1):
        r.rank = i
    return out


def build_ranking(
    data: PeriodData,
    previous: PeriodData | None,
    registry: Any,
    ref: ScoreRef = ScoreRef(),
    lighting: dict[str, float] | None = None,
) -> Ranking:
    devices: dict[str, int] = {}
    for dev in registry or ():
        devices[dev.district] = devices.get(dev.district, 0) + 1
    rows = _rows(data, devices, ref)
    for r in rows:
        r.lighting_rate = (lighting or {}).get(r.district)
    n = len(rows)
    k = 3 if n >= 6 else n // 2
    red, black = rows[:k], list(reversed(rows[n - k :])) if k else []
    for r in red:
        r.list = "red"
    for r in black:
        r.list = "black"
    has_prev = previous is not None and bool(previous.entries or previous.opened_in_period())
    if has_prev:
        assert previous is not None
        prev = {r.district: r for r in _rows(previous, devices, ref)}
        for r in rows:
            p = prev.get(r.district)
            if p is not None:
                r.prev_rank, r.prev_score = p.rank, p.score
    return Ranking(data.period, rows, red, black, has_prev)


def write_csv(rk: Ranking, path: str | os.PathLike[str]) -> None:
    """UTF-8 with BOM, one row per district by rank; figures as numbers, text neutralised
    (``output.write_csv``)."""
    write_rows(path, CSV_COLUMNS, (
        [r.rank, r.district, r.name, r.devices, r.cases, decimal_text(r.cases_per_1000), r.penalty_yuan,
         decimal_text(r.penalty_per_1000), decimal_text(r.median_ttr_h), r.due, r.on_time,
         decimal_text(r.share_on_time, 4), decimal_text(r.score), r.list,
         "" if r.prev_rank is None else r.prev_rank, "" if r.rank_change is None else r.rank_change,
         decimal_text(r.prev_score), decimal_text(r.score_change), decimal_text(r.lighting_rate, 4)]
        for r in rk.rows
    ))  # fmt: skip
