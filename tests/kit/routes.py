"""Routing files (docs/alerts.md) that several test modules run the alerts service with.

A module's own routing, written for what it alone tests, stays in that module; what is here is
shared: the one signed webhook of a grid officer, and the officers' robot beside the city's
case platform (the handover, docs/handover.md).
"""

from __future__ import annotations

from pathlib import Path

from tests.alerts.standins import HOOK_SECRET, LINK_SECRET

HANDOVER_DELIVERY = "{retry_initial: 50ms, retry_max: 200ms, timeout: 500ms}"
"""The handover routing's retries: quick, for pushes to loopback stand-ins in one process."""


def grid_officer_routes(tmp_path: Path, url: str, group_wait: str = "0s") -> Path:
    """Every case to one receiver, ``grid``: JS-GRID-01's links, a webhook at ``url`` signed
    with ``HOOK_SECRET``, an overdue push every 2 h."""
    p = tmp_path / "routes.yaml"
    p.write_text(
        f"""
receivers:
  - {{name: grid, officer: JS-GRID-01, webhook: {{url: "{url}", secret: {HOOK_SECRET}, timeout: 1s}}}}
route: {{receiver: grid, group_by: [case_id], group_wait: {group_wait}, group_interval: 0s, repeat_interval: 0s}}
ack: {{base_url: "http://127.0.0.1:1", secret: {LINK_SECRET}, link_ttl: 10m}}
delivery: {{retry_initial: 100ms, retry_max: 300ms}}
notify: {{overdue_every_hours: 2}}
""",
        encoding="utf-8",
    )
    return p


def handover_routes(
    tmp_path: Path, officers_url: str, platform_url: str, delivery: str = HANDOVER_DELIVERY
) -> Path:
    """Cases to the grid officers' webhook at ``officers_url`` (links for the receiver's
    ``roles: [grid]``), every stage change to the city's platform at ``platform_url`` (signed
    with ``HOOK_SECRET``); ``delivery``: the routing file's ``delivery`` mapping."""
    p = tmp_path / "routes.yaml"
    p.write_text(
        f"""
receivers:
  - {{name: grid, roles: [grid], webhook: {{url: "{officers_url}", timeout: 1s}}}}
  - {{name: platform, webhook: {{url: "{platform_url}", secret: {HOOK_SECRET}, timeout: 1s}}}}
route: {{receiver: grid, group_by: [case_id], group_wait: 0s, group_interval: 0s, repeat_interval: 0s}}
handover: {{receiver: platform}}
ack: {{base_url: "http://127.0.0.1:1", secret: {LINK_SECRET}, link_ttl: 10m}}
delivery: {delivery}
""",
        encoding="utf-8",
    )
    return p
