"""alerts/channels/wecom.py against a loopback WeCom stand-in: the payload docs/alerts.md#wecom describes, and its verdicts."""

from __future__ import annotations

from alerts.channels import make_channel
from alerts.channels.plugin import Result
from alerts.channels.wecom import WeComChannel, cut
from alerts.route import parse_routes
from tests.alerts.standins import HttpStandIn, message, run, send_all, send_once


def test_wecom_markdown_payload_and_errcodes(server: HttpStandIn) -> None:
    server.script = ["ok", {"errcode": 93000, "errmsg": "invalid webhook url"}, 502,
                     {"errcode": 45009, "errmsg": "api freq out of limit"}]  # fmt: skip
    ch = WeComChannel(server.url + "?key=abc", per_minute=100)
    ok, bad_key, bad_gateway, throttled = run(send_all(ch, [message(f"k{i}") for i in range(4)]))
    assert ok == Result.delivered("errcode 0")
    body = server.seen[0].json()
    assert body == {
        "msgtype": "markdown",
        "markdown": {"content": "### 花园路井盖缺失\n---\n**Manhole cover missing**"},
    }
    assert server.seen[0].query == {"key": "abc"}
    assert server.seen[0].headers["Content-Type"] == "application/json"
    assert bad_key.status == "give_up" and "93000" in bad_key.detail
    assert throttled.status == "retry" and throttled.retry_after_s == 60
    assert bad_gateway.status == "retry" and "HTTP 502" in bad_gateway.detail


def test_wecom_cuts_content_to_4096_bytes(server: HttpStandIn) -> None:
    long = "\n".join(f"第{i}行：金水区花园路井盖缺失" for i in range(400))
    run(send_once(WeComChannel(server.url, per_minute=100), message(text=long)))
    content = server.seen[0].json()["markdown"]["content"]
    assert len(content.encode()) <= 4096 and content.endswith("truncated）")
    assert cut("short", 4096) == "short"


def test_wecom_entry_of_the_routing_file() -> None:
    cfg = parse_routes('receivers:\n  - {name: g, wecom: {url: "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=K"}}\n'
                       "route: {receiver: g}\n")  # fmt: skip
    (spec,) = cfg.receivers["g"].channels
    assert spec.options == {"url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=K", "per_minute": 20,
                            "timeout": None}  # fmt: skip
    assert spec.target == "wecom:https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=K"
    assert "key=K" not in repr(spec)  # the URL holds the robot's key: a secret
    ch = make_channel(spec, default_timeout_ms=7000)
    assert isinstance(ch, WeComChannel) and ch.bucket.capacity == 20 and ch.http.timeout.total == 7


def test_a_redirect_is_not_followed_and_puts_no_robot_key_into_the_detail(
    server: HttpStandIn,
) -> None:
    """Issue 13: a redirect was followed, and the page it led to quoted the URL, key and all."""
    server.script = ["redirect"]
    key = "693a91f6-7b2c-4e1d-9a3f-robot-key"
    res = run(send_once(WeComChannel(server.url + f"?key={key}", per_minute=100), message()))
    assert res.status == "give_up"
    assert res.detail.startswith("HTTP 302: redirected to another path; redirects are not followed")
    assert key not in res.detail and "/moved" not in res.detail
    assert [s.path for s in server.seen] == ["/send"]  # the address it pointed to was never asked


def test_the_officer_a_link_is_for_is_mentioned_by_wecom_user_id() -> None:
    m = message("k")
    m.data["mention"] = [{"officer": "JS-GRID-01", "wecom": "jsgrid01", "dingtalk": ""},
                         {"officer": "JS-X", "wecom": "", "dingtalk": "138"}]  # fmt: skip
    content = WeComChannel.payload(m)["markdown"]["content"]
    assert content.endswith("\n<@jsgrid01>") and content.startswith("### 花园路井盖缺失")
    assert WeComChannel.payload(message("k"))["markdown"]["content"].count("<@") == 0
