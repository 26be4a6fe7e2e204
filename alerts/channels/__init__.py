"""Channels: each one class with one ``async send(message) -> Result``.

The channel says what happened -- ``delivered``, ``retry`` (later, optionally
after ``retry_after_s``) or ``give_up`` (retrying cannot help: a bad robot
key, a refused recipient); the outbox decides when to try again (Alertmanager's
``Notify(ctx, alerts) (retry bool, err error)``).

=========  ==============================  ===========================================
type       module                          what it sends
=========  ==============================  ===========================================
wecom      ``alerts/channels/wecom.py``     WeCom group robot, markdown, 20/min/robot
dingtalk   ``alerts/channels/dingtalk.py``  DingTalk custom robot, signed, 20/min/robot
webhook    ``alerts/channels/webhook.py``   JSON POST, HMAC signature, Idempotency-Key
email      ``alerts/channels/email.py``     SMTP (stdlib smtplib in a thread), UTF-8
console    ``alerts/channels/console.py``   the log (the embedded default)
=========  ==============================  ===========================================
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from alerts.message import Message
    from alerts.route import ChannelSpec


@dataclass(frozen=True)
class Result:
    status: str
    """``delivered``, ``retry`` or ``give_up``."""
    detail: str = ""
    retry_after_s: float | None = None

    @classmethod
    def delivered(cls, detail: str = "ok") -> Result:
        return cls("delivered", detail)

    @classmethod
    def retry(cls, detail: str, after_s: float | None = None) -> Result:
        return cls("retry", detail, after_s)

    @classmethod
    def give_up(cls, detail: str) -> Result:
        return cls("give_up", detail)


class Channel(Protocol):
    type: str

    async def send(self, message: Message) -> Result: ...

    async def close(self) -> None: ...


class TokenBucket:
    """``rate`` sends per ``per_s`` seconds, bursts up to ``rate``; ``acquire`` waits for a token."""

    _shared: dict[str, TokenBucket] = {}

    def __init__(self, rate: int, per_s: float = 60.0):
        self.capacity = float(rate)
        self.tokens = float(rate)
        self.fill_per_s = rate / per_s
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()

    @classmethod
    def for_target(cls, target: str, rate: int, per_s: float = 60.0) -> TokenBucket:
        """One bucket per robot, shared by every receiver that posts to it."""
        b = cls._shared.get(target)
        if b is None or b.capacity != rate:
            b = cls._shared[target] = cls(rate, per_s)
        return b

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.fill_per_s)
        self.stamp = now

    def wait_s(self) -> float:
        self._refill()
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.fill_per_s

    async def acquire(self) -> None:
        async with self.lock:
            while True:
                w = self.wait_s()
                if w <= 0:
                    self.tokens -= 1
                    return
                await asyncio.sleep(w)

    def penalize(self, seconds: float) -> None:
        """The robot said "throttled": no tokens for ``seconds``."""
        self._refill()
        self.tokens = -seconds * self.fill_per_s


def make_channel(spec: ChannelSpec, default_timeout_ms: int = 10_000) -> Channel:
    """The channel object for one receiver channel entry of the routing file."""
    o = dict(spec.options)
    timeout_s = o.pop("timeout", default_timeout_ms) / 1000
    if spec.type == "wecom":
        from alerts.channels.wecom import WeComChannel

        return WeComChannel(o["url"], per_minute=o.get("per_minute", 20), timeout_s=timeout_s)
    if spec.type == "dingtalk":
        from alerts.channels.dingtalk import DingTalkChannel

        return DingTalkChannel(o["url"], secret=o.get("secret"), per_minute=o.get("per_minute", 20),
                               timeout_s=timeout_s)  # fmt: skip
    if spec.type == "webhook":
        from alerts.channels.webhook import WebhookChannel

        return WebhookChannel(o["url"], secret=o.get("secret"), headers=o.get("headers"), timeout_s=timeout_s)
    if spec.type == "email":
        from alerts.channels.email import EmailChannel

        return EmailChannel(
            host=o["host"], port=o.get("port", 25), sender=o["from"], to=o["to"], username=o.get("username"),
            password=o.get("password"), starttls=o.get("starttls", False), ssl=o.get("ssl", False),
            timeout_s=timeout_s,
        )
    from alerts.channels.console import ConsoleChannel

    return ConsoleChannel()


def http_failure(status: int, body: str, retry_after: str | None = None) -> Result:
    """The common reading of an HTTP answer that is not a success."""
    after = None
    if retry_after:
        try:
            after = float(retry_after)
        except ValueError:
            after = None
    if status == 429 or status == 408 or status >= 500:
        return Result.retry(f"HTTP {status}: {body[:200]}", after)
    return Result.give_up(f"HTTP {status}: {body[:200]}")


def robot_answer(
    status: int, text: str, bucket: TokenBucket, throttled: frozenset[int], throttle_s: float,
    retryable: frozenset[int], throttle_note: str = "",
) -> Result:
    """Judge a chat robot's JSON answer (WeCom and DingTalk speak the same ``errcode`` dialect).

    errcode 0 is delivered; a throttling code penalizes the robot's token
    bucket and retries after ``throttle_s``; ``retryable`` codes retry with
    backoff; anything else (bad key, bad signature, blocked keyword) gives up.
    """
    import orjson

    try:
        answer = orjson.loads(text)
    except orjson.JSONDecodeError:
        return Result.retry(f"HTTP {status} with a body that is not JSON: {text[:200]}")
    code = answer.get("errcode")
    if code == 0:
        return Result.delivered("errcode 0")
    detail = f"errcode {code}: {answer.get('errmsg', '')}"
    if code in throttled:
        bucket.penalize(throttle_s)
        return Result.retry(detail + throttle_note, throttle_s)
    if code in retryable:
        return Result.retry(detail)
    return Result.give_up(detail)
