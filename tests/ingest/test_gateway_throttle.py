"""The credential throttle of the gateways (docs/gateways.md, "Authentication")."""

from __future__ import annotations

import pytest

from ingest.gateways.throttle import CredentialThrottle, host_of


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_the_limit_th_wrong_credential_within_the_window_locks_the_address_out() -> None:
    clock = Clock()
    t = CredentialThrottle(limit=3, window_s=60, lockout_s=120, clock=clock)
    assert not t.failed("10.0.0.7") and not t.failed("10.0.0.7")
    assert not t.locked("10.0.0.7")
    assert t.failed("10.0.0.7") and t.locked("10.0.0.7")
    assert not t.locked("10.0.0.8"), "per address"
    clock.t += 119
    assert t.locked("10.0.0.7")
    clock.t += 1
    assert not t.locked("10.0.0.7"), "the lockout ends"
    assert t.refused == 2


def test_failures_older_than_the_window_do_not_count() -> None:
    clock = Clock()
    t = CredentialThrottle(limit=3, window_s=60, lockout_s=120, clock=clock)
    t.failed("a")
    t.failed("a")
    clock.t += 61
    assert not t.failed("a") and not t.failed("a")
    assert t.failed("a")


def test_the_tracked_addresses_are_bounded() -> None:
    clock = Clock()
    t = CredentialThrottle(limit=5, window_s=60, lockout_s=60, clock=clock, max_addresses=100)
    for i in range(1000):
        t.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(t._failures) <= 101


def test_a_throttle_that_could_never_lock_is_refused() -> None:
    with pytest.raises(ValueError, match="Invalid throttle"):
        CredentialThrottle(limit=0)


@pytest.mark.parametrize(
    ("peer", "host"), [("10.0.0.7:51234", "10.0.0.7"), ("::1:51234", "::1"), ("?", "?")]
)
def test_the_address_of_a_peer(peer: str, host: str) -> None:
    assert host_of(peer) == host
