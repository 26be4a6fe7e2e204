"""alerts/channels/ratelimit.py: a robot's token bucket."""

from __future__ import annotations

import time

import pytest

from alerts.channels.ratelimit import TokenBucket
from tests.alerts.standins import run


@pytest.mark.serial  # times itself: under a second, which a loaded machine stretches
def test_token_bucket_keeps_a_robot_under_its_rate() -> None:
    async def go() -> float:
        bucket = TokenBucket(rate=5, per_s=0.5)  # 5 per half second = 10/s, burst 5
        t = time.monotonic()
        for _ in range(10):
            await bucket.acquire()
        return time.monotonic() - t

    elapsed = run(go())
    assert 0.4 <= elapsed < 1.0  # the burst of 5 at once, the next 5 at 10/s
    assert TokenBucket.for_target("wecom:x", 20) is TokenBucket.for_target("wecom:x", 20)


def test_a_throttled_robot_gets_no_tokens_for_a_while() -> None:
    bucket = TokenBucket(rate=20)
    bucket.penalize(600)
    assert 599 < bucket.wait_s() <= 603  # 600 s of no tokens, then one refills in 3 s
