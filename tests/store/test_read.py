"""The read-back path (store/read.py) against the real InfluxDB 1.6.7: what the
pipeline writes (``store.points`` through ``InfluxWriter`` into the ledger RP)
comes back as the contract's records, filtered with bound parameters only."""

from __future__ import annotations

import asyncio
import time

import pytest

from contract.cases import CaseEvent, LedgerEntry
from store import points, read
from store.identity import credentials
from store.schema import LEDGER_RP, ensure_database
from store.writer import InfluxWriter

NOW = (int(time.time()) // 60) * 60_000 - 3_600_000  # an hour ago, on a minute
H = 3_600_000

AWKWARD_UNIT = (
    "Unit \"East\"; DROP DATABASE x; SELECT * FROM penalty WHERE unit = 'a' OR 1=1 -- C:\\dir $unit"
)
"""Quotes, a backslash, a semicolon and InfluxQL keywords: all of it a tag can hold."""
AWKWARD_FIELD = AWKWARD_UNIT + "\nsecond line\\"
"""... plus a newline and a trailing backslash, which only a string field can hold."""


def _write(settings, lines: list[str], rp: str = LEDGER_RP) -> None:
    async def go():
        async with InfluxWriter(settings.influx.url, settings.influx.database, **credentials(settings, "admin"), retention_policy=rp,
                                flush_interval_s=0.05) as w:  # fmt: skip
            await w.add(lines)
        assert w.stats.rejected == 0 and w.stats.written == len(lines), w.stats

    asyncio.run(go())


def _event(case_id: str, state: str, at: int, **kw) -> CaseEvent:
    base = dict(
        case_id=case_id, kind="manhole", rule="manhole", device="MH-0001", district="jinshui", grid="JS-G07",
        unit="Water Co", severity="major", state=state, at=at, opened_at=NOW, deadline=NOW + 2 * H,
        evidence=[{"type": "reading", "ts": at, "fields": {"tilt_deg": 30.5}}], component_code="0102",
        address="花园路农业路口南50米", detail={"repair_at": None, "reason": "tilt"},
    )  # fmt: skip
    base.update(kw)
    return CaseEvent(**base)


def _entry(entry_id: str, case_id: str, amount: int, at: int, **kw) -> LedgerEntry:
    base = dict(
        id=entry_id, case_id=case_id, rule="manhole", device="MH-0001", payer="Water Co",
        payer_type="property_unit", district="jinshui", amount_yuan=amount, accrued_at=at, hour_index=None,
        reverses=None, evidence=[],
    )  # fmt: skip
    base.update(kw)
    return LedgerEntry(**base)


@pytest.fixture
def ledger(settings):
    """Two cases in two districts, their ledger entries and a reversal, written as the worker writes them."""
    ensure_database(settings)
    a, b = "manhole:MH-0001:1", "dust:DU-0002:1"
    events = [
        _event(a, "open", NOW),
        _event(a, "escalated", NOW + 2 * H),
        _event(
            a, "repaired", NOW + 3 * H, detail={"repair_at": NOW + 3 * H, "repaired_by": "reading"}
        ),
        _event(
            b,
            "open",
            NOW + H,
            kind="dust",
            rule="dust",
            device="DU-0002",
            district="erqi",
            deadline=None,
            component_code=None,
            unit="Builder Ltd",
            opened_at=NOW + H,
            evidence=[],
        ),  # fmt: skip
    ]
    entries = [
        _entry(f"{a}:hour:1", a, 10_000, NOW + 3 * H - 1, hour_index=1),
        _entry(f"{a}:hour:1:reversal", a, -10_000, NOW + 3 * H, reverses=f"{a}:hour:1"),
        _entry(
            f"{b}:dust",
            b,
            100_000,
            NOW + H,
            rule="dust",
            device="DU-0002",
            payer="erqi",
            payer_type="district_government",
            district="erqi",
        ),  # fmt: skip
    ]
    _write(settings, [points.case_event_line(e.to_dict()) for e in events]
           + [points.penalty_line(e.to_dict()) for e in entries])  # fmt: skip
    return events, entries


def test_case_events_come_back_as_the_contract_records(settings, ledger):
    events, _ = ledger
    assert read.case_events(settings) == sorted(events, key=lambda e: e.at)
    a = events[0].case_id
    assert read.case_events(settings, case_id=a) == events[:3]
    assert [e.state for e in read.case_events(settings, start_ms=NOW + H, end_ms=NOW + 3 * H)] == [
        "open",
        "escalated",
    ]
    assert read.case_events(settings, case_ids=[a], end_ms=NOW + 2 * H) == events[:1]


def test_latest_snapshot_per_case_with_filters(settings, ledger):
    events, _ = ledger
    latest = sorted(
        read.latest_cases(settings), key=lambda c: c.case_id
    )  # series order is the server's
    assert latest == [events[3], events[2]]
    assert [c.is_final for c in latest] == [False, True]
    assert read.latest_cases(settings, district="jinshui") == [events[2]]
    assert read.latest_cases(settings, kind="dust") == [events[3]]
    assert read.latest_cases(settings, district="jinshui", kind="dust") == []


def test_ledger_entries_as_stored_and_as_the_contract_entry(settings, ledger):
    _, entries = ledger
    got = read.ledger_entries(settings)
    assert [e.ledger_entry() for e in got] == sorted(entries, key=lambda e: (e.accrued_at, e.id))
    rev = next(e for e in got if e.reverses)
    assert rev.amount_yuan == -10_000 and type(rev.amount_yuan) is int and rev.hour_index is None
    assert rev.unit == "Water Co"  # penalty_line's unit: the payer of a property_unit entry
    assert [e.id for e in read.ledger_entries(settings, case_id=entries[0].case_id)] == [
        entries[0].id,
        entries[1].id,
    ]
    assert [
        e.id for e in read.ledger_entries(settings, start_ms=NOW + 3 * H, end_ms=NOW + 4 * H)
    ] == [entries[1].id]
    assert [e.id for e in read.ledger_entries(settings, ids=[entries[2].id, "no-such-id"])] == [
        entries[2].id
    ]


def test_ledger_totals_and_point_counts(settings, ledger):
    totals = {t.group: (t.count, t.yuan) for t in read.ledger_totals(settings, ("district",))}
    assert totals == {("erqi",): (1, 100_000), ("jinshui",): (2, 0)}
    by_payer = {t.group: t.yuan for t in read.ledger_totals(settings, ("payer_type", "payer"))}
    assert by_payer == {("district_government", "erqi"): 100_000, ("property_unit", "Water Co"): 0}
    assert [(t.count, t.yuan) for t in read.ledger_totals(settings, ())] == [(3, 100_000)]
    _write(
        settings,
        [f"dust,device=DU-0002 pm10=80 {NOW}", f"dust,device=DU-0002 pm10=90 {NOW + 1}"],
        rp="",
    )
    assert read.point_counts(settings, {"dust": "pm10", "manhole": "tilt_deg"}) == {"dust": 2}


def test_an_awkward_unit_round_trips_through_the_bound_parameter(settings):
    """Quotes, backslashes, newlines and InfluxQL keywords are values, never query text."""
    ensure_database(settings)
    ev = _event("manhole:MH-0009:1", "open", NOW, unit=AWKWARD_UNIT, address=AWKWARD_FIELD)
    plain = _event("manhole:MH-0010:1", "open", NOW + 1, unit="Water Co")
    entry = _entry(
        "manhole:MH-0009:1:hour:1", ev.case_id, 10_000, NOW + H, hour_index=1, payer=AWKWARD_UNIT
    )
    line = points.penalty_line(entry.to_dict(), unit=AWKWARD_FIELD)
    _write(
        settings,
        [points.case_event_line(ev.to_dict()), points.case_event_line(plain.to_dict()), line],
    )

    assert read.case_events(settings, unit=AWKWARD_UNIT) == [ev]
    assert read.latest_cases(settings, unit=AWKWARD_UNIT) == [ev]
    (got,) = read.ledger_entries(settings, unit=AWKWARD_FIELD)
    assert got.unit == AWKWARD_FIELD and got.payer == AWKWARD_UNIT and got.id == entry.id
    assert read.ledger_entries(settings, case_id=ev.case_id) == [got]
    # text that would change the query if it were spliced in matches nothing
    assert read.case_events(settings, case_id="x' OR case_id =~ /.*/ OR case_id = 'y") == []
    assert read.latest_cases(settings, unit="Water Co' OR unit =~ /.*/ --") == []
    assert read.case_events(settings) != []  # the database is intact


def test_reading_by_many_ids_takes_several_queries(settings):
    ensure_database(settings)
    n = read.ID_CHUNK * 2 + 5
    entries = [
        _entry(f"c{i:04d}:hour:1", f"c{i:04d}", 10_000, NOW + i, hour_index=1) for i in range(n)
    ]
    _write(settings, [points.penalty_line(e.to_dict()) for e in entries])
    wanted = [e.id for e in entries[::2]] + ["missing'id"]
    got = read.ledger_entries(settings, ids=wanted)
    assert [e.id for e in got] == [e.id for e in entries[::2]]
    cases = [_event(f"c{i:04d}", "open", NOW + i) for i in range(n)]
    _write(settings, [points.case_event_line(c.to_dict()) for c in cases])
    assert read.case_events(settings, case_ids=[c.case_id for c in cases]) == cases


def test_a_row_missing_optional_fields_still_reads():
    ev = read.case_event_from_row(
        {"case_id": "c", "time": 5, "state": "open", "detail": "not json", "evidence": "{}"}
    )
    assert (
        ev.at == ev.opened_at == 5 and ev.detail == {} and ev.evidence == [] and ev.deadline is None
    )
    assert ev.component_code is None and ev.rule == "" and not ev.is_final
    e = read.stored_entry_from_row(
        {"entry_id": "e", "amount_yuan": 7, "time": 9, "hour_index": -1, "reverses": ""}
    )
    assert (e.id, e.amount_yuan, e.accrued_at, e.hour_index, e.reverses) == ("e", 7, 9, None, None)
