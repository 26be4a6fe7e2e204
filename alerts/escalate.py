"""The escalation stage: an unacknowledged case climbs the levels of its route's policy.

A route names an escalation policy (routing file ``escalations:``); level
``i`` of it fires at ``opened_at + after[severity]`` if the case is still
open and nobody acknowledged it: grid officer (the route's receiver) ->
district duty officer -> city command center, e.g. critical after 5 min and
15 min, major after 30 min and 2 h. A severity a level does not list stops
the climb there. After the last level reached, the route's
``repeat_interval`` (0: never) reminds that level's receiver while the case
stays unacknowledged.

An ``acknowledged`` (or acknowledged-then-escalated), ``repaired`` or
``closed`` case event stops it: the decision is made from the latest
snapshot, when the level is due. Progress (levels reached, reminders sent) is
kept with the case in the outbox file, so a restart neither repeats nor
skips a level. Times come from the injected clock (epoch ms).
"""

from __future__ import annotations

from dataclasses import dataclass

from alerts.message import CaseInfo
from alerts.route import Route, RoutingConfig


@dataclass(frozen=True)
class Step:
    route: Route
    change: str
    """``escalation`` (a new level) or ``reminder``."""
    receiver: str
    level_name: str
    key: str
    due_ms: int


def _next_step(info: CaseInfo, route: Route, config: RoutingConfig) -> Step | None:
    if info.acknowledged or info.ended:
        return None
    s = info.snapshot
    opened, sev = s.get("opened_at"), s.get("severity", "")
    if opened is None:
        return None
    st = info.escalation.get(route.id, {"level": 0, "reminders": 0})
    levels = config.escalations[route.escalation].levels if route.escalation else ()
    reached = st["level"]
    if (
        reached < len(levels)
        and sev in levels[reached].after_ms
        and (reached == 0 or sev in levels[reached - 1].after_ms)
    ):
        lv = levels[reached]
        return Step(route, "escalation", lv.receiver, lv.name, f"{info.case_id}:esc:{route.id}:{reached + 1}",
                    opened + lv.after_ms[sev])  # fmt: skip
    if route.repeat_interval_ms <= 0:
        return None
    if reached:
        lv = levels[reached - 1]
        base, receiver, name = opened + lv.after_ms.get(sev, 0), lv.receiver, lv.name
    else:
        base, receiver = opened, route.receiver
        name = config.receivers[receiver].label
    k = st["reminders"] + 1
    return Step(route, "reminder", receiver, name, f"{info.case_id}:esc:{route.id}:{reached}:r{k}",
                base + k * route.repeat_interval_ms)  # fmt: skip


def next_due(info: CaseInfo, routes: list[Route], config: RoutingConfig) -> int | None:
    """When this case next needs the escalation stage (None: never, unless it changes)."""
    times = [st.due_ms for r in routes if (st := _next_step(info, r, config)) is not None]
    return min(times) if times else None


def due_steps(
    info: CaseInfo, routes: list[Route], config: RoutingConfig, now_ms: int
) -> list[Step]:
    """Every step due at ``now_ms``, recorded in ``info.escalation`` (so each fires once)."""
    out: list[Step] = []
    for route in routes:
        while (st := _next_step(info, route, config)) is not None and st.due_ms <= now_ms:
            prog = info.escalation.setdefault(route.id, {"level": 0, "reminders": 0})
            if st.change == "escalation":
                prog["level"] += 1
                prog["reminders"] = 0
            else:  # skip reminders missed while the service was down: one reminder, not a backlog
                k = prog["reminders"] + 1
                base = st.due_ms - k * route.repeat_interval_ms
                prog["reminders"] = max(k, (now_ms - base) // route.repeat_interval_ms)
            out.append(st)
    return out


def reached_receivers(info: CaseInfo, route: Route, config: RoutingConfig) -> list[str]:
    """The route's receiver plus every level already reached: who hears of the case's later changes."""
    out = [route.receiver]
    if route.escalation:
        levels = config.escalations[route.escalation].levels
        for lv in levels[: info.escalation.get(route.id, {}).get("level", 0)]:
            if lv.receiver not in out:
                out.append(lv.receiver)
    return out
