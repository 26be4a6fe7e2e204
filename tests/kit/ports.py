"""Free loopback ports for private services of one test: nothing fixed, so two test runs (or a
test and a `citywatch run`) on one machine never collide (issue 15)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on now, picked by the OS."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive free ports (citywatch's broker needs three: plain, TLS,
    certificates). The OS picks the first; the next ones are probed."""
    for _ in range(200):
        base = free_port()
        if base + n > 65535:
            continue
        try:
            for port in range(base + 1, base + n):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError(f"no {n} consecutive free loopback ports after 200 tries")
