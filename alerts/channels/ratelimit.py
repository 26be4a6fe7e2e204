"""A token bucket per robot: WeCom and DingTalk robots take 20 messages a minute (docs/alerts.md#channels)."""

from __future__ import annotations

import asyncio
import time


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
