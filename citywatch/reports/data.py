"""What every report reads: a period of the city's calendar, and the ledger
entries and case events of that period from InfluxDB (docs/reports.md).

* Periods are months (``2026-10``) and ISO weeks (``2026-W44``) in the city's
  time zone (Asia/Shanghai unless the rules file says otherwise): October 2026
  is ``[2026-10-01T00:00+08:00, 2026-11-01T00:00+08:00)``, so an entry that
  accrued at 2026-10-31T23:30+08:00 (15:30Z) belongs to October. A period that
  has not begun is refused; the current one is reported "as of now" and marked
  provisional.
* Ledger entries are the ``penalty`` points whose time (= ``accrued_at``; a
  reversal's time is the instant it was booked) lies in the period. Their sum
  is the ledger's net for the period (docs/contracts.md, "InfluxDB"), the same number
  ``sum(amount_yuan)`` gives in Grafana. A reversal booked in November of an
  hour that accrued in October is November's, and it is shown against the
  entry it reverses (fetched by id wherever it lies).
* Cases are rebuilt from their ``case_event`` snapshots with time before the
  period's end: the last snapshot is the case as of the period's end (so a
  report on a closed month never changes). Cases referenced by the period's
  ledger but opened earlier are fetched by id, all their events.

Both measurements live in the ``ledger`` retention policy (``LEDGER_RP``,
kept forever), never in the 30-day default one. They are read through
``store.read`` (entries as ``StoredEntry``, snapshots as ``CaseEvent``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo

import orjson

from contract.cases import FINAL_STATES
from contract.clock import DEFAULT_TIMEZONE
from contract.clock import local as local_time
from foundation.errors import CitywatchError
from store import read
from store.errors import InfluxError, InfluxQueryError
from store.schema import LEDGER_RP

if TYPE_CHECKING:
    from contract.cases import CaseEvent

__all__ = [
    "DEFAULT_TIMEZONE",
    "FINAL_STATES",
    "LEDGER_RP",
    "Case",
    "Entry",
    "Period",
    "PeriodData",
    "district_name",
    "load_period",
    "parse_month",
    "parse_period",
    "parse_week",
]


# ------------------------------------------------------------------ periods


@dataclass(frozen=True, slots=True)
class Period:
    """A month or ISO week of the city's calendar: ``[start_ms, end_ms)``."""

    kind: str
    """``month`` or ``week``."""
    label: str
    """``2026-10`` or ``2026-W44``."""
    tz: str
    start_ms: int
    end_ms: int
    now_ms: int
    """When the report is made (what "future" and "provisional" are judged against)."""

    @property
    def complete(self) -> bool:
        """The period is over: its report is final."""
        return self.now_ms >= self.end_ms

    @property
    def as_of_ms(self) -> int:
        """The instant the report describes: the period's end, or now for the current period."""
        return min(self.end_ms, self.now_ms)

    @property
    def start_date(self) -> date:
        return datetime.fromtimestamp(self.start_ms / 1000, ZoneInfo(self.tz)).date()

    @property
    def last_date(self) -> date:
        return datetime.fromtimestamp((self.end_ms - 1) / 1000, ZoneInfo(self.tz)).date()

    @property
    def title_zh(self) -> str:
        d = self.start_date
        if self.kind == "month":
            return f"{d.year}年{d.month}月"
        y, w, _ = d.isocalendar()
        return f"{y}年第{w}周（{d:%m月%d日}—{self.last_date:%m月%d日}）"

    def previous(self) -> Period:
        """The period before this one (same kind, same zone)."""
        d = self.start_date
        if self.kind == "month":
            y, m = (d.year, d.month - 1) if d.month > 1 else (d.year - 1, 12)
            return _month(y, m, self.tz, self.now_ms)
        p = d - timedelta(days=7)
        y, w, _ = p.isocalendar()
        return _week(y, w, self.tz, self.now_ms)


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def _month(y: int, m: int, tz: str, now_ms: int) -> Period:
    z = ZoneInfo(tz)
    start = datetime(y, m, 1, tzinfo=z)
    end = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=z)
    return Period("month", f"{y:04d}-{m:02d}", tz, _ms(start), _ms(end), now_ms)


def _week(y: int, w: int, tz: str, now_ms: int) -> Period:
    z = ZoneInfo(tz)
    d = date.fromisocalendar(y, w, 1)
    start = datetime(d.year, d.month, d.day, tzinfo=z)
    e = d + timedelta(days=7)
    end = datetime(e.year, e.month, e.day, tzinfo=z)
    return Period("week", f"{y:04d}-W{w:02d}", tz, _ms(start), _ms(end), now_ms)


def _now(now_ms: int | None) -> int:
    return time.time_ns() // 1_000_000 if now_ms is None else int(now_ms)


def _refuse_future(p: Period, what: str) -> Period:
    if p.start_ms > p.now_ms:
        raise CitywatchError(
            f"{what} {p.label} has not begun yet (it starts {local_time(p.start_ms, p.tz)} {p.tz}; "
            f"now is {local_time(p.now_ms, p.tz)}): reports cover a period that has begun, e.g. "
            f"{_month_of(p.now_ms, p.tz)}"
        )
    return p


def _month_of(ms: int, tz: str) -> str:
    d = datetime.fromtimestamp(ms / 1000, ZoneInfo(tz))
    return f"--month {d.year:04d}-{d.month:02d}"


def parse_month(text: str, tz: str = DEFAULT_TIMEZONE, now_ms: int | None = None) -> Period:
    """``YYYY-MM`` -> the month in zone ``tz``; CitywatchError if malformed or in the future."""
    m = re.fullmatch(r"(\d{4})-(\d{2})", text.strip())
    if not m or not 1 <= int(m.group(2)) <= 12 or int(m.group(1)) < 1970:
        raise CitywatchError(f"--month {text!r}: expected a month like 2026-10 (YYYY-MM)")
    return _refuse_future(_month(int(m.group(1)), int(m.group(2)), tz, _now(now_ms)), "month")


def parse_week(text: str, tz: str = DEFAULT_TIMEZONE, now_ms: int | None = None) -> Period:
    """``YYYY-Www`` (ISO week, Monday first) -> the week in zone ``tz``."""
    m = re.fullmatch(r"(\d{4})-?W(\d{1,2})", text.strip(), re.IGNORECASE)
    if not m or int(m.group(1)) < 1970:
        raise CitywatchError(f"--week {text!r}: expected an ISO week like 2026-W44 (YYYY-Www)")
    try:
        p = _week(int(m.group(1)), int(m.group(2)), tz, _now(now_ms))
    except ValueError:
        raise CitywatchError(
            f"--week {text!r}: {m.group(1)} has no ISO week {int(m.group(2))} (weeks run 01 to 52 or 53)"
        ) from None
    return _refuse_future(p, "week")


def parse_period(month: str | None = None, week: str | None = None, tz: str = DEFAULT_TIMEZONE,
                 now_ms: int | None = None) -> Period:  # fmt: skip
    if (month is None) == (week is None):
        raise CitywatchError("give exactly one of --month YYYY-MM or --week YYYY-Www")
    return (
        parse_month(month, tz, now_ms) if month is not None else parse_week(week or "", tz, now_ms)
    )


_DISTRICT_NAMES: dict[str, str] | None = None


def district_name(district: str) -> str:
    """Chinese name of a district id when known (``jinshui`` -> ``金水区``), else the id."""
    global _DISTRICT_NAMES
    if _DISTRICT_NAMES is None:
        try:
            from sim.city import DISTRICTS

            _DISTRICT_NAMES = {d.id: d.name for d in DISTRICTS}
        except Exception:  # noqa: BLE001 - names are a nicety
            _DISTRICT_NAMES = {}
    return _DISTRICT_NAMES.get(district, district)


# ------------------------------------------------------------------ records


Entry = read.StoredEntry
"""One ledger entry as stored in the ``penalty`` measurement (``store.read.StoredEntry``)."""


@dataclass(slots=True)
class Case:
    """A case as of the period's end, rebuilt from its ``case_event`` snapshots."""

    case_id: str
    kind: str
    rule: str
    device: str
    district: str
    grid: str
    unit: str
    address: str
    component_code: str
    severity: str
    state: str
    opened_at: int
    deadline: int | None
    detail: dict[str, Any]
    events: list[tuple[int, str]] = field(default_factory=list)
    """(time, state) of every snapshot up to the period's end, in time order."""
    evidence: list[dict[str, Any]] = field(default_factory=list)
    """The readings and officer actions that proved each change (``CaseEvent.evidence``), deduplicated."""

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def ended_at(self) -> int | None:
        """When the case ended (repair proved by a reading, officer close, recovery); None if open."""
        if not self.is_final:
            return None
        d = self.detail
        for key in ("repair_at", "closed_at"):
            v = d.get(key)
            if isinstance(v, int) and not isinstance(v, bool):
                return v
        return self.events[-1][0] if self.events else self.opened_at

    @property
    def ttr_ms(self) -> int | None:
        """Time to repair (end - opening), None while open."""
        e = self.ended_at
        return None if e is None else max(0, e - self.opened_at)

    def due_by(self, as_of: int) -> bool:
        """Has a deadline that was due by ``as_of`` or the case ended: it counts in the on-time share."""
        return self.deadline is not None and (self.is_final or self.deadline <= as_of)

    @property
    def on_time(self) -> bool:
        """Ended at or before its deadline."""
        e = self.ended_at
        return self.deadline is not None and e is not None and e <= self.deadline


def _case_from_events(case_id: str, events: list[CaseEvent]) -> Case:
    events.sort(key=lambda e: e.at)
    last = events[-1]
    return Case(
        case_id=case_id,
        kind=last.kind,
        rule=last.rule,
        device=last.device,
        district=last.district,
        grid=last.grid,
        unit=last.unit,
        address=last.address,
        component_code=last.component_code or "",
        severity=last.severity,
        state=last.state,
        opened_at=last.opened_at,
        deadline=last.deadline,
        detail=last.detail,
        events=[(e.at, e.state) for e in events],
        evidence=_evidence(events),
    )


def _evidence(events: list[CaseEvent]) -> list[dict[str, Any]]:
    seen: set[bytes] = set()
    out: list[dict[str, Any]] = []
    for e in events:
        for item in e.evidence:
            key = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
            if isinstance(item, dict) and key not in seen:
                seen.add(key)
                out.append(item)
    return out


def cases_from_events(events: Iterable[CaseEvent]) -> dict[str, Case]:
    """``case_event`` snapshots (any order) -> cases by id."""
    by_case: dict[str, list[CaseEvent]] = {}
    for e in events:
        by_case.setdefault(e.case_id, []).append(e)
    return {cid: _case_from_events(cid, es) for cid, es in by_case.items()}


# ------------------------------------------------------------------ loading


@dataclass
class PeriodData:
    """Everything one report needs from InfluxDB for one period."""

    period: Period
    entries: list[Entry]
    """Entries accrued (reversals: booked) in the period, by (accrued_at, id)."""
    cases: dict[str, Case]
    """Cases with an event in the period, plus cases the period's entries refer to."""
    originals: dict[str, Entry]
    """Entries reversed by a reversal of the period, by id (wherever they lie in time)."""
    stages: dict[str, list[read.StageChange]] = field(default_factory=dict)
    """The recorded stage changes (``case_stage``) of these cases up to the period's end, by
    case id (docs/contracts.md, "Case stages"): extensions and failed checks for the bulletin."""

    def opened_in_period(self) -> list[Case]:
        p = self.period
        return sorted(
            (c for c in self.cases.values() if p.start_ms <= c.opened_at < p.end_ms),
            key=lambda c: (c.opened_at, c.case_id),
        )


T = TypeVar("T")


def _read(settings: Any, reader: Callable[..., T], **kw: Any) -> T:
    """``reader(settings, **kw)`` with InfluxDB's failures told as the operator's fix."""
    try:
        return reader(settings, **kw)
    except InfluxQueryError as exc:
        text = str(exc)
        db = settings.influx.database
        if "database not found" in text or "requires READ on" in text:
            raise CitywatchError(
                f"InfluxDB at {settings.influx.url} has no database {db!r} that this identity may "
                "read; check [influx] database (CITYWATCH_INFLUX_DATABASE) — the worker creates "
                "it when it starts and grants citywatch-reader READ on it"
            ) from None
        if "retention policy not found" in text:
            raise CitywatchError(
                f"database {db!r} has no retention policy {LEDGER_RP!r}, where the worker keeps the "
                "ledger and case events; start the worker once (it runs ensure_database) and try again"
            ) from None
        raise CitywatchError(text) from None
    except InfluxError as exc:
        raise CitywatchError(str(exc)) from None


def load_entries(settings: Any, start_ms: int, end_ms: int) -> list[Entry]:
    return _read(settings, read.ledger_entries, start_ms=start_ms, end_ms=end_ms)


def load_lighting(settings: Any, period: Period) -> dict[str, float]:
    """The period's lighting rate per district (``store.read.lighting_rates``): from the raw
    readings while the period is inside their 30 days, else from the two-year minute means;
    empty when there is no streetlight telemetry (an old database, a city without lamps)."""
    raw_since = int(time.time() * 1000) - 30 * 24 * 3_600_000
    rp = "raw" if period.start_ms >= raw_since else "long"
    try:
        return read.lighting_rates(settings, period.start_ms, period.end_ms, rp)
    except InfluxQueryError:
        return {}


def load_announcements(settings: Any, period: Period) -> list[dict[str, Any]]:
    """The accepted announcements of works (the audit trail); ``announced_works`` keeps those
    whose window overlaps ``period``."""
    return _read(settings, read.announcements)


def load_period(settings: Any, period: Period) -> PeriodData:
    """The period's ledger entries, cases and reversed originals (see the module doc)."""
    start, end = period.start_ms, period.end_ms
    entries = load_entries(settings, start, end)
    in_period = {e.id: e for e in entries}
    wanted = sorted({e.reverses for e in entries if e.reverses and e.reverses not in in_period})
    originals = {e.id: e for e in entries if e.id in {x.reverses for x in entries}}
    if wanted:
        for e in _read(settings, read.ledger_entries, ids=wanted):
            originals[e.id] = e

    cases = cases_from_events(_read(settings, read.case_events, start_ms=start, end_ms=end))
    # cases opened before the period (history partly outside it) or only named by the ledger
    partial = [cid for cid, c in cases.items() if c.events and c.events[0][0] > c.opened_at]
    missing = sorted(
        {e.case_id for e in entries if e.case_id and e.case_id not in cases} | set(partial)
    )
    if missing:
        cases.update(
            cases_from_events(_read(settings, read.case_events, case_ids=missing, end_ms=end))
        )
    stages: dict[str, list[read.StageChange]] = {}
    if cases:
        for c in _read(settings, read.case_stages, case_ids=list(cases), end_ms=end):
            stages.setdefault(c.case_id, []).append(c)
    return PeriodData(period, entries, cases, originals, stages)
