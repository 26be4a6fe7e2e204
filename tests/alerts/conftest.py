"""Fixtures of the alerts tests: loopback stand-ins for robots and webhooks (tests/alerts/standins.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.alerts.standins import HOOK_SECRET, HttpStandIn


@pytest.fixture
def server() -> Iterator[HttpStandIn]:
    """A robot stand-in: "ok" answers ``{"errcode": 0}``."""
    s = HttpStandIn()
    yield s
    s.close()


@pytest.fixture
def hook() -> Iterator[HttpStandIn]:
    """A webhook receiver that honours ``Idempotency-Key`` and checks signatures made with ``HOOK_SECRET``."""
    s = HttpStandIn(
        ok_body={"ok": True}, dedup_header="Idempotency-Key", signing_secret=HOOK_SECRET
    )
    yield s
    s.close()


@pytest.fixture
def hooks() -> Iterator[list[HttpStandIn]]:
    """Three webhook receivers: grid officer, district duty officer, city command center."""
    servers = [HttpStandIn(ok_body={"ok": True}, dedup_header="Idempotency-Key") for _ in range(3)]
    yield servers
    for s in servers:
        s.close()
