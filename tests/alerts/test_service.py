"""The alerts service on the real Kafka-protocol broker: cases in, pushes out, acks back, SIGKILL survived."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from alerts.service import AlertsService
from contract.topics import KafkaTopics
from foundation.settings import Settings
from registry.devices import load_registry
from tests.alerts.inprocess import MIN, cases_of, routes, service, settle
from tests.alerts.standins import (
    T0,
    FakeClock,
    HttpStandIn,
    async_wait_for,
    case_event,
    hour_entry,
    wait_for,
)
from tests.conftest import settings_env
from tests.kit.kafka import produce, read_topic
from tests.kit.routes import grid_officer_routes

ROOT = Path(__file__).resolve().parents[2]


def test_case_events_on_kafka_become_pushes_and_alert_records(settings: Settings, tmp_path: Path,
                                                              hook: HttpStandIn) -> None:  # fmt: skip
    opened = case_event(1, detail={"acknowledged_at": T0 + 1})
    # a case opened a year "ago" by this machine's clock: acknowledged so it is not escalated at once
    closed = case_event(
        1, state="closed", at=T0 + 3 * 3_600_000, opened_at=T0, detail={"acknowledged_at": T0 + 1}
    )

    async def go() -> list[dict]:
        await produce(settings, [("cases", opened), ("penalties", hour_entry(opened, 1)),
                                 ("penalties", hour_entry(opened, 1)), ("cases", closed)])  # fmt: skip
        svc = AlertsService(
            settings, grid_officer_routes(tmp_path, hook.url), tmp_path / "state", http_port=-1
        )
        stop = asyncio.Event()
        task = asyncio.create_task(svc.run(stop))
        try:
            for _ in range(300):
                if len(hook.delivered) >= 1 and svc.stats["entries"] >= 2 and not svc.records:
                    break
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)
        return await read_topic(
            settings.kafka.bootstrap, KafkaTopics(settings.kafka.topic_prefix).alerts, 1, 10
        )

    records = asyncio.run(go())
    (push,) = hook.delivered  # opened and closed arrived together: one push, grouped by case
    body = push.json()
    assert [(c["case_id"], c["change"]) for c in body["cases"]] == [(opened["case_id"], "open"),
                                                                    (opened["case_id"], "closed")]  # fmt: skip
    assert body["cases"][0]["yuan_so_far"] == 10_000  # the entry came twice, counted once
    (rec,) = records
    assert rec["status"] == "delivered" and rec["message"] == push.headers["Idempotency-Key"]
    assert rec["cases"] == [{"case_id": opened["case_id"], "change": "open"},
                            {"case_id": opened["case_id"], "change": "closed"}]  # fmt: skip


# The ack endpoint (links, the API, the audit trail): tests/alerts/test_ack_endpoint.py


def test_sigkill_between_accept_and_delivery_loses_nothing(settings: Settings, tmp_path: Path,
                                                           hook: HttpStandIn) -> None:  # fmt: skip
    hook.down = True  # the robot is down: pushes are accepted but cannot be delivered
    routes = grid_officer_routes(tmp_path, hook.url)
    state = tmp_path / "state"
    log = tmp_path / "alerts.log"
    events = [case_event(i, detail={"acknowledged_at": T0 + 1}) for i in range(20)]
    asyncio.run(produce(settings, [("cases", e) for e in events]))
    env = settings_env(settings)

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "alerts.service", "--routes", str(routes), "--state-dir", str(state),
             "--listen", "127.0.0.1:0"],
            cwd=ROOT, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,  # noqa: SIM115
        )  # fmt: skip

    def pending() -> int:
        if not (state / "alerts.sqlite").exists():
            return 0
        with sqlite3.connect(state / "alerts.sqlite") as db:
            try:
                return db.execute("SELECT COUNT(*) FROM outbox WHERE state='pending'").fetchone()[0]
            except sqlite3.OperationalError:
                return 0

    proc = start()
    try:
        wait_for(
            lambda: pending() >= 20 and hook.seen,
            30,
            "20 pushes accepted and a first failed attempt",
        )
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert not hook.delivered
        hook.down = False
        proc = start()
        wait_for(lambda: len(hook.delivered) >= 20, 30, "20 deliveries after the restart")
        time.sleep(0.5)  # anything more would be a duplicate
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
    delivered = sorted(c["case_id"] for s in hook.delivered for c in s.json()["cases"])
    assert delivered == sorted(e["case_id"] for e in events), log.read_text()[-3000:]
    assert pending() == 0


# ---------------------------------------------------------------------- in-process (tests/alerts/inprocess.py)


def test_one_push_per_meaningful_change_and_redeliveries_are_dropped(settings: Settings, tmp_path: Path,
                                                                     hooks: list[HttpStandIn]) -> None:  # fmt: skip
    async def go() -> None:
        svc = service(settings, tmp_path, hooks)
        opened = case_event(1)
        cid = opened["case_id"]
        try:
            assert svc.accept([("cases", opened)]) == 1
            assert svc.accept([("cases", opened)]) == 0  # Kafka redelivered it
            note = case_event(
                1, at=T0 + MIN, opened_at=T0, detail={"notes": [{"note": "on my way"}]}
            )
            acked = case_event(1, state="acknowledged", at=T0 + 2 * MIN, opened_at=T0,
                               detail={"acknowledged_at": T0 + 2 * MIN})  # fmt: skip
            assert (
                svc.accept([("cases", note), ("cases", acked)]) == 0
            )  # a note and an ack are not pushed
            await settle(svc, hooks, 1)
            escalated = case_event(1, state="escalated", at=T0 + 120 * MIN, opened_at=T0,
                                   detail={"acknowledged_at": T0 + 2 * MIN, "escalated": True})  # fmt: skip
            repaired = case_event(1, state="repaired", at=T0 + 150 * MIN, opened_at=T0,
                                  detail={"acknowledged_at": T0 + 2 * MIN, "repair_at": T0 + 150 * MIN})  # fmt: skip
            assert svc.accept([("cases", escalated)]) == 1
            await settle(svc, hooks, 1)
            await asyncio.sleep(1.0)
            svc.tick()
            print("DELIVERED", [cases_of(h) for h in hooks], svc.stats)
            assert svc.accept([("cases", repaired), ("cases", repaired)]) == 1
            await settle(svc, hooks, 3)
        finally:
            await svc.close()
        grid, duty, command = hooks
        assert cases_of(grid) == [[(cid, "open")], [(cid, "escalated")], [(cid, "repaired")]]
        assert not duty.seen and not command.seen  # acknowledged at once: never escalated
        assert [s.headers["Idempotency-Key"] for s in grid.delivered] == [
            r["message"] for r in svc.records
        ]

    asyncio.run(go())


def test_overdue_milestones_accidents_and_the_money_so_far(settings: Settings, tmp_path: Path,
                                                           hooks: list[HttpStandIn], registry_file: Path) -> None:  # fmt: skip
    clock = FakeClock(T0 + 6 * 3_600_000)
    reg = load_registry(registry_file)
    dev = next(d for d in reg if d.kind == "manhole")

    async def go() -> None:
        path = routes(tmp_path, *(h.url for h in hooks))
        svc = AlertsService(
            settings, path, tmp_path / "state", clock=clock, registry=reg, http_port=-1
        )
        case = case_event(
            1, device=dev.device_id, district=dev.district, detail={"acknowledged_at": T0 + 1}
        )
        try:
            svc.accept([("cases", case)])
            entries = [hour_entry(case, k) for k in (1, 2, 3, 4)]
            assert svc.accept([("penalties", e) for e in entries]) == 2  # hours 2 and 4
            assert (
                svc.accept([("penalties", entries[3])]) == 0
            )  # redelivered: no push, no double money
            await settle(
                svc, hooks, 1
            )  # grouped by case: the opening and both milestones in one push
            accident = case_event(1, device=dev.device_id, district=dev.district, state="escalated",
                                  severity="critical", at=clock.now, opened_at=T0,
                                  detail={"acknowledged_at": T0 + 1, "accident_at": clock.now})  # fmt: skip
            svc.accept([("cases", accident), ("cases", accident)])
            await settle(svc, hooks, 1)
            await asyncio.sleep(1.0)
            svc.tick()
            print("DELIVERED", [cases_of(h) for h in hooks], svc.stats)
        finally:
            await svc.close()
        pushes = hooks[0].delivered
        changes = [c for p in pushes for c in p.json()["cases"]]
        assert [(c["change"], c["hours_past_deadline"]) for c in changes[1:3]] == [
            ("overdue", 4),
            ("overdue", 4),
        ]
        assert changes[2]["yuan_so_far"] == 40_000
        assert [c["change"] for c in changes] == [
            "open",
            "overdue",
            "overdue",
            "escalated",
            "accident",
        ]

    asyncio.run(go())


def test_a_replayed_history_pushes_nothing_again(
    settings: Settings, tmp_path: Path, hooks: list[HttpStandIn]
) -> None:
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
    assert [c for p in cases_of(hooks[0]) for c in p] == [
        (history[0]["case_id"], ch) for ch in ("open", "escalated", "repaired")
    ]


# ---------------------------------------------------------------------- claims (docs/alerts.md, "Claims")


def _detector_outputs(script: str) -> tuple[list[dict], list[dict], str]:
    """Case events and ledger entries as the real detector makes them (streams.harness).

    ``close``: a cover open 12 h, closed by a supervisor backdated to the opening;
    ``readings``: the same cover's own reading, 12 h late, then a second late one.
    """
    from streams.harness import T0 as D0
    from streams.harness import Run

    run = Run()
    run.read("MH-MAIN", D0, open=True)
    run.act("ack", "MH-MAIN", D0 + MIN)  # acknowledged: these tests are not about escalation
    run.tick(D0 + 12 * 3_600_000)
    if script == "close":
        run.act("close", "MH-MAIN", D0, officer="sup-jinshui", role="district_supervisor",
                reason="巡查记录：早已修复", recorded_at=D0 + 12 * 3_600_000 + MIN)  # fmt: skip
    else:
        run.read("MH-MAIN", D0 + 30 * MIN, received_at=D0 + 12 * 3_600_000, open=False)
        run.read("MH-MAIN", D0 + 20 * MIN, received_at=D0 + 12 * 3_600_000 + MIN, open=False)
    events = [e.to_dict() for e in run.events]
    entries = [e.to_dict() for e in run.ledger.entries()]
    return events, entries, f"manhole:MH-MAIN:{D0}"


def claims_of(hook: HttpStandIn) -> list[dict]:
    return [c for s in hook.delivered for c in s.json()["cases"] if c["change"] == "claim"]


def test_a_pending_backdated_close_is_pushed_once_with_what_confirming_it_would_reverse(
    settings: Settings, tmp_path: Path, hooks: list[HttpStandIn]
) -> None:
    from streams.harness import T0 as D0

    events, entries, cid = _detector_outputs("close")
    clock = FakeClock(D0 + 12 * 3_600_000 + 2 * MIN)

    async def go() -> None:
        svc = service(settings, tmp_path, hooks, clock=clock)
        try:
            records = [("cases", e) for e in events] + [("penalties", e) for e in entries]
            svc.accept(records)
            assert svc.accept(records) == 0  # Kafka redelivered everything
            # a later snapshot still carrying the same pending claim (a note) is no new claim
            noted = events[-1] | {"at": events[-1]["at"] + MIN, "detail": events[-1]["detail"]
                                  | {"notes": [{"note": "已通知督办"}]}}  # fmt: skip
            assert svc.accept([("cases", noted)]) == 0
            await async_wait_for(
                lambda: claims_of(hooks[0]), what="the claim pushed", tick=svc.tick
            )
            await settle(svc, hooks, len(hooks[0].delivered))  # anything more would be a repeat
        finally:
            await svc.close()
        again = service(settings, tmp_path, hooks, clock=clock)  # a restart of the service
        try:
            assert again.accept([("cases", events[-1])]) == 0
        finally:
            await again.close()

    asyncio.run(go())
    grid, duty, command = hooks
    (claim,) = claims_of(grid)
    assert (
        claim["case_id"] == cid
        and claim["notice_key"] == f"{cid}:claim:close:{D0 + 12 * 3_600_000 + MIN}"
    )
    c = claim["claim"]
    assert (c["kind"], c["repair_at"], c["claimed_by"]) == ("close", D0, "sup-jinshui")
    assert (c["hours_at_stake"], c["yuan_at_stake"]) == (10, 100_000)
    assert claim["commands"] == {
        "confirm": f"citywatch case confirm_repair MH-MAIN --case {cid}",
        "reject": f"citywatch case reject_repair MH-MAIN --case {cid}",
    }
    assert not duty.seen and not command.seen
    changes = [x["change"] for p in grid.delivered for x in p.json()["cases"]]
    assert changes.count("claim") == 1 and changes.count("closed") == 1


def test_a_late_reading_claim_is_pushed_and_a_claim_changed_by_more_readings_again(
    settings: Settings, tmp_path: Path, hooks: list[HttpStandIn]
) -> None:
    from streams.harness import T0 as D0

    events, entries, cid = _detector_outputs("readings")
    pending = [
        e["detail"]["late_repair_claim"]
        for e in events
        if (e["detail"].get("late_repair_claim") or {}).get("status") == "pending"
    ]
    assert [p["repair_at"] for p in pending] == [D0 + 30 * MIN, D0 + 20 * MIN]

    clock = FakeClock(D0 + 12 * 3_600_000 + 2 * MIN)

    async def go() -> None:
        svc = service(settings, tmp_path, hooks, clock=clock)
        try:
            assert svc.accept([("cases", e) for e in events]) >= 2
            decided = events[-1] | {"at": events[-1]["at"] + MIN, "detail": events[-1]["detail"]
                                    | {"late_repair_claim": pending[-1] | {"status": "rejected"}}}  # fmt: skip
            assert svc.accept([("cases", decided)]) == 0  # a decided claim is no news
            await async_wait_for(
                lambda: len(claims_of(hooks[0])) >= 2, what="both claims pushed", tick=svc.tick
            )
            await settle(svc, hooks, len(hooks[0].delivered))
            # a week on, the sent notices are pruned; the claim, still pending, is not news
            clock.advance(8 * 24 * 3_600_000)
            svc.prune()
            noted = events[-1] | {"at": events[-1]["at"] + 2 * MIN, "detail": events[-1]["detail"]
                                  | {"notes": [{"note": "督办已知"}]}}  # fmt: skip
            assert svc.accept([("cases", noted)]) == 0
        finally:
            await svc.close()

    asyncio.run(go())
    pushed = claims_of(hooks[0])
    assert [(c["claim"]["kind"], c["claim"]["repair_at"]) for c in pushed] == [
        ("readings", D0 + 30 * MIN),
        ("readings", D0 + 20 * MIN),
    ]
    assert [c["notice_key"] for c in pushed] == [f"{cid}:claim:readings:{p['at']}" for p in pending]
    assert pushed[0]["claim"]["hours_at_stake"] == 10


def test_a_case_under_announced_works_is_not_pushed_until_it_overruns(
    settings, tmp_path, hooks
) -> None:
    """施工报备: the planned case and its repair inside the window push nothing; the overrun does."""
    from tests.alerts.inprocess import service, settle
    from tests.alerts.standins import case_event as ev

    async def go() -> list[list[str]]:
        svc = service(settings, tmp_path, hooks)
        works = {"from": T0, "until": T0 + 6 * 3_600_000, "officer": "JS-GRID-01", "reason": "清淤"}
        try:
            svc.accept([("cases", ev(1, state="planned", detail={"planned_works": works}))])
            svc.accept(
                [("cases", ev(1, state="repaired", at=T0 + 1, detail={"planned_works": works}))]
            )
            svc.accept([("cases", ev(2, state="planned", detail={"planned_works": works}))])
            svc.accept([("cases", ev(2, state="escalated", at=T0 + 6 * 3_600_000,
                                     detail={"planned_works": works, "escalated": True}))])  # fmt: skip
            await settle(svc, hooks, 1)
            await asyncio.sleep(0.5)
            svc.tick()
            return [[c["device"] for c in d.json()["cases"]] for h in hooks for d in h.delivered]
        finally:
            await svc.close()

    pushed = asyncio.run(go())
    assert pushed == [["MH-0002"]], pushed  # only the overrun of case 2


def test_a_broker_case_from_a_bridge_is_pushed_once_to_the_command_center(
    settings, tmp_path, hooks
) -> None:
    """The broker dropped readings it had acknowledged (ingest/broker_stats.py): its case has no
    district, grid or unit; one push at the opening to the command center, one at the close."""
    from contract.topics import BROKER_DROPPED_TOTAL
    from ingest.broker_stats import UPDATE_EVERY_MS, BrokerWatch
    from tests.alerts.inprocess import service, settle

    watch = BrokerWatch("cw-bridge-1", "127.0.0.1:18883", quiet_ms=10 * MIN)
    events = []
    for dt, total in ((0, b"0"), (1_000, b"35"), (2_000 + UPDATE_EVERY_MS, b"90")):
        watch.take(BROKER_DROPPED_TOTAL, total, T0 + dt)
        events += watch.due(T0 + dt)
    events += watch.due(T0 + 2_000 + UPDATE_EVERY_MS + 10 * MIN)
    assert [e.state for e in events] == ["open", "open", "closed"]
    broker_route = "    - {match: {kind: broker}, receiver: command, escalation: null}"

    async def go() -> list[list[tuple[str, str]]]:
        svc = service(settings, tmp_path, hooks, extra_routes=broker_route)
        try:
            svc.accept([("cases", events[0].to_dict())])
            await settle(svc, hooks, 1)
            for e in events[1:]:  # the minute's update (still open), then the close
                svc.accept([("cases", e.to_dict())])
            await settle(svc, hooks, 2)
            await asyncio.sleep(0.3)
            svc.tick()
            assert not hooks[0].delivered and not hooks[1].delivered, "no grid or duty officer"
            return cases_of(hooks[2])
        finally:
            await svc.close()

    pushed = asyncio.run(go())
    case_id = events[0].case_id
    assert pushed == [[(case_id, "open")], [(case_id, "closed")]], pushed
