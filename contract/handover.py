"""Cases and their stages in the city platform's terms (数字城管, GB/T 30428; docs/handover.md).

One shape, three doors: ``citywatch case export`` (JSON and CSV), the outgoing
webhook the alerts service sends per stage change (``handover`` in the routing
file), and what a platform reads back. Every stage change has an id that is the
same however often it is exported or pushed (``stage_change_id``), so the
platform can drop a repeat.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from contract.cases import STAGE_NAMES, name_of
from contract.clock import DEFAULT_TIMEZONE
from contract.rules import rule_name

__all__ = [
    "FORMAT",
    "STAGE_COLUMNS",
    "case_record",
    "handover_push",
    "stage_change_id",
    "stage_record",
    "stage_rows",
]

FORMAT = "citywatch.handover/1"
"""The layout's name and version, in every export and push (``format``)."""

CASE_KEYS = (
    "case_id", "source", "kind", "rule", "rule_name", "device", "district", "grid", "unit",
    "address", "lat", "lon", "component_code", "component_category", "component_category_name",
    "component_id", "severity", "state", "opened_at", "stage", "deadline", "reworks",
    "extensions", "evaluation",
)  # fmt: skip
"""A case's keys in the platform's terms (docs/handover.md has each one's meaning)."""

STAGE_KEYS = (
    "id", "change", "change_name", "at", "at_local", "by", "note", "photos", "deadline",
    "previous_deadline", "reason", "passed", "rework", "evaluation",
)  # fmt: skip
"""A stage change's keys."""

STAGE_COLUMNS = (
    "case_id", "device", "kind", "rule", "rule_name", "district", "grid", "unit", "address",
    "component_code", "component_category", "component_id", "stage_id", "change", "change_name",
    "at", "at_local", "by", "note", "photos", "deadline", "reason", "passed", "evaluation",
    "reworks", "extensions",
)  # fmt: skip
"""The CSV's columns: one row per stage change, the case's columns repeated."""


def stage_change_id(case_id: str, change: Mapping[str, Any]) -> str:
    """The idempotent id of one stage change: ``<case_id>:<change>:<at>`` (a rework's second
    dispatch happens at its failed check's instant: ``change`` tells them apart)."""
    return f"{case_id}:{change['change']}:{int(change['at'])}"


def _local(ms: int | None, tz: str) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).isoformat(timespec="seconds")


def stage_record(
    case_id: str, change: Mapping[str, Any], tz: str = DEFAULT_TIMEZONE
) -> dict[str, Any]:
    """One stage change in the platform's terms."""
    out: dict[str, Any] = {k: change.get(k) for k in STAGE_KEYS}
    out["id"] = stage_change_id(case_id, change)
    out["change_name"] = name_of(STAGE_NAMES, str(change["change"]))
    out["at"] = int(change["at"])
    out["at_local"] = _local(int(change["at"]), tz)
    out["photos"] = list(change.get("photos") or [])
    return out


def case_record(
    event: Mapping[str, Any],
    changes: Sequence[Mapping[str, Any]],
    tz: str = DEFAULT_TIMEZONE,
) -> dict[str, Any]:
    """A case (its latest snapshot, ``CaseEvent.to_dict()``) with its stage changes, in order."""
    detail = event.get("detail") or {}
    flow = detail.get("workflow") or {}
    known = list(changes) or list(flow.get("history") or [])
    filed = next((c for c in known if c.get("change") == "filed"), {})
    last = changes[-1] if changes else {}
    rec: dict[str, Any] = {
        "case_id": event["case_id"],
        "source": "sensor",
        "kind": event.get("kind"),
        "rule": event.get("rule"),
        "rule_name": rule_name(str(event.get("rule") or "")),
        "device": event.get("device"),
        "district": event.get("district"),
        "grid": event.get("grid"),
        "unit": event.get("unit"),
        "address": event.get("address"),
        "lat": event.get("lat"),
        "lon": event.get("lon"),
        "component_code": filed.get("component_code") or event.get("component_code"),
        "component_category": filed.get("component_category"),
        "component_category_name": filed.get("component_category_name"),
        "component_id": filed.get("component_id"),
        "severity": event.get("severity"),
        "state": event.get("state"),
        "opened_at": event.get("opened_at"),
        "stage": flow.get("stage") or ("evaluated" if last.get("change") == "evaluated" else None),
        "deadline": flow.get("deadline"),
        "reworks": int(flow.get("reworks") or last.get("reworks") or 0),
        "extensions": int(flow.get("extensions") or last.get("extensions") or 0),
        "evaluation": flow.get("evaluation") or last.get("evaluation"),
    }
    rec = {k: rec[k] for k in CASE_KEYS}
    rec["stages"] = [stage_record(str(event["case_id"]), c, tz) for c in changes]
    return rec


def handover_push(
    event: Mapping[str, Any], change: Mapping[str, Any], tz: str = DEFAULT_TIMEZONE
) -> dict[str, Any]:
    """The outgoing webhook's body for one stage change: the case as it is after it, the change,
    and ``cases`` (what the alerts service's delivery record lists)."""
    case = case_record(event, [], tz)
    del case["stages"]
    stage = stage_record(str(event["case_id"]), change, tz)
    return {
        "format": FORMAT,
        "id": stage["id"],
        "type": "stage",
        "case": case,
        "stage": stage,
        "cases": [{"case_id": event["case_id"], "change": f"stage:{change['change']}"}],
    }


def stage_rows(record: Mapping[str, Any]) -> list[list[Any]]:
    """A ``case_record``'s CSV rows (``STAGE_COLUMNS``), one per stage change."""
    rows = []
    for s in record["stages"]:
        rows.append([
            record["case_id"], record["device"], record["kind"], record["rule"],
            record["rule_name"], record["district"], record["grid"], record["unit"],
            record["address"], record["component_code"], record["component_category"],
            record["component_id"], s["id"], s["change"], s["change_name"], s["at"],
            s["at_local"], s["by"], s["note"], " ".join(s["photos"]), s["deadline"],
            s["reason"], s["passed"], s["evaluation"], record["reworks"], record["extensions"],
        ])  # fmt: skip
    return rows
