"""A case's working state inside the detection core, and the helpers rule modules share.

The case, ledger and action *models* are the contract (``contract.cases``,
docs/contracts.md); what lives here is how the core builds them: evidence
records, the per-input ``Context``, the mutable ``CaseRecord`` of the simple
rule kinds, and the one way to write a penalty entry and its reversal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from contract.cases import (
    COMMON_ACTIONS,
    FINAL_STATES,
    CaseEvent,
    LedgerEntry,
    OfficerAction,
    Output,
)

if TYPE_CHECKING:
    from contract.reading import Reading
    from registry.devices import Device


def reading_evidence(r: Reading) -> dict[str, Any]:
    """The reading as evidence: enough to find it again and to show what it said."""
    return {
        "type": "reading",
        "device": r.device,
        "ts": r.ts,
        "received_at": r.received_at,
        "fields": dict(r.fields),
    }


def action_evidence(a: OfficerAction) -> dict[str, Any]:
    ev: dict[str, Any] = {"type": "action", "action": a.action, "officer": a.officer, "at": a.at}
    if a.note is not None:
        ev["note"] = a.note
    return ev | a.provenance()


def act_on_case(
    rec: CaseRecord | None, a: OfficerAction, dev: Device, ctx: Context
) -> tuple[bool, CaseRecord | None]:
    """ack/close/note on a rule kind's one open case: (the action was for it, the case if still open).

    The shared verb of the kinds that hold one case per device (levels, noise)."""
    if a.action not in COMMON_ACTIONS or rec is None:
        return False, rec
    if a.case_id is not None and a.case_id != rec.case_id:
        return False, rec
    if rec.apply(a):
        ctx.out.append(rec.event(dev, a.at, [action_evidence(a)]))
    return True, rec if rec.is_open else None


def clock_evidence(at: int) -> dict[str, Any]:
    """Evidence for a transition the watermark caused (silence, deadline, recovery)."""
    return {"type": "clock", "at": at}


class Context:
    """What a rule module needs from the detector while handling one input:
    the current watermark (for reversals) and the list to append outputs to."""

    __slots__ = ("wm", "out")

    def __init__(self) -> None:
        self.wm: int = 0
        self.out: list[Output] = []


@dataclass(slots=True)
class CaseRecord:
    """A case's mutable state inside a rule module (the simple kinds: everything
    but manhole, which has its own record with the penalty clock)."""

    case_id: str
    rule: str
    opened_at: int
    severity: str
    state: str = "open"
    closed_at: int | None = None
    closed_by: str | None = None
    acknowledged_at: int | None = None
    acknowledged_by: str | None = None
    notes: list[dict[str, Any]] = field(default_factory=list)
    evidence: list[dict[str, Any]] = field(default_factory=list)
    """Evidence of the opening (kept: it goes with every later snapshot)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Rule-specific detail (levels, flags), copied into every snapshot."""

    @property
    def is_open(self) -> bool:
        return self.state not in FINAL_STATES

    def end(self, state: str, at: int, by: str) -> None:
        self.state = state
        self.closed_at = max(at, self.opened_at)
        self.closed_by = by

    def apply(self, a: OfficerAction) -> bool:
        """Apply ack/close/note; True if the record changed (repeats change nothing)."""
        if a.action == "ack":
            if self.is_open and self.acknowledged_at is None:
                self.acknowledged_at = a.at
                self.acknowledged_by = a.officer
                self.state = "acknowledged"
                return True
            return False
        if a.action == "close":
            if self.is_open:
                self.end("closed", a.at, f"officer:{a.officer}")
                return True
            return False
        if a.action == "note":
            n = {"at": a.at, "officer": a.officer, "note": a.note}
            if n not in self.notes:
                self.notes.append(n)
                return True
        return False

    def event(
        self, dev: Device, at: int, evidence: list[dict[str, Any]] | None = None
    ) -> CaseEvent:
        detail = dict(self.extra)
        detail["closed_at"] = self.closed_at
        detail["closed_by"] = self.closed_by
        detail["acknowledged_at"] = self.acknowledged_at
        detail["acknowledged_by"] = self.acknowledged_by
        if self.notes:
            detail["notes"] = list(self.notes)
        return CaseEvent(
            case_id=self.case_id,
            kind=dev.kind,
            rule=self.rule,
            device=dev.device_id,
            district=dev.district,
            grid=dev.grid,
            unit=dev.unit,
            severity=self.severity,
            state=self.state,
            at=at,
            opened_at=self.opened_at,
            deadline=None,
            evidence=self.evidence + (evidence or []),
            component_code=dev.component_code,
            address=dev.address,
            detail=detail,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "rule": self.rule,
            "opened_at": self.opened_at,
            "severity": self.severity,
            "state": self.state,
            "closed_at": self.closed_at,
            "closed_by": self.closed_by,
            "acknowledged_at": self.acknowledged_at,
            "acknowledged_by": self.acknowledged_by,
            "notes": self.notes,
            "evidence": self.evidence,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> CaseRecord | None:
        if d is None:
            return None
        return cls(
            case_id=d["case_id"],
            rule=d["rule"],
            opened_at=d["opened_at"],
            severity=d["severity"],
            state=d["state"],
            closed_at=d["closed_at"],
            closed_by=d["closed_by"],
            acknowledged_at=d["acknowledged_at"],
            acknowledged_by=d["acknowledged_by"],
            notes=[dict(n) for n in d["notes"]],
            evidence=list(d["evidence"]),
            extra=dict(d["extra"]),
        )


def penalty_entry(
    dev: Device, case_id: str, suffix: str, rule: str, payer_type: str, amount: int,
    at: int, evidence: list[dict[str, Any]], hour_index: int | None = None,
    *, district: str | None = None, unit: str | None = None,
) -> LedgerEntry:  # fmt: skip
    """A fresh (non-reversal) ledger entry with id ``<case_id>:<suffix>``.

    ``district`` / ``unit`` override the registry's parties when a case fixed
    them at its opening (a registry reload must not move a running clock's payer).
    """
    district = dev.district if district is None else district
    unit = dev.unit if unit is None else unit
    return LedgerEntry(
        id=f"{case_id}:{suffix}",
        case_id=case_id,
        rule=rule,
        device=dev.device_id,
        payer=district if payer_type == "district_government" else unit,
        payer_type=payer_type,
        district=district,
        amount_yuan=amount,
        accrued_at=at,
        hour_index=hour_index,
        reverses=None,
        evidence=evidence,
    )


def reversal_of(orig: LedgerEntry, at: int, evidence: list[dict[str, Any]]) -> LedgerEntry:
    """The entry cancelling ``orig``: id ``<orig.id>:reversal``, booked at ``at``."""
    return LedgerEntry(
        id=f"{orig.id}:reversal",
        case_id=orig.case_id,
        rule=orig.rule,
        device=orig.device,
        payer=orig.payer,
        payer_type=orig.payer_type,
        district=orig.district,
        amount_yuan=-orig.amount_yuan,
        accrued_at=at,
        hour_index=orig.hour_index,
        reverses=orig.id,
        evidence=evidence,
    )
