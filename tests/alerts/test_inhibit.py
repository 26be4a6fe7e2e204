"""Inhibition through the service (in-process, controlled clock, loopback webhooks): an open case that
explains others mutes their pushes, and only theirs; when it is over the muted cases still open are told."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from alerts.inhibit import Inhibitor, InhibitRule
from alerts.matchers import parse_matcher
from alerts.route import load_routes, parse_routes
from alerts.service import AlertsService
from foundation.errors import ConfigError
from foundation.settings import Settings
from registry.devices import load_registry
from tests.alerts.inprocess import MIN, cases_of, routes, settle
from tests.alerts.standins import T0, FakeClock, HttpStandIn, case_event

ROOT = Path(__file__).resolve().parents[2]

REGISTRY = """\
device_id,kind,district,grid,unit,road_class,address,lat,lon,pm10_warning,pm10_violation,component_code,cabinet,circuit
SL-0001,streetlight,jinshui,JS-G07,郑州市城市照明灯饰管理处,main,花园路1号,,,,,0118,KX-JS-01,L1
SL-0002,streetlight,jinshui,JS-G07,郑州市城市照明灯饰管理处,main,花园路2号,,,,,0118,KX-JS-01,L1
SL-0003,streetlight,jinshui,JS-G07,郑州市城市照明灯饰管理处,main,花园路3号,,,,,0118,KX-JS-01,L2
SL-0004,streetlight,jinshui,JS-G07,郑州市城市照明灯饰管理处,main,花园路4号,,,,,0118,KX-JS-02,L1
MH-0005,manhole,jinshui,JS-G07,郑州市市政工程管理处,main,花园路5号,,,,,0102,,
"""


def svc_with_rules(
    settings: Settings, tmp_path: Path, hooks: list[HttpStandIn], clock: FakeClock
) -> AlertsService:
    """The in-process service with the shipped inhibit_rules and a registry of lamps on cabinets."""
    path = routes(tmp_path, *(h.url for h in hooks))
    shipped = (ROOT / "config" / "routes.yaml").read_text(encoding="utf-8")
    rules = shipped[shipped.index("inhibit_rules:") : shipped.index("\nnotify:")]
    path.write_text(path.read_text(encoding="utf-8") + rules, encoding="utf-8")
    reg = tmp_path / "registry.csv"
    reg.write_text(REGISTRY, encoding="utf-8")
    return AlertsService(settings, path, tmp_path / "state", clock=clock, http_port=-1,
                         registry=load_registry(reg))  # fmt: skip


def lamp(n: int, **kw: object) -> dict:
    return case_event(n, rule="streetlight.fault", **kw)  # type: ignore[arg-type]


def circuit_case(state: str = "open", at: int = T0) -> dict:
    """A circuit case as the detector tells it: under its first dark lamp, the circuit in its detail."""
    return case_event(1, rule="streetlight.circuit", severity="major", state=state, at=at, opened_at=T0,
                      case_id=f"streetlight.circuit:KX-JS-01/L1:{T0}",
                      detail={"cabinet": "KX-JS-01", "circuit": "L1", "dark_lamps": ["SL-0001", "SL-0002"]})  # fmt: skip


def inhibited(svc: AlertsService) -> list[tuple[str, str, str | None]]:
    return [(r["cases"][0]["case_id"], r["cases"][0]["change"], r["inhibited_by"])
            for r in svc.records if r["status"] == "inhibited"]  # fmt: skip


async def quiet(svc: AlertsService) -> None:
    for _ in range(5):
        svc.tick()
        await asyncio.sleep(0.05)


def test_an_open_circuit_case_inhibits_the_lamp_faults_of_its_circuit_only(
    settings: Settings, tmp_path: Path, hooks: list[HttpStandIn]
) -> None:
    """Lamps 1 and 2 hang on KX-JS-01 L1, dark with their circuit: their faults are muted (recorded,
    naming the circuit case) while the circuit case is pushed. Lamp 3 (the same cabinet's L2) and
    lamp 4 (another cabinet), in the same district, are pushed. When the circuit case is repaired,
    lamp 2 still dark is told once; lamp 1, repaired with it, is not."""
    clock = FakeClock()
    grid = hooks[0]
    circuit = circuit_case()

    async def go() -> AlertsService:
        svc = svc_with_rules(settings, tmp_path, hooks, clock)
        try:
            svc.accept([("cases", circuit)] + [("cases", lamp(i)) for i in (1, 2, 3, 4)])
            await settle(svc, hooks, 2)  # the circuit case; lamps 3 and 4 (grouped by district)
            await quiet(svc)
            clock.advance(20 * MIN)
            svc.accept([("cases", lamp(1, state="repaired", at=clock.now, opened_at=T0)),
                        ("cases", circuit_case("repaired", clock.now))])  # fmt: skip
            await settle(svc, hooks, 4)
            await quiet(svc)
            return svc
        finally:
            await svc.close()

    svc = asyncio.run(go())
    cid = circuit["case_id"]
    pushed = [c for push in cases_of(grid) for c in push]
    assert (cid, "open") in pushed and (cid, "repaired") in pushed
    assert (lamp(3)["case_id"], "open") in pushed and (lamp(4)["case_id"], "open") in pushed
    assert (lamp(2)["case_id"], "uninhibited") in pushed
    assert not any(c == lamp(1)["case_id"] for c, _ in pushed)
    assert len(pushed) == 5
    # lamp 1's repaired arrived with the circuit's: the circuit was still open when it was judged
    assert sorted(inhibited(svc)) == sorted([(lamp(1)["case_id"], "open", cid), (lamp(2)["case_id"], "open", cid),
                                             (lamp(1)["case_id"], "repaired", cid)])  # fmt: skip
    told = next(p for p in grid.delivered if "uninhibited" in str(p.json()))
    assert "关联案件已结束，本案仍未处置" in told.json()["title"]


def test_an_offline_device_inhibits_its_minor_cases_but_not_its_cover_case(
    settings: Settings, tmp_path: Path, hooks: list[HttpStandIn]
) -> None:
    """A cover sensor gone offline: its battery warning is muted, its cover case (money) is pushed,
    and the offline case itself is pushed."""
    clock = FakeClock()
    grid = hooks[0]
    offline = case_event(5, rule="offline", device="MH-0005")
    battery = case_event(5, rule="manhole.battery_low", device="MH-0005", severity="minor")
    cover = case_event(5, rule="manhole", device="MH-0005")
    other = case_event(6, rule="manhole.battery_low", device="MH-0006", severity="minor")

    async def go() -> AlertsService:
        svc = svc_with_rules(settings, tmp_path, hooks, clock)
        try:
            svc.accept([("cases", offline), ("cases", battery), ("cases", cover), ("cases", other)])
            await settle(svc, hooks, 3)
            await quiet(svc)
            return svc
        finally:
            await svc.close()

    svc = asyncio.run(go())
    pushed = sorted(c for push in cases_of(grid) for c in push)
    assert pushed == sorted(
        [(offline["case_id"], "open"), (cover["case_id"], "open"), (other["case_id"], "open")]
    )
    assert inhibited(svc) == [(battery["case_id"], "open", offline["case_id"])]


def test_a_case_matching_both_sides_is_muted_only_by_a_source_that_is_not_also_a_target() -> None:
    """Alertmanager's rule: two cases of one kind never mute each other, and no case mutes itself."""
    rule = InhibitRule(
        (parse_matcher("severity=major"),), (parse_matcher("district=jinshui"),), ("district",)
    )
    inh = Inhibitor([rule])
    a = {"severity": "major", "district": "jinshui"}
    inh.update("a", a, True)
    assert inh.muted_by("a", a) is None
    inh.update("b", {"severity": "major", "district": "jinshui"}, True)
    assert inh.muted_by("a", a) is None  # b matches the target side too
    inh.update("c", {"severity": "major", "district": "jinshui", "grid": "x"}, True)
    assert inh.muted_by("a", a) is None
    # a minor jinshui case is muted by any of them; when all are over, by none
    minor = {"severity": "minor", "district": "jinshui"}
    assert inh.muted_by("m", minor) == (rule, "a")
    for cid in ("a", "b", "c"):
        inh.update(cid, {}, False)
    assert inh.muted_by("m", minor) is None and not inh.firing("a")


def test_the_shipped_routes_hold_the_default_inhibit_rules() -> None:
    config = load_routes(ROOT / "config" / "routes.yaml")
    assert [(tuple(map(str, r.source)), tuple(map(str, r.target)), r.equal) for r in config.inhibit_rules] == [
        (('rule="streetlight.circuit"',), ('rule="streetlight.fault"',), ("cabinet", "circuit")),
        (('rule="offline"',), ('rule!="offline"', 'severity=~"info|warning|minor"'), ("device",)),
    ]  # fmt: skip


BASE = "receivers:\n  - {name: a, console: {}}\nroute: {receiver: a}\ninhibit_rules:\n"


@pytest.mark.parametrize(
    ("rules", "error"),
    [
        ("  - {source_match: {rule: offline}, target_matchers: ['rule=x']}",
         "inhibit_rules[0].source_match: write source_matchers as a list of matchers instead"),
        ("  - {source_matchers: ['rule=offline']}", "inhibit_rules[0].target_matchers: missing (required)"),
        ("  - {source_matchers: ['rul=offline'], target_matchers: ['rule=x']}",
         "inhibit_rules[0].source_matchers[0]: unknown label 'rul'; did you mean 'rule'?"),
        ("  - {source_matchers: ['rule=offline'], target_matchers: ['rule=x'], equal: [devce]}",
         "inhibit_rules[0].equal[0]: unknown label 'devce'; did you mean 'device'?"),
        ("  - {source_matchers: ['rule=offline'], target_matchers: ['rule=~\"(\"']}", "not a regular expression"),
        ("  - {source_matchers: ['rule=offline'], target_matchers: ['rule=x'], equals: [device]}",
         "inhibit_rules[0].equals: unknown key; did you mean 'equal'?"),
    ],
)  # fmt: skip
def test_a_mistake_in_an_inhibit_rule_is_refused_at_its_line(rules: str, error: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_routes(BASE + rules + "\n", "routes.yaml")
    assert str(exc.value).startswith("routes.yaml:5:") and error in str(exc.value)
