"""What the detection core takes in besides readings, and what it puts out.

Inputs: ``OfficerAction`` (ack / close / accident / note / confirm_repair /
reject_repair from the API or CLI).
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

from dataclasses import dataclass
from typing import Any

ACTIONS = (
    "ack", "close", "accident", "note", "confirm_repair", "reject_repair", "announce_works",
    "dispatch", "feedback", "check", "extend",
)  # fmt: skip
"""Officer actions the core understands. ``confirm_repair`` / ``reject_repair``
decide a manhole case's late repair claim: a reading that arrived too late to
reverse booked hours on its own (docs/rules.md, "Late repair claims").
``dispatch`` / ``feedback`` / ``check`` / ``extend`` are the workflow's stage
actions (``STAGE_ACTIONS``, docs/rules.md "The case workflow")."""

STAGE_ACTIONS = ("dispatch", "feedback", "check", "extend")
"""The workflow's actions (派遣, 处置反馈, 核查, 延期): they move a case's stage, never its
money (``streams.workflow``)."""

STAGES = ("filed", "dispatched", "handled", "checked", "closed", "evaluated")
"""GB/T 30428's stages of a case as citywatch records them: 立案, 派遣, 处置/反馈,
核查, 结案, 评价 (docs/contracts.md, "Case stages")."""

STAGE_CHANGES = (*STAGES, "extended", "check_failed")
"""What a stage record says happened: a stage reached, an extension approved (延期),
a check that failed (the case goes back to ``dispatched``: 返工, rework)."""

STAGE_NAMES: dict[str, tuple[str, str]] = {
    "filed": ("立案", "filed"), "dispatched": ("派遣", "dispatched"),
    "handled": ("处置反馈", "handled"), "checked": ("核查", "checked"),
    "closed": ("结案", "closed"), "evaluated": ("评价", "evaluated"),
    "extended": ("延期", "extended"), "check_failed": ("核查不通过（返工）", "check failed (rework)"),
}  # fmt: skip
"""(zh, en) of each stage change."""

EVALUATIONS = ("on_time", "late", "reworked")
"""A closed case's evaluation: closed by its disposal deadline (as extended) with no
rework; closed after it; closed in time but only after a failed check."""

PHOTOS_MAX = 20
"""At most this many photo references on one feedback."""

ACTION_ID_MAX = 64
"""An action id's longest (a uuid4's hex is 32): the detector keeps the last few per device."""

COMMON_ACTIONS = ("ack", "close", "note")
"""The actions every case takes; the others belong to manhole cases."""

CASE_STATES = ("open", "acknowledged", "escalated", "repaired", "closed", "reopened", "planned")
"""``open`` -> ``acknowledged`` -> ``repaired`` | ``closed``; ``escalated`` when a
manhole case passes its repair deadline. ``repaired`` = the device's own
reading proved the condition over; ``closed`` = an officer closed it, or a dust
case recovered. ``reopened`` is reserved for the officer workflow (alerts/API);
the detection core itself never reopens a case: a new abnormality after a
case ended is a new case (docs/rules.md)."""

FINAL_STATES = frozenset({"repaired", "closed"})

PAYER_TYPES = ("district_government", "property_unit")
"""Who pays: the district government (管委会) of the place, or the unit owning the device."""

ROAD_CLASSES = ("main", "secondary", "other")
"""Road classes of the registry; manhole grace periods and deadlines depend on them."""

SEVERITIES = ("info", "warning", "minor", "major", "critical")

SEVERITY_NAMES: dict[str, tuple[str, str]] = {
    "info": ("提示", "info"), "warning": ("预警", "warning"), "minor": ("一般", "minor"),
    "major": ("重大", "major"), "critical": ("紧急", "critical"),
}  # fmt: skip
"""(zh, en) of each severity, as officers and statements show it."""

STATE_NAMES: dict[str, tuple[str, str]] = {
    "open": ("待处置", "open"), "acknowledged": ("已确认", "acknowledged"),
    "escalated": ("已超期", "past its deadline"), "repaired": ("已修复", "repaired"),
    "closed": ("已结案", "closed"), "reopened": ("重新打开", "reopened"),
    "planned": ("施工报备中", "under announced works"),
}  # fmt: skip
"""(zh, en) of each case state."""

PAYER_TYPE_NAMES: dict[str, tuple[str, str]] = {
    "district_government": ("区政府（管委会）", "district government"),
    "property_unit": ("产权单位", "property unit"),
}
"""(zh, en) of each payer type."""


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
    role: str = ""
    """The role the officer acted in (docs/officers.md); "" for records from before roles."""
    channel: str = ""
    """link, cli or api (``contract.officers.CHANNELS``)."""
    credential: str = ""
    """The credential's id (token id, link nonce): who can be asked about it, never a secret."""
    reason: str | None = None
    """Why, when the act is backdated (``at`` earlier than ``recorded_at``)."""
    recorded_at: int | None = None
    """When citywatch received the act (None: the same as ``at``)."""
    works_from: int | None = None
    works_until: int | None = None
    """``announce_works`` (报备): the planned works' window ``[works_from, works_until)``."""
    deadline: int | None = None
    """``extend``: the disposal deadline the supervisor approved (epoch ms)."""
    passed: bool | None = None
    """``check``: whether the inspector found the condition over (True) or not (rework)."""
    photos: tuple[str, ...] = ()
    """``feedback``: the unit's photo references (URLs or the platform's ids), not the photos."""
    action_id: str | None = None
    """The act's own id (a uuid4, made by the gate, ``alerts.gate``): the detector applies an
    id once, however often the record is delivered (decision 010, §6). None: a record from
    before ids, applied each time it is delivered."""

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"Invalid action {self.action!r}; valid actions: {ACTIONS}")
        if type(self.at) is not int:
            raise ValueError(f"Invalid 'at' {self.at!r}; expected integer epoch milliseconds")
        if self.action == "announce_works" and not (
            type(self.works_from) is int and type(self.works_until) is int
            and self.works_from < self.works_until
        ):  # fmt: skip
            raise ValueError(
                "announce_works needs its window: integer works_from < works_until (epoch ms)"
            )
        if self.action == "extend" and type(self.deadline) is not int:
            raise ValueError("extend needs the approved deadline: integer epoch ms")
        if self.action == "check" and type(self.passed) is not bool:
            raise ValueError("check needs its result: passed true or false")
        if self.action == "feedback" and not (isinstance(self.note, str) and self.note.strip()):
            raise ValueError("feedback needs the unit's report as text (note)")
        if (
            not isinstance(self.photos, tuple)
            or len(self.photos) > PHOTOS_MAX
            or not all(
                isinstance(p, str) and 0 < len(p) <= 500 and p.isprintable() for p in self.photos
            )
        ):
            raise ValueError(
                f"photos: at most {PHOTOS_MAX} references, each 1-500 printable characters"
            )
        if self.action_id is not None and not (
            isinstance(self.action_id, str) and 0 < len(self.action_id) <= ACTION_ID_MAX
            and self.action_id.isprintable()
        ):  # fmt: skip
            raise ValueError(
                f"action_id: 1-{ACTION_ID_MAX} printable characters (the gate makes a uuid4), or null"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "device": self.device,
            "at": self.at,
            "officer": self.officer,
            "case_id": self.case_id,
            "note": self.note,
        } | self.provenance() | ({"action_id": self.action_id} if self.action_id else {})  # fmt: skip

    def provenance(self) -> dict[str, Any]:
        """Who acted as what through which door: only the parts that are set, so a
        record from before roles reads and writes exactly as it did."""
        out: dict[str, Any] = {}
        for key in ("role", "channel", "credential"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.reason is not None:
            out["reason"] = self.reason
        if self.recorded_at is not None:
            out["recorded_at"] = self.recorded_at
        if self.works_from is not None:
            out["works_from"] = self.works_from
        if self.works_until is not None:
            out["works_until"] = self.works_until
        if self.deadline is not None:
            out["deadline"] = self.deadline
        if self.passed is not None:
            out["passed"] = self.passed
        if self.photos:
            out["photos"] = list(self.photos)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OfficerAction:
        return cls(
            action=d["action"],
            device=d["device"],
            at=int(d["at"]),
            officer=d.get("officer") or "",
            case_id=d.get("case_id"),
            note=d.get("note"),
            role=d.get("role") or "",
            channel=d.get("channel") or "",
            credential=d.get("credential") or "",
            reason=d.get("reason"),
            recorded_at=None if d.get("recorded_at") is None else int(d["recorded_at"]),
            works_from=None if d.get("works_from") is None else int(d["works_from"]),
            works_until=None if d.get("works_until") is None else int(d["works_until"]),
            deadline=None if d.get("deadline") is None else int(d["deadline"]),
            passed=d.get("passed"),
            photos=tuple(d.get("photos") or ()),
            action_id=d.get("action_id"),
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
    """One booked amount (docs/rules.md; docs/contracts.md, "Replay files and ledger JSON"). Never edited: corrections are new
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


def name_of(table: dict[str, tuple[str, str]], key: str, lang: str = "zh") -> str:
    """The zh or en name of a state, severity or payer type; an unknown key shows as itself."""
    pair = table.get(key)
    if pair is None:
        return key
    return pair[0] if lang == "zh" else pair[1]
