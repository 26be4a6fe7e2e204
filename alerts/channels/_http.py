"""A shared aiohttp client for the HTTP channels (one session per channel, created lazily)."""

from __future__ import annotations

import aiohttp

from alerts.channels import Result, http_failure


class HttpPoster:
    def __init__(self, timeout_s: float):
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, Result | None]:
        """POST; returns (status, text, failure-or-None). Network errors and timeouts are ``retry``."""
        try:
            async with self.session().post(url, data=body, headers=headers) as resp:
                text = await resp.text(errors="replace")
                if 200 <= resp.status < 300:
                    return resp.status, text, None
                return resp.status, text, http_failure(resp.status, text, resp.headers.get("Retry-After"))
        except TimeoutError:  # asyncio.TimeoutError is TimeoutError since Python 3.11
            return 0, "", Result.retry(f"timed out after {self.timeout.total}s")
        except aiohttp.ClientError as exc:
            return 0, "", Result.retry(f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
