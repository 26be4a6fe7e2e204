"""Each channel against a real loopback stand-in: the payload the service documents, and its verdicts."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import hashlib
import hmac
import time

import pytest

from alerts.channels.console import ConsoleChannel
from alerts.channels.dingtalk import DingTalkChannel
from alerts.channels.email import EmailChannel
from alerts.channels.plugin import Result
from alerts.channels.ratelimit import TokenBucket
from alerts.channels.webhook import WebhookChannel
from alerts.channels.wecom import WeComChannel
from alerts.message import Message
from tests.alerts.test_alerts_support import HttpStandIn, smtp_server


def msg(key: str = "k1", text: str = "花园路井盖缺失") -> Message:
    return Message(key=key, receiver="grid", title=f"【井盖缺失或破损·新案件】{text} / Manhole: new case",
                   markdown=f"### {text}\n---\n**Manhole cover missing**", text=f"{text}\n\nManhole cover missing\n",
                   data={"id": key, "cases": [{"case_id": "c1"}]})  # fmt: skip


@pytest.fixture
def server():
    s = HttpStandIn()
    yield s
    s.close()


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


async def send_once(channel, message: Message) -> Result:  # noqa: ANN001
    try:
        return await channel.send(message)
    finally:
        await channel.close()


def test_wecom_markdown_payload_and_errcodes(server: HttpStandIn) -> None:
    server.script = ["ok", {"errcode": 93000, "errmsg": "invalid webhook url"}, 502,
                     {"errcode": 45009, "errmsg": "api freq out of limit"}]  # fmt: skip
    ch = WeComChannel(server.url + "?key=abc", per_minute=100)

    async def go() -> list[Result]:
        try:
            return [await ch.send(msg(f"k{i}")) for i in range(4)]
        finally:
            await ch.close()

    ok, bad_key, bad_gateway, throttled = run(go())
    assert ok == Result.delivered("errcode 0")
    body = server.seen[0].json()
    assert body == {"msgtype": "markdown", "markdown": {"content": "### 花园路井盖缺失\n---\n**Manhole cover missing**"}}
    assert server.seen[0].query == {"key": "abc"}
    assert server.seen[0].headers["Content-Type"] == "application/json"
    assert bad_key.status == "give_up" and "93000" in bad_key.detail
    assert throttled.status == "retry" and throttled.retry_after_s == 60
    assert bad_gateway.status == "retry" and "HTTP 502" in bad_gateway.detail


def test_wecom_cuts_content_to_4096_bytes(server: HttpStandIn) -> None:
    long = "\n".join(f"第{i}行：金水区花园路井盖缺失" for i in range(400))
    run(send_once(WeComChannel(server.url, per_minute=100), msg(text=long)))
    content = server.seen[0].json()["markdown"]["content"]
    assert len(content.encode()) <= 4096 and content.endswith("truncated）")


def test_token_bucket_keeps_a_robot_under_its_rate() -> None:
    async def go() -> float:
        bucket = TokenBucket(rate=5, per_s=0.5)  # 5 per half second = 10/s, burst 5
        t = time.monotonic()
        for _ in range(10):
            await bucket.acquire()
        return time.monotonic() - t

    elapsed = run(go())
    assert 0.4 <= elapsed < 1.0  # the burst of 5 at once, the next 5 at 10/s
    assert TokenBucket.for_target("wecom:x", 20) is TokenBucket.for_target("wecom:x", 20)


def test_dingtalk_signature_is_the_one_dingtalk_computes(server: HttpStandIn) -> None:
    secret = "SEC0123456789abcdef"
    ch = DingTalkChannel(server.url + "?access_token=tok", secret=secret, per_minute=100)
    assert run(send_once(ch, msg())).status == "delivered"
    seen = server.seen[0]
    # What DingTalk's server does (open.dingtalk.com, "custom robot security settings: signing"):
    ts = seen.query["timestamp"]
    assert abs(int(ts) - time.time() * 1000) < 60_000  # DingTalk refuses timestamps more than an hour off
    expected = base64.b64encode(hmac.new(secret.encode("utf-8"), f"{ts}\n{secret}".encode(), hashlib.sha256).digest())
    assert seen.query["sign"].encode() == expected  # aiohttp already URL-decoded the query value
    assert seen.query["access_token"] == "tok"
    body = seen.json()
    assert body["msgtype"] == "markdown"
    assert body["markdown"]["title"].startswith("【井盖缺失或破损·新案件】")
    assert body["markdown"]["text"].startswith("### 花园路井盖缺失")


def test_dingtalk_throttled_means_retry_in_ten_minutes(server: HttpStandIn) -> None:
    server.script = [{"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"},
                     {"errcode": 310000, "errmsg": "sign not match"}]  # fmt: skip
    ch = DingTalkChannel(server.url, secret="s", per_minute=100)

    async def go() -> list[Result]:
        try:
            first = await ch.send(msg("a"))
            ch.bucket.tokens = 1  # the stand-in test does not want to wait the 10 minutes out
            return [first, await ch.send(msg("b"))]
        finally:
            await ch.close()

    throttled, bad_sign = run(go())
    assert throttled.status == "retry" and throttled.retry_after_s == 600
    assert bad_sign.status == "give_up" and "310000" in bad_sign.detail


def test_webhook_signs_the_body_and_sends_the_idempotency_key(server: HttpStandIn) -> None:
    server.script = ["ok", 429, 400]
    ch = WebhookChannel(server.url, secret="hook-secret", headers={"X-City": "zhengzhou"}, timeout_s=2)

    async def go() -> list[Result]:
        try:
            return [await ch.send(msg("key-1")), await ch.send(msg("key-2")), await ch.send(msg("key-3"))]
        finally:
            await ch.close()

    ok, too_many, bad = run(go())
    seen = server.seen[0]
    assert ok.status == "delivered"
    assert seen.headers["Idempotency-Key"] == "key-1"
    assert seen.headers["X-City"] == "zhengzhou"
    mac = hmac.new(b"hook-secret", seen.body, hashlib.sha256).hexdigest()
    assert seen.headers["X-Citywatch-Signature"] == f"sha256={mac}"
    assert seen.json() == {"id": "key-1", "cases": [{"case_id": "c1"}]}
    assert too_many.status == "retry" and bad.status == "give_up"


def test_webhook_timeout_and_refused_connection_are_retried(server: HttpStandIn) -> None:
    server.script = ["timeout"]
    res = run(send_once(WebhookChannel(server.url, timeout_s=0.3), msg()))
    assert res.status == "retry" and "timed out" in res.detail
    res = run(send_once(WebhookChannel("http://127.0.0.1:9/nothing-listens", timeout_s=1), msg()))
    assert res.status == "retry"


def test_email_over_real_smtp_in_utf8() -> None:
    ctl, box = smtp_server()
    try:
        ch = EmailChannel(host="127.0.0.1", port=ctl.port, sender="citywatch@example.org",
                          to=["duty@example.org", "command@example.org"], timeout_s=5)  # fmt: skip
        assert run(send_once(ch, msg("mail-key"))).status == "delivered"
        (env,) = box.mails
        assert env.mail_from == "citywatch@example.org"
        assert env.rcpt_tos == ["duty@example.org", "command@example.org"]
        mail = email.message_from_bytes(env.original_content, policy=email.policy.default)
        assert mail["Subject"] == "【井盖缺失或破损·新案件】花园路井盖缺失 / Manhole: new case"
        assert mail["Message-ID"] == "<mail-key@citywatch>"
        assert mail.get_content_charset() == "utf-8"
        assert mail.get_content().startswith("花园路井盖缺失")
    finally:
        ctl.stop()
    res = run(send_once(EmailChannel(host="127.0.0.1", port=ctl.port, sender="a@b.c", to=["d@e.f"], timeout_s=1),
                        msg()))  # fmt: skip
    assert res.status == "retry"  # the server is gone: try later


def test_console_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="citywatch.alerts.push")
    assert run(ConsoleChannel().send(msg())).status == "delivered"
    assert "花园路井盖缺失" in caplog.text
