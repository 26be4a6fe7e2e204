"""alerts/channels/webhook.py against a loopback receiver: signature, Idempotency-Key, verdicts (docs/alerts.md#webhook)."""

from __future__ import annotations

import hashlib
import hmac

from alerts.channels import make_channel
from alerts.channels.webhook import WebhookChannel, signature
from alerts.route import parse_routes
from tests.alerts.standins import HttpStandIn, message, run, send_all, send_once


def test_webhook_signs_the_body_and_sends_the_idempotency_key(server: HttpStandIn) -> None:
    server.script = ["ok", 429, 400]
    ch = WebhookChannel(
        server.url, secret="hook-secret", headers={"X-City": "zhengzhou"}, timeout_s=2
    )
    ok, too_many, bad = run(send_all(ch, [message("key-1"), message("key-2"), message("key-3")]))
    seen = server.seen[0]
    assert ok.status == "delivered"
    assert seen.headers["Idempotency-Key"] == "key-1"
    assert seen.headers["X-City"] == "zhengzhou"
    mac = hmac.new(b"hook-secret", seen.body, hashlib.sha256).hexdigest()
    assert (
        seen.headers["X-Citywatch-Signature"]
        == f"sha256={mac}"
        == signature("hook-secret", seen.body)
    )
    assert seen.json() == {"id": "key-1", "cases": [{"case_id": "c1"}]}
    assert too_many.status == "retry" and bad.status == "give_up"


def test_webhook_without_a_secret_sends_no_signature(server: HttpStandIn) -> None:
    assert run(send_once(WebhookChannel(server.url), message())).status == "delivered"
    assert "X-Citywatch-Signature" not in server.seen[0].headers


def test_webhook_timeout_and_refused_connection_are_retried(server: HttpStandIn) -> None:
    server.script = ["timeout"]
    res = run(send_once(WebhookChannel(server.url, timeout_s=0.3), message()))
    assert res.status == "retry" and "timed out" in res.detail
    res = run(
        send_once(WebhookChannel("http://127.0.0.1:9/nothing-listens", timeout_s=1), message())
    )
    assert res.status == "retry"


def test_webhook_entry_of_the_routing_file(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("CW_TEST_HOOK_SECRET", "from-env")
    cfg = parse_routes('receivers:\n  - name: w\n    webhook: {url: "http://127.0.0.1:1/hook", secret: "${CW_TEST_HOOK_SECRET}",'
                       " headers: {X-City: zhengzhou, X-Num: 7}}\nroute: {receiver: w}\n")  # fmt: skip
    (spec,) = cfg.receivers["w"].channels
    assert spec.options == {"url": "http://127.0.0.1:1/hook", "secret": "from-env",
                            "headers": {"X-City": "zhengzhou", "X-Num": "7"}, "timeout": None}  # fmt: skip
    assert spec.target == "webhook:http://127.0.0.1:1/hook"
    assert "from-env" not in repr(spec)
    ch = make_channel(spec)
    assert isinstance(ch, WebhookChannel) and ch.headers == {"X-City": "zhengzhou", "X-Num": "7"}
