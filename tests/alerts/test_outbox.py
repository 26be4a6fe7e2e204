"""alerts/outbox.py through the service: retries under one idempotency key, pending rows survive a restart, ended cases are forgotten."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from alerts.outbox import Store
from alerts.service import AlertsService
from foundation.settings import Settings
from tests.alerts.inprocess import cases_of, service, settle
from tests.alerts.standins import T0, FakeClock, HttpStandIn, async_wait_for, case_event


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
    assert (
        len({s.headers["Idempotency-Key"] for s in grid.seen}) == 1
    )  # every attempt is the same push
    assert len(grid.delivered) == 1
    (rec,) = svc.records
    assert rec["status"] == "delivered" and rec["attempts"] == 4


def test_accepted_pushes_survive_a_restart(
    settings: Settings, tmp_path: Path, hooks: list[HttpStandIn]
) -> None:
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
            assert (
                svc.accept(
                    [("cases", case_event(i, detail={"acknowledged_at": T0 + 1})) for i in range(3)]
                )
                == 0
            )  # redelivered after the restart
            svc.deliverer.blocked_until.clear()
            svc.store.db.execute("UPDATE outbox SET next_ms = 0")
            await settle(svc, hooks, 3)
        finally:
            await svc.close()

    asyncio.run(first())
    grid.down = False
    asyncio.run(second())
    assert sorted(c for p in cases_of(grid) for c in p) == sorted(
        (case_event(i)["case_id"], "open") for i in range(3)
    )


def test_ended_cases_are_forgotten_after_a_week(
    settings: Settings, tmp_path: Path, hooks: list[HttpStandIn]
) -> None:
    clock = FakeClock()

    async def go() -> None:
        svc = service(settings, tmp_path, hooks, clock=clock)
        try:
            # case 1 opened an hour before the service heard of it: an ordinary close, pushed at once
            svc.accept([("cases", case_event(1, state="closed", opened_at=T0 - 3_600_000,
                                             detail={"acknowledged_at": T0})),
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


def test_the_outbox_and_its_sqlite_siblings_are_readable_by_their_owner_only(
    tmp_path: Path,
) -> None:
    """It holds robot URLs with their keys and officers' signed ack links (issue 13)."""
    old = os.umask(0o022)  # the usual umask: files 0644, world-readable
    try:
        store = Store(tmp_path / "alerts" / "alerts.sqlite")
        with store.transaction():
            store.add_entry("e1", "c1", 10_000)  # a write: sqlite opens the -wal and -shm files
        files = sorted(p.name for p in (tmp_path / "alerts").iterdir())
        assert files == ["alerts.sqlite", "alerts.sqlite-shm", "alerts.sqlite-wal"]
        for name in files:
            assert stat.S_IMODE((tmp_path / "alerts" / name).stat().st_mode) == 0o600, name
        assert stat.S_IMODE((tmp_path / "alerts").stat().st_mode) == 0o700
        store.close()
    finally:
        os.umask(old)


def test_an_outbox_an_older_version_left_world_readable_is_narrowed(tmp_path: Path) -> None:
    path = tmp_path / "alerts.sqlite"
    Store(path).close()
    for p in (path, tmp_path / "alerts.sqlite-wal", tmp_path / "alerts.sqlite-shm"):
        p.touch()
        p.chmod(0o644)
    store = Store(path)
    try:
        for p in (path, tmp_path / "alerts.sqlite-wal", tmp_path / "alerts.sqlite-shm"):
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p.name
    finally:
        store.close()
