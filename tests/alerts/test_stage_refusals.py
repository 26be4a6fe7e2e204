"""A stage act out of turn (docs/handover.md, "The incoming endpoint"): the gate judges it by the
workflow's own rule (``streams.workflow.stage_refusal``) against the stage the cases topic last
said, and answers 409 with the reason and the acts the stage takes; an act that got past it
anyway (the gate's view lagged) is refused by the workflow and pushed to the officer who acted."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from alerts.service import AlertsService
from contract.cases import OfficerAction
from contract.officers import AuditRecord
from registry.devices import load_registry
from registry.officer_tokens import TokenStore
from streams.harness import T0, M, Run
from tests.alerts.standins import LINK_SECRET, FakeClock, HttpStandIn, async_wait_for, case_event


def _routes(tmp_path: Path, grid_url: str, duty_url: str) -> Path:
    p = tmp_path / "routes.yaml"
    p.write_text(
        f"""
receivers:
  - {{name: grid, roles: [grid], webhook: {{url: "{grid_url}", timeout: 1s}}}}
  - {{name: duty, roles: [duty], webhook: {{url: "{duty_url}", timeout: 1s}}}}
route: {{receiver: duty, group_by: [case_id], group_wait: 0s, group_interval: 0s, repeat_interval: 0s}}
ack: {{base_url: "http://127.0.0.1:1", secret: {LINK_SECRET}, link_ttl: 10m}}
delivery: {{retry_initial: 50ms, retry_max: 200ms, timeout: 500ms}}
""",
        encoding="utf-8",
    )
    return p


def _in_stage(device: str, stage: str, state: str = "open") -> dict[str, Any]:
    """A snapshot of ``device``'s manhole case as the worker puts it on the cases topic."""
    return case_event(1, device=device, state=state, at=T0,
                      detail={"workflow": {"stage": stage, "history": [], "changes": []}})  # fmt: skip


@pytest.mark.services
def test_an_act_out_of_turn_is_409_with_the_reason_and_the_allowed_acts_and_in_turn_is_200(
    settings, registry_file, unique, tmp_path
) -> None:
    s = settings.replace("paths", registry=str(registry_file))
    mh, other = f"MH-{unique}-1", f"MH-{unique}-2"  # jinshui, erqi
    store = TokenStore(Path(s.paths.state_dir) / "officers")
    grid, _ = store.issue("JS-GRID-01")
    sup, _ = store.issue("CITY-SUP-01")
    sink = HttpStandIn(ok_body={"ok": True})
    submitted: list[OfficerAction] = []
    audited: list[AuditRecord] = []

    async def submit(a: OfficerAction) -> None:
        submitted.append(a)

    async def audit(r: AuditRecord) -> None:
        audited.append(r)

    async def go() -> list[tuple[int, dict]]:
        import aiohttp

        svc = AlertsService(s, _routes(tmp_path, sink.url, sink.url), tmp_path / "state",
                            registry=load_registry(s.paths.registry), http_port=0,
                            http_host="127.0.0.1", submit=submit, audit=audit)  # fmt: skip
        svc.on_case_event(_in_stage(mh, "dispatched"))
        svc.on_case_event(_in_stage(other, "evaluated", state="repaired"))
        stop = asyncio.Event()
        task = asyncio.create_task(svc.run(stop))
        try:
            await async_wait_for(lambda: svc.http is not None and svc.http.port, 10, "the endpoint")
            assert svc.http is not None
            url = f"http://127.0.0.1:{svc.http.port}/cases/stage"
            out = []
            async with aiohttp.ClientSession() as http:
                for token, body in (
                    (grid, {"action": "check", "device": mh, "passed": True}),  # before feedback
                    (sup, {"action": "dispatch", "device": mh}),  # dispatched already
                    (sup, {"action": "dispatch", "device": other}),  # a closed case
                    (grid, {"action": "feedback", "device": mh, "note": "已更换井盖"}),  # in turn
                ):  # fmt: skip
                    async with http.post(
                        url, json=body, headers={"Authorization": f"Bearer {token}"}
                    ) as r:
                        out.append((r.status, await r.json()))
            return out
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)

    try:
        out = asyncio.run(go())
    finally:
        sink.close()
    assert [code for code, _ in out] == [409, 409, 409, 200]
    check, dispatch, closed, _ = (body for _, body in out)
    assert check["stage"] == "dispatched" and check["allowed"] == ["feedback", "extend"]
    assert (
        "已派遣，不能核查" in check["error"]
        and "a check follows the unit's feedback" in check["error"]
    )
    assert (
        dispatch["allowed"] == ["feedback", "extend"]
        and "dispatch is for a filed case" in dispatch["error"]
    )
    assert closed["stage"] == "evaluated" and closed["allowed"] == []
    assert "out of the workflow" in closed["error"]
    assert [(a.action, a.device) for a in submitted] == [("feedback", mh)]  # nothing else recorded
    assert sorted((r.action, r.outcome) for r in audited) == [
        ("check", "refused"), ("dispatch", "refused"), ("dispatch", "refused"), ("feedback", "accepted"),
    ]  # fmt: skip
    assert next(r for r in audited if r.action == "check").reason == check["error"]


def test_an_act_the_workflow_refused_is_pushed_once_to_the_officer_who_acted(
    settings, tmp_path, hooks
) -> None:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.act(
        "check", "MH-MAIN", T0 + 5 * M, officer="JS-GRID-01", passed=True
    )  # past a lagging gate
    refused = [e for e in run.events if "refused" in e.detail["workflow"]]
    assert len(refused) == 1 and refused[0].detail["workflow"]["changes"] == []
    grid, duty, _ = hooks
    svc = AlertsService(settings, _routes(tmp_path, grid.url, duty.url), tmp_path / "state",
                        clock=FakeClock(T0 + 5 * M), http_port=-1)  # fmt: skip

    async def go() -> None:
        for ev in [*run.events, refused[0]]:  # the refusal redelivered
            svc.on_case_event(ev.to_dict())
        await async_wait_for(lambda: grid.delivered and duty.delivered, 5, "pushes", tick=svc.tick)
        await asyncio.sleep(0.3)
        svc.tick()
        await svc.close()

    asyncio.run(go())
    told = [c for s in grid.delivered for c in s.json()["cases"]]
    assert [c["change"] for c in told] == ["refused"]  # the grid officer who acted; once
    assert told[0]["refused"]["action"] == "check" and told[0]["refused"]["allowed"] == [
        "feedback",
        "extend",
    ]
    assert "已派遣，不能核查" in told[0]["refused"]["reason"]
    assert grid.delivered[0].json()["mention"][0]["officer"] == "JS-GRID-01"
    assert all(c["change"] != "refused" for s in duty.delivered for c in s.json()["cases"])
