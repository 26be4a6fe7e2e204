"""Silences through the service (in-process, controlled clock, loopback webhooks): pushes muted and
recorded, the case, its escalation and its money untouched, the end of a silence told once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from alerts.matchers import MatcherError, parse_matcher
from alerts.service import AlertsService
from alerts.silence import Silence, SilenceError, Silences, expire, new_silence, scope
from foundation.settings import Settings
from tests.alerts.inprocess import MIN, cases_of, service, settle
from tests.alerts.standins import T0, FakeClock, HttpStandIn, case_event, hour_entry

H = 60 * MIN


def silence(
    clock: FakeClock, *matchers: str, hours: float = 4, start: int | None = None
) -> Silence:
    return new_silence(matchers, created_by="JS-SUP-01", comment="井盖更换施工 cover works",
                       now_ms=clock.now, ends_at=(start or clock.now) + int(hours * H), starts_at=start)  # fmt: skip


def muted(svc: AlertsService) -> list[tuple[str, str, str, str]]:
    """(case_id, change, status, detail) of every notice recorded as muted, in order."""
    return [(r["cases"][0]["case_id"], r["cases"][0]["change"], r["status"], r["detail"])
            for r in svc.records if r["status"] in ("silenced", "inhibited")]  # fmt: skip


async def quiet(svc: AlertsService) -> None:
    """Let due groups flush and deliveries run, when nothing (more) is expected to arrive."""
    for _ in range(5):
        svc.tick()
        await asyncio.sleep(0.05)


def test_a_silenced_case_is_not_pushed_and_keeps_its_clock(settings: Settings, tmp_path: Path,
                                                          hooks: list[HttpStandIn]) -> None:  # fmt: skip
    """A silence on jinshui's covers: its case's open, escalation and overdue notices are recorded as
    silenced and pushed to nobody, while the same case in erqi is pushed; both cases' escalation
    progress and money are the same, and the silenced notices are not restored after a restart."""
    clock = FakeClock()
    grid, duty, command = hooks
    quiet_one = case_event(1, district="jinshui")
    loud_one = case_event(2, district="erqi", grid="EQ-G03")
    s = silence(clock, "district=jinshui", "kind=manhole")

    async def go() -> tuple[AlertsService, dict[str, object]]:
        svc = service(settings, tmp_path, hooks, clock=clock)
        try:
            svc.accept([("silences", s.to_dict()), ("cases", quiet_one), ("cases", loud_one)])
            await settle(svc, hooks, 1)
            clock.advance(30 * MIN)  # major: the district duty officer's level falls due for both
            await settle(svc, hooks, 2)
            clock.advance(2 * H + 30 * MIN)  # 3 h after opening: the second hour past the deadline
            svc.accept([("penalties", hour_entry(quiet_one, k)) for k in (1, 2)]
                       + [("penalties", hour_entry(loud_one, k)) for k in (1, 2)])  # fmt: skip
            await settle(svc, hooks, 5)  # loud: command level (2 h), overdue to grid and duty
            await quiet(svc)
            kept = {cid: (svc.cases[cid].escalation, svc.cases[cid].yuan, svc.cases[cid].snapshot["state"])
                    for cid in (quiet_one["case_id"], loud_one["case_id"])}  # fmt: skip
            return svc, kept
        finally:
            await svc.close()

    svc, kept = asyncio.run(go())
    pushed = [c for h in hooks for push in cases_of(h) for c in push]
    assert all(cid == loud_one["case_id"] for cid, _ in pushed)
    assert cases_of(duty) == [
        [(loud_one["case_id"], "escalation")],
        [(loud_one["case_id"], "overdue")],
    ]
    assert cases_of(command) == [[(loud_one["case_id"], "escalation")]]
    # the silenced case's notices: each recorded, with the silence that muted it
    q = quiet_one["case_id"]
    by = f"silenced by {s.id}"
    assert sorted(muted(svc)) == sorted([
        (q, "open", "silenced", by),
        (q, "escalation", "silenced", by),  # duty's level, 30 min
        (q, "escalation", "silenced", by),  # command's, 2 h
        (q, "overdue", "silenced", by),  # to grid
        (q, "overdue", "silenced", by),  # to duty: the level was reached while silenced
    ])  # fmt: skip
    assert all(r["silenced_by"] == [s.id] for r in svc.records if r["status"] == "silenced")
    # the clock and the case: exactly as the pushed one's (levels reached, money counted, state)
    assert kept[q] == kept[loud_one["case_id"]]
    assert kept[q] == ({"root": {"level": 2, "reminders": 0}}, 20_000, "open")
    # a restart restores no silenced notice as one still to push
    again = AlertsService(
        settings, tmp_path / "routes.yaml", tmp_path / "state", clock=clock, http_port=-1
    )
    try:
        assert again.store.pending_notices() == []
        assert again.silences.by_id[s.id] == s
    finally:
        asyncio.run(again.close())


def test_an_expired_silence_lets_the_next_notice_through(settings: Settings, tmp_path: Path,
                                                        hooks: list[HttpStandIn]) -> None:  # fmt: skip
    """Expired early (a new version of the silence on the topic), the silence lets go: the case still
    open is told once that the silence is over, and its next notice is pushed as ever. The notices
    it muted are not re-sent one by one."""
    clock = FakeClock()
    grid, duty, _ = hooks
    case = case_event(1, detail={"acknowledged_at": None})
    s = silence(clock, "device=MH-0001")

    async def go() -> AlertsService:
        svc = service(settings, tmp_path, hooks, clock=clock)
        try:
            svc.accept([("silences", s.to_dict()), ("cases", case)])
            await quiet(svc)
            assert grid.delivered == [] and [m[1] for m in muted(svc)] == ["open"]
            clock.advance(10 * MIN)
            ended = expire(s, "JS-SUP-01", clock.now)
            assert ended is not None
            svc.accept([("silences", ended.to_dict())])
            await settle(svc, hooks, 1)
            clock.advance(25 * MIN)  # 35 min: the duty officer's level, pushed as ever
            await settle(svc, hooks, 2)
            clock.advance(2 * H + 25 * MIN)  # the next notice: the second hour past the deadline
            svc.accept([("penalties", hour_entry(case, 2))])
            await settle(svc, hooks, 5)  # overdue to grid and duty, command's level (2 h)
            await quiet(svc)
            return svc
        finally:
            await svc.close()

    svc = asyncio.run(go())
    cid = case["case_id"]
    assert cases_of(grid) == [[(cid, "unsilenced")], [(cid, "overdue")]]
    assert cases_of(duty) == [[(cid, "escalation")], [(cid, "overdue")]]
    title = grid.delivered[0].json()["title"]
    assert "静默已结束，案件仍未处置" in title and "silence over, still open" in title
    assert [m[1] for m in muted(svc)] == ["open"]  # muted once, never re-sent as "open"


def test_a_silence_that_runs_out_tells_only_the_cases_still_open_and_unacknowledged(
    settings: Settings, tmp_path: Path, hooks: list[HttpStandIn]
) -> None:
    """At its end a silence re-evaluates what it muted: an open case is told, a repaired one and an
    acknowledged one are not (somebody already has them), and a case it never muted is not either."""
    clock = FakeClock()
    grid = hooks[0]
    still_open, repaired, acked = (case_event(i, rule="streetlight.fault") for i in (1, 2, 3))
    elsewhere = case_event(4, rule="streetlight.fault", district="erqi")
    s = silence(clock, "district=jinshui", "rule=streetlight.fault", hours=1)

    async def go() -> None:
        svc = service(settings, tmp_path, hooks, clock=clock)
        try:
            svc.accept([("silences", s.to_dict()), ("cases", still_open), ("cases", repaired), ("cases", acked),
                        ("cases", elsewhere)])  # fmt: skip
            await settle(svc, hooks, 1)
            clock.advance(20 * MIN)
            svc.accept([
                ("cases", case_event(2, rule="streetlight.fault", state="repaired", at=clock.now, opened_at=T0)),
                ("cases", case_event(3, rule="streetlight.fault", state="acknowledged", at=clock.now, opened_at=T0,
                                     detail={"acknowledged_at": clock.now})),
            ])  # fmt: skip
            await quiet(svc)
            clock.advance(40 * MIN - 1)
            await quiet(svc)
            assert len(grid.delivered) == 1  # elsewhere's open, nothing else yet
            clock.advance(1)  # the silence's end
            await settle(svc, hooks, 2)
            clock.advance(5 * MIN)
            await quiet(svc)
        finally:
            await svc.close()

    asyncio.run(go())
    assert cases_of(grid) == [
        [(elsewhere["case_id"], "open")],
        [(still_open["case_id"], "unsilenced")],
    ]


def test_a_pending_silence_mutes_nothing_until_it_starts(settings: Settings, tmp_path: Path,
                                                        hooks: list[HttpStandIn]) -> None:  # fmt: skip
    clock = FakeClock()
    grid = hooks[0]
    s = silence(clock, "district=jinshui", start=T0 + H)

    async def go() -> AlertsService:
        svc = service(settings, tmp_path, hooks, clock=clock)
        try:
            svc.accept(
                [("silences", s.to_dict()), ("cases", case_event(1, rule="streetlight.fault"))]
            )
            await settle(svc, hooks, 1)
            clock.advance(H)
            svc.accept([("cases", case_event(2, rule="streetlight.fault", at=clock.now))])
            await quiet(svc)
            return svc
        finally:
            await svc.close()

    svc = asyncio.run(go())
    assert cases_of(grid) == [[(case_event(1, rule="streetlight.fault")["case_id"], "open")]]
    assert [m[:3] for m in muted(svc)] == [(case_event(2, rule="streetlight.fault", at=T0 + H)["case_id"], "open",
                                             "silenced")]  # fmt: skip


def test_silences_and_what_they_muted_survive_a_restart(settings: Settings, tmp_path: Path,
                                                       hooks: list[HttpStandIn]) -> None:  # fmt: skip
    """The outbox keeps the silences and which cases they muted: a restarted service mutes before
    the topic was read again, and still tells the muted case when the silence ends."""
    clock = FakeClock()
    grid = hooks[0]
    s = silence(clock, "district=jinshui", hours=1)

    async def first() -> None:
        svc = service(settings, tmp_path, hooks, clock=clock)
        try:
            svc.accept(
                [("silences", s.to_dict()), ("cases", case_event(1, rule="streetlight.fault"))]
            )
            await quiet(svc)
        finally:
            await svc.close()

    async def second() -> AlertsService:
        svc = AlertsService(
            settings, tmp_path / "routes.yaml", tmp_path / "state", clock=clock, http_port=-1
        )
        try:
            svc.accept([("cases", case_event(2, rule="streetlight.fault", at=clock.now))])
            await quiet(svc)
            assert grid.delivered == []
            clock.advance(H)
            await settle(svc, hooks, 1)
            return svc
        finally:
            await svc.close()

    asyncio.run(first())
    svc = asyncio.run(second())
    told = sorted(c for push in cases_of(grid) for c in push)
    assert told == sorted(
        (case_event(i, rule="streetlight.fault", at=T0)["case_id"], "unsilenced") for i in (1, 2)
    )
    assert [m[1] for m in muted(svc)] == ["open"]


# ---------------------------------------------------------------------- the silence itself


def test_a_silence_is_checked_as_alertmanager_checks_one() -> None:
    now = T0

    def make(*matchers: str, comment: str | None = "检修", hours: float = 1) -> Silence:
        return new_silence(
            matchers, created_by="x", comment=comment, now_ms=now, ends_at=now + int(hours * H)
        )

    with pytest.raises(SilenceError, match="at least one matcher"):
        make()
    with pytest.raises(SilenceError, match="mute every case of the city"):
        make('district=~".*"', "grid!=JS-G07")
    with pytest.raises(SilenceError, match="comment"):
        make("district=jinshui", comment="  ")
    with pytest.raises(SilenceError, match="before it starts"):
        make("district=jinshui", hours=0)
    with pytest.raises(SilenceError, match="unknown label 'distric'; did you mean 'district'"):
        make("distric=jinshui")
    s = make('rule="streetlight.fault"', 'severity=~"minor|warning"', "grid!=JS-G07")
    assert s.mutes({"rule": "streetlight.fault", "severity": "minor", "grid": "JS-G01"})
    assert not s.mutes(
        {"rule": "streetlight.fault", "severity": "minority", "grid": "JS-G01"}
    )  # anchored
    assert not s.mutes({"rule": "streetlight.fault", "severity": "minor", "grid": "JS-G07"})
    assert Silence.from_dict(s.to_dict()) == s
    # expiry: an active silence ends now, a pending one starts and ends now, an ended one stays
    assert expire(s, "y", now + MIN) == Silence(**{**s.__dict__, "ends_at": now + MIN, "updated_at": now + MIN,
                                                   "expired_by": "y"})  # fmt: skip
    later = new_silence(["district=jinshui"], created_by="x", comment="c", now_ms=now, ends_at=now + 3 * H,
                        starts_at=now + H)  # fmt: skip
    gone = expire(later, "y", now + MIN)
    assert gone is not None and (gone.starts_at, gone.ends_at) == (now + MIN, now + MIN)
    assert expire(s, "y", now + 2 * H) is None
    # the latest version wins, whatever order the topic gives them in
    known = Silences([expire(s, "y", now + MIN), s])  # type: ignore[list-item]
    assert known.by_id[s.id].ends_at == now + MIN


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("district", "expected label, operator and value"),
        ('rule="streetlight.fault', "no closing double quote"),
        ('rule="a"b"', "needs a backslash"),
        ("rule=~(", "not a regular expression"),
        ("unit=" + "x" * 201, "at most 200"),
        ("unit=a\tb", "control characters"),
    ],
)
def test_a_matcher_that_cannot_be_read_says_what_is_wrong(text: str, error: str) -> None:
    with pytest.raises(MatcherError, match=error):
        parse_matcher(text)


def test_matchers_read_like_amtool_writes_them() -> None:
    m = parse_matcher(r'unit="郑州市\"市政\"处"')
    assert (m.name, m.op, m.value) == ("unit", "=", '郑州市"市政"处') and parse_matcher(str(m)) == m
    assert parse_matcher("device !~ SL-JS-00..").matches({"device": "SL-JS-0100"})
    assert not parse_matcher("device!~SL-JS-00..").matches({"device": "SL-JS-0012"})
    assert parse_matcher("cabinet=").matches_empty


def test_a_silence_is_confined_by_its_district_or_its_devices_district() -> None:
    def make(*m: str) -> Silence:
        return new_silence(m, created_by="x", comment="c", now_ms=T0, ends_at=T0 + H)

    where = {"MH-JS-0001": "jinshui", "MH-EQ-0001": "erqi"}.get
    assert scope(make("district=jinshui", "rule=manhole"), where) == ("jinshui",)
    assert scope(make("device=MH-EQ-0001"), where) == ("erqi",)
    assert scope(make("device=MH-XX-0001"), where) is None  # a device the registry does not know
    assert scope(make('district=~"jinshui|erqi"'), where) is None  # a regex confines nothing
    assert scope(make("district!=jinshui", "rule=manhole"), where) is None
