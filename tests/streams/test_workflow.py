"""The case workflow (GB/T 30428, docs/rules.md "The case workflow"): stages beside the rules,
never money -- the same readings and closes book the same ledger with or without them."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from contract.cases import CaseEvent
from contract.components import component_of, component_problem
from foundation.errors import ConfigError
from streams.detector import Detector
from streams.harness import REG, T0, H, M, Run
from streams.rules import default_rules, load_rules, parse_rules
from streams.workflow import STAGE_ACTS, WorkflowRules, stage_refusal

ROOT = Path(__file__).resolve().parents[2]


def _changes(run: Run, case_id: str) -> list[str]:
    return [c["change"] for c in run.cases[case_id].detail["workflow"]["history"]]


def _every_change_once(run: Run, case_id: str) -> None:
    """Each change of the history is in the ``changes`` of exactly one snapshot, in order (what
    the sink writes as case_stage points and the hand-over pushes)."""
    made = [c for e in run.events if e.case_id == case_id
            for c in e.detail.get("workflow", {}).get("changes", [])]  # fmt: skip
    assert made == run.cases[case_id].detail["workflow"]["history"]


def _ledger(run: Run) -> list[tuple[Any, ...]]:
    return sorted((e.id, e.amount_yuan, e.accrued_at, e.payer) for e in run.ledger)


def _cover_day(run: Run, stages: bool, repaired_at: int = T0 + 3 * H + 10 * M) -> None:
    """A stolen cover on a main road (grace 2 h) put back at ``repaired_at``; with ``stages``
    the unit reports twice, the first report fails the inspector's check."""
    run.read("MH-MAIN", T0, open=True)
    if stages:
        run.act("feedback", "MH-MAIN", T0 + 30 * M, note="已更换井盖", photos=("oss://p/1.jpg",))
        run.act("check", "MH-MAIN", T0 + H, officer="insp-01", passed=False, note="井盖仍缺失")
        run.act("feedback", "MH-MAIN", T0 + 3 * H, note="重新安装", photos=("oss://p/2.jpg",))
    run.read("MH-MAIN", T0 + 2 * H + 30 * M, open=True)
    run.read("MH-MAIN", repaired_at, open=False)
    run.tick(T0 + 12 * H)


def test_a_case_walks_every_stage_and_the_ledger_is_the_one_without_them() -> None:
    with_stages, without = Run(), Run()
    _cover_day(with_stages, stages=True)
    _cover_day(without, stages=False)
    [case] = with_stages.of_rule("manhole")
    assert _changes(with_stages, case.case_id) == [
        "filed", "dispatched", "handled", "check_failed", "dispatched", "handled",
        "checked", "closed", "evaluated",
    ]  # fmt: skip
    flow = case.detail["workflow"]
    assert flow["reworks"] == 1 and flow["extensions"] == 0
    assert flow["evaluation"] == "late"  # put back at 3 h 10, the disposal deadline was 2 h
    assert flow["deadline"] == T0 + 2 * H
    checked = flow["history"][6]
    assert checked["by"] == "sensor" and checked["at"] == T0 + 3 * H + 10 * M
    handled = flow["history"][2]
    assert handled["note"] == "已更换井盖" and handled["photos"] == ["oss://p/1.jpg"]
    assert _ledger(with_stages) == _ledger(without) != []
    assert case.state == "repaired"
    _every_change_once(with_stages, case.case_id)


def test_stage_actions_put_out_no_ledger_entry() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    for kind, at, kw in [
        ("feedback", T0 + M, {"note": "处理中"}),
        ("check", T0 + 2 * M, {"passed": False}),
        ("extend", T0 + 3 * M, {"deadline": T0 + 9 * H, "reason": "需要定制井盖"}),
        ("feedback", T0 + 4 * M, {"note": "已处理"}),
    ]:
        outs = run.act(kind, "MH-MAIN", at, officer="sup-01", **kw)
        assert [type(o).__name__ for o in outs] == ["CaseEvent"]
        assert outs[0].detail["workflow"]["stage_only"] is True


def test_an_inspectors_passing_check_is_the_officers_close_and_books_as_one() -> None:
    checked, closed = Run(), Run()
    for run in (checked, closed):
        run.read("MH-MAIN", T0, open=True)
        run.act("feedback", "MH-MAIN", T0 + H, note="已安装")
    checked.act("check", "MH-MAIN", T0 + 4 * H + 30 * M, officer="insp-01", passed=True)
    closed.act("close", "MH-MAIN", T0 + 4 * H + 30 * M, officer="insp-01")
    for run in (checked, closed):
        run.tick(T0 + 10 * H)
    assert _ledger(checked) == _ledger(closed) and len(_ledger(checked)) == 2
    [case] = checked.of_rule("manhole")
    assert case.state == "closed"
    flow = case.detail["workflow"]
    assert [c["change"] for c in flow["history"]][-3:] == ["checked", "closed", "evaluated"]
    assert flow["history"][-3]["by"] == "officer:insp-01" and flow["evaluation"] == "late"
    _every_change_once(checked, case.case_id)


def test_an_approved_extension_moves_the_disposal_deadline_and_not_the_penalty_clock() -> None:
    extended, plain = Run(), Run()
    for run in (extended, plain):
        run.read("MH-MAIN", T0, open=True)
    extended.act("extend", "MH-MAIN", T0 + H, officer="sup-01", deadline=T0 + 6 * H,
                 reason="需定制异形井盖")  # fmt: skip
    for run in (extended, plain):
        run.read("MH-MAIN", T0 + 5 * H + 20 * M, open=False)
    assert _ledger(extended) == _ledger(plain) and len(_ledger(plain)) == 3
    flow = extended.of_rule("manhole")[0].detail["workflow"]
    assert flow["evaluation"] == "on_time" and flow["extensions"] == 1
    assert flow["deadline"] == T0 + 6 * H
    assert plain.of_rule("manhole")[0].detail["workflow"]["evaluation"] == "late"


def test_a_case_closed_in_time_after_a_failed_check_is_evaluated_reworked() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.act("feedback", "MH-MAIN", T0 + 10 * M, note="已处理")
    run.act("check", "MH-MAIN", T0 + 20 * M, officer="insp-01", passed=False)
    run.act("feedback", "MH-MAIN", T0 + 40 * M, note="已重新处理")
    run.read("MH-MAIN", T0 + H, open=False)
    assert run.of_rule("manhole")[0].detail["workflow"]["evaluation"] == "reworked"


def test_a_redelivered_failed_check_counts_one_rework() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.act("feedback", "MH-MAIN", T0 + 10 * M, note="已处理")
    run.act("check", "MH-MAIN", T0 + 20 * M, officer="insp-01", passed=False)
    again = run.act("check", "MH-MAIN", T0 + 20 * M, officer="insp-01", passed=False)
    assert again == []
    [case] = run.of_rule("manhole")
    assert case.detail["workflow"]["reworks"] == 1


@pytest.mark.parametrize(
    ("kind", "kw", "says"),
    [
        ("check", {"passed": True}, "a check follows the unit's feedback"),
        ("dispatch", {}, "it is dispatched; dispatch is for a filed case"),
        ("extend", {"deadline": T0 + H}, "must be later than the deadline"),
    ],
)
def test_a_stage_act_out_of_turn_is_refused_by_name(
    kind: str, kw: dict[str, Any], says: str
) -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.act(kind, "MH-MAIN", T0 + M, officer="sup-01", **kw)
    [rejected] = run.rejected
    assert says in rejected.reason and rejected.reason.startswith("case manhole:MH-MAIN:")


def test_a_stage_act_on_a_device_without_a_case_in_the_workflow_is_refused() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=False)
    run.act("feedback", "MH-MAIN", T0 + M, note="无事")
    [rejected] = run.rejected
    assert "has no case in the workflow" in rejected.reason


def test_without_auto_dispatch_the_platform_dispatches_with_the_rules_deadline() -> None:
    rules = replace(default_rules(), workflow=WorkflowRules(auto_dispatch=False))
    run = Run(rules)
    run.read("MH-SEC", T0, open=True)
    run.act("feedback", "MH-SEC", T0 + M, note="已处理")
    assert "feedback follows a dispatch" in run.rejected[0].reason
    run.act("dispatch", "MH-SEC", T0 + 5 * M, officer="duty-01")
    flow = run.of_rule("manhole")[0].detail["workflow"]
    assert flow["stage"] == "dispatched" and flow["deadline"] == T0 + 5 * M + 2 * H
    assert flow["history"][-1]["by"] == "officer:duty-01"


def test_filed_carries_the_cjt214_component_and_its_category() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    filed = run.of_rule("manhole")[0].detail["workflow"]["history"][0]
    assert filed["change"] == "filed" and filed["component_code"] == "0102"
    assert filed["component_category"] == "01" and filed["component_category_name"] == "公用设施"
    assert "component_id" not in filed  # the registry carries the 4-digit code only
    full = component_of("4101050105000217")
    assert full is not None and (full.code, full.category, full.component_id) == (
        "0105",
        "01",
        "4101050105000217",
    )
    assert component_problem("4101059905000217") is not None  # 99: no major category


def test_cases_of_rules_without_a_disposal_time_and_announced_works_are_not_filed() -> None:
    run = Run()
    run.read("DS-1", T0, pm10=170.0)  # a dust warning: a notice, not a case to dispatch
    run.tick(T0 + 2 * H)
    assert all("workflow" not in c.detail for c in run.cases.values())


def test_a_restart_mid_workflow_goes_on_where_it_was() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.act("feedback", "MH-MAIN", T0 + 10 * M, note="已处理")
    state = json.loads(json.dumps(run.det.export_device("MH-MAIN")))
    restarted = Run()
    restarted.det = Detector(default_rules(), REG)
    assert restarted.det.import_device("MH-MAIN", state)
    restarted.act("check", "MH-MAIN", T0 + 20 * M, officer="insp-01", passed=False)
    flow = restarted.of_rule("manhole")[0].detail["workflow"]
    assert flow["reworks"] == 1 and [c["change"] for c in flow["history"]][:3] == [
        "filed", "dispatched", "handled"
    ]  # fmt: skip


def test_the_rules_files_workflow_section_reads_per_rule_and_road_class() -> None:
    rules = parse_rules(
        "workflow:\n  auto_dispatch: false\n  disposal_hours:\n"
        "    manhole: {default: 5, main: 3}\n    dust: 24\n"
    )
    w = rules.workflow
    assert not w.auto_dispatch
    assert w.disposal("manhole", "main") == 3 * H and w.disposal("manhole", "other") == 5 * H
    assert w.disposal("manhole", None) == 5 * H and w.disposal("dust", None) == 24 * H
    assert w.disposal("streetlight.fault", None) is None  # listed rules replace the defaults


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("workflow:\n  disposal_hours:\n    manhol: 2\n", "did you mean 'manhole'"),
        ("workflow:\n  disposal_hours:\n    manhole: {main: 3}\n", "give default (hours)"),
        ("workflow:\n  extension_moves_penalty_clock: true\n", "true is not supported"),
        ("workflow:\n  auto_dispatsh: true\n", "auto_dispatch"),
    ],
)
def test_a_wrong_workflow_section_is_refused_by_name(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_rules(text)
    assert says in str(err.value)


def test_the_shipped_rules_file_has_the_default_workflow() -> None:
    assert load_rules(ROOT / "config" / "rules.yaml").workflow == WorkflowRules()


def test_a_passing_check_closes_its_own_case_and_no_other_of_the_device() -> None:
    """A lamp leaking (not filed: the rules give leakage no disposal time here) and dark (filed):
    the check of the fault, naming no case, closes the fault -- not the leak a plain close
    without a case id would take first."""
    from streams.harness import local

    table = {k: v for k, v in WorkflowRules().disposal_ms.items() if k != "streetlight.leakage"}
    run = Run(replace(default_rules(), workflow=WorkflowRules(disposal_ms=table)))
    t = local(21)
    dark = {"on": True, "current_a": 0.0, "voltage_v": 228.0}
    run.read("SL-1", t, leakage_ma=45.0, **dark)
    run.read("SL-1", t + 20 * M, leakage_ma=45.0, **dark)  # dark 20 min: a fault beside the leak
    fault, leak = run.of_rule("streetlight.fault")[0], run.of_rule("streetlight.leakage")[0]
    run.act("feedback", "SL-1", t + 30 * M, note="已更换光源")
    run.act("check", "SL-1", t + 40 * M, officer="insp-01", passed=True)
    assert run.cases[fault.case_id].state == "closed"
    assert run.cases[leak.case_id].state == "open"


def test_an_act_out_of_turn_leaves_a_snapshot_that_says_so_and_changes_nothing() -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    before = run.of_rule("manhole")[0].detail["workflow"]
    booked = list(run.ledger)
    run.act("check", "MH-MAIN", T0 + M, officer="insp-01", passed=True)
    [snap] = [o for o in run.outputs[-2:] if isinstance(o, CaseEvent)]
    flow = snap.detail["workflow"]
    assert flow["changes"] == [] and flow["stage_only"] and flow["history"] == before["history"]
    refused = flow["refused"]
    assert (refused["action"], refused["stage"], refused["allowed"]) == (
        "check", "dispatched", ["feedback", "extend"],
    )  # fmt: skip
    assert refused["by"] == "officer:insp-01" and refused["at"] == T0 + M
    assert "已派遣，不能核查" in refused["reason"] and snap.state == "open"
    assert list(run.ledger) == booked and [r.action.action for r in run.rejected] == ["check"]


@pytest.mark.parametrize(
    ("stage", "action", "ok"),
    [("filed", "dispatch", True), ("dispatched", "feedback", True), ("dispatched", "extend", True),
     ("handled", "check", True), ("filed", "check", False), ("dispatched", "dispatch", False),
     ("evaluated", "dispatch", False), ("handled", "feedback", False)],
)  # fmt: skip
def test_one_table_says_which_act_each_stage_takes(stage: str, action: str, ok: bool) -> None:
    refusal = stage_refusal(stage, action, "c1")
    assert (refusal is None) == ok
    if refusal is not None:
        assert refusal.allowed == STAGE_ACTS[stage] and refusal.line.startswith("案件 c1")
