"""The group stage: notices sharing a route, a receiver and a group key become one push.

Per group (``route id``, ``receiver``, values of the route's ``group_by``
labels):

* the first notice of a quiet group waits ``group_wait`` for company, then
  the group is pushed as one message (300 lamp faults in one district within
  ``group_wait`` are one message);
* after a push, the group's next push comes no sooner than
  ``group_interval`` after it: what arrives meanwhile is collected into it.

The stage keeps only notices that are not yet in a message; they are also in
the outbox file (``notices`` table), so a restart rebuilds the groups.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from alerts.message import Notice

GroupId = tuple[str, str, str]
"""(route id, receiver, group key)."""


def group_key(labels: dict[str, str], group_by: Iterable[str]) -> str:
    return ",".join(f"{k}={labels.get(k, '')}" for k in group_by)


@dataclass
class Group:
    gid: GroupId
    wait_ms: int
    interval_ms: int
    pending: list[Notice] = field(default_factory=list)
    flush_at: int | None = None
    last_flush: int | None = None


class Grouper:
    def __init__(self) -> None:
        self.groups: dict[GroupId, Group] = {}

    def add(self, notice: Notice, wait_ms: int, interval_ms: int, now_ms: int) -> None:
        gid = (notice.route_id, notice.receiver, notice.group_key)
        g = self.groups.get(gid)
        if g is None:
            g = self.groups[gid] = Group(gid, wait_ms, interval_ms)
        g.pending.append(notice)
        if g.flush_at is None:
            first = now_ms + wait_ms
            if g.last_flush is not None:
                first = max(first, g.last_flush + interval_ms)
            g.flush_at = first

    def due(self, now_ms: int) -> list[tuple[GroupId, list[Notice]]]:
        """Groups whose time has come, with their notices (taken out of the stage)."""
        out = []
        for gid, g in list(self.groups.items()):
            if g.flush_at is not None and g.flush_at <= now_ms:
                out.append((gid, g.pending))
                g.pending, g.flush_at, g.last_flush = [], None, now_ms
            elif g.flush_at is None and (
                g.last_flush is None or now_ms - g.last_flush >= g.interval_ms
            ):
                del self.groups[gid]  # quiet for a whole interval: forget it
        return out

    def withdraw(self, key: str) -> None:
        """Take the notices of ``key`` out of their groups (replaced before they were pushed);
        a group keeps its flush time, so the replacement goes out when they would have."""
        for g in self.groups.values():
            g.pending = [n for n in g.pending if n.key != key]

    def next_due(self) -> int | None:
        times = [g.flush_at for g in self.groups.values() if g.flush_at is not None]
        return min(times) if times else None

    def pending_count(self) -> int:
        return sum(len(g.pending) for g in self.groups.values())
