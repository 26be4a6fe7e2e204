"""The alerts service in-process (no Kafka), with a controlled clock, against real loopback webhooks.

The service's Kafka loop only feeds ``accept`` and calls ``tick``; the tests
of the stages (tests/alerts/test_service.py, test_group.py, test_escalate.py,
test_outbox.py, test_message.py) do the same through these helpers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alerts.service import AlertsService
from foundation.settings import Settings
from tests.alerts.standins import LINK_SECRET, FakeClock, HttpStandIn, async_wait_for

MIN = 60_000


def routes(tmp_path: Path, grid_url: str, duty_url: str, command_url: str, *, group_wait: str = "0s",
           group_interval: str = "0s", overdue_every: int = 2, retry: str = "50ms", extra_routes: str = "") -> Path:  # fmt: skip
    p = tmp_path / "routes.yaml"
    p.write_text(
        f"""
receivers:
  - {{name: grid, label: 网格员, roles: [grid], webhook: {{url: "{grid_url}", timeout: 500ms}}}}
  - {{name: duty, label: 区值班长, roles: [duty], webhook: {{url: "{duty_url}", timeout: 500ms}}}}
  - {{name: command, label: 市指挥中心, roles: [city_supervisor], webhook: {{url: "{
            command_url
        }", timeout: 500ms}}}}
escalations:
  std:
    - {{name: 区值班长 / district duty officer, receiver: duty, after: {{critical: 5m, major: 30m}}}}
    - {{name: 市指挥中心 / city command center, receiver: command, after: {{critical: 15m, major: 2h}}}}
route:
  receiver: grid
  group_by: [case_id]
  group_wait: {group_wait}
  group_interval: {group_interval}
  repeat_interval: 0s
  escalation: std
  routes:
{
            extra_routes
            or '''    - match: {rule: streetlight.fault}
      group_by: [district]
      escalation: null'''
        }
notify: {{overdue_every_hours: {overdue_every}}}
ack: {{base_url: "http://ack.example", secret: {LINK_SECRET}, link_ttl: 1h}}
delivery: {{retry_initial: {retry}, retry_max: 200ms, timeout: 500ms}}
district_names: {{jinshui: 金水区}}
""",
        encoding="utf-8",
    )
    return p


def service(
    settings: Settings, tmp_path: Path, hooks: list[HttpStandIn], clock=None, **kw
) -> AlertsService:  # noqa: ANN001
    """The service on a routing file whose grid, duty and command receivers post to ``hooks``."""
    path = routes(tmp_path, *(h.url for h in hooks), **kw)
    return AlertsService(
        settings, path, tmp_path / "state", clock=clock or FakeClock(), http_port=-1
    )


def cases_of(hook: HttpStandIn) -> list[list[tuple[str, str]]]:
    """What each delivered push said: [(case_id, change), ...] per push."""
    return [[(c["case_id"], c["change"]) for c in s.json()["cases"]] for s in hook.delivered]


async def settle(svc: AlertsService, hooks: list[HttpStandIn], n: int, timeout: float = 5) -> None:
    await async_wait_for(
        lambda: sum(len(h.delivered) for h in hooks) >= n, timeout, f"{n} pushes", tick=svc.tick
    )
    await asyncio.sleep(0.05)
    svc.tick()
