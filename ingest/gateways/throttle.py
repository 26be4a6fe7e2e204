"""Failed credential checks per client address: online guessing of a monitor's PW or a terminal's
authentication code is refused after a bound (docs/gateways.md, "Authentication").

A gateway closes a connection after ``max_bad_frames`` bad frames in a row, but a guesser simply
reconnects; an HJ 212 PW is six characters. So each gateway counts, per client address, the frames
whose credential was wrong (``hj212_bad_pw``, ``jt808_bad_auth``): ``limit`` of them within
``window_s`` lock the address out for ``lockout_s`` -- its new connections are closed at once,
without reading, and its open ones at their next wrong credential. The lockout is per address, not
per device: a guesser cannot lock a real monitor out of its own data. Memory is bounded: addresses
whose failures are all older than the window are forgotten, and at most ``max_addresses`` are
tracked (the oldest forgotten first).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

LIMIT = 10
WINDOW_S = 600.0
LOCKOUT_S = 600.0
MAX_ADDRESSES = 100_000


class CredentialThrottle:
    def __init__(
        self,
        limit: int = LIMIT,
        window_s: float = WINDOW_S,
        lockout_s: float = LOCKOUT_S,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = MAX_ADDRESSES,
    ) -> None:
        if limit < 1 or window_s <= 0 or lockout_s <= 0:
            raise ValueError(f"Invalid throttle {limit}/{window_s}s/{lockout_s}s; all must be > 0")
        self.limit, self.window_s, self.lockout_s = limit, window_s, lockout_s
        self.clock = clock
        self.max_addresses = max_addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._locked_until: dict[str, float] = {}
        self.refused = 0
        """Connections and frames refused because their address was locked out."""

    def locked(self, address: str) -> bool:
        """Is ``address`` locked out now? (A refusal is counted.)"""
        until = self._locked_until.get(address)
        if until is None:
            return False
        if self.clock() >= until:
            del self._locked_until[address]
            return False
        self.refused += 1
        return True

    def failed(self, address: str) -> bool:
        """One wrong credential from ``address``; True when it locks the address out from now."""
        now = self.clock()
        times = self._failures.pop(address, None) or deque()
        while times and now - times[0] > self.window_s:
            times.popleft()
        times.append(now)
        self._failures[address] = times  # most recent last
        self._forget(now)
        if len(times) >= self.limit:
            self._locked_until[address] = now + self.lockout_s
            del self._failures[address]
            return True
        return False

    def _forget(self, now: float) -> None:
        while self._failures:
            oldest, times = next(iter(self._failures.items()))
            if len(self._failures) > self.max_addresses or now - times[-1] > self.window_s:
                del self._failures[oldest]
            else:
                break
        for address in [a for a, t in self._locked_until.items() if now >= t]:
            del self._locked_until[address]


def host_of(peer: str) -> str:
    """``"10.0.0.7:51234"`` -> ``"10.0.0.7"`` (IPv6 addresses keep their colons)."""
    return peer.rpartition(":")[0] or peer
