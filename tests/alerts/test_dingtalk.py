"""alerts/channels/dingtalk.py against a loopback DingTalk stand-in: the signature DingTalk computes, and its verdicts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from alerts.channels import make_channel
from alerts.channels.dingtalk import DingTalkChannel
from alerts.channels.plugin import Result
from alerts.route import parse_routes
from tests.alerts.standins import HttpStandIn, message, run, send_once


def test_dingtalk_signature_is_the_one_dingtalk_computes(server: HttpStandIn) -> None:
    secret = "SEC0123456789abcdef"
    ch = DingTalkChannel(server.url + "?access_token=tok", secret=secret, per_minute=100)
    assert run(send_once(ch, message())).status == "delivered"
    seen = server.seen[0]
    # What DingTalk's server does (open.dingtalk.com, "custom robot security settings: signing"):
    ts = seen.query["timestamp"]
    assert (
        abs(int(ts) - time.time() * 1000) < 60_000
    )  # DingTalk refuses timestamps more than an hour off
    expected = base64.b64encode(
        hmac.new(secret.encode("utf-8"), f"{ts}\n{secret}".encode(), hashlib.sha256).digest()
    )
    assert seen.query["sign"].encode() == expected  # aiohttp already URL-decoded the query value
    assert seen.query["access_token"] == "tok"
    body = seen.json()
    assert body["msgtype"] == "markdown"
    assert body["markdown"]["title"].startswith("【井盖缺失或破损·新案件】")
    assert body["markdown"]["text"].startswith("### 花园路井盖缺失")


def test_dingtalk_without_a_secret_is_not_signed(server: HttpStandIn) -> None:
    assert (
        run(
            send_once(DingTalkChannel(server.url + "?access_token=tok", per_minute=100), message())
        ).status
        == "delivered"
    )
    assert server.seen[0].query == {"access_token": "tok"}


def test_dingtalk_throttled_means_retry_in_ten_minutes(server: HttpStandIn) -> None:
    server.script = [{"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"},
                     {"errcode": 310000, "errmsg": "sign not match"}]  # fmt: skip
    ch = DingTalkChannel(server.url, secret="s", per_minute=100)

    async def go() -> list[Result]:
        try:
            first = await ch.send(message("a"))
            ch.bucket.tokens = 1  # the stand-in test does not want to wait the 10 minutes out
            return [first, await ch.send(message("b"))]
        finally:
            await ch.close()

    throttled, bad_sign = run(go())
    assert throttled.status == "retry" and throttled.retry_after_s == 600
    assert bad_sign.status == "give_up" and "310000" in bad_sign.detail


def test_dingtalk_entry_of_the_routing_file() -> None:
    cfg = parse_routes('receivers:\n  - name: d\n    dingtalk: {url: "https://oapi.dingtalk.com/robot/send?access_token=T",'
                       " secret: S3, per_minute: 10, timeout: 3s}\nroute: {receiver: d}\n")  # fmt: skip
    (spec,) = cfg.receivers["d"].channels
    assert spec.options == {"url": "https://oapi.dingtalk.com/robot/send?access_token=T", "secret": "S3",
                            "per_minute": 10, "timeout": 3000}  # fmt: skip
    assert spec.target == "dingtalk:https://oapi.dingtalk.com/robot/send?access_token=T"
    assert "S3" not in repr(spec) and "access_token=T" not in repr(spec)
    ch = make_channel(spec)
    assert isinstance(ch, DingTalkChannel) and ch.secret == "S3" and ch.bucket.capacity == 10
    assert ch.http.timeout.total == 3


def test_the_officer_a_link_is_for_is_mentioned_by_mobile_or_user_id() -> None:
    from alerts.channels.dingtalk import DingTalkChannel
    from tests.alerts.standins import message

    m = message("k")
    m.data["mention"] = [
        {"officer": "A", "dingtalk": "13800000001"},
        {"officer": "B", "dingtalk": "ding-b"},
    ]
    body = DingTalkChannel.payload(m)
    assert body["at"] == {"atMobiles": ["13800000001"], "atUserIds": ["ding-b"], "isAtAll": False}
    assert body["markdown"]["text"].endswith("@13800000001 @ding-b")  # DingTalk rings only these
    assert "at" not in DingTalkChannel.payload(message("k"))
