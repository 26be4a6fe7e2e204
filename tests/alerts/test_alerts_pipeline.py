"""The stages in-process (no Kafka): changes -> route -> group -> escalate -> outbox -> channel.

The service's Kafka loop only feeds ``accept`` and calls ``tick``; these tests
do the same with a controlled clock, against a real loopback webhook.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from alerts.http import verify
from alerts.service import AlertsService
from foundation.settings import Settings
from registry.devices import load_registry
from tests.alerts.test_alerts_support import (
    T0,
    FakeClock,
    HttpStandIn,
    async_wait_for,
    case_event,
    hour_entry,
)

MIN = 60_000


def routes(tmp_path: Path, grid_url: str, duty_url: str, command_url: str, *, group_wait: str = "0s",
           group_interval: str = "0s", overdue_every: int = 2, retry: str = "50ms", extra_routes: str = "") -> Path:  # fmt: skip
    p = tmp_path / "routes.yaml"
    p.write_text(f"""
receivers:
  - {{name: grid, label: 网格员, webhook: {{url: "{grid_url}", timeout: 500ms}}}}
  - {{name: duty, label: 区值班长, webhook: {{url: "{duty_url}", timeout: 500ms}}}}
  - {{name: command, label: 市指挥中心, webhook: {{url: "{command_url}", timeout: 500ms}}}}
escalations:
  std:
    - {{name: 区值班长 / district duty officer, receiver: duty, after: {{critical: 5m, major: 30m}}}}
    - {{name: 市指挥中心 / city command center, receiver: command, after: {{critical: 15m, major: 2h}}}}
route:
  receiver: grid
  group_by: [case_id]
  group_wait: {group_wait}
  group_interval: {group_interval}
  repeat_interval: 0s
  escalation: std
  routes:
{extra_routes or '''    - match: {rule: streetlight.fault}
      group_by: [district]
      escalation: null'''}
notify: {{overdue_every_hours: {overdue_every}}}
ack: {{base_url: "http://ack.example", secret: link-secret, link_ttl: 1h}}
delivery: {{retry_initial: {retry}, retry_max: 200ms, timeout: 500ms}}
district_names: {{jinshui: 金水区}}
""", encoding="utf-8")
    return p


@pytest.fixture
def hooks():
    servers = [HttpStandIn(ok_body={"ok": True}, dedup_header="Idempotency-Key") for _ in range(3)]
    yield servers
    for s in servers:
        s.close()


def service(settings: Settings, tmp_path: Path, hooks: list[HttpStandIn], clock=None, **kw) -> AlertsService:  # noqa: ANN001
    path = routes(tmp_path, *(h.url for h in hooks), **kw)
    return AlertsService(settings, path, tmp_path / "state", clock=clock or FakeClock(), http_port=-1)


def cases_of(hook: HttpStandIn) -> list[list[tuple[str, str]]]:
    """What each delivered push said: [(case_id, change), ...] per push."""
    return [[(c["case_id"], c["change"]) for c in s.json()["cases"]] for s in hook.delivered]


async def settle(svc: AlertsService, hooks: list[HttpStandIn], n: int, timeout: float = 5) -> None:
    await async_wait_for(lambda: sum(len(h.delivered) for h in hooks) >= n, timeout, f"{n} pushes", tick=svc.tick)
    await asyncio.sleep(0.05)
    svc.tick()


def test_one_push_per_meaningful_change_and_redeliveries_are_dropped(settings: Settings, tmp_path: Path,
                                                                     hooks: list[HttpStandIn]) -> None:  # fmt: skip
    async def go() -> None:
        svc = service(settings, tmp_path, hooks)
        opened = case_event(1)
        cid = opened["case_id"]
        try:
            assert svc.accept([("cases", opened)]) == 1
            assert svc.accept([("cases", opened)]) == 0  # Kafka redelivered it
            note = case_event(1, at=T0 + MIN, opened_at=T0, detail={"notes": [{"note": "on my way"}]})
            acked = case_event(1, state="acknowledged", at=T0 + 2 * MIN, opened_at=T0,
                               detail={"acknowledged_at": T0 + 2 * MIN})  # fmt: skip
            assert svc.accept([("cases", note), ("cases", acked)]) == 0  # a note and an ack are not pushed
            await settle(svc, hooks, 1)
            escalated = case_event(1, state="escalated", at=T0 + 120 * MIN, opened_at=T0,
                                   detail={"acknowledged_at": T0 + 2 * MIN, "escalated": True})  # fmt: skip
            repaired = case_event(1, state="repaired", at=T0 + 150 * MIN, opened_at=T0,
                                  detail={"acknowledged_at": T0 + 2 * MIN, "repair_at": T0 + 150 * MIN})  # fmt: skip
            assert svc.accept([("cases", escalated)]) == 1
            await settle(svc, hooks, 2)
            assert svc.accept([("cases", repaired), ("cases", repaired)]) == 1
            await settle(svc, hooks, 3)
        finally:
            await svc.close()
        grid, duty, command = hooks
        assert cases_of(grid) == [[(cid, "open")], [(cid, "escalated")], [(cid, "repaired")]]
        assert not duty.seen and not command.seen  # acknowledged at once: never escalated
        assert [s.headers["Idempotency-Key"] for s in grid.delivered] == [r["message"] for r in svc.records]

    asyncio.run(go())


def test_300_lamp_faults_in_one_district_are_one_message(settings: Settings, tmp_path: Path,
                                                        hooks: list[HttpStandIn]) -> None:  # fmt: skip
    clock = FakeClock()

    async def go() -> None:
        svc = service(settings, tmp_path, hooks, clock=clock, group_wait="1m", group_interval="10m")
        try:
            for i in range(300):
                svc.accept([("cases", case_event(i, rule="streetlight.fault", district="zhongyuan", at=T0 + i * 100))])
                clock.advance(100)  # 300 faults over 30 s, inside the 1-minute group_wait
                svc.tick()
            assert not hooks[0].seen
            clock.advance(30_000)
            await settle(svc, hooks, 1)
            clock.advance(5 * MIN)  # a straggler after the push waits for the group interval ...
            svc.accept([("cases", case_event(300, rule="streetlight.fault", district="zhongyuan", at=clock.now))])
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
        assert body["title"] == "【城市管理告警】zhongyuan：路灯故障 300 起 / citywatch: 300 × streetlight fault in zhongyuan"
        assert len(second.json()["cases"]) == 1
        assert not hooks[1].seen and not hooks[2].seen  # lamp faults are not escalated

    asyncio.run(go())


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
            svc.accept([("cases", case_event(2, rule="streetlight.leakage", severity="critical", state="acknowledged",
                                             at=clock.now, opened_at=T0, detail={"acknowledged_at": clock.now}))])
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
            svc.accept([("cases", case_event(1, rule="streetlight.leakage", severity="critical", state="closed",
                                             at=clock.now, opened_at=T0))])
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


def test_overdue_milestones_accidents_and_the_money_so_far(settings: Settings, tmp_path: Path,
                                                           hooks: list[HttpStandIn], registry_file: Path) -> None:  # fmt: skip
    clock = FakeClock(T0 + 6 * 3_600_000)
    reg = load_registry(registry_file)
    dev = next(d for d in reg if d.kind == "manhole")

    async def go() -> None:
        path = routes(tmp_path, *(h.url for h in hooks))
        svc = AlertsService(settings, path, tmp_path / "state", clock=clock, registry=reg, http_port=-1)
        case = case_event(1, device=dev.device_id, district=dev.district, detail={"acknowledged_at": T0 + 1})
        try:
            svc.accept([("cases", case)])
            entries = [hour_entry(case, k) for k in (1, 2, 3, 4)]
            assert svc.accept([("penalties", e) for e in entries]) == 2  # hours 2 and 4
            assert svc.accept([("penalties", entries[3])]) == 0  # redelivered: no push, no double money
            await settle(svc, hooks, 1)  # grouped by case: the opening and both milestones in one push
            accident = case_event(1, device=dev.device_id, district=dev.district, state="escalated",
                                  severity="critical", at=clock.now, opened_at=T0,
                                  detail={"acknowledged_at": T0 + 1, "accident_at": clock.now})  # fmt: skip
            svc.accept([("cases", accident), ("cases", accident)])
            await settle(svc, hooks, 2)
        finally:
            await svc.close()
        pushes = hooks[0].delivered
        changes = [c for p in pushes for c in p.json()["cases"]]
        assert [(c["change"], c["hours_past_deadline"]) for c in changes[1:3]] == [("overdue", 4), ("overdue", 4)]
        assert changes[2]["yuan_so_far"] == 40_000
        assert [c["change"] for c in changes] == ["open", "overdue", "overdue", "escalated", "accident"]

    asyncio.run(go())


def test_the_message_is_chinese_first_with_place_time_clock_and_a_signed_link(
    settings: Settings, tmp_path: Path, hooks: list[HttpStandIn], registry_file: Path
) -> None:
    clock = FakeClock(T0 + 3 * 3_600_000 + 5 * MIN)  # 1 h 5 min past a 2-hour deadline
    reg = load_registry(registry_file)
    dev = next(d for d in reg if d.kind == "manhole" and d.district == "jinshui")

    async def go() -> str:
        path = routes(tmp_path, *(h.url for h in hooks))
        svc = AlertsService(settings, path, tmp_path / "state", clock=clock, registry=reg, http_port=-1)
        case = case_event(1, device=dev.device_id, district="jinshui", grid=dev.grid,
                          detail={"acknowledged_at": T0 + 1})  # acknowledged: no escalation in this test
        case["address"] = dev.address
        try:
            svc.accept([("cases", case), ("penalties", hour_entry(case, 1))])
            await settle(svc, hooks, 1)
            (row,) = [r for r in svc.store.rows()]
            assert row["state"] == "delivered"
            return svc.store.db.execute("SELECT message FROM outbox").fetchone()[0].decode()
        finally:
            await svc.close()

    import orjson

    msg = orjson.loads(go_result := asyncio.run(go()))
    assert go_result
    md, text = msg["markdown"], msg["text"]
    assert md.index("窨井盖异常") < md.index("Manhole cover open, tilted or missing")
    assert text.index("地点") < text.index("Where:")
    assert f"https://uri.amap.com/marker?position={dev.lon:.6f},{dev.lat:.6f}" in text
    assert "2025-11-22 16:26（北京时间）" in text and "Since: 2025-11-22 16:26 (Asia/Shanghai)" in text
    assert "已超时限 1 小时" in text and "1 h past the deadline" in text
    assert "累计扣罚 10,000 元" in text and "10,000 yuan so far" in text
    assert "金水区（jinshui）" in text and dev.address in text
    link = re.search(r"Acknowledge: (\S+)", text).group(1)
    from urllib.parse import parse_qsl, urlsplit

    from alerts.route import load_routes

    parts = urlsplit(link)
    assert parts.netloc == "ack.example" and parts.path == "/ack"
    cfg = load_routes(tmp_path / "routes.yaml").ack
    params = verify(cfg, dict(parse_qsl(parts.query)), clock.now)
    assert params["action"] == "ack" and params["device"] == dev.device_id and params["officer"] == "grid"


def test_a_failing_channel_is_retried_and_the_message_arrives_once(settings: Settings, tmp_path: Path,
                                                                   hooks: list[HttpStandIn]) -> None:  # fmt: skip
    grid = hooks[0]
    grid.script = [500, "timeout", 503]  # two failures and a timeout whose answer comes too late

    async def go() -> AlertsService:
        from alerts.service import wall_clock_ms

        svc = service(settings, tmp_path, hooks, clock=wall_clock_ms)
        try:
            svc.accept([("cases", case_event(1, detail={"acknowledged_at": T0 + 1}))])
            await settle(svc, hooks, 1, timeout=10)
            await asyncio.sleep(1.6)  # let the stand-in answer the timed-out request (too late)
        finally:
            await svc.close()
        return svc

    svc = asyncio.run(go())
    assert len(grid.seen) == 4
    assert len({s.headers["Idempotency-Key"] for s in grid.seen}) == 1  # every attempt is the same push
    assert len(grid.delivered) == 1
    (rec,) = svc.records
    assert rec["status"] == "delivered" and rec["attempts"] == 4


def test_accepted_pushes_survive_a_restart(settings: Settings, tmp_path: Path, hooks: list[HttpStandIn]) -> None:
    grid = hooks[0]
    grid.down = True

    async def first() -> None:
        svc = service(settings, tmp_path, hooks, retry="10s")
        svc.accept([("cases", case_event(i, detail={"acknowledged_at": T0 + 1})) for i in range(3)])
        svc.tick()
        await async_wait_for(lambda: len(grid.seen) >= 1, what="a failed attempt")
        await svc.close()  # as if killed: the rows are still pending

    async def second() -> None:
        svc = service(settings, tmp_path, hooks, retry="10s")
        try:
            assert svc.accept([("cases", case_event(i, detail={"acknowledged_at": T0 + 1})) for i in range(3)]) == 0  # redelivered after the restart
            svc.deliverer.blocked_until.clear()
            svc.store.db.execute("UPDATE outbox SET next_ms = 0")
            await settle(svc, hooks, 3)
        finally:
            await svc.close()

    asyncio.run(first())
    grid.down = False
    asyncio.run(second())
    assert sorted(c for p in cases_of(grid) for c in p) == sorted((case_event(i)["case_id"], "open") for i in range(3))


def test_ended_cases_are_forgotten_after_a_week(settings: Settings, tmp_path: Path, hooks: list[HttpStandIn]) -> None:
    clock = FakeClock()

    async def go() -> None:
        svc = service(settings, tmp_path, hooks, clock=clock)
        try:
            svc.accept([("cases", case_event(1, state="closed", detail={"acknowledged_at": T0})),
                        ("cases", case_event(2, detail={"acknowledged_at": T0}))])  # fmt: skip
            await settle(svc, hooks, 2)
            clock.advance(6 * 24 * 3_600_000)
            assert svc.prune() == 0
            clock.advance(2 * 24 * 3_600_000)
            assert svc.prune() == 1
            assert set(svc.cases) == {case_event(2)["case_id"]}  # the open one stays, however old
            assert svc.store.counts() == {}
        finally:
            await svc.close()

    asyncio.run(go())


def test_a_replayed_history_pushes_nothing_again(settings: Settings, tmp_path: Path, hooks: list[HttpStandIn]) -> None:
    history = [case_event(1, detail={"acknowledged_at": T0 + 1}),
               case_event(1, state="escalated", at=T0 + 7_200_000, opened_at=T0, detail={"acknowledged_at": T0 + 1}),
               case_event(1, state="repaired", at=T0 + 9_000_000, opened_at=T0, detail={"acknowledged_at": T0 + 1})]  # fmt: skip

    async def go() -> None:
        svc = service(settings, tmp_path, hooks)
        try:
            assert svc.accept([("cases", e) for e in history]) == 3
            assert svc.accept([("cases", e) for e in history]) == 0  # the worker re-sent everything
            assert svc.cases[history[0]["case_id"]].last_state == "repaired"
            await settle(svc, hooks, 1)
        finally:
            await svc.close()

    asyncio.run(go())
    assert [c for p in cases_of(hooks[0]) for c in p] == [(history[0]["case_id"], ch) for ch in ("open", "escalated", "repaired")]
