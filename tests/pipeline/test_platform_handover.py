"""The city's platform as the workflow of record, on the real pipeline (docs/handover.md): the
worker files and dispatches a stolen cover, the alerts service pushes each stage to the platform's
webhook (signed, idempotent ids), the platform answers with the unit's feedback and the
inspector's passing check through ``POST /cases/stage``, and their stages come back as pushes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from alerts.service import AlertsService
from contract.topics import KafkaTopics
from foundation.settings import Settings
from registry.devices import load_registry
from registry.officer_tokens import TokenStore
from streams import journal
from tests.alerts.standins import HOOK_SECRET, HttpStandIn
from tests.kit.kafka import read_topic_sync
from tests.kit.procs import Proc
from tests.kit.routes import handover_routes

pytestmark = pytest.mark.services
M = 60_000
DELIVERY = "{retry_initial: 100ms, retry_max: 500ms, timeout: 1s}"
"""The routing's ``delivery`` here: a second to answer, the worker running beside the service."""


def test_the_platform_drives_a_case_to_its_end_and_hears_every_stage(
    settings: Settings, registry_file: Path, unique: str, tmp_path: Path
) -> None:
    s = settings.replace("paths", registry=str(registry_file))
    mh = f"MH-{unique}-1"  # jinshui, a main road: 2 h to repair
    reg = load_registry(s.paths.registry)
    t0 = time.time_ns() // 1_000_000 - 30 * M
    topic = f"city/jinshui/manhole/{mh}/telemetry"
    opening = [{"topic": topic, "payload": {"ts": t0, "open": True}, "received_at": t0},
               {"watermark": t0 + M}]  # fmt: skip
    asyncio.run(journal.load(opening, reg, s.kafka.bootstrap, s.kafka.topic_prefix,
                             final_watermark=False))  # fmt: skip
    token, _ = TokenStore(Path(s.paths.state_dir) / "officers").issue("JS-GRID-01")
    officers = HttpStandIn(ok_body={"ok": True})
    platform = HttpStandIn(ok_body={"ok": True}, dedup_header="Idempotency-Key",
                           signing_secret=HOOK_SECRET)  # fmt: skip
    worker = Proc(["worker", "--simulation", "--session-timeout", "3"], s, tmp_path / "worker.log")

    def stages() -> list[str]:
        return [d.json()["stage"]["change"] for d in platform.delivered]

    async def until(want: list[str], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while stages()[: len(want)] != want:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not pushed within {timeout}s (got {stages()})")
            await asyncio.sleep(0.2)

    async def go() -> list[tuple[int, dict]]:
        svc = AlertsService(s, handover_routes(tmp_path, officers.url, platform.url, DELIVERY), tmp_path / "alerts",
                            registry=reg, http_port=0, http_host="127.0.0.1")  # fmt: skip
        stop = asyncio.Event()
        task = asyncio.create_task(svc.run(stop))
        answers = []
        try:
            await until(["filed", "dispatched"], "filed and dispatched")
            url = f"http://127.0.0.1:{svc.http.port}/cases/stage"
            headers = {"Authorization": f"Bearer {token}"}
            async with aiohttp.ClientSession(headers=headers) as http:
                body = {"action": "feedback", "device": mh, "note": "已更换井盖",
                        "photos": ["https://szcg.example/p/9.jpg"]}  # fmt: skip
                async with http.post(url, json=body) as r:
                    answers.append((r.status, await r.json()))
                await until(["filed", "dispatched", "handled"], "the feedback")
                body = {"action": "check", "device": mh, "passed": True, "note": "现场核查已修复"}
                async with http.post(url, json=body) as r:
                    answers.append((r.status, await r.json()))
                await until(["filed", "dispatched", "handled", "checked", "closed", "evaluated"],
                            "the check and the close")  # fmt: skip
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)
        return answers

    try:
        answers = asyncio.run(go())
    finally:
        worker.stop()
        officers.close()
        platform.close()
    assert [code for code, _ in answers] == [200, 200], answers
    assert platform.refused == []  # every push signed with the shared secret
    pushed = [d.json() for d in platform.delivered]
    case_id = pushed[0]["case"]["case_id"]
    assert [p["id"] for p in pushed] == [f"{case_id}:{p['stage']['change']}:{p['stage']['at']}"
                                         for p in pushed]  # fmt: skip
    assert pushed[2]["stage"]["photos"] == ["https://szcg.example/p/9.jpg"]
    assert pushed[2]["stage"]["by"] == "officer:JS-GRID-01"
    assert pushed[-1]["case"]["evaluation"] == "on_time" and pushed[-1]["case"]["state"] == "closed"
    penalties = KafkaTopics(s.kafka.topic_prefix).penalties
    assert [
        r for r in read_topic_sync(s.kafka.bootstrap, penalties, 0, 1) if r["device"] == mh
    ] == []
