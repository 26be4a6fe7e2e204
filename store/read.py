"""The one read-back path: InfluxDB points -> citywatch's records.

Reports, the CLI and the main job read the ledger and the cases through these
functions instead of parsing rows themselves. Every value in a WHERE clause is
a bound parameter (``store.influxql``), never text in the query.

* ``case_events`` / ``latest_cases`` -> ``contract.cases.CaseEvent``, rebuilt
  from the ``case_event`` points (docs/contracts.md, "InfluxDB"): ``at`` is the
  point's time, ``detail`` and ``evidence`` are parsed back from their JSON
  fields. Tag values are what InfluxDB stores (``store.points`` explains the
  few characters a tag cannot hold).
* ``ledger_entries`` -> ``StoredEntry``: a ``contract.cases.LedgerEntry`` as the
  ``penalty`` measurement keeps it (its ``unit``, no ``evidence``; the evidence
  travels with the case events). ``hour_index`` -1 and ``reverses`` "" read
  back as None.
* ``ledger_totals`` (count and exact integer sum of ``amount_yuan`` per tag
  group) and ``point_counts`` (points per telemetry measurement).

Both ledger measurements live in the ``ledger`` retention policy
(``store.schema.LEDGER_RP``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from contract.cases import CaseEvent, LedgerEntry
from store.influxql import QUERY_TIMEOUT_S, ident, query
from store.schema import AUDIT, CASE_EVENT, CASE_STAGE, PENALTY

__all__ = [
    "LedgerTotal",
    "StoredEntry",
    "case_event_from_row",
    "case_events",
    "announcements",
    "case_stages",
    "StageChange",
    "latest_cases",
    "ledger_entries",
    "ledger_totals",
    "point_counts",
    "stored_entry_from_row",
]

ID_CHUNK = 100
"""Ids per query (``"case_id" = $id0 OR ...``) when reading by id."""


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """One ledger entry as stored in the ``penalty`` measurement."""

    id: str
    case_id: str
    rule: str
    device: str
    payer: str
    payer_type: str
    district: str
    amount_yuan: int
    accrued_at: int
    hour_index: int | None
    reverses: str | None
    unit: str = ""

    def ledger_entry(self) -> LedgerEntry:
        """The contract's entry (``evidence`` empty: it is not stored with the penalty)."""
        return LedgerEntry(
            id=self.id, case_id=self.case_id, rule=self.rule, device=self.device, payer=self.payer,
            payer_type=self.payer_type, district=self.district, amount_yuan=self.amount_yuan,
            accrued_at=self.accrued_at, hour_index=self.hour_index, reverses=self.reverses, evidence=[],
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class LedgerTotal:
    """``count(amount_yuan)`` and ``sum(amount_yuan)`` of one GROUP BY group."""

    group: tuple[str, ...]
    """The tag values, in the order the tags were asked for ("" where a point has none)."""
    count: int
    yuan: int


def stored_entry_from_row(r: Mapping[str, Any]) -> StoredEntry:
    """A ``penalty`` row (``SELECT *``, epoch ms) -> ``StoredEntry``."""
    hour = r.get("hour_index")
    return StoredEntry(
        id=str(r["entry_id"]),
        case_id=str(r.get("case_id") or ""),
        rule=str(r.get("rule") or ""),
        device=str(r.get("device") or ""),
        payer=str(r.get("payer") or ""),
        payer_type=str(r.get("payer_type") or ""),
        district=str(r.get("district") or ""),
        amount_yuan=int(r["amount_yuan"]),
        accrued_at=int(r["time"]),
        hour_index=None if hour is None or int(hour) < 0 else int(hour),
        reverses=(r.get("reverses") or None),
        unit=str(r.get("unit") or ""),
    )


def _json(text: Any, want: type) -> Any:
    if not text or not isinstance(text, str):
        return want()
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return want()
    return value if isinstance(value, want) else want()


def case_event_from_row(r: Mapping[str, Any]) -> CaseEvent:
    """A ``case_event`` row (``SELECT *``, epoch ms) -> ``CaseEvent``."""
    at = int(r["time"])
    opened_at = r.get("opened_at")
    deadline = r.get("deadline")
    return CaseEvent(
        case_id=str(r["case_id"]),
        kind=str(r.get("kind") or ""),
        rule=str(r.get("rule") or ""),
        device=str(r.get("device") or ""),
        district=str(r.get("district") or ""),
        grid=str(r.get("grid") or ""),
        unit=str(r.get("unit") or ""),
        severity=str(r.get("severity") or ""),
        state=str(r.get("state") or ""),
        at=at,
        opened_at=at if opened_at is None else int(opened_at),
        deadline=None if deadline is None else int(deadline),
        evidence=_json(r.get("evidence"), list),
        component_code=r.get("component_code") or None,
        address=str(r.get("address") or ""),
        detail=_json(r.get("detail"), dict),
    )


# ------------------------------------------------------------------ WHERE clauses with bound values


def _conditions(
    start_ms: int | None, end_ms: int | None, tags: Mapping[str, str | None]
) -> tuple[list[str], dict[str, Any]]:
    conds: list[str] = []
    params: dict[str, Any] = {}
    for name, value in tags.items():
        if value is not None:
            conds.append(f"{ident(name)} = ${name}")
            params[name] = value
    if start_ms is not None:
        conds.append("time >= $start")
        params["start"] = int(start_ms) * 1_000_000  # a bound integer is nanoseconds
    if end_ms is not None:
        conds.append("time < $end")
        params["end"] = int(end_ms) * 1_000_000
    return conds, params


def _select(
    settings: Any, measurement: str, conds: list[str], params: dict[str, Any], tail: str = "",
    timeout: float = QUERY_TIMEOUT_S,
) -> list[dict[str, Any]]:  # fmt: skip
    where = f" WHERE {' AND '.join(conds)}" if conds else ""
    sql = f"SELECT * FROM {measurement}{where}{tail}"
    return query(settings, None, sql, params=params, timeout=timeout)


def _rows(settings: Any, measurement: str, id_tag: str, ids: Iterable[str] | None,
          start_ms: int | None, end_ms: int | None, tags: Mapping[str, str | None],
          timeout: float = QUERY_TIMEOUT_S) -> list[dict[str, Any]]:  # fmt: skip
    conds, params = _conditions(start_ms, end_ms, tags)
    if ids is None:
        return _select(settings, measurement, conds, params, timeout=timeout)
    wanted = sorted(set(ids))
    rows: list[dict[str, Any]] = []
    for i in range(0, len(wanted), ID_CHUNK):
        chunk = wanted[i : i + ID_CHUNK]
        alternatives = " OR ".join(f"{ident(id_tag)} = $id{k}" for k in range(len(chunk)))
        bound = params | {f"id{k}": x for k, x in enumerate(chunk)}
        where = [f"({alternatives})", *conds]
        rows += _select(settings, measurement, where, bound, timeout=timeout)
    return rows


# ------------------------------------------------------------------ the readers


def ledger_entries(
    settings: Any,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    case_id: str | None = None,
    unit: str | None = None,
    ids: Iterable[str] | None = None,
) -> list[StoredEntry]:
    """Entries with ``start_ms <= accrued_at < end_ms`` (each bound optional), of one
    case, of one property-rights unit (the ``unit`` field: any text, exactly) and/or
    with one of ``ids``; in time order (ties: by id)."""
    rows = _rows(
        settings, PENALTY, "entry_id", ids, start_ms, end_ms, {"case_id": case_id, "unit": unit}
    )
    return sorted((stored_entry_from_row(r) for r in rows), key=lambda e: (e.accrued_at, e.id))


def case_events(
    settings: Any,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    case_id: str | None = None,
    unit: str | None = None,
    case_ids: Iterable[str] | None = None,
) -> list[CaseEvent]:
    """Every snapshot with ``start_ms <= at < end_ms`` (each bound optional), of one case,
    of one unit (the tag as stored) and/or of ``case_ids``; in time order (snapshots of
    one instant in the server's order)."""
    tags = {"case_id": case_id, "unit": unit}
    rows = _rows(settings, CASE_EVENT, "case_id", case_ids, start_ms, end_ms, tags)
    return sorted((case_event_from_row(r) for r in rows), key=lambda e: e.at)


@dataclass(frozen=True, slots=True)
class StageChange:
    """One ``case_stage`` point: a stage change of a case (docs/contracts.md, "Case stages")."""

    case_id: str
    kind: str
    rule: str
    district: str
    unit: str
    device: str
    stage: str
    """The change: a stage, ``extended`` or ``check_failed``."""
    at: int
    by: str
    note: str
    deadline: int | None
    evaluation: str
    reworks: int
    extensions: int
    change: dict[str, Any]
    """The whole change as the workflow recorded it (photos, component, reason...)."""


def stage_change_from_row(r: Mapping[str, Any]) -> StageChange:
    deadline = r.get("deadline")
    return StageChange(
        case_id=str(r["case_id"]),
        kind=str(r.get("kind") or ""),
        rule=str(r.get("rule") or ""),
        district=str(r.get("district") or ""),
        unit=str(r.get("unit") or ""),
        device=str(r.get("device") or ""),
        stage=str(r.get("stage") or ""),
        at=int(r["time"]),
        by=str(r.get("by") or ""),
        note=str(r.get("note") or ""),
        deadline=None if deadline is None else int(deadline),
        evaluation=str(r.get("evaluation") or ""),
        reworks=int(r.get("reworks") or 0),
        extensions=int(r.get("extensions") or 0),
        change=_json(r.get("change"), dict),
    )


_STAGE_ORDER = {
    name: i
    for i, name in enumerate(
        ("filed", "dispatched", "handled", "extended", "check_failed", "checked", "closed",
         "evaluated")
    )
}  # fmt: skip


def case_stages(
    settings: Any,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    case_ids: Iterable[str] | None = None,
    unit: str | None = None,
    district: str | None = None,
    device: str | None = None,
    timeout: float = QUERY_TIMEOUT_S,
) -> list[StageChange]:
    """Stage changes with ``start_ms <= at < end_ms`` (each bound optional), of ``case_ids``, one
    unit, district and/or device; by case, then time (changes of one instant in the workflow's
    order: filed before dispatched, check_failed before the rework's dispatched).

    ``timeout``: seconds each wait on InfluxDB may take; a lookup that must not hold up what it
    serves (the CLI gate's, ``alerts.acks.STAGE_LOOKUP_TIMEOUT_S``) sets a short one.
    """
    rows = _rows(settings, CASE_STAGE, "case_id", case_ids, start_ms, end_ms,
                 {"unit": unit, "district": district, "device": device}, timeout)  # fmt: skip
    out = [stage_change_from_row(r) for r in rows]

    def order(c: StageChange) -> tuple[str, int, int, int]:
        rework = c.stage == "dispatched" and c.by == "rework"
        return c.case_id, c.at, 5 if rework else _STAGE_ORDER.get(c.stage, 9), c.reworks

    return sorted(out, key=order)


def latest_cases(
    settings: Any, *, district: str | None = None, kind: str | None = None, unit: str | None = None
) -> list[CaseEvent]:
    """The latest snapshot of every case (of one district, kind and/or unit), by case id."""
    conds, params = _conditions(None, None, {"district": district, "kind": kind, "unit": unit})
    rows = _select(
        settings, CASE_EVENT, conds, params, " GROUP BY case_id ORDER BY time DESC LIMIT 1"
    )
    return [case_event_from_row(r) for r in rows]


def ledger_totals(settings: Any, by: Sequence[str]) -> list[LedgerTotal]:
    """Count and net yuan of the whole ledger per group of the tags ``by`` (e.g. ``("district",)``)."""
    group = f" GROUP BY {', '.join(ident(t) for t in by)}" if by else ""
    rows = query(
        settings, None, f"SELECT count(amount_yuan), sum(amount_yuan) FROM {PENALTY}{group}"
    )
    return [
        LedgerTotal(tuple(str(r.get(t) or "") for t in by), int(r["count"]), int(r["sum"]))
        for r in rows
    ]


def point_counts(settings: Any, fields: Mapping[str, str]) -> dict[str, int]:
    """measurement -> number of points with the given field (``{"dust": "pm10"}``);
    measurements without points are left out."""
    statements = "; ".join(f"SELECT count({ident(f)}) FROM {ident(m)}" for m, f in fields.items())
    return (
        {r["_series"]: int(r["count"]) for r in query(settings, None, statements)}
        if statements
        else {}
    )


def audit_records(
    settings: Any,
    *,
    officer: str | None = None,
    case_id: str | None = None,
    outcome: str | None = None,
    since_ms: int | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """The latest officer acts first (``audit`` in the ledger RP; docs/officers.md).

    ``case_id`` is a field, so it is compared in the query like the tags:
    bound, never spliced.
    """
    conds, params = _conditions(since_ms, None, {"officer": officer, "outcome": outcome})
    if case_id is not None:
        conds.append('"case_id" = $case_id')
        params["case_id"] = case_id
    rows = _select(
        settings, AUDIT, conds, params, f" ORDER BY time DESC LIMIT {max(1, int(limit))}"
    )
    for r in rows:
        for key in (
            "officer",
            "action",
            "channel",
            "credential",
            "device",
            "case_id",
            "client",
            "reason",
        ):
            r[key] = r.get(key) or ""
    return rows


def announcements(settings: Any) -> list[dict[str, Any]]:
    """Every accepted ``announce_works`` act (``audit``; docs/reports.md, "Announced works"),
    oldest first, ``extra`` read back from its JSON (the window). Not bounded by when it was
    recorded: the window is in ``extra``, and an announcement may be recorded after it began."""
    conds, params = _conditions(None, None, {"action": "announce_works", "outcome": "accepted"})
    rows = _select(settings, AUDIT, conds, params, " ORDER BY time ASC")
    for r in rows:
        r["extra"] = _json(r.get("extra"), dict)
    return rows


def lighting_rates(settings: Any, start_ms: int, end_ms: int, rp: str = "raw") -> dict[str, float]:
    """The lighting rate (亮灯率) per district over ``[start_ms, end_ms)``: lamp readings lit
    inside the lit window / lamp readings inside it (docs/rules.md "Lighting rate").

    ``rp``: ``raw`` (30 days) or ``long`` (the 1-minute means, two years: summing a lamp's
    minute means counts its readings, one per minute at most).
    """
    conds, params = _conditions(start_ms, end_ms, {})
    rows = query(
        settings, None,
        f'SELECT sum("lit_when_should") AS lit, sum("should_lit") AS should FROM {ident(rp)}."streetlight" '
        f'WHERE {" AND ".join(conds)} GROUP BY "district"',
        params=params,
    )  # fmt: skip
    return {r["district"]: r["lit"] / r["should"] for r in rows if r.get("should")}
