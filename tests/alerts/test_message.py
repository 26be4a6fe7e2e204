"""alerts/message.py through the service: Chinese first, place, time, the clock, the money and a signed link."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from alerts.http import verify
from alerts.service import AlertsService
from foundation.settings import Settings
from registry.devices import load_registry
from tests.alerts.inprocess import MIN, routes, settle
from tests.alerts.standins import T0, FakeClock, HttpStandIn, case_event, hour_entry


def test_the_message_is_chinese_first_with_place_time_clock_and_a_signed_link(
    settings: Settings, tmp_path: Path, hooks: list[HttpStandIn], registry_file: Path
) -> None:
    clock = FakeClock(T0 + 3 * 3_600_000 + 5 * MIN)  # 1 h 5 min past a 2-hour deadline
    reg = load_registry(registry_file)
    dev = next(d for d in reg if d.kind == "manhole" and d.district == "jinshui")

    async def go() -> str:
        path = routes(tmp_path, *(h.url for h in hooks))
        svc = AlertsService(
            settings, path, tmp_path / "state", clock=clock, registry=reg, http_port=-1
        )
        case = case_event(
            1,
            device=dev.device_id,
            district="jinshui",
            grid=dev.grid,
            detail={"acknowledged_at": T0 + 1},
        )  # acknowledged: no escalation in this test
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
    assert (
        "2025-11-22 16:26（北京时间）" in text and "Since: 2025-11-22 16:26 (Asia/Shanghai)" in text
    )
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
    assert (
        params["action"] == "ack"
        and params["device"] == dev.device_id
        and params["officer"] == "JS-GRID-01"  # the directory's grid officer of jinshui
    )


# ---------------------------------------------------------------------- claim notices


def _claim_message(
    settings: Settings, tmp_path: Path, hooks: list[HttpStandIn], reason: str = "巡查记录：早已修复"
) -> dict:
    """The push of a supervisor's close backdated to the opening, as the real detector reports it."""
    import orjson

    from streams.harness import T0 as D0
    from streams.harness import Run

    run = Run()
    run.read("MH-MAIN", D0, open=True)
    run.act("ack", "MH-MAIN", D0 + MIN)
    run.tick(D0 + 12 * 3_600_000)
    run.act("close", "MH-MAIN", D0, officer="sup-jinshui", role="district_supervisor",
            reason=reason, recorded_at=D0 + 12 * 3_600_000 + MIN)  # fmt: skip
    claim_event = run.events[-1].to_dict()
    assert claim_event["detail"]["backdated_close_claim"]["status"] == "pending"

    async def go() -> list[dict]:
        path = routes(tmp_path, *(h.url for h in hooks))
        clock = FakeClock(D0 + 12 * 3_600_000 + 2 * MIN)
        from streams.harness import REG

        svc = AlertsService(
            settings, path, tmp_path / "state", clock=clock, http_port=-1, registry=REG
        )
        try:
            assert svc.accept([("cases", claim_event)]) == 2  # closed, and the claim
            await settle(svc, hooks, 1)
            rows = svc.store.db.execute("SELECT message FROM outbox").fetchall()
            return [orjson.loads(r[0]) for r in rows]
        finally:
            await svc.close()

    msgs = asyncio.run(go())
    return next(m for m in msgs if any(c["change"] == "claim" for c in m["data"]["cases"]))


def test_a_claim_notice_says_what_is_claimed_by_whom_what_it_would_reverse_and_how_to_decide(
    settings: Settings, tmp_path: Path, hooks: list[HttpStandIn]
) -> None:
    msg = _claim_message(settings, tmp_path, hooks)
    text, md = msg["text"], msg["markdown"]
    cid = f"manhole:MH-MAIN:{1763776800000}"
    assert "申报修复时间：2025-11-22 10:00（北京时间），sup-jinshui（区级督办）补记结案" in text
    assert "补记 12 小时 1 分钟，理由：巡查记录：早已修复" in text
    assert "如确认：冲销 10 小时，100,000 元（计时已于 2025-11-22 22:01 停止）" in text
    assert "须由 sup-jinshui 以外的督办确认" in text
    assert (
        "Claimed repair: 2025-11-22 10:00 (Asia/Shanghai), sup-jinshui (district supervisor) "
        "closed it backdated by 12 h 1 min, reason: 巡查记录：早已修复" in text
    )
    assert (
        "If confirmed: 10 h reversed, 100,000 yuan (the clock stopped at 2025-11-22 22:01)" in text
    )
    assert text.index("申报修复时间") < text.index("Claimed repair")
    for action in ("confirm_repair", "reject_repair"):
        command = f"citywatch case {action} MH-MAIN --case {cid}"
        assert text.count(command) == 2 and md.count(command) == 2  # in both languages
    # the decision links are made for the district's supervisor, whoever the push went to
    claim_item = next(c for c in msg["data"]["cases"] if c["change"] == "claim")
    assert (
        "action=confirm_repair" in claim_item["confirm_url"]
        and "officer=JS-SUP-01" in claim_item["confirm_url"]
    )
    assert claim_item["claim"]["kind"] == "close"
    assert md.index("修复时间待确认") < md.index("repair claim to decide")


def test_claim_links_are_signed_for_the_decision_when_the_endpoint_takes_it(
    settings: Settings, tmp_path: Path, hooks: list[HttpStandIn], monkeypatch: pytest.MonkeyPatch
) -> None:
    from urllib.parse import parse_qsl, urlsplit

    import alerts.http
    from alerts.route import load_routes

    assert {"confirm_repair", "reject_repair"} <= set(alerts.http.LINK_ACTIONS)
    msg = _claim_message(settings, tmp_path, hooks)
    cfg = load_routes(tmp_path / "routes.yaml").ack
    for label, action in (("Confirm", "confirm_repair"), ("Reject", "reject_repair")):
        link = re.search(rf"  {label}: (\S+)", msg["text"]).group(1)
        params = verify(cfg, dict(parse_qsl(urlsplit(link).query)), 1763776800000 + 12 * 3_600_000)
        assert (params["action"], params["device"]) == (action, "MH-MAIN")
        assert f"({link})" in msg["markdown"]


def test_an_officer_s_reason_is_quoted_as_plain_text(
    settings: Settings, tmp_path: Path, hooks: list[HttpStandIn]
) -> None:
    reason = "[点此确认](http://evil.example/x)\n## 已修复" + "长" * 300
    msg = _claim_message(settings, tmp_path, hooks, reason=reason)
    md = msg["markdown"]
    assert "](http://evil.example" not in md and "\n## 已修复" not in md
    assert "［点此确认］(http://evil.example/x) ## 已修复" in md  # shown, one line, no link
    quoted = re.search(r"理由：(.*)$", msg["text"], re.MULTILINE).group(1)
    assert len(quoted) <= 200 and quoted.endswith("…")
