"""The unit bulletin (责任单位考核通报): responsible units ranked by on-time closure, rework and extension.

Cities publish, beside the district ranking, how the units that own the
devices (产权单位/责任单位: the registry's ``unit``) handle their cases: 按期结案率,
返工率 and 延期率 (docs/reports.md, "Unit bulletin"). Per unit, over the cases
*opened* in the week or month (every rule but the notices, ``dust.warning``),
each as of the period's end:

* on-time closure rate (按期结案率) ``S = on_time / due``: cases ended at or
  before their deadline, over cases whose deadline was due by the period's end
  or that ended (the ranking's rule, ``Case.due_by``); 1 when none was due.
  Today only manhole cases carry a repair deadline.
* rework rate (返工率) ``W = reworked / handled``: ``handled`` are the cases
  that were repaired or closed at least once, or had the unit's report
  (``handled`` stage), by the period's end; a handled case is *reworked* when a
  check failed (核查不通过, the recorded ``check_failed`` stage of the case
  workflow, docs/rules.md) or the fix did not hold: the same device opened a
  new case of the same rule within ``UnitRef.rework_within_h`` (72 h) of its
  end, or the case itself was reopened (a ``reopened`` event after a repair or
  a close).
* extension rate (延期率) ``E = extended / cases``: cases with at least one
  extension (延期) a supervisor approved by the period's end (the recorded
  ``extended`` stage).

Score (100 points, higher is better, the unit's own figures only)::

    score = 100 - 50 * (1 - S) - 30 * W - 20 * E

rounded to 2 decimals (weights: ``UnitRef``). Ranked are the units with at
least one case: score descending, then more cases first, then the unit's
name; units without a case in the period are listed after them, unranked.
The previous period (same kind) ranked the same way gives the rank change
(positive: moved up).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from citywatch.reports.cases import NOTICE_RULES
from citywatch.reports.data import FINAL_STATES, Case, PeriodData
from citywatch.reports.output import decimal_text
from citywatch.reports.output import write_csv as write_rows
from contract.clock import HOUR_MS

__all__ = [
    "CSV_COLUMNS",
    "EXTENSIONS_NOTE",
    "UnitBulletin",
    "UnitRef",
    "UnitRow",
    "build_units",
    "reworked",
    "score",
    "write_csv",
]

CSV_COLUMNS = (
    "rank", "unit", "devices", "cases", "due", "on_time", "on_time_rate", "handled", "reworked",
    "rework_rate", "extended", "extension_rate", "score", "prev_rank", "rank_change",
)  # fmt: skip

EXTENSIONS_NOTE = (
    "延期率：本期立案中经督办批准延期的案件占比；返工含核查不通过及 72 小时内同类复发。",
    "Extension rate: cases with an extension a supervisor approved; rework: failed checks and "
    "the same rule again within 72 h.",
)
"""What the PDF says of the extension and rework rates."""


@dataclass(frozen=True, slots=True)
class UnitRef:
    on_time_weight: float = 50.0
    rework_weight: float = 30.0
    extension_weight: float = 20.0
    rework_within_h: float = 72.0
    """A new case of the same rule on the same device this soon after a repair: the repair did not hold."""


@dataclass
class UnitRow:
    unit: str
    devices: int | None
    """The unit's devices in the registry (None without a registry)."""
    cases: int = 0
    due: int = 0
    on_time: int = 0
    handled: int = 0
    reworked: int = 0
    extended: int = 0
    """Cases with an extension approved by the period's end (module doc)."""
    score: float | None = None
    """None for a unit without a case in the period (it is listed, not ranked)."""
    rank: int | None = None
    prev_rank: int | None = None

    @property
    def on_time_rate(self) -> float | None:
        return self.on_time / self.due if self.due else None

    @property
    def rework_rate(self) -> float | None:
        return self.reworked / self.handled if self.handled else None

    @property
    def extension_rate(self) -> float | None:
        return self.extended / self.cases if self.cases else None

    @property
    def rank_change(self) -> int | None:
        if self.rank is None or self.prev_rank is None:
            return None
        return self.prev_rank - self.rank


@dataclass
class UnitBulletin:
    period: Any
    rows: list[UnitRow]
    """Ranked units first (by rank), then the units without a case (by name)."""
    ref: UnitRef
    has_previous: bool

    @property
    def ranked(self) -> list[UnitRow]:
        return [r for r in self.rows if r.rank is not None]


def score(r: UnitRow, ref: UnitRef = UnitRef()) -> float:
    """The documented score (module doc), rounded to 2 decimals."""
    s = r.on_time_rate
    w = r.rework_rate
    e = r.extension_rate
    s = 1.0 if s is None else s
    return round(100.0 - ref.on_time_weight * (1.0 - s) - ref.rework_weight * (w or 0.0)
                 - ref.extension_weight * (e or 0.0), 2)  # fmt: skip


def _handled(c: Case) -> bool:
    return any(state in FINAL_STATES for _, state in c.events) or c.is_final


def _reopened(c: Case) -> bool:
    """Reopened after a repair or a close (``reopened`` after a final state)."""
    ended = False
    for _, state in c.events:
        if state in FINAL_STATES:
            ended = True
        elif state == "reopened" and ended:
            return True
    return False


def _first_end(c: Case) -> int | None:
    """When the case first ended: its end if it is over, else its first repaired/closed event."""
    if c.is_final and not _reopened(c):
        return c.ended_at
    return next((at for at, state in c.events if state in FINAL_STATES), None)


def reworked(
    population: Iterable[Case], known: Iterable[Case], as_of: int, within_ms: int
) -> set[str]:
    """Ids of the population's cases whose fix did not hold (module doc): reopened, or followed
    on the same device by a case of the same rule opened within ``within_ms`` of their end (and
    by ``as_of``). ``known`` are every case the report read, so the follow-up may lie anywhere."""
    later: dict[tuple[str, str], list[int]] = {}
    for c in known:
        later.setdefault((c.device, c.rule), []).append(c.opened_at)
    out: set[str] = set()
    for c in population:
        if _reopened(c):
            out.add(c.case_id)
            continue
        end = _first_end(c)
        if end is None:
            continue
        if any(end <= t <= min(end + within_ms, as_of) and t > c.opened_at
               for t in later.get((c.device, c.rule), ())):  # fmt: skip
            out.add(c.case_id)
    return out


def _recorded(data: PeriodData, case_id: str, stage: str, as_of: int) -> bool:
    """The case workflow recorded ``stage`` for the case by ``as_of``."""
    return any(c.stage == stage and c.at <= as_of for c in data.stages.get(case_id, ()))


def _rows(data: PeriodData, devices: dict[str, int] | None, ref: UnitRef) -> list[UnitRow]:
    as_of = data.period.as_of_ms
    cases = [c for c in data.opened_in_period() if c.rule not in NOTICE_RULES]
    units = set(devices or ()) | {c.unit for c in cases}
    units.discard("")
    rows = {u: UnitRow(u, None if devices is None else devices.get(u, 0)) for u in units}
    redo = reworked(cases, data.cases.values(), as_of, int(ref.rework_within_h * HOUR_MS))
    for c in cases:
        if not c.unit:
            continue
        r = rows[c.unit]
        r.cases += 1
        if c.due_by(as_of):
            r.due += 1
            r.on_time += c.on_time
        if _handled(c) or _recorded(data, c.case_id, "handled", as_of):
            r.handled += 1
            r.reworked += c.case_id in redo or _recorded(data, c.case_id, "check_failed", as_of)
        r.extended += _recorded(data, c.case_id, "extended", as_of)
    ranked = [r for r in rows.values() if r.cases]
    for r in ranked:
        r.score = score(r, ref)
    ranked.sort(key=lambda r: (-(r.score or 0.0), -r.cases, r.unit))
    for i, r in enumerate(ranked, 1):
        r.rank = i
    idle = sorted((r for r in rows.values() if not r.cases), key=lambda r: r.unit)
    return ranked + idle


def build_units(data: PeriodData, previous: PeriodData | None, registry: Any,
                ref: UnitRef = UnitRef()) -> UnitBulletin:  # fmt: skip
    """The bulletin of ``data``'s period; ``previous`` (the period before) gives the rank change."""
    devices: dict[str, int] | None = None
    if registry is not None:
        devices = {}
        for dev in registry:
            if dev.unit:
                devices[dev.unit] = devices.get(dev.unit, 0) + 1
    rows = _rows(data, devices, ref)
    has_prev = previous is not None and bool(previous.opened_in_period())
    if has_prev:
        assert previous is not None
        before = {r.unit: r.rank for r in _rows(previous, devices, ref)}
        for r in rows:
            r.prev_rank = before.get(r.unit)
    return UnitBulletin(data.period, rows, ref, has_prev)


def write_csv(b: UnitBulletin, path: str | os.PathLike[str]) -> None:
    """UTF-8 with BOM, one row per unit (ranked first); rates as decimals (0.6667), blank where
    there is nothing to divide by; text neutralised (``output.write_csv``)."""
    write_rows(path, CSV_COLUMNS, (
        ["" if r.rank is None else r.rank, r.unit, "" if r.devices is None else r.devices, r.cases, r.due,
         r.on_time, decimal_text(r.on_time_rate, 4), r.handled, r.reworked, decimal_text(r.rework_rate, 4),
         r.extended, decimal_text(r.extension_rate, 4), decimal_text(r.score),
         "" if r.prev_rank is None else r.prev_rank, "" if r.rank_change is None else r.rank_change]
        for r in b.rows
    ))  # fmt: skip
