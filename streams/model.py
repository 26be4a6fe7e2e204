"""What the detection core takes in besides readings, and what it puts out.

Inputs: ``OfficerAction`` (ack / close / accident / note from the API or CLI).
Outputs (``Output``):

* ``CaseEvent`` -- a full snapshot of a case after each change of it (opened,
  acknowledged, escalated, repaired, closed, flagged, noted). Consumers keep
  the latest snapshot per ``case_id``; nothing has to be merged.
* ``LedgerEntry`` -- one booked amount of money (exact int yuan), or a
  reversal of one (negative amount, ``reverses`` = the original id).
* ``ActionRejected`` -- an officer action that matched no case (so the API/CLI
  can tell the officer instead of silently doing nothing).

Dust warnings and tampering suspicions are *cases of their own rule*
(``dust.warning``, ``dust.flatline``, and the ``suspected_tampering`` flag on
``offline`` cases), not a separate notice type: they get the same lifecycle,
acknowledgement and deduplication as every other case, and a warning episode
is one case instead of one alert per reading.

Everything here converts to and from plain JSON types (``to_dict`` /
``from_dict``), which is what travels on Kafka and lands in replay output.
Money is always an ``int`` number of yuan: floats never touch the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ingest.reading import Reading
    from ingest.registry import Device

ACTIONS = ("ack", "close", "accident", "note")
"""Officer actions the core understands."""

CASE_STATES = ("open", "acknowledged", "escalated", "repaired", "closed", "reopened")
"""``open`` -> ``acknowledged`` -> ``repaired`` | ``closed``; ``escalated`` when a
manhole case passes its repair deadline. ``repaired`` = the device's own
reading proved the condition over; ``closed`` = an officer closed it, or a dust
case recovered. ``reopened`` is reserved for the officer workflow (alerts/API);
the detection core itself never reopens a case: a new abnormality after a
case ended is a new case (DESIGN §1)."""

FINAL_STATES = frozenset({"repaired", "closed"})

PAYER_TYPES = ("district_government", "property_unit")

SEVERITIES = ("info", "warning", "minor", "major", "critical")


@dataclass(frozen=True, slots=True)
class OfficerAction:
    """An officer's action on a device's case.

    ``case_id`` None means "the device's current case" (see ``Detector.on_action``).
    ``at`` is when the officer acted, epoch ms; a ``close`` repairs the case at
    that instant.
    """

    action: str
    device: str
    at: int
    officer: str
    case_id: str | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"Invalid action {self.action!r}; valid actions: {ACTIONS}")
        if type(self.at) is not int:
            raise ValueError(f"Invalid 'at' {self.at!r}; expected integer epoch milliseconds")

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "device": self.device,
            "at": self.at,
            "officer": self.officer,
            "case_id": self.case_id,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OfficerAction:
        return cls(
            action=d["action"],
            device=d["device"],
            at=int(d["at"]),
            officer=d.get("officer") or "",
            case_id=d.get("case_id"),
            note=d.get("note"),
        )


@dataclass(frozen=True, slots=True)
class CaseEvent:
    """Snapshot of one case after a change; ``at`` is the instant of that change."""

    case_id: str
    kind: str
    """The device kind: dust, manhole or streetlight."""
    rule: str
    """``manhole``, ``dust``, ``dust.warning``, ``dust.flatline``,
    ``streetlight.fault``, ``streetlight.leakage`` or ``offline``."""
    device: str
    district: str
    grid: str
    unit: str
    severity: str
    state: str
    at: int
    opened_at: int
    deadline: int | None
    evidence: list[dict[str, Any]]
    component_code: str | None
    address: str
    detail: dict[str, Any]

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "kind": self.kind,
            "rule": self.rule,
            "device": self.device,
            "district": self.district,
            "grid": self.grid,
            "unit": self.unit,
            "severity": self.severity,
            "state": self.state,
            "at": self.at,
            "opened_at": self.opened_at,
            "deadline": self.deadline,
            "evidence": self.evidence,
            "component_code": self.component_code,
            "address": self.address,
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CaseEvent:
        return cls(
            case_id=d["case_id"],
            kind=d["kind"],
            rule=d["rule"],
            device=d["device"],
            district=d["district"],
            grid=d["grid"],
            unit=d["unit"],
            severity=d["severity"],
            state=d["state"],
            at=int(d["at"]),
            opened_at=int(d["opened_at"]),
            deadline=None if d.get("deadline") is None else int(d["deadline"]),
            evidence=list(d.get("evidence") or []),
            component_code=d.get("component_code"),
            address=d.get("address") or "",
            detail=dict(d.get("detail") or {}),
        )


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One booked amount (DESIGN §1, §7). Never edited: corrections are new
    entries with a negative amount and ``reverses`` set."""

    id: str
    case_id: str
    rule: str
    device: str
    payer: str
    """District id for ``district_government``, the unit for ``property_unit``."""
    payer_type: str
    district: str
    amount_yuan: int
    accrued_at: int
    """Epoch ms: the instant it accrued (a reversal: the watermark when booked)."""
    hour_index: int | None
    reverses: str | None
    evidence: list[dict[str, Any]]

    def __post_init__(self) -> None:
        if type(self.amount_yuan) is not int:
            raise TypeError(f"amount_yuan must be an int number of yuan, got {self.amount_yuan!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "case_id": self.case_id,
            "rule": self.rule,
            "device": self.device,
            "payer": self.payer,
            "payer_type": self.payer_type,
            "district": self.district,
            "amount_yuan": self.amount_yuan,
            "accrued_at": self.accrued_at,
            "hour_index": self.hour_index,
            "reverses": self.reverses,
            "evidence": self.evidence,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LedgerEntry:
        return cls(
            id=d["id"],
            case_id=d["case_id"],
            rule=d["rule"],
            device=d["device"],
            payer=d["payer"],
            payer_type=d["payer_type"],
            district=d["district"],
            amount_yuan=int(d["amount_yuan"]),
            accrued_at=int(d["accrued_at"]),
            hour_index=None if d.get("hour_index") is None else int(d["hour_index"]),
            reverses=d.get("reverses"),
            evidence=list(d.get("evidence") or []),
        )


@dataclass(frozen=True, slots=True)
class ActionRejected:
    """An officer action that matched no case of the device."""

    action: OfficerAction
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action.to_dict(), "reason": self.reason}


Output = CaseEvent | LedgerEntry | ActionRejected


# --------------------------------------------------------------------------- helpers for rule modules


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
    return ev


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
