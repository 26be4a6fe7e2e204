"""alerts/group.py through the service: a burst of notices sharing a group key is one push (group_wait, group_interval)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from foundation.settings import Settings
from tests.alerts.inprocess import MIN, service, settle
from tests.alerts.standins import T0, FakeClock, HttpStandIn, case_event


def test_300_lamp_faults_in_one_district_are_one_message(settings: Settings, tmp_path: Path,
                                                        hooks: list[HttpStandIn]) -> None:  # fmt: skip
    clock = FakeClock()

    async def go() -> None:
        svc = service(settings, tmp_path, hooks, clock=clock, group_wait="1m", group_interval="10m")
        try:
            for i in range(300):
                svc.accept(
                    [
                        (
                            "cases",
                            case_event(
                                i, rule="streetlight.fault", district="zhongyuan", at=T0 + i * 100
                            ),
                        )
                    ]
                )
                clock.advance(100)  # 300 faults over 30 s, inside the 1-minute group_wait
                svc.tick()
            assert not hooks[0].seen
            clock.advance(30_000)
            await settle(svc, hooks, 1)
            clock.advance(5 * MIN)  # a straggler after the push waits for the group interval ...
            svc.accept(
                [
                    (
                        "cases",
                        case_event(
                            300, rule="streetlight.fault", district="zhongyuan", at=clock.now
                        ),
                    )
                ]
            )
            clock.advance(2 * MIN)
            svc.tick()
            await asyncio.sleep(0.2)
            assert len(hooks[0].seen) == 1
            clock.advance(3 * MIN)  # ... 10 minutes after the first push
            await settle(svc, hooks, 2)
        finally:
            await svc.close()
        first, second = hooks[0].delivered
        body = first.json()
        assert len(body["cases"]) == 300 and {c["change"] for c in body["cases"]} == {"open"}
        assert (
            body["title"]
            == "【城市管理告警】zhongyuan：路灯故障 300 起 / citywatch: 300 × streetlight fault in zhongyuan"
        )
        assert len(second.json()["cases"]) == 1
        assert not hooks[1].seen and not hooks[2].seen  # lamp faults are not escalated

    asyncio.run(go())
