"""Cases booked and closed at once (docs/alerts.md, "What is pushed"): an overload at the weigh
station is one case event, already closed, and two ledger entries on another topic. The alerts
service tells it once, as ``booked``, after ``BOOKED_SETTLE_MS``, naming who pays what, to the
case's route and to each paying district's; ordinary cases keep their ``open`` push."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alerts.service import BOOKED_SETTLE_MS, AlertsService
from contract.cases import CaseEvent, LedgerEntry
from streams.harness import ROUTE_LAT, Run, local, registry
from tests.alerts.inprocess import cases_of
from tests.alerts.standins import LINK_SECRET, FakeClock, HttpStandIn, async_wait_for, case_event

NIGHT = local(23)


def _routes(tmp_path: Path, city_url: str, erqi_url: str, group_wait: str = "0s") -> Path:
    p = tmp_path / "routes.yaml"
    p.write_text(
        f"""
receivers:
  - {{name: city, roles: [duty], webhook: {{url: "{city_url}", timeout: 1s}}}}
  - {{name: erqi-duty, roles: [duty], webhook: {{url: "{erqi_url}", timeout: 1s}}}}
route:
  receiver: city
  group_by: [case_id]
  group_wait: {group_wait}
  group_interval: 0s
  repeat_interval: 0s
  routes:
    - match: {{district: erqi}}
      receiver: erqi-duty
ack: {{base_url: "http://127.0.0.1:1", secret: {LINK_SECRET}, link_ttl: 10m}}
delivery: {{retry_initial: 50ms, retry_max: 200ms, timeout: 500ms}}
district_names: {{jinshui: 金水区, erqi: 二七区}}
""",
        encoding="utf-8",
    )
    return p


def _overload() -> list[tuple[str, dict[str, Any]]]:
    """A truck owned in jinshui, loaded in erqi (its track), overweight at WIM-1 in zhongmou:
    the detector's own case event and entries, the entries first (another topic, no order)."""
    run = Run()
    run.read("T-1", NIGHT, lat=34.7015, lon=113.622, speed_kmh=0)  # loading site L-2, erqi
    run.read("T-1", NIGHT + 60_000, lat=ROUTE_LAT, lon=113.75, speed_kmh=30)
    outs = run.read("WIM-1", NIGHT + 1_800_000, plate="豫A11111", axles=3, gross_kg=30_000)
    entries = [("penalties", o.to_dict()) for o in outs if isinstance(o, LedgerEntry)]
    [case] = [("cases", o.to_dict()) for o in outs if isinstance(o, CaseEvent)]
    assert case[1]["state"] == "closed" and len(entries) == 2
    return [*entries, case]


def _duty_officers(settings: Any, tmp_path: Path) -> Any:
    """Settings whose directory has a duty officer in each district of the overload: zhongmou
    (the weigh station's), erqi and jinshui (the two that pay)."""
    path = tmp_path / "officers.yaml"
    path.write_text(
        "officers:\n"
        + "".join(
            f"  - {{id: {oid}, name: 值班员, roles: [duty], districts: [{d}], wecom: {oid.lower()}}}\n"
            for oid, d in (("ZM-DUTY-01", "zhongmou"), ("EQ-DUTY-01", "erqi"), ("JS-DUTY-01", "jinshui"))
        ),
        encoding="utf-8",
    )  # fmt: skip
    return settings.replace("paths", officers=str(path))


def _service(
    settings: Any, tmp_path: Path, hooks: list[HttpStandIn], clock: FakeClock, **kw: Any
) -> AlertsService:
    path = _routes(tmp_path, hooks[0].url, hooks[1].url, **kw)
    return AlertsService(
        settings, path, tmp_path / "state", clock=clock, registry=registry(), http_port=-1
    )


async def _pushes(svc: AlertsService, hooks: list[HttpStandIn], n: int) -> None:
    await async_wait_for(
        lambda: sum(len(h.delivered) for h in hooks) >= n, 5, f"{n} pushes", tick=svc.tick
    )
    await asyncio.sleep(0.3)  # and nothing more
    svc.tick()


def _told(settings: Any, tmp_path: Path, hooks: list[HttpStandIn], clock: FakeClock,
          records: list[tuple[str, dict[str, Any]]], n: int) -> None:  # fmt: skip
    """The service given ``records``, its clock past the settle time, until ``n`` pushes."""

    async def go() -> None:
        svc = _service(settings, tmp_path, hooks, clock)
        try:
            svc.accept(records)
            clock.advance(BOOKED_SETTLE_MS)
            await _pushes(svc, hooks, n)
        finally:
            await svc.close()

    asyncio.run(go())


def test_an_overload_is_one_booked_push_naming_both_districts_and_30000_each(
    settings, tmp_path, hooks
) -> None:
    city, erqi, _ = hooks
    clock = FakeClock(NIGHT + 1_800_000)

    async def go() -> None:
        svc = _service(settings, tmp_path, hooks, clock)
        try:
            svc.accept(_overload())
            svc.tick()
            await asyncio.sleep(0.3)
            assert not city.seen and not erqi.seen  # the settle time: entries may still come
            clock.advance(BOOKED_SETTLE_MS)
            await _pushes(svc, hooks, 2)
        finally:
            await svc.close()

    asyncio.run(go())
    for hook in (city, erqi):  # the case's own route (zhongmou: the root) and erqi, a payer's
        assert [[change for _, change in push] for push in cases_of(hook)] == [["booked"]]
    [item] = city.delivered[0].json()["cases"]
    assert item["payers"] == [
        {"payer": "erqi", "payer_type": "district_government", "amount_yuan": 30_000},
        {"payer": "jinshui", "payer_type": "district_government", "amount_yuan": 30_000},
    ]
    assert item["yuan_so_far"] == 60_000 and item["state"] == "closed"
    assert city.delivered[0].headers["Idempotency-Key"] == city.delivered[0].json()["id"]
    title = city.delivered[0].json()["title"]
    assert "已计罚并结案" in title and "booked and closed" in title


def test_a_booked_push_mentions_the_officers_of_the_district_it_is_sent_for(
    settings, tmp_path, hooks
) -> None:
    city, erqi, _ = hooks
    clock = FakeClock(NIGHT + 1_800_000)
    _told(_duty_officers(settings, tmp_path), tmp_path, hooks, clock, _overload(), 2)
    # the case's own route (the root: zhongmou, the weigh station's district) mentions
    # zhongmou's duty officer; erqi's route, reached because erqi pays, erqi's; jinshui pays
    # too but its case would reach the root route, which was told already
    [own] = [push.json() for push in city.delivered]
    [payer] = [push.json() for push in erqi.delivered]
    assert [(m["officer"], m["wecom"]) for m in own["mention"]] == [("ZM-DUTY-01", "zm-duty-01")]
    assert [(m["officer"], m["wecom"]) for m in payer["mention"]] == [("EQ-DUTY-01", "eq-duty-01")]


def test_a_cover_closed_later_still_gets_its_open_push_and_no_booked(
    settings, tmp_path, hooks
) -> None:
    city, erqi, _ = hooks
    clock = FakeClock()
    opened = case_event(1, district="jinshui", at=clock.now)

    async def go() -> None:
        svc = _service(settings, tmp_path, hooks, clock)
        try:
            svc.accept([("cases", opened)])
            await _pushes(svc, hooks, 1)  # at once: an ordinary open waits for no settle time
            clock.advance(40 * 60_000)
            svc.accept([("cases", opened | {"state": "repaired", "at": clock.now})])
            clock.advance(BOOKED_SETTLE_MS)
            await _pushes(svc, hooks, 2)
        finally:
            await svc.close()

    asyncio.run(go())
    assert [[change for _, change in push] for push in cases_of(city)] == [["open"], ["repaired"]]
    assert not erqi.seen


def test_an_open_still_waiting_when_its_close_follows_at_once_becomes_one_booked_push(
    settings, tmp_path, hooks
) -> None:
    city, _, _ = hooks
    clock = FakeClock()
    opened = case_event(1, district="jinshui", at=clock.now)

    async def go() -> None:
        svc = _service(settings, tmp_path, hooks, clock, group_wait="30s")
        try:
            svc.accept([("cases", opened)])
            clock.advance(1_000)
            svc.accept([("cases", opened | {"state": "closed", "at": clock.now})])
            clock.advance(30_000)
            await _pushes(svc, hooks, 1)
        finally:
            await svc.close()

    asyncio.run(go())
    assert [[change for _, change in push] for push in cases_of(city)] == [["booked"]]


def test_a_restart_does_not_push_the_booked_case_twice_nor_lose_it_inside_the_settle_time(
    settings, tmp_path, hooks
) -> None:
    city, erqi, _ = hooks
    clock = FakeClock(NIGHT + 1_800_000)
    records = _overload()

    async def go() -> None:
        svc = _service(settings, tmp_path, hooks, clock)
        svc.accept(records)
        await svc.close()  # stopped inside the settle time: the outbox remembers the case
        for _ in range(2):  # started again, Kafka redelivering the same records each time
            svc = _service(settings, tmp_path, hooks, clock)
            try:
                svc.accept(records)
                clock.advance(BOOKED_SETTLE_MS)
                await async_wait_for(lambda: city.delivered and erqi.delivered, 5, "the pushes",
                                     tick=svc.tick)  # fmt: skip
                await asyncio.sleep(0.3)
                svc.tick()
            finally:
                await svc.close()

    asyncio.run(go())
    assert [len(city.delivered), len(erqi.delivered)] == [1, 1]
    assert [c["change"] for c in city.delivered[0].json()["cases"]] == ["booked"]


def test_an_illegal_operation_is_one_booked_push_naming_the_company_and_10000(
    settings, tmp_path, hooks
) -> None:
    city, erqi, _ = hooks
    run = Run()
    outs = run.read("T-2", local(10), lat=ROUTE_LAT, lon=113.70, speed_kmh=30)  # no permit, ring 4
    records = [("cases" if isinstance(o, CaseEvent) else "penalties", o.to_dict()) for o in outs]
    assert [r["rule"] for _, r in records] == ["illegal_operation", "illegal_operation"]
    _told(settings, tmp_path, hooks, FakeClock(local(10)), records, 1)
    [[item]] = [push.json()["cases"] for push in erqi.delivered]  # T-2's terminal is erqi's
    assert item["change"] == "booked" and item["payers"] == [
        {"payer": "宏远土方", "payer_type": "property_unit", "amount_yuan": 10_000}
    ]
    assert not city.seen  # a unit pays, not a district: only the case's own route
