"""DingTalk (钉钉) custom robot.

With a signing secret (加签), every request carries ``timestamp`` (epoch ms)
and ``sign`` in the query string, as DingTalk documents::

    string_to_sign = f"{timestamp}\\n{secret}"
    sign = urlencode(base64(HMAC-SHA256(key=secret, msg=string_to_sign)))

Body ``{"msgtype": "markdown", "markdown": {"title": ..., "text": ...}}``;
``{"errcode": 0}`` is delivered. A robot takes 20 messages a minute (token
bucket per robot); errcode 130101 means the robot is throttled for ten
minutes: retry after 600 s and hold every message for that robot.

Routing-file entry (docs/alerts.md#dingtalk)::

    dingtalk: {url: "https://oapi.dingtalk.com/robot/send?access_token=${DT_TOKEN}", secret: "${DT_SECRET}"}
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

import orjson

from alerts.channels.http_post import HttpPoster, robot_answer
from alerts.channels.plugin import Option, Result
from alerts.channels.ratelimit import TokenBucket
from alerts.channels.wecom import cut
from alerts.message import Message

TYPE = "dingtalk"
OPTIONS = (
    Option(
        "url", "url", required=True, secret=True, doc="the robot's URL (its access_token is in it)"
    ),
    Option(
        "secret",
        "text",
        secret=True,
        doc="the signing secret (加签); without it requests are not signed",
    ),
    Option("per_minute", "whole", default=20, doc="messages a minute the robot takes"),
    Option("timeout", "duration", doc="per request (default: `delivery.timeout`)"),
)
TARGET = ("url",)

THROTTLED = 130101
THROTTLE_S = 600
MAX_BYTES = 18_000


def sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's signature, URL-encoded, ready for the query string."""
    string_to_sign = f"{timestamp_ms}\n{secret}"
    digest = hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).digest()
    return urllib.parse.quote_plus(base64.b64encode(digest))


def new(o: Mapping[str, Any], timeout_s: float) -> DingTalkChannel:
    return DingTalkChannel(
        o["url"], secret=o["secret"], per_minute=o["per_minute"], timeout_s=timeout_s
    )


class DingTalkChannel:
    type = TYPE

    def __init__(
        self, url: str, secret: str | None = None, per_minute: int = 20, timeout_s: float = 10.0
    ):
        self.url = url
        self.secret = secret
        self.bucket = TokenBucket.for_target(f"dingtalk:{url}", per_minute)
        self.http = HttpPoster(timeout_s)

    def signed_url(self, timestamp_ms: int | None = None) -> str:
        if not self.secret:
            return self.url
        ts = timestamp_ms if timestamp_ms is not None else time.time_ns() // 1_000_000
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}timestamp={ts}&sign={sign(self.secret, ts)}"

    @staticmethod
    def payload(message: Message) -> dict:
        """Markdown; the officers the links are for are @mentioned: DingTalk rings a user id
        or mobile listed in ``at`` only when the text also says ``@<it>``."""
        title = message.title if len(message.title) <= 60 else message.title[:59] + "…"
        ids = [m["dingtalk"] for m in message.data.get("mention") or () if m.get("dingtalk")]
        mobiles = [i for i in ids if i.isdigit()]
        users = [i for i in ids if not i.isdigit()]
        tail = ("\n\n" + " ".join(f"@{i}" for i in ids)) if ids else ""
        body: dict = {
            "msgtype": "markdown",
            "markdown": {
                "title": title,
                "text": cut(message.markdown, MAX_BYTES - len(tail.encode())) + tail,
            },
        }
        if ids:
            body["at"] = {"atMobiles": mobiles, "atUserIds": users, "isAtAll": False}
        return body

    async def send(self, message: Message) -> Result:
        await self.bucket.acquire()
        body = orjson.dumps(self.payload(message))
        status, text, failure = await self.http.post(
            self.signed_url(), body, {"Content-Type": "application/json"}
        )
        if failure is not None:
            return failure
        # 310000 bad signature/keyword/IP, 300001 bad token, ...: give up; -1 system busy: retry
        return robot_answer(
            status,
            text,
            self.bucket,
            frozenset({THROTTLED}),
            THROTTLE_S,
            frozenset({-1}),
            " (robot throttled for 10 minutes)",
        )

    async def close(self) -> None:
        await self.http.close()
