"""Hand-over to the city's platform (docs/handover.md): every stage change pushed once, signed,
with its idempotent id; the platform drives dispatch, feedback and check through
``POST /cases/stage`` with a personal token, and malformed or forged input is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from alerts.service import AlertsService
from contract.handover import FORMAT, stage_change_id
from contract.topics import KafkaTopics
from registry.devices import load_registry
from registry.officer_tokens import TokenStore
from streams.harness import T0, M, Run
from tests.alerts.standins import FakeClock, HttpStandIn, async_wait_for
from tests.kit.kafka import read_topic
from tests.kit.routes import handover_routes


def _walk() -> Run:
    """A real case's events from the detector: filed, dispatched, handled, a failed check, ..."""
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.act("feedback", "MH-MAIN", T0 + 10 * M, note="已更换", photos=("oss://p/1.jpg",))
    run.act("check", "MH-MAIN", T0 + 20 * M, officer="insp-01", passed=False)
    run.read("MH-MAIN", T0 + 30 * M, open=False)
    return run


def test_every_stage_change_is_pushed_once_signed_with_its_id(
    settings, tmp_path, server, hook
) -> None:
    run = _walk()
    svc = AlertsService(settings, handover_routes(tmp_path, server.url, hook.url), tmp_path / "state",
                        clock=FakeClock(), http_port=-1)  # fmt: skip
    events = [e.to_dict() for e in run.events]
    history = events[-1]["detail"]["workflow"]["history"]
    changes = [c["change"] for c in history]
    assert changes == ["filed", "dispatched", "handled", "check_failed", "dispatched",
                       "checked", "closed", "evaluated"]  # fmt: skip

    async def go() -> None:
        for ev in events + events[::-1]:  # twice, the second time newest first: Kafka redelivers
            svc.on_case_event(ev)
        await async_wait_for(lambda: len(hook.delivered) >= len(changes), 5, "the stage pushes",
                             tick=svc.tick)  # fmt: skip
        await asyncio.sleep(0.3)
        svc.tick()
        await svc.close()

    asyncio.run(go())
    assert hook.refused == []  # every push verified with the shared secret
    pushed = [s.json() for s in hook.seen]
    case_id = events[0]["case_id"]
    assert [p["id"] for p in pushed] == [stage_change_id(case_id, c) for c in history]
    assert [s.headers["Idempotency-Key"] for s in hook.seen] == [p["id"] for p in pushed]
    assert all(p["format"] == FORMAT and p["type"] == "stage" for p in pushed)
    handled = pushed[2]["stage"]
    assert handled["change_name"] == "处置反馈" and handled["photos"] == ["oss://p/1.jpg"]
    assert handled["at_local"].endswith("+08:00")
    filed = pushed[0]["case"]
    assert (filed["component_code"], filed["component_category_name"]) == ("0102", "公用设施")
    assert pushed[-1]["case"]["evaluation"] == "reworked" and pushed[-1]["case"]["reworks"] == 1


def test_a_handover_receiver_the_file_does_not_define_is_refused_by_name(tmp_path) -> None:
    from alerts.route import load_routes
    from foundation.errors import ConfigError

    p = handover_routes(tmp_path, "http://a.example/x", "http://b.example/y")
    p.write_text(p.read_text(encoding="utf-8").replace("{receiver: platform}", "{receiver: platfrom}"),
                 encoding="utf-8")  # fmt: skip
    with pytest.raises(ConfigError) as err:
        load_routes(p)
    assert "handover.receiver: unknown receiver 'platfrom'" in str(err.value)
    assert "did you mean 'platform'" in str(err.value)


@pytest.mark.services
def test_the_platform_drives_stages_with_a_token_and_bad_input_is_refused(
    settings, registry_file, unique, tmp_path
) -> None:
    s = settings.replace("paths", registry=str(registry_file))
    mh = f"MH-{unique}-1"  # jinshui
    store = TokenStore(Path(s.paths.state_dir) / "officers")
    grid, info = store.issue("JS-GRID-01")
    duty, _ = store.issue("JS-DUTY-01")
    sink = HttpStandIn(ok_body={"ok": True})

    async def go() -> list[tuple[int, dict]]:
        import aiohttp

        svc = AlertsService(s, handover_routes(tmp_path, sink.url, sink.url), tmp_path / "state",
                            registry=load_registry(s.paths.registry), http_port=0,
                            http_host="127.0.0.1")  # fmt: skip
        stop = asyncio.Event()
        task = asyncio.create_task(svc.run(stop))
        try:
            for _ in range(200):
                if svc.http is not None and svc.http.port:
                    break
                await asyncio.sleep(0.05)
            url = f"http://127.0.0.1:{svc.http.port}/cases/stage"
            out = []
            async with aiohttp.ClientSession() as http:
                for token, body in (
                    (grid, {"action": "feedback", "device": mh, "note": "已更换井盖",
                            "photos": ["https://oss.example/p/1.jpg"]}),
                    (grid, {"action": "check", "device": mh, "passed": False, "note": "仍缺失"}),
                    (grid, {"action": "check", "device": mh}),  # no result
                    (grid, {"action": "extend", "device": mh}),  # not the platform's
                    (grid, {"action": "feedback", "device": mh, "note": "x", "officer": "JS-SUP-01"}),
                    (grid, {"action": "feedback", "device": mh, "note": "x", "photos": "p.jpg"}),
                    (grid, {"action": "feedback", "device": mh}),  # no report
                    (duty, {"action": "feedback", "device": mh, "note": "x"}),  # not a duty act
                    ("cwo_00000000_" + "A" * 43, {"action": "dispatch", "device": mh}),  # forged
                ):  # fmt: skip
                    headers = {"Authorization": f"Bearer {token}"}
                    async with http.post(url, json=body, headers=headers) as r:
                        out.append((r.status, await r.json()))
                async with http.post(
                    url, data=b"{not json", headers={"Authorization": f"Bearer {grid}"}
                ) as r:
                    out.append((r.status, await r.json()))
                async with http.post(url, json={"action": "dispatch", "device": mh}) as r:
                    out.append((r.status, await r.json()))  # no token at all
            return out
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)

    try:
        out = asyncio.run(go())
    finally:
        sink.close()
    assert [code for code, _ in out] == [200, 200, 400, 400, 400, 400, 400, 403, 401, 400, 401]
    errors = [body.get("error", "") for _, body in out]
    assert "a check needs passed: true or false" in errors[2]
    assert "action must be one of dispatch, feedback, check" in errors[3]
    assert "the token says who acts" in errors[4]
    assert "photos: a list of at most 20 references" in errors[5]
    assert "a feedback needs note" in errors[6]
    assert "JS-DUTY-01 may not feedback" in errors[7]
    assert out[0][1]["action"]["photos"] == ["https://oss.example/p/1.jpg"]
    topics = KafkaTopics(s.kafka.topic_prefix)
    acks = asyncio.run(read_topic(s.kafka.bootstrap, topics.acks, 2, 5))
    assert [(a["action"], a["officer"], a["channel"], a["credential"], a.get("passed")) for a in acks] == [
        ("feedback", "JS-GRID-01", "api", f"token:{info.token_id}", None),
        ("check", "JS-GRID-01", "api", f"token:{info.token_id}", False),
    ]  # fmt: skip
    audit = asyncio.run(read_topic(s.kafka.bootstrap, topics.audit, 4, 5))
    assert sorted((a["action"], a["outcome"]) for a in audit) == [
        ("check", "accepted"), ("dispatch", "refused"), ("feedback", "accepted"),
        ("feedback", "refused"),
    ]  # fmt: skip
    assert next(a for a in audit if a["action"] == "feedback" and a["outcome"] == "accepted")[
        "extra"
    ]["photos"] == ["https://oss.example/p/1.jpg"]


def test_a_stage_change_of_a_snapshot_older_than_the_latest_is_still_pushed(
    settings, tmp_path, server, hook
) -> None:
    """The case's last snapshot arrives first (another partition's order, a redelivery): the
    service keeps the newest snapshot for its pushes, but every stage change goes to the platform."""
    run = _walk()
    svc = AlertsService(settings, handover_routes(tmp_path, server.url, hook.url), tmp_path / "state",
                        clock=FakeClock(), http_port=-1)  # fmt: skip
    events = [e.to_dict() for e in run.events]
    history = events[-1]["detail"]["workflow"]["history"]

    async def go() -> None:
        for ev in [events[-1], *events[:-1]]:
            svc.on_case_event(ev)
        await async_wait_for(lambda: len(hook.delivered) >= len(history), 5, "the stage pushes",
                             tick=svc.tick)  # fmt: skip
        await svc.close()

    asyncio.run(go())
    case_id = events[0]["case_id"]
    assert sorted(s.json()["id"] for s in hook.delivered) == sorted(
        stage_change_id(case_id, c) for c in history
    )
