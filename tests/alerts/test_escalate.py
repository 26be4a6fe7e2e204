"""alerts/escalate.py through the service: levels by delay and severity, stopped by an acknowledgement."""

from __future__ import annotations

import asyncio
from pathlib import Path

from foundation.settings import Settings
from tests.alerts.inprocess import MIN, cases_of, service, settle
from tests.alerts.standins import T0, FakeClock, HttpStandIn, case_event


def test_escalation_climbs_at_the_configured_delays_and_stops_on_ack(settings: Settings, tmp_path: Path,
                                                                     hooks: list[HttpStandIn]) -> None:  # fmt: skip
    clock = FakeClock()
    grid, duty, command = hooks

    async def go() -> None:
        svc = service(settings, tmp_path, hooks, clock=clock)
        leak = case_event(1, rule="streetlight.leakage", severity="critical")
        acked_soon = case_event(2, rule="streetlight.leakage", severity="critical")
        try:
            svc.accept([("cases", leak), ("cases", acked_soon)])
            await settle(svc, hooks, 2)
            clock.advance(3 * MIN)
            svc.accept(
                [
                    (
                        "cases",
                        case_event(
                            2,
                            rule="streetlight.leakage",
                            severity="critical",
                            state="acknowledged",
                            at=clock.now,
                            opened_at=T0,
                            detail={"acknowledged_at": clock.now},
                        ),
                    )
                ]
            )
            clock.advance(2 * MIN - 1)  # 4:59.999 after opening
            svc.tick()
            await asyncio.sleep(0.1)
            assert not duty.seen
            clock.advance(1)  # 5:00: the district duty officer
            await settle(svc, hooks, 3)
            assert cases_of(duty) == [[(leak["case_id"], "escalation")]]
            clock.advance(10 * MIN)  # 15:00: the city command center
            await settle(svc, hooks, 4)
            assert cases_of(command) == [[(leak["case_id"], "escalation")]]
            clock.advance(60 * MIN)
            svc.tick()
            await asyncio.sleep(0.1)
            # the case is repaired: the grid officer and both levels that heard of it hear it is over
            svc.accept(
                [
                    (
                        "cases",
                        case_event(
                            1,
                            rule="streetlight.leakage",
                            severity="critical",
                            state="closed",
                            at=clock.now,
                            opened_at=T0,
                        ),
                    )
                ]
            )
            await settle(svc, hooks, 7)
        finally:
            await svc.close()
        assert len(grid.delivered) == 3 and len(duty.delivered) == 2 and len(command.delivered) == 2
        assert all(acked_soon["case_id"] not in str(s.json()) for s in duty.seen + command.seen)
        text = duty.delivered[0].json()["title"]
        assert "升级至区值班长" in text and "escalated to district duty officer" in text

    asyncio.run(go())


def test_major_case_escalates_after_30_minutes_and_not_after_an_ack(settings: Settings, tmp_path: Path,
                                                                    hooks: list[HttpStandIn]) -> None:  # fmt: skip
    clock = FakeClock()

    async def go() -> None:
        svc = service(settings, tmp_path, hooks, clock=clock)
        try:
            svc.accept([("cases", case_event(1))])
            clock.advance(29 * MIN)
            svc.accept([("cases", case_event(1, state="acknowledged", at=clock.now, opened_at=T0,
                                             detail={"acknowledged_at": clock.now}))])  # fmt: skip
            for _ in range(5):
                clock.advance(60 * MIN)
                svc.tick()
            await settle(svc, hooks, 1)
            await asyncio.sleep(0.1)
        finally:
            await svc.close()
        assert len(hooks[0].delivered) == 1 and not hooks[1].seen and not hooks[2].seen

    asyncio.run(go())
