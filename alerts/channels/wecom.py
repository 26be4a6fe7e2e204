"""WeCom (企业微信) group robot webhook.

POST ``{"msgtype": "markdown", "markdown": {"content": ...}}`` to the robot's
``https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=...`` URL; the answer
``{"errcode": 0}`` means delivered. A robot takes 20 messages a minute: a
token bucket per robot keeps under it, and errcode 45009 (frequency limit)
is retried after a minute. Content is limited to 4,096 bytes of UTF-8; longer
messages are cut at a line boundary with a note.

Routing-file entry (docs/alerts.md#wecom)::

    wecom: {url: "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=${WECOM_KEY}", per_minute: 20, timeout: 10s}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from alerts.channels.http_post import HttpPoster, robot_answer
from alerts.channels.plugin import Option, Result
from alerts.channels.ratelimit import TokenBucket
from alerts.message import Message

TYPE = "wecom"
OPTIONS = (
    Option(
        "url", "url", required=True, secret=True, doc="the robot's webhook URL (its key is in it)"
    ),
    Option("per_minute", "whole", default=20, doc="messages a minute the robot takes"),
    Option("timeout", "duration", doc="per request (default: `delivery.timeout`)"),
)
TARGET = ("url",)

MAX_BYTES = 4096
THROTTLED = {45009}
RETRYABLE = {-1, 45009, 45033}  # system busy, frequency limit, concurrency limit


def cut(text: str, max_bytes: int, note: str = "\n……（内容过长已截断 / truncated）") -> str:
    if len(text.encode()) <= max_bytes:
        return text
    budget = max_bytes - len(note.encode())
    out, used = [], 0
    for line in text.split("\n"):
        n = len(line.encode()) + 1
        if used + n > budget:
            break
        out.append(line)
        used += n
    return "\n".join(out) + note


def new(o: Mapping[str, Any], timeout_s: float) -> WeComChannel:
    return WeComChannel(o["url"], per_minute=o["per_minute"], timeout_s=timeout_s)


class WeComChannel:
    type = TYPE

    def __init__(self, url: str, per_minute: int = 20, timeout_s: float = 10.0):
        self.url = url
        self.bucket = TokenBucket.for_target(f"wecom:{url}", per_minute)
        self.http = HttpPoster(timeout_s)

    @staticmethod
    def payload(message: Message) -> dict:
        """Markdown; the officers the links are for are @mentioned (``<@userid>``, WeCom's
        markdown mention), so the person who must act is the one whose phone rings."""
        ids = [m["wecom"] for m in message.data.get("mention") or () if m.get("wecom")]
        tail = ("\n" + " ".join(f"<@{i}>" for i in ids)) if ids else ""
        content = cut(message.markdown, MAX_BYTES - len(tail.encode())) + tail
        return {"msgtype": "markdown", "markdown": {"content": content}}

    async def send(self, message: Message) -> Result:
        await self.bucket.acquire()
        body = orjson.dumps(self.payload(message))
        status, text, failure = await self.http.post(
            self.url, body, {"Content-Type": "application/json"}
        )
        if failure is not None:
            return failure
        return robot_answer(
            status, text, self.bucket, frozenset(THROTTLED), 60, frozenset(RETRYABLE)
        )

    async def close(self) -> None:
        await self.http.close()
