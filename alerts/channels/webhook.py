"""A generic JSON webhook for the city's own systems.

POST the message's ``data`` (JSON: id, receiver, title, cases[...]) with

* ``Idempotency-Key: <message key>`` -- the same on every retry of one push,
  so the receiver can drop a repeat of a push whose answer got lost;
* ``X-Citywatch-Signature: sha256=<hex HMAC-SHA256(secret, body)>`` when a
  secret is configured (as GitHub signs its webhooks).

2xx is delivered; 408, 429 (honouring ``Retry-After``), 5xx, timeouts and
connection errors are retried; any other 4xx is given up.

Routing-file entry (docs/alerts.md#webhook)::

    webhook: {url: "https://cases.example.gov.cn/hooks/citywatch", secret: "${HOOK_SECRET}", timeout: 5s}
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import orjson

from alerts.channels.http_post import HttpPoster
from alerts.channels.plugin import Option, Result
from alerts.message import Message

TYPE = "webhook"
OPTIONS = (
    Option("url", "url", required=True, doc="where to POST"),
    Option(
        "secret",
        "text",
        secret=True,
        doc="HMAC-SHA256 key of `X-Citywatch-Signature`; without it no signature",
    ),
    Option("headers", "headers", doc="extra request headers"),
    Option("timeout", "duration", doc="per request (default: `delivery.timeout`)"),
)
TARGET = ("url",)


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def new(o: Mapping[str, Any], timeout_s: float) -> WebhookChannel:
    return WebhookChannel(o["url"], secret=o["secret"], headers=o["headers"], timeout_s=timeout_s)


class WebhookChannel:
    type = TYPE

    def __init__(self, url: str, secret: str | None = None, headers: dict[str, str] | None = None,
                 timeout_s: float = 10.0):  # fmt: skip
        self.url = url
        self.secret = secret
        self.headers = dict(headers or {})
        self.http = HttpPoster(timeout_s)

    async def send(self, message: Message) -> Result:
        body = orjson.dumps(message.data)
        headers = {
            **self.headers,
            "Content-Type": "application/json",
            "Idempotency-Key": message.key,
        }
        if self.secret:
            headers["X-Citywatch-Signature"] = signature(self.secret, body)
        status, _text, failure = await self.http.post(self.url, body, headers)
        return failure if failure is not None else Result.delivered(f"HTTP {status}")

    async def close(self) -> None:
        await self.http.close()
