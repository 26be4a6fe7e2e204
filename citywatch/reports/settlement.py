"""The monthly settlement (扣款结算单): one statement per payer (docs/reports.md#settlement).

A payer is ``(payer_type, payer)``: a district government (the district id)
or a property-rights unit. Its statement lists every ledger entry of the
month paid by it, in accrual order, with case, device, address, rule, the
accrual instant in city time and the amount; a reversal names the entry it
reverses (and when and how much that one was booked). Then subtotals per
rule, the total to deduct (the sum of the month's entries: the ledger's net,
exactly what ``Ledger.net_by_payer`` gives for the same entries) and, per
case, the evidence from its case events: opened, deadline, acknowledged,
escalated, accident, repaired or closed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from citywatch.reports.data import Case, Entry, PeriodData
from citywatch.reports.output import write_csv as write_rows
from contract.cases import STATE_NAMES, name_of
from contract.clock import iso_local
from contract.clock import local as local_time
from contract.rules import rule_name as _rule_name

__all__ = [
    "CSV_COLUMNS",
    "EVIDENCE_COLUMNS",
    "Line",
    "Settlement",
    "Statement",
    "build_settlement",
    "evidence_items",
    "write_csv",
    "write_evidence_csv",
]

CSV_COLUMNS = (
    "row", "payer_type", "payer", "seq", "entry_id", "case_id", "device", "address", "rule", "rule_name",
    "accrued_at", "hour_index", "reverses", "reversed_accrued_at", "reversed_amount_yuan", "amount_yuan",
)  # fmt: skip
"""Settlement CSV columns; ``row`` is ``entry``, ``subtotal`` (per rule) or ``total`` (per payer)."""

EVIDENCE_COLUMNS = (
    "payer_type", "payer", "case_id", "rule", "device", "address", "grid", "opened_at", "deadline",
    "state", "ended_at", "ended_by", "acknowledged_by", "accident_at", "events", "proof",
)  # fmt: skip


def rule_name(rule: str) -> str:
    """The rule's Chinese name (contract.rules; an unknown rule shows its id)."""
    return _rule_name(rule, "zh")


@dataclass(frozen=True, slots=True)
class Line:
    seq: int
    entry: Entry
    address: str
    original: Entry | None
    """For a reversal: the entry it reverses (None if that entry is not in InfluxDB)."""


@dataclass
class Statement:
    payer_type: str
    payer: str
    lines: list[Line]
    subtotals: list[tuple[str, int, int]]
    """(rule, number of entries, net yuan), by rule id."""
    total: int
    cases: list[Case]
    """The cases behind the entries, by (opened_at, case_id)."""
    missing_cases: list[str] = field(default_factory=list)
    """Case ids named by entries that have no case events in InfluxDB."""

    @property
    def payer_label(self) -> str:
        if self.payer_type == "district_government":
            from citywatch.reports.data import district_name

            name = district_name(self.payer)
            return f"{name}（{self.payer}）" if name != self.payer else self.payer
        return self.payer


@dataclass
class Settlement:
    period: Any
    statements: list[Statement]
    city: str
    prepared_ms: int
    works: list[Any] = field(default_factory=list)
    """The month's announced works (``citywatch.reports.works.WorksLine``): why no penalty."""

    @property
    def total(self) -> int:
        return sum(s.total for s in self.statements)

    def net_by_payer(self) -> dict[tuple[str, str], int]:
        """Same shape as ``Ledger.net_by_payer``."""
        return dict(sorted(((s.payer_type, s.payer), s.total) for s in self.statements))


def _address(e: Entry, cases: dict[str, Case], registry: Any) -> str:
    c = cases.get(e.case_id)
    if c is not None and c.address:
        return c.address
    dev = registry.get(e.device) if registry is not None else None
    return getattr(dev, "address", "") or "" if dev is not None else ""


def build_settlement(
    data: PeriodData,
    registry: Any = None,
    city: str = "",
    prepared_ms: int | None = None,
    announcements: Iterable[dict[str, Any]] = (),
) -> Settlement:
    """One statement per payer with at least one entry in the period (see the module doc), and
    the month's announced works (``announcements``: the audit trail's, ``store.read.announcements``)."""
    from citywatch.reports.works import announced_works

    by_payer: dict[tuple[str, str], list[Entry]] = {}
    for e in data.entries:
        by_payer.setdefault((e.payer_type, e.payer), []).append(e)
    order = {"district_government": 0, "property_unit": 1}
    statements = []
    for (ptype, payer), entries in sorted(
        by_payer.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0])
    ):
        entries.sort(key=lambda e: (e.accrued_at, e.id))
        lines = [
            Line(
                i,
                e,
                _address(e, data.cases, registry),
                data.originals.get(e.reverses) if e.reverses else None,
            )
            for i, e in enumerate(entries, 1)
        ]
        sub: dict[str, list[int]] = {}
        for e in entries:
            acc = sub.setdefault(e.rule, [0, 0])
            acc[0] += 1
            acc[1] += e.amount_yuan
        case_ids = sorted({e.case_id for e in entries})
        cases = sorted(
            (data.cases[c] for c in case_ids if c in data.cases),
            key=lambda c: (c.opened_at, c.case_id),
        )
        statements.append(Statement(
            payer_type=ptype, payer=payer, lines=lines,
            subtotals=[(r, n, amt) for r, (n, amt) in sorted(sub.items())],
            total=sum(e.amount_yuan for e in entries), cases=cases,
            missing_cases=[c for c in case_ids if c not in data.cases],
        ))  # fmt: skip
    return Settlement(
        data.period,
        statements,
        city,
        data.period.now_ms if prepared_ms is None else prepared_ms,
        announced_works(data, announcements, registry),
    )


def describe_entry(line: Line, tz: str) -> str:
    """What the entry is, in Chinese: the hour of the clock, the accident, the reversal."""
    e = line.entry
    if e.reverses:
        o = line.original
        if o is None:
            return f"冲销 {e.reverses}"
        return f"冲销：{_what(o)}（{local_time(o.accrued_at, tz)[5:]}）"
    return _what(e)


def _what(e: Entry) -> str:
    if e.rule == "manhole" and e.hour_index is not None:
        return f"超时第 {e.hour_index} 小时"
    if e.rule == "manhole.accident":
        return "事故（区政府）" if e.payer_type == "district_government" else "事故（产权单位）"
    return rule_name(e.rule)


def evidence_items(c: Case, tz: str, as_of: int | None = None) -> list[str]:
    """The case's evidence as short Chinese lines, in time order."""
    d = c.detail
    out = [f"{local_time(c.opened_at, tz)} 立案：{rule_name(c.rule)}，设备 {c.device} 上报异常"]
    if c.deadline is not None:
        out.append(f"{local_time(c.deadline, tz)} 修复时限")
    if d.get("acknowledged_at") is not None:
        out.append(
            f"{local_time(d['acknowledged_at'], tz)} 确认（{d.get('acknowledged_by') or '—'}）"
        )
    late = c.deadline is not None and (
        (c.ended_at is not None and c.ended_at > c.deadline)
        or (c.ended_at is None and as_of is not None and as_of > c.deadline)
        or bool(d.get("escalated"))
    )
    if late:
        out.append("超过修复时限未修复，逾期按小时计罚")
    if d.get("accident_at") is not None:
        out.append(f"{local_time(d['accident_at'], tz)} 报告事故")
    ended = c.ended_at
    if ended is not None:
        by = d.get("repaired_by") or d.get("closed_by") or ""
        how = {"reading": "设备读数恢复正常", "officer": "执法人员关闭"}.get(by, "")
        if not how and isinstance(by, str) and by.startswith("officer:"):
            how = f"执法人员 {by.split(':', 1)[1]} 关闭"
        elif not how and by:
            how = str(by)
        out.append(
            f"{local_time(ended, tz)} {name_of(STATE_NAMES, c.state)}"
            + (f"（{how}）" if how else "")
        )
    else:
        out.append(f"截至期末：{name_of(STATE_NAMES, c.state)}")
    if d.get("reversed_hours"):
        out.append(
            "补报读数证明更早修复，冲销第 "
            + "、".join(str(h) for h in d["reversed_hours"])
            + " 小时"
        )
    for ev in c.evidence:
        if ev.get("type") == "reading" and ev.get("ts") is not None:
            values = "，".join(f"{k}={v}" for k, v in sorted((ev.get("fields") or {}).items()))
            out.append(f"{local_time(int(ev['ts']), tz)} 读数 reading：{values}")
        elif ev.get("type") == "action" and ev.get("at") is not None:
            note = f"（{ev['note']}）" if ev.get("note") else ""
            out.append(
                f"{local_time(int(ev['at']), tz)} 执法人员 {ev.get('officer') or '—'}：{ev.get('action')}{note}"
            )
    return out


def _ended_by(c: Case) -> str:
    d = c.detail
    return str(d.get("repaired_by") or d.get("closed_by") or "") if c.is_final else ""


def _csv_rows(s: Settlement) -> Iterator[list[Any]]:
    tz = s.period.tz
    for st in s.statements:
        for ln in st.lines:
            e, o = ln.entry, ln.original
            yield [
                "entry", st.payer_type, st.payer, ln.seq, e.id, e.case_id, e.device, ln.address, e.rule,
                rule_name(e.rule), iso_local(e.accrued_at, tz), "" if e.hour_index is None else e.hour_index,
                e.reverses or "", iso_local(o.accrued_at, tz) if o else "", o.amount_yuan if o else "",
                e.amount_yuan,
            ]  # fmt: skip
        for rule, n, amount in st.subtotals:
            yield ["subtotal", st.payer_type, st.payer, n, "", "", "", "", rule, rule_name(rule),
                   "", "", "", "", "", amount]  # fmt: skip
        yield ["total", st.payer_type, st.payer, len(st.lines), "", "", "", "", "", "", "", "", "", "",
               "", st.total]  # fmt: skip


def write_csv(s: Settlement, path: str | os.PathLike[str]) -> None:
    """UTF-8 with BOM (Excel opens Chinese correctly); one row per entry, subtotal and total.

    Amounts are numbers (a reversal's ``-10000`` too); text cells go through
    ``output.csv_cell``, so a unit name or address cannot be a formula.
    """
    write_rows(path, CSV_COLUMNS, _csv_rows(s))


def _evidence_rows(s: Settlement) -> Iterator[list[Any]]:
    tz = s.period.tz
    for st in s.statements:
        for c in st.cases:
            d = c.detail
            yield [
                st.payer_type, st.payer, c.case_id, c.rule, c.device, c.address, c.grid,
                iso_local(c.opened_at, tz), iso_local(c.deadline, tz), c.state, iso_local(c.ended_at, tz),
                _ended_by(c), d.get("acknowledged_by") or "", iso_local(d.get("accident_at"), tz),
                "; ".join(f"{iso_local(t, tz)} {state}" for t, state in c.events),
                "; ".join(_proof(ev, tz) for ev in c.evidence),
            ]  # fmt: skip


def write_evidence_csv(s: Settlement, path: str | os.PathLike[str]) -> None:
    """One row per (payer, case): the case's evidence from its events; officers' and devices'
    text neutralised like every report cell (``output.csv_cell``)."""
    write_rows(path, EVIDENCE_COLUMNS, _evidence_rows(s))


def _proof(ev: dict, tz: str) -> str:
    """One reading or officer action that proved a change of the case, as a CSV cell part."""
    if ev.get("type") == "reading" and ev.get("ts") is not None:
        values = " ".join(f"{k}={v}" for k, v in sorted((ev.get("fields") or {}).items()))
        return f"{iso_local(int(ev['ts']), tz)} reading {values}"
    if ev.get("type") == "action" and ev.get("at") is not None:
        return f"{iso_local(int(ev['at']), tz)} {ev.get('action')} by {ev.get('officer') or '-'}"
    return ""


def totals(statements: Iterable[Statement]) -> dict[tuple[str, str], int]:
    return {(s.payer_type, s.payer): s.total for s in statements}
