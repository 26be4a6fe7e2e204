"""Announced works (施工报备) in the settlement: why no penalty was booked (docs/reports.md).

Finance reads the settlement to deduct; a cover that was open for hours and
cost nothing must say why. Every announcement whose window overlaps the month
is listed, each with the cases its covers opened inside the window and what
became of them: no penalty (the works explained it), or booked from the
window's end (the works overran).

Two sources, joined by (device, window): the officers' acts on the audit
trail (``announce_works``, accepted; the window is in the record's ``extra``),
which lists announcements that explained no case too, and the planned cases
themselves (``detail.planned_works``), which is all a replayed journal has.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from citywatch.reports.data import Case, PeriodData
from citywatch.reports.output import write_csv as write_rows
from contract.clock import iso_local

__all__ = ["WORKS_COLUMNS", "WorksLine", "announced_works", "write_works_csv"]

WORKS_COLUMNS = (
    "device", "district", "unit", "address", "works_from", "works_until", "officer", "reason",
    "announced_at", "case_id", "case_state", "outcome", "booked_yuan",
)  # fmt: skip
"""One row per (announcement, case); an announcement no case fell into has one row without a case."""

OUTCOMES = {
    "no_penalty": "施工期内，未扣款 / inside the window: no penalty",
    "overran": "超出报备时段，自报备结束起计费 / overran: booked from the window's end",
    "no_case": "报备期内无案件 / no case in the window",
}


@dataclass
class WorksLine:
    device: str
    district: str
    unit: str
    address: str
    works_from: int
    works_until: int
    officer: str
    reason: str
    announced_at: int | None
    cases: list[tuple[Case, str, int]] = field(default_factory=list)
    """(case, outcome key of ``OUTCOMES``, yuan booked for it in the month)."""


def _overran(c: Case, until: int, booked: int, as_of: int) -> bool:
    """Still open at the window's end (or money booked for it): the works did not explain it.
    A window that has not ended by the report's instant has not been overrun (yet)."""
    end = c.ended_at
    if end is None:
        return booked != 0 or until <= as_of
    return booked != 0 or end > until


def announced_works(
    data: PeriodData, audit: Iterable[Mapping[str, Any]] = (), registry: Any = None
) -> list[WorksLine]:
    """The month's announced works (see the module doc), by (window start, device)."""
    p = data.period
    lines: dict[tuple[str, int, int], WorksLine] = {}

    def line(device: str, start: int, until: int, officer: str, reason: str,
             announced: int | None) -> WorksLine | None:  # fmt: skip
        if until <= p.start_ms or start >= p.end_ms:
            return None
        key = (device, start, until)
        if key not in lines:
            dev = registry.get(device) if registry is not None else None
            lines[key] = WorksLine(
                device, getattr(dev, "district", ""), getattr(dev, "unit", ""),
                getattr(dev, "address", ""), start, until, officer, reason, announced,
            )  # fmt: skip
        return lines[key]

    for r in audit:
        extra = r.get("extra") or {}
        start, until = extra.get("works_from"), extra.get("works_until")
        if type(start) is int and type(until) is int:
            line(str(r.get("device") or ""), start, until, str(r.get("officer") or ""),
                 str(r.get("note") or r.get("reason") or ""), r.get("time"))  # fmt: skip
    booked: dict[str, int] = {}
    for e in data.entries:
        booked[e.case_id] = booked.get(e.case_id, 0) + e.amount_yuan
    for c in sorted(data.cases.values(), key=lambda c: (c.opened_at, c.case_id)):
        w = c.detail.get("planned_works")
        if not isinstance(w, dict) or type(w.get("from")) is not int:
            continue
        wl = line(c.device, w["from"], int(w["until"]), str(w.get("officer") or ""),
                  str(w.get("reason") or ""), w.get("recorded_at"))  # fmt: skip
        if wl is None:
            continue
        wl.district, wl.unit = wl.district or c.district, wl.unit or c.unit
        wl.address = wl.address or c.address
        yuan = booked.get(c.case_id, 0)
        wl.cases.append(
            (c, "overran" if _overran(c, wl.works_until, yuan, p.as_of_ms) else "no_penalty", yuan)
        )
    return sorted(lines.values(), key=lambda w: (w.works_from, w.device))


def _rows(works: list[WorksLine], tz: str) -> Iterable[list[Any]]:
    for w in works:
        head = [w.device, w.district, w.unit, w.address, iso_local(w.works_from, tz),
                iso_local(w.works_until, tz), w.officer, w.reason,
                "" if w.announced_at is None else iso_local(int(w.announced_at), tz)]  # fmt: skip
        if not w.cases:
            yield head + ["", "", OUTCOMES["no_case"], 0]
        for c, outcome, yuan in w.cases:
            yield head + [c.case_id, c.state, OUTCOMES[outcome], yuan]


def write_works_csv(works: list[WorksLine], tz: str, path: str | os.PathLike[str]) -> None:
    """``settlement-YYYY-MM-works.csv`` (``WORKS_COLUMNS``), every cell through ``write_csv``."""
    write_rows(path, WORKS_COLUMNS, _rows(works, tz))
