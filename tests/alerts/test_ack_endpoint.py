"""The ack endpoint through the gate (alerts/http.py, alerts/gate.py; docs/officers.md):
links for one directory officer, once; the API for the officer whose personal token is
the bearer; malformed input 400, repeated failures 429; every attempt on the audit trail.
Real alerts service, real Kafka, the example officer directory."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import aiohttp
import pytest

from alerts.http import make_link
from alerts.service import AlertsService
from contract.topics import KafkaTopics
from foundation.settings import Settings
from registry.devices import load_registry
from registry.officer_tokens import TokenStore
from tests.alerts.standins import HOOK_SECRET, LINK_SECRET, HttpStandIn
from tests.kit.kafka import read_topic

pytestmark = pytest.mark.services


def _routes(tmp_path: Path, url: str) -> Path:
    p = tmp_path / "routes.yaml"
    p.write_text(
        f"""
receivers:
  - {{name: grid, roles: [grid], webhook: {{url: "{url}", secret: {HOOK_SECRET}, timeout: 1s}}}}
route: {{receiver: grid, group_by: [case_id], group_wait: 0s, group_interval: 0s, repeat_interval: 0s}}
ack: {{base_url: "http://127.0.0.1:1", secret: {LINK_SECRET}, link_ttl: 10m}}
""",
        encoding="utf-8",
    )
    return p


async def _run(settings: Settings, tmp_path: Path, hook: HttpStandIn, requests):  # noqa: ANN001
    reg = load_registry(settings.paths.registry)
    svc = AlertsService(settings, _routes(tmp_path, hook.url), tmp_path / "state", registry=reg,
                        http_port=0, http_host="127.0.0.1")  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    try:
        for _ in range(200):
            if svc.http is not None and svc.http.port:
                break
            await asyncio.sleep(0.05)
        base = f"http://127.0.0.1:{svc.http.port}"
        async with aiohttp.ClientSession(headers={"User-Agent": "officer-phone/1.0"}) as http:
            return await requests(svc, base, http)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


def _link(svc: AlertsService, base: str, case: str, device: str, action: str, officer: str,
          now: int | None = None) -> str:  # fmt: skip
    cfg = svc.config.ack
    made = make_link(cfg, case, device, action, officer, now or int(time.time() * 1000))
    return made.replace(cfg.base_url, base)


def test_a_link_acts_once_for_the_officer_it_names(
    settings, registry_file, unique, tmp_path, hook
) -> None:
    s = settings.replace("paths", registry=str(registry_file))
    mh = f"MH-{unique}-1"  # jinshui

    async def requests(svc, base, http):  # noqa: ANN001
        out = []
        good = _link(svc, base, f"manhole:{mh}:1", mh, "ack", "JS-GRID-01")
        stranger = _link(svc, base, f"manhole:{mh}:1", mh, "ack", "EQ-GRID-01")  # erqi's
        q = dict(parse_qsl(urlsplit(good).query))
        for method, url in (
            ("GET", good),  # a preview bot's GET only asks
            ("POST", good),
            ("POST", good),  # the same link again
            ("POST", f"{base}/ack?{urlencode(q | {'officer': 'JS-SUP-01'})}"),  # altered
            ("POST", stranger),
            (
                "POST",
                _link(
                    svc,
                    base,
                    f"manhole:{mh}:1",
                    mh,
                    "close",
                    "JS-GRID-01",
                    int(time.time() * 1000) - 11 * 60_000,
                ),
            ),  # expired  # fmt: skip
            ("POST", f"{base}/ack?case=x"),
            ("POST", f"{base}/ack?{urlencode(q)}".replace(q["sig"], quote("签名" * 32))),
        ):
            async with http.request(method, url) as r:
                out.append((r.status, await r.text()))
        return out

    out = asyncio.run(_run(s, tmp_path, hook, requests))
    assert [code for code, _ in out] == [200, 200, 200, 403, 403, 410, 400, 400]
    assert "请确认" in out[0][1] and "JS-GRID-01" in out[0][1]
    assert "Recorded: acknowledge" in out[1][1]
    assert "Already recorded" in out[2][1] and "Nothing more was changed" in out[2][1]
    assert "signature does not match" in out[3][1]
    assert "EQ-GRID-01 does not act in district jinshui" in out[4][1]
    acks = asyncio.run(read_topic(s.kafka.bootstrap, KafkaTopics(s.kafka.topic_prefix).acks, 1, 5))
    assert [(a["action"], a["officer"], a["role"], a["channel"]) for a in acks] == [
        ("ack", "JS-GRID-01", "grid", "link")
    ]
    assert acks[0]["credential"].startswith("link:")
    audit = asyncio.run(
        read_topic(s.kafka.bootstrap, KafkaTopics(s.kafka.topic_prefix).audit, 2, 5)
    )
    assert sorted((a["officer"], a["outcome"]) for a in audit) == [
        ("EQ-GRID-01", "refused"),
        ("JS-GRID-01", "accepted"),
    ]
    assert all(a["client"] == "127.0.0.1" and a["user_agent"] == "officer-phone/1.0" for a in audit)


def test_a_client_that_keeps_failing_is_answered_429(settings, tmp_path, hook) -> None:
    async def requests(svc, base, http):  # noqa: ANN001
        codes = []
        for i in range(14):
            async with http.post(
                f"{base}/ack?case=c&device=d&action=ack&officer=o&n=x&exp=1&sig={i:064x}"
            ) as r:
                codes.append(r.status)
        return codes

    codes = asyncio.run(_run(settings, tmp_path, hook, requests))
    assert codes[:10] == [403] * 10 and codes[10:] == [429] * 4


def test_the_api_acts_for_the_officer_whose_token_it_is(
    settings, registry_file, unique, tmp_path, hook
) -> None:
    s = settings.replace("paths", registry=str(registry_file))
    mh = f"MH-{unique}-1"
    store = TokenStore(Path(s.paths.state_dir) / "officers")
    token, info = store.issue("JS-GRID-01")
    duty, _ = store.issue("JS-DUTY-01")

    async def requests(svc, base, http):  # noqa: ANN001
        out = []
        for auth, body in (
            (token, {"device": mh, "action": "close", "case": f"manhole:{mh}:1"}),
            (
                token,
                {"device": mh, "action": "close", "officer": "JS-SUP-01"},
            ),  # speaking for another
            (duty, {"device": mh, "action": "close"}),  # a duty officer may not close
            ("cwo_00000000_" + "A" * 43, {"device": mh, "action": "ack"}),
            ("令牌", {"device": mh, "action": "ack"}),
            (token, {"device": mh, "action": "note", "note": {"not": "text"}}),
        ):
            headers = {"Authorization": f"Bearer {auth}".encode().decode("latin-1")}
            async with http.post(f"{base}/ack", json=body, headers=headers) as r:
                out.append((r.status, await r.json()))
        return out

    out = asyncio.run(_run(s, tmp_path, hook, requests))
    assert [code for code, _ in out] == [200, 400, 403, 401, 401, 400]
    assert (
        out[0][1]["action"]["officer"] == "JS-GRID-01" and out[0][1]["action"]["channel"] == "api"
    )
    assert "the token says who acts" in out[1][1]["error"]
    assert "JS-DUTY-01 may not close" in out[2][1]["error"]
    acks = asyncio.run(read_topic(s.kafka.bootstrap, KafkaTopics(s.kafka.topic_prefix).acks, 1, 5))
    assert [(a["officer"], a["credential"]) for a in acks] == [
        ("JS-GRID-01", f"token:{info.token_id}")
    ]


def test_every_request_has_an_access_line_without_the_signature(
    settings, tmp_path, hook, caplog
) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="citywatch.alerts.access")
    sig = "ab" * 32

    async def requests(svc, base, http):  # noqa: ANN001
        async with http.post(
            f"{base}/ack?case=c&device=d&action=ack&officer=o&n=x&exp=1&sig={sig}"
        ) as r:
            return r.status

    assert asyncio.run(_run(settings, tmp_path, hook, requests)) == 403
    lines = [r.getMessage() for r in caplog.records if r.name == "citywatch.alerts.access"]
    assert len(lines) == 1 and "POST /ack?" in lines[0] and " 403 " in lines[0]
    assert "officer-phone/1.0" in lines[0] and sig not in lines[0]
