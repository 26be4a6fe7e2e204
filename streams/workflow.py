"""The case workflow of GB/T 30428 beside the rules: 立案 → 派遣 → 处置/反馈 → 核查 → 结案 → 评价.

The rule kinds decide when a case opens, what it costs and when the device
proves it over; the workflow follows those case events and the officers' (or
the city platform's) stage actions -- ``dispatch``, ``feedback``, ``check``,
``extend`` -- and says which stage each case is in, by which deadline the
responsible unit must have handled it, how often it was extended or reworked,
and, once it is over, whether it was on time (docs/rules.md, "The case
workflow"; decision 012).

Money stays with the rules (DESIGN §1): the workflow never writes a ledger
entry and never moves a penalty clock. The one stage with an effect on money
is an inspector's *passing* check of a case the device still holds open: it
is the officer's close that DESIGN already prices (the clock stops at that
instant), done through the rule kind's own ``close`` -- so with or without the
stage actions, the same readings and closes book the same ledger.

State: one ``Flow`` per case of a device, kept in the device's slot and
exported with it (the worker's table), dropped when the case is evaluated
(the final snapshot carries the whole history). Every snapshot of a case in
the workflow carries ``detail.workflow``: the stage, the deadline, the counts,
the history, and ``changes`` -- the stage changes this snapshot made, which
the InfluxDB sink writes as ``case_stage`` points. A snapshot made by a stage
action alone has ``detail.workflow.stage_only`` (it is no case_event point:
the case's state did not change).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from yaml.nodes import MappingNode

from contract.cases import ROAD_CLASSES, ActionRejected, CaseEvent, OfficerAction, Output
from contract.clock import HOUR_MS
from contract.components import component_of
from contract.rules import (
    DUST,
    MANHOLE,
    RULES,
    STREETLIGHT_CIRCUIT,
    STREETLIGHT_FAULT,
    STREETLIGHT_LEAKAGE,
)
from foundation.cityfile import Section, did_you_mean
from streams.case import action_evidence

if TYPE_CHECKING:
    from registry.devices import Device

__all__ = [
    "STAGE_ACTS", "Flow", "StageRefusal", "Workflow", "WorkflowRules", "parse_workflow",
    "stage_refusal",
]  # fmt: skip

HISTORY_MAX = 200
"""At most this many stage changes per case: a flood of acts stops here, refused by name."""


def _hours(h: float) -> dict[str, int]:
    return dict.fromkeys(("default", *ROAD_CLASSES), round(h * HOUR_MS))


def _default_disposal() -> dict[str, dict[str, int]]:
    return {
        MANHOLE: _hours(2),
        DUST: _hours(24),
        STREETLIGHT_FAULT: _hours(24),
        STREETLIGHT_LEAKAGE: _hours(2),
        STREETLIGHT_CIRCUIT: _hours(12),
    }


@dataclass(frozen=True, slots=True)
class WorkflowRules:
    """The rules file's ``workflow`` section (docs/rules.md, "The case workflow")."""

    disposal_ms: Mapping[str, Mapping[str, int]] = field(default_factory=_default_disposal)
    """Case rule -> road class (``default``, main, secondary, other) -> the disposal time
    (处置时限) from dispatch. A case of a rule not listed has no workflow."""
    auto_dispatch: bool = True
    """Dispatch to the registry's unit when the case is filed (the sensor found it; no
    dispatcher in between). False when the city's platform dispatches."""
    extension_moves_penalty_clock: bool = False
    """Reserved: an approved extension moves the disposal deadline only. ``true`` is
    refused at load (not implemented): the penalty clocks are DESIGN's."""

    def disposal(self, rule: str, road_class: str | None) -> int | None:
        by_class = self.disposal_ms.get(rule)
        if by_class is None:
            return None
        return by_class.get(road_class or "default", by_class["default"])


def parse_workflow(sec: Section) -> WorkflowRules:
    """The ``workflow`` section; every key optional, mistakes named with their key path."""
    d = WorkflowRules()
    doc = sec.doc
    disposal = {k: dict(v) for k, v in d.disposal_ms.items()}
    node = sec.get("disposal_hours")
    if node is not None:
        table = Section(doc, node, sec.key_path("disposal_hours"))
        disposal = {}
        for rule in table.keys():
            if rule not in RULES:
                doc.fail(
                    table.key_node(rule),
                    f"{table.key_path(rule)}: no rule {rule!r}; rules: {', '.join(RULES)}"
                    + did_you_mean(rule, RULES),
                )
            v = table.get(rule)
            assert v is not None
            if isinstance(v, MappingNode):
                by = Section(doc, v, table.key_path(rule))
                default = by.get("default")
                if default is None:
                    doc.fail(v, f"{table.key_path(rule)}: give default (hours), which the road "
                                "classes not listed take")  # fmt: skip
                hours = _hours(doc.number(default, by.key_path("default")))
                for rc in ROAD_CLASSES:
                    rv = by.get(rc)
                    if rv is not None:
                        hours[rc] = round(doc.number(rv, by.key_path(rc)) * HOUR_MS)
                by.finish()
                disposal[rule] = hours
            else:
                disposal[rule] = _hours(doc.number(v, table.key_path(rule)))
        table.finish()
    moves = sec.flag("extension_moves_penalty_clock", d.extension_moves_penalty_clock)
    if moves:
        doc.fail(
            sec.get("extension_moves_penalty_clock") or sec.node,
            f"{sec.key_path('extension_moves_penalty_clock')}: true is not supported: an extension "
            "moves the disposal deadline only, the penalty clocks stay DESIGN's; set false",
        )
    out = WorkflowRules(disposal, sec.flag("auto_dispatch", d.auto_dispatch), moves)
    sec.finish()
    return out


@dataclass(slots=True)
class Flow:
    """One case's place in the workflow (JSON-friendly: ``to_dict`` / ``from_dict``)."""

    case_id: str
    rule: str
    stage: str
    unit: str
    deadline: int | None = None
    """The disposal deadline (处置时限), as extended."""
    reworks: int = 0
    extensions: int = 0
    evaluation: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    last: dict[str, Any] | None = None
    """The latest snapshot of the case the rules made (without ``detail.workflow``)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Flow:
        return cls(**{k: d[k] for k in cls.__slots__ if k in d})  # type: ignore[attr-defined]

    def change(self, name: str, at: int, by: str, **extra: Any) -> dict[str, Any]:
        c = {"change": name, "at": at, "by": by} | {k: v for k, v in extra.items() if v is not None}
        self.history.append(c)
        return c

    def summary(self, changes: list[dict[str, Any]], stage_only: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "stage": self.stage,
            "unit": self.unit,
            "deadline": self.deadline,
            "reworks": self.reworks,
            "extensions": self.extensions,
            "evaluation": self.evaluation,
            "history": list(self.history),
            "changes": changes,
        }
        if stage_only:
            out["stage_only"] = True
        return out


STAGE_ACTS: dict[str, tuple[str, ...]] = {
    "filed": ("dispatch",),
    "dispatched": ("feedback", "extend"),
    "handled": ("check", "extend"),
    "checked": (),
    "closed": (),
    "evaluated": (),
}
"""The stage acts each stage takes (docs/rules.md, "The case workflow"): the one table the gate
(``alerts.gate``, before the act is recorded) and the workflow (when it applies it) both judge by."""

STAGE_WORDS: dict[str, tuple[str, str]] = {
    "filed": ("已立案", "filed"), "dispatched": ("已派遣", "dispatched"),
    "handled": ("已处置反馈", "handled"), "checked": ("已核查", "checked"),
    "closed": ("已结案", "closed"), "evaluated": ("已结案评价", "closed and evaluated"),
}  # fmt: skip
ACT_WORDS: dict[str, tuple[str, str]] = {
    "dispatch": ("派遣", "dispatch"), "feedback": ("处置反馈", "feedback"),
    "check": ("核查", "check"), "extend": ("延期", "extend"),
}  # fmt: skip
_WHY_EN = {
    "dispatch": "dispatch is for a filed case",
    "feedback": "feedback follows a dispatch",
    "check": "a check follows the unit's feedback",
    "extend": "only a dispatched case gets an extension",
}


@dataclass(frozen=True, slots=True)
class StageRefusal:
    """Why a stage act may not move a case from its stage, in Chinese and English, and what may."""

    case_id: str
    stage: str
    action: str
    allowed: tuple[str, ...]
    zh: str
    en: str

    @property
    def line(self) -> str:
        """One line, Chinese first (as every page and push): what the CLI prints, the 409 says."""
        return f"{self.zh} / {self.en}"

    def to_dict(self) -> dict[str, Any]:
        return {"case_id": self.case_id, "stage": self.stage, "action": self.action,
                "allowed": list(self.allowed), "reason": self.line, "reason_zh": self.zh,
                "reason_en": self.en}  # fmt: skip


def stage_refusal(stage: str, action: str, case_id: str = "") -> StageRefusal | None:
    """Whether ``action`` may move a case that is in ``stage``: None if it may, else why not.

    The turn alone (``STAGE_ACTS``); what only the case's own record can judge -- an
    extension's deadline against the current one, the history's length -- the workflow adds.
    """
    allowed = STAGE_ACTS.get(stage, ())
    if action in allowed:
        return None
    sz, se = STAGE_WORDS.get(stage, (stage, stage))
    az, ae = ACT_WORDS.get(action, (action, action))
    may_zh = "、".join(ACT_WORDS[a][0] for a in allowed) or "无（已不在处置流程中）"
    may_en = ", ".join(allowed) or "none (it is out of the workflow)"
    name = f"案件 {case_id}" if case_id else "案件"
    en_name = f"case {case_id}" if case_id else "the case"
    return StageRefusal(
        case_id, stage, action, allowed,
        f"{name}{sz}，不能{az}；可做：{may_zh}",
        f"{en_name}: it is {se}; {_WHY_EN.get(action, action + ' is not a stage act')}; "
        f"allowed now: {may_en}",
    )  # fmt: skip


_MADE: dict[str, tuple[str, ...]] = {
    "dispatch": ("dispatched",), "feedback": ("handled",),
    "check": ("checked", "check_failed"), "extend": ("extended",),
}  # fmt: skip
"""The stage changes each action makes (to know a repeat)."""


def _by(a: OfficerAction) -> str:
    return f"officer:{a.officer}" if a.officer else "officer"


class Workflow:
    """The stage machine; the detector holds one and gives it each device's flows."""

    def __init__(self, rules: WorkflowRules) -> None:
        self.rules = rules

    # ------------------------------------------------------------------ the rules' case events

    def observe(self, flows: dict[str, dict[str, Any]], ev: CaseEvent, dev: Device) -> CaseEvent:
        """A case event the rules made: file a new case, follow its end; the event as it goes out."""
        if (ev.detail.get("workflow") or {}).get("stage_only"):
            return ev  # the workflow's own snapshot of a stage act, already complete
        raw = flows.get(ev.case_id)
        changes: list[dict[str, Any]] = []
        if raw is None:
            disposal = self.rules.disposal(ev.rule, dev.road_class)
            if disposal is None or ev.state == "planned" or ev.is_final:
                return ev  # no workflow for this rule; announced works are no case yet
            flow = Flow(ev.case_id, ev.rule, "filed", ev.unit)
            comp = component_of(ev.component_code)
            changes.append(
                flow.change("filed", ev.at, "sensor", **(comp.to_dict() if comp else {}))
            )
            if self.rules.auto_dispatch:
                changes.append(self._dispatch(flow, ev.at, "auto", disposal))
        else:
            flow = Flow.from_dict(raw)
        flow.last = ev.to_dict()
        if ev.is_final:
            by = str(ev.detail.get("closed_by") or "sensor")
            if ev.state == "repaired" or not by.startswith("officer"):
                by = "sensor"  # a normal run (or the recovery period) after the report
            if flow.stage != "checked":
                changes.append(flow.change("checked", ev.at, by, passed=True))
            changes += self._close(flow, ev.at)
            flows.pop(ev.case_id, None)
        else:
            flows[ev.case_id] = flow.to_dict()
        return self._with(ev, flow, changes)

    def _dispatch(self, flow: Flow, at: int, by: str, disposal: int) -> dict[str, Any]:
        flow.stage = "dispatched"
        flow.deadline = at + disposal
        return flow.change("dispatched", at, by, unit=flow.unit, deadline=flow.deadline)

    def _close(self, flow: Flow, at: int) -> list[dict[str, Any]]:
        closed = flow.change("closed", at, "citywatch")
        if flow.deadline is not None and at > flow.deadline:
            flow.evaluation = "late"
        elif flow.reworks:
            flow.evaluation = "reworked"
        else:
            flow.evaluation = "on_time"
        flow.stage = "evaluated"
        evaluated = flow.change(
            "evaluated", at, "citywatch", evaluation=flow.evaluation,
            reworks=flow.reworks, extensions=flow.extensions, deadline=flow.deadline,
        )  # fmt: skip
        return [closed, evaluated]

    @staticmethod
    def _with(ev: CaseEvent, flow: Flow, changes: list[dict[str, Any]], **kw: Any) -> CaseEvent:
        detail = dict(ev.detail)
        detail["workflow"] = flow.summary(changes, **kw)
        return dataclasses.replace(ev, detail=detail)

    # ------------------------------------------------------------------ stage actions

    def find(self, flows: dict[str, dict[str, Any]], a: OfficerAction) -> str | Flow:
        """The flow an action is for, or why there is none."""
        if a.case_id is not None:
            raw = flows.get(a.case_id)
            if raw is None:
                return f"case {a.case_id} is not a case of {a.device} in the workflow"
            return Flow.from_dict(raw)
        if not flows:
            return f"{a.device} has no case in the workflow (nothing filed, or it is closed)"
        if len(flows) > 1:
            return f"{a.device} has {len(flows)} cases in the workflow; name one (case_id): " + (
                ", ".join(sorted(flows))
            )
        return Flow.from_dict(next(iter(flows.values())))

    def act(
        self, flows: dict[str, dict[str, Any]], a: OfficerAction, dev: Device, out: list[Output]
    ) -> bool | str:
        """Apply a stage action. True: done; False: refused (an ``ActionRejected`` is in
        ``out``); a case id: done, and the rule kind is to close that case (a passing check)."""
        found = self.find(flows, a)
        if isinstance(found, str):
            out.append(ActionRejected(a, found))
            return False
        flow = found
        if self._repeat(flow, a):
            return True  # redelivered: recorded already, nothing changes
        refusal = self._refusal(flow, a)
        if refusal is not None:
            self._refuse(flow, a, refusal, out)
            return False
        changes: list[dict[str, Any]] = []
        close = False
        if a.action == "dispatch":
            disposal = self.rules.disposal(flow.rule, dev.road_class)
            assert disposal is not None
            changes.append(self._dispatch(flow, a.at, _by(a), disposal))
        elif a.action == "feedback":
            flow.stage = "handled"
            changes.append(flow.change("handled", a.at, _by(a), note=a.note,
                                       photos=list(a.photos) or None))  # fmt: skip
        elif a.action == "check" and a.passed:
            flow.stage = "checked"
            changes.append(flow.change("checked", a.at, _by(a), passed=True, note=a.note))
            close = True
        elif a.action == "check":
            flow.reworks += 1
            changes.append(flow.change("check_failed", a.at, _by(a), passed=False, note=a.note,
                                       rework=flow.reworks))  # fmt: skip
            flow.stage = "dispatched"
            changes.append(flow.change("dispatched", a.at, "rework", unit=flow.unit,
                                       deadline=flow.deadline, rework=flow.reworks))  # fmt: skip
        else:  # extend
            flow.extensions += 1
            previous, flow.deadline = flow.deadline, a.deadline
            changes.append(flow.change("extended", a.at, _by(a), deadline=a.deadline,
                                       previous_deadline=previous, reason=a.reason or a.note))  # fmt: skip
        flows[flow.case_id] = flow.to_dict()
        assert flow.last is not None
        ev = CaseEvent.from_dict(flow.last)
        ev = dataclasses.replace(ev, at=a.at, evidence=ev.evidence + [action_evidence(a)])
        out.append(self._with(ev, flow, changes, stage_only=True))
        return flow.case_id if close else True

    def _refuse(self, flow: Flow, a: OfficerAction, refusal: StageRefusal,
                out: list[Output]) -> None:  # fmt: skip
        """An act the workflow will not apply: the reason in the log (``ActionRejected``) and, so
        the officer hears it, a snapshot of the case as it was with ``detail.workflow.refused``
        (no change, no stage point, no money: the alerts service pushes it to the officer)."""
        out.append(ActionRejected(a, refusal.en))
        if flow.last is None:
            return
        ev = CaseEvent.from_dict(flow.last)
        refused = refusal.to_dict() | {"at": a.at, "by": _by(a), "officer": a.officer,
                                       "role": a.role, "channel": a.channel}  # fmt: skip
        snap = self._with(ev, flow, [], stage_only=True)
        snap.detail["workflow"]["refused"] = refused
        out.append(snap)

    @staticmethod
    def _repeat(flow: Flow, a: OfficerAction) -> bool:
        """The same act (same officer, instant and stage) is in the history already: a
        redelivery must not count a second rework or extension."""
        made = _MADE[a.action]
        by = _by(a)
        return any(c["change"] in made and c["at"] == a.at and c["by"] == by for c in flow.history)

    def _refusal(self, flow: Flow, a: OfficerAction) -> StageRefusal | None:
        """Why ``a`` cannot move ``flow`` (None: it can): the turn (``stage_refusal``, as the
        gate judges it), then what only the case's record knows."""
        allowed = STAGE_ACTS.get(flow.stage, ())
        if len(flow.history) >= HISTORY_MAX:
            return StageRefusal(
                flow.case_id, flow.stage, a.action, (),
                f"案件 {flow.case_id} 已有 {HISTORY_MAX} 条阶段记录，请在城市平台上处理",
                f"case {flow.case_id}: it has {HISTORY_MAX} stage changes already; settle it on the "
                "city's platform",
            )  # fmt: skip
        turn = stage_refusal(flow.stage, a.action, flow.case_id)
        if turn is not None:
            return turn
        if a.action == "extend":
            assert a.deadline is not None
            if flow.deadline is not None and a.deadline <= flow.deadline:
                return StageRefusal(
                    flow.case_id, flow.stage, a.action, allowed,
                    f"案件 {flow.case_id}：延期后的时限（{a.deadline}）须晚于当前时限 {flow.deadline}",
                    f"case {flow.case_id}: the extension ({a.deadline}) must be later than the "
                    f"deadline {flow.deadline}",
                )  # fmt: skip
        return None
