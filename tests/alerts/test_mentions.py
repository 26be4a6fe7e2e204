"""A push names the officer its links are for (alerts/service.py ``link_officer``, docs/officers.md):
the directory's officer of the receiver's roles in the case's district, with the ids each channel
mentions them by; nobody to make links for, no links."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alerts.service import AlertsService
from foundation.settings import Settings
from registry.devices import load_registry
from tests.alerts.inprocess import routes, settle
from tests.alerts.standins import T0, FakeClock, HttpStandIn, case_event


def _push(settings: Settings, tmp_path: Path, hooks: list[HttpStandIn], registry_file: Path,
          district: str) -> dict:  # fmt: skip
    reg = load_registry(registry_file)
    dev = next(d for d in reg if d.kind == "manhole" and d.district == district)

    async def go() -> None:
        svc = AlertsService(settings, routes(tmp_path, *(h.url for h in hooks)), tmp_path / "state",
                            clock=FakeClock(T0 + 60_000), registry=reg, http_port=-1)  # fmt: skip
        try:
            ev = case_event(
                1, device=dev.device_id, district=district, detail={"acknowledged_at": T0 + 1}
            )
            svc.accept([("cases", ev)])
            await settle(svc, hooks, 1)
        finally:
            await svc.close()

    asyncio.run(go())
    return hooks[0].seen[0].json()


def test_a_push_mentions_the_grid_officer_of_the_cases_district(
    settings, tmp_path, hooks, registry_file
) -> None:
    data = _push(settings, tmp_path, hooks, registry_file, "jinshui")
    assert [m["officer"] for m in data["mention"]] == ["JS-GRID-01"]
    assert data["mention"][0]["wecom"] == "jsgrid01" and data["mention"][0]["dingtalk"]
    assert "officer=JS-GRID-01" in data["cases"][0]["ack_url"]


def test_a_district_without_such_an_officer_gets_a_push_without_links(
    settings, tmp_path, hooks, registry_file
) -> None:
    # the example directory has no grid officer outside the ten simulated districts
    text = registry_file.read_text(encoding="utf-8").replace(
        ",jinshui,JS-G07,", ",nowhere,NW-G07,", 1
    )
    other = tmp_path / "registry.csv"
    other.write_text(text, encoding="utf-8")
    data = _push(settings, tmp_path, hooks, other, "nowhere")
    assert data["mention"] == [] and not data["cases"][0]["ack_url"]
