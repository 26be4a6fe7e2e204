"""A generic JSON webhook for the city's own systems.

POST the message's ``data`` (JSON: id, receiver, title, cases[...]) with

* ``Idempotency-Key: <message key>`` -- the same on every retry of one push,
  so the receiver can drop a repeat of a push whose answer got lost;
* ``X-Citywatch-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``
  when a secret is configured, as Stripe and Slack sign theirs: the timestamp
  is signed with the body, so a receiver that checks it against a window
  (``verify``, 300 s by default) refuses a captured push replayed later, and
  one whose body or timestamp was changed. Each attempt is signed anew.

2xx is delivered; 408, 429 (honouring ``Retry-After``), 5xx, timeouts and
connection errors are retried; any other 4xx is given up.

Routing-file entry (docs/alerts.md#webhook)::

    webhook: {url: "https://cases.example.gov.cn/hooks/citywatch", secret: "${HOOK_SECRET}", timeout: 5s}

``verify`` is the receiver's side (docs/alerts.md#verifying-a-webhook-signature
has the same check for integrators to copy); citywatch's own tests receive
through it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from alerts.channels.http_post import HttpPoster
from alerts.channels.plugin import Option, OptionError, Result
from alerts.message import Message
from foundation.settings import MAKE_SECRET, MIN_SECRET_BYTES

TYPE = "webhook"
OPTIONS = (
    Option("url", "url", required=True, doc="where to POST"),
    Option(
        "secret",
        "text",
        secret=True,
        doc=f"HMAC-SHA256 key of `X-Citywatch-Signature`, at least {MIN_SECRET_BYTES} bytes; "
        "without it no signature",
    ),
    Option("headers", "headers", doc="extra request headers"),
    Option("timeout", "duration", doc="per request (default: `delivery.timeout`)"),
)
TARGET = ("url",)

SIGNATURE_HEADER = "X-Citywatch-Signature"
TOLERANCE_S = 300
"""How far a signature's timestamp may be from the receiver's clock (either way), as Stripe's
default: long enough for clock skew and a slow network, short enough that a captured push
is useless soon after."""


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(
        secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256
    ).hexdigest()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Citywatch-Signature`` value for ``body`` sent at ``timestamp`` (unix seconds)."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


class SignatureError(ValueError):
    """A push the receiver must refuse: why, in one line (the receiver answers 400/401 with it)."""


def verify(
    secret: str | Iterable[str],
    header: str | None,
    body: bytes,
    *,
    tolerance_s: float = TOLERANCE_S,
    now: float | None = None,
) -> int:
    """Check a received push; its signed timestamp if genuine and fresh, else ``SignatureError``.

    ``body`` is the request body exactly as received (bytes, before any JSON parsing).
    ``secret`` may be several keys while one is being replaced: any of them may have signed.
    Several ``v1=`` in the header are each tried (a sender signing with old and new key).
    """
    if not header:
        raise SignatureError(f"no {SIGNATURE_HEADER} header: the push is not signed")
    stamp: str | None = None
    given: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            stamp = value
        elif name == "v1":
            given.append(value)
    if stamp is None or not stamp.isascii() or not stamp.isdigit() or not given:
        raise SignatureError(
            f"{SIGNATURE_HEADER} is malformed: expected t=<unix seconds>,v1=<hex>, got {header[:120]!r}"
        )
    timestamp = int(stamp)
    keys = [secret] if isinstance(secret, str) else list(secret)
    if not any(
        hmac.compare_digest(_mac(key, timestamp, body).encode(), v.encode())
        for key in keys
        for v in given
    ):
        raise SignatureError("signature does not match: another key, or the body was changed")
    age = (time.time() if now is None else now) - timestamp
    if abs(age) > tolerance_s:
        when = f"{age:.0f} s old" if age > 0 else f"{-age:.0f} s in the future"
        raise SignatureError(
            f"signature timestamp is {when}, outside the {tolerance_s:.0f} s window "
            "(a replayed push, or a clock that is off: check NTP on both ends)"
        )
    return timestamp


def new(o: Mapping[str, Any], timeout_s: float) -> WebhookChannel:
    return WebhookChannel(o["url"], secret=o["secret"], headers=o["headers"], timeout_s=timeout_s)


class WebhookChannel:
    type = TYPE

    def __init__(self, url: str, secret: str | None = None, headers: dict[str, str] | None = None,
                 timeout_s: float = 10.0, clock: Callable[[], float] = time.time):  # fmt: skip
        if secret and len(secret.encode()) < MIN_SECRET_BYTES:
            raise OptionError(
                "secret",
                f"{len(secret.encode())} bytes; an HMAC key needs at least {MIN_SECRET_BYTES}: "
                f"make one with {MAKE_SECRET} and give the receiver the same",
            )
        self.url = url
        self.secret = secret
        self.headers = dict(headers or {})
        self.clock = clock
        """Unix seconds for the signature's timestamp (injectable to test the receiver's window)."""
        self.http = HttpPoster(timeout_s)

    async def send(self, message: Message) -> Result:
        body = orjson.dumps(message.data)
        headers = {
            **self.headers,
            "Content-Type": "application/json",
            "Idempotency-Key": message.key,
        }
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body, int(self.clock()))
        status, _text, failure = await self.http.post(self.url, body, headers)
        return failure if failure is not None else Result.delivered(f"HTTP {status}")

    async def close(self) -> None:
        await self.http.close()
