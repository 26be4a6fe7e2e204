"""alerts/message.py through the service: Chinese first, place, time, the clock, the money and a signed link."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

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
