"""HTTP POST for the HTTP channels, and the one judge of their answers (docs/alerts.md#channels).

* ``HttpPoster`` -- an aiohttp session per channel, created lazily; network
  errors and timeouts are ``retry``; redirects are not followed but given up
  (``redirected``): following one would send the push to an address nobody
  configured, and a far end that echoes the URL it was sent to would put the
  robot's key into the delivery detail;
* ``http_failure`` -- an HTTP answer that is not a success: 408, 429
  (honouring ``Retry-After``) and 5xx retry, any other status gives up;
* ``robot_answer`` -- a chat robot's JSON answer (WeCom and DingTalk speak
  the same ``errcode`` dialect).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp
import orjson

from alerts.channels.plugin import Result
from alerts.channels.ratelimit import TokenBucket


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


def redirected(status: int, location: str | None) -> Result:
    """A 3xx answer: given up, naming only where it points (scheme and host, never its path or query)."""
    parts = urlsplit(location or "")
    host = parts.netloc.rpartition("@")[2]
    where = f"{parts.scheme}://{host}/..." if host else "another path" if location else "nowhere"
    return Result.give_up(
        f"HTTP {status}: redirected to {where}; redirects are not followed: "
        "put the address the far end names into the routing file"
    )


def robot_answer(
    status: int,
    text: str,
    bucket: TokenBucket,
    throttled: frozenset[int],
    throttle_s: float,
    retryable: frozenset[int],
    throttle_note: str = "",
) -> Result:
    """Judge a chat robot's JSON answer to a 2xx POST.

    errcode 0 is delivered; a throttling code penalizes the robot's token
    bucket and retries after ``throttle_s``; ``retryable`` codes retry with
    backoff; anything else (bad key, bad signature, blocked keyword) gives up.
    """
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


class HttpPoster:
    def __init__(self, timeout_s: float):
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def post(
        self, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, str, Result | None]:
        """POST; returns (status, text, failure-or-None). Network errors and timeouts are ``retry``."""
        try:
            async with self.session().post(
                url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                text = await resp.text(errors="replace")
                if 200 <= resp.status < 300:
                    return resp.status, text, None
                if 300 <= resp.status < 400:
                    return resp.status, text, redirected(resp.status, resp.headers.get("Location"))
                return (
                    resp.status,
                    text,
                    http_failure(resp.status, text, resp.headers.get("Retry-After")),
                )
        except TimeoutError:  # asyncio.TimeoutError is TimeoutError since Python 3.11
            return 0, "", Result.retry(f"timed out after {self.timeout.total}s")
        except aiohttp.ClientError as exc:
            return 0, "", Result.retry(f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
