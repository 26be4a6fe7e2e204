"""Reports from InfluxDB against hand-computed values (issue 8).

The scenario is ``citywatch.reports.examples`` (its docstring tells the story):
it is replayed with ``streams.replay``, the replay's ledger entries and case
events are written into the test's own database (retention policy ``ledger``)
with the pipeline's ``points`` functions, and the reports are made from
InfluxDB. Every expected number below is worked out by hand from the story.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from citywatch.reports import cases as cases_mod
from citywatch.reports.cli import produce_cases, produce_ranking, produce_settlement
from citywatch.reports.data import load_period, parse_month, parse_week
from citywatch.reports.examples import U_MUNI, U_POWER, run_replay, seed, t
from foundation.errors import CitywatchError
from registry.devices import load_registry

NOW = t(11, 25, 12)  # "today" for these tests: 2026-11-25 12:00 Beijing time
OCT = parse_month("2026-10", now_ms=NOW)
H = 3_600_000


@pytest.fixture
def scenario(settings, tmp_path):
    result, reg_path, _ = run_replay(tmp_path / "in")
    assert result.rejected == []
    seed(settings, result)
    return result, load_registry(reg_path)


def read_csv(path: Path) -> list[dict[str, str]]:
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), "CSV must start with a UTF-8 BOM for Excel"
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ settlement


def test_settlement_october_every_total(settings, scenario, tmp_path):
    _, registry = scenario
    res = produce_settlement(settings, OCT, tmp_path, registry, pdf=False)
    rows = read_csv(tmp_path / "settlement-2026-10.csv")
    totals = {
        (r["payer_type"], r["payer"]): int(r["amount_yuan"]) for r in rows if r["row"] == "total"
    }
    assert totals == {
        ("district_government", "erqi"): 500_000,
        ("district_government", "zhongyuan"): 100_000,
        # A: 3 hours; E: its first hour (10-31 23:30 +08:00 = 15:30Z) is October's
        ("property_unit", U_MUNI): 40_000,
        # B accident 1,000,000; C: 3 hours - 2 reversed = 10,000
        ("property_unit", U_POWER): 1_010_000,
    }
    assert sum(totals.values()) == res["settlement"].total == 1_650_000
    # statements: governments first, then units (each by payer, code point order)
    assert [k for k in totals] == [("district_government", "erqi"), ("district_government", "zhongyuan"),
                                   ("property_unit", U_POWER), ("property_unit", U_MUNI)]  # fmt: skip

    entries = [r for r in rows if r["row"] == "entry"]
    assert len(entries) == 1 + 1 + 4 + 6
    by_payer_count = {
        k: int(r["seq"])
        for r in rows
        if r["row"] == "total"
        for k in [(r["payer_type"], r["payer"])]
    }
    assert by_payer_count[("property_unit", U_POWER)] == 6
    subtotals = {
        (r["payer"], r["rule"]): (int(r["seq"]), int(r["amount_yuan"]))
        for r in rows
        if r["row"] == "subtotal"
    }
    assert subtotals == {
        ("erqi", "manhole.accident"): (1, 500_000),
        ("zhongyuan", "dust"): (1, 100_000),
        (U_MUNI, "manhole"): (4, 40_000),
        (U_POWER, "manhole"): (5, 10_000),
        (U_POWER, "manhole.accident"): (1, 1_000_000),
    }

    # the reversals, shown against what they reverse
    rev = [r for r in entries if r["reverses"]]
    assert [(r["reverses"].rsplit(":", 2)[-2:], r["reversed_accrued_at"], r["reversed_amount_yuan"], r["amount_yuan"])
            for r in rev] == [
        (["hour", "2"], "2026-10-20T04:00:00+08:00", "10000", "-10000"),
        (["hour", "3"], "2026-10-20T05:00:00+08:00", "10000", "-10000"),
    ]  # fmt: skip
    assert all(r["accrued_at"] == "2026-10-20T05:00:00+08:00" for r in rev)

    # city time, addresses from the case events, the month boundary
    muni = [r for r in entries if r["payer"] == U_MUNI]
    assert [r["accrued_at"] for r in muni] == [
        "2026-10-05T13:00:00+08:00", "2026-10-05T14:00:00+08:00", "2026-10-05T15:00:00+08:00",
        "2026-10-31T23:30:00+08:00",
    ]  # fmt: skip
    assert muni[-1]["address"] == "郑州市管城回族区紫荆山路商都路口东侧"
    assert muni[-1]["device"] == "MH-GC-0001" and muni[-1]["hour_index"] == "1"
    acc = next(r for r in entries if r["payer"] == "erqi")
    assert (acc["rule"], acc["rule_name"], acc["accrued_at"], acc["amount_yuan"]) == (
        "manhole.accident",
        "窨井盖致事故",
        "2026-10-10T09:00:00+08:00",
        "500000",
    )

    ev = read_csv(tmp_path / "settlement-2026-10-evidence.csv")
    b = next(r for r in ev if r["payer"] == "erqi")
    assert b["case_id"].startswith("manhole:MH-EQ-0001:")
    assert (b["opened_at"], b["deadline"], b["accident_at"], b["ended_at"], b["ended_by"], b["state"]) == (
        "2026-10-10T08:00:00+08:00", "2026-10-10T10:00:00+08:00", "2026-10-10T09:00:00+08:00",
        "2026-10-10T09:30:00+08:00", "officer", "closed")  # fmt: skip
    # the proof: the reading that opened it and the officer actions, quoted from the case events
    assert "2026-10-10T08:00:00+08:00 reading" in b["proof"]
    assert "accident by" in b["proof"] and "close by" in b["proof"]
    # case E as of the end of October: opened, not yet repaired
    e = next(r for r in ev if r["device"] == "MH-GC-0001")
    assert (e["state"], e["ended_at"]) == ("open", "")


def test_settlement_agrees_with_replay(settings, scenario, tmp_path):
    """One source of truth, two views: per payer, the months add up to the replay's ledger,
    and each month equals the replay's entries of that month in city time."""
    result, registry = scenario
    total: dict[tuple[str, str], int] = {}
    for label in ("2026-09", "2026-10", "2026-11"):
        month = parse_month(label, now_ms=NOW)
        s = produce_settlement(settings, month, tmp_path / label, registry, pdf=False)["settlement"]
        expected: dict[tuple[str, str], int] = {}
        for e in result.ledger.entries():
            if month.start_ms <= e.accrued_at < month.end_ms:
                k = (e.payer_type, e.payer)
                expected[k] = expected.get(k, 0) + e.amount_yuan
        assert s.net_by_payer() == dict(sorted(expected.items())), label
        for k, v in s.net_by_payer().items():
            total[k] = total.get(k, 0) + v
    assert dict(sorted(total.items())) == result.ledger.net_by_payer()
    assert result.ledger.net_by_payer() == {
        ("district_government", "erqi"): 500_000, ("district_government", "zhongyuan"): 100_000,
        ("property_unit", U_POWER): 1_030_000, ("property_unit", U_MUNI): 50_000,
    }  # fmt: skip


def test_november_shows_the_second_hour_and_case_history(settings, scenario, tmp_path):
    _, registry = scenario
    nov = parse_month("2026-11", now_ms=NOW)
    assert not nov.complete  # the current month is provisional
    s = produce_settlement(settings, nov, tmp_path, registry, pdf=False)["settlement"]
    assert s.net_by_payer() == {("property_unit", U_MUNI): 10_000}
    (st,) = s.statements
    assert st.lines[0].entry.accrued_at == t(11, 1, 0, 30)
    (case,) = st.cases  # opened in October: fetched by id, all its events
    assert (
        case.opened_at == t(10, 31, 20, 30)
        and case.state == "repaired"
        and case.ended_at == t(11, 1, 1)
    )


# ------------------------------------------------------------------ ranking


def test_ranking_october(settings, scenario, tmp_path):
    _, registry = scenario
    res = produce_ranking(settings, OCT, tmp_path, registry, pdf=False)
    rows = read_csv(tmp_path / "ranking-2026-10.csv")
    got = {r["district"]: r for r in rows}
    # score = 100 - 25*min(1,C/10) - 25*min(1,P/1e6) - 25*min(1,median/24h) - 25*(1-S)
    expect = {
        # district: rank, devices, cases, C, P, median, due, on_time, score, prev_rank, change
        "shangjie": (1, 50, 0, "0.00", 0, "", 0, 0, "100.00", 4, 3),
        # leakage 21:00-21:30: 100 - 25 - 0 - 25*0.5/24
        "huiji": (2, 100, 1, "10.00", 0, "0.50", 0, 0, "74.48", 2, 0),
        # dust 09:00-10:10: 100 - 12.5 - 12.5 - 25*(70/60)/24
        "zhongyuan": (3, 200, 1, "5.00", 100_000, "1.17", 0, 0, "73.78", 5, 2),
        # accident case 1.5 h, on time: 100 - 10 - 25 - 25*1.5/24
        "erqi": (4, 250, 1, "4.00", 1_500_000, "1.50", 1, 1, "63.44", 6, 2),
        # A 5.5 h, C 3.5 h, D 1 h; 1 of 3 on time; 40,000 net: 100 - 18.75 - 2.5 - 25*3.5/24 - 25*2/3
        "jinshui": (5, 400, 3, "7.50", 40_000, "3.50", 3, 1, "58.44", 3, -2),
        # E open at month end, deadline passed: 100 - 5 - 0.5 - 25 - 25
        "guancheng": (6, 500, 1, "2.00", 10_000, "", 1, 0, "44.50", 1, -5),
    }
    for d, (rank, devices, cases, c, p, med, due, on_time, score, prev, change) in expect.items():
        r = got[d]
        assert (int(r["rank"]), int(r["devices"]), int(r["cases"]), r["cases_per_1000"], int(r["penalty_yuan"]),
                r["median_ttr_h"], int(r["due"]), int(r["on_time"]), r["score"], int(r["prev_rank"]),
                int(r["rank_change"])) == (rank, devices, cases, c, p, med, due, on_time, score, prev, change), d  # fmt: skip
    assert [r["district"] for r in rows] == [
        "shangjie",
        "huiji",
        "zhongyuan",
        "erqi",
        "jinshui",
        "guancheng",
    ]
    assert [r.district for r in res["ranking"].red] == ["shangjie", "huiji", "zhongyuan"]
    assert [r.district for r in res["ranking"].black] == ["guancheng", "jinshui", "erqi"]
    assert {r["district"]: r["list"] for r in rows} == {
        "shangjie": "red",
        "huiji": "red",
        "zhongyuan": "red",
        "erqi": "black",
        "jinshui": "black",
        "guancheng": "black",
    }
    # September: only erqi had a case (4.5 h, late, 20,000): 100 - 10 - 2 - 25*4.5/24 - 25
    assert (got["erqi"]["prev_score"], got["erqi"]["score_change"]) == ("58.31", "5.13")
    assert got["shangjie"]["prev_score"] == "100.00"


def test_ranking_without_previous_month(settings, scenario, tmp_path):
    _, registry = scenario
    rk = produce_ranking(
        settings, parse_month("2026-09", now_ms=NOW), tmp_path, registry, pdf=False
    )["ranking"]
    assert not rk.has_previous
    assert all(r.prev_rank is None for r in rk.rows)
    assert rk.rows[-1].district == "erqi" and rk.rows[-1].score == 58.31


# ------------------------------------------------------------------ cases


def test_cases_october(settings, scenario, tmp_path):
    produce_cases(settings, OCT, tmp_path, pdf=False)
    rows = read_csv(tmp_path / "cases-2026-10.csv")
    sec = {(r["section"], r["key"]): r for r in rows}
    total = sec[("total", "all")]
    # A, B, dust, dust warning, leakage, C, D, E; E still open at the month's end
    assert (total["cases"], total["open"], total["ended"], total["due"], total["on_time"]) == (
        "8",
        "1",
        "7",
        "5",
        "2",
    )
    assert total["share_on_time"] == "0.4000"
    # TTR h: 0.5, 1.0, 7/6, 1.5, 1.5, 3.5, 5.5 -> median 1.5, p90 3.5 + 0.4 * 2.0
    assert (total["median_ttr_h"], total["p90_ttr_h"]) == ("1.50", "4.30")
    assert {k: r["cases"] for (s, k), r in sec.items() if s == "kind"} == {
        "manhole": "5",
        "dust": "2",
        "streetlight": "1",
    }
    assert {k: r["cases"] for (s, k), r in sec.items() if s == "rule"} == {
        "manhole": "5",
        "dust": "1",
        "dust.warning": "1",
        "streetlight.leakage": "1",
    }
    assert {k: r["cases"] for (s, k), r in sec.items() if s == "district"} == {
        "jinshui": "3",
        "erqi": "1",
        "zhongyuan": "2",
        "huiji": "1",
        "guancheng": "1",
    }
    assert {k: r["cases"] for (s, k), r in sec.items() if s == "grid"} == {
        "JS-G07": "2",
        "JS-G09": "1",
        "EQ-G03": "1",
        "ZY-G02": "2",
        "HJ-G01": "1",
        "GC-G05": "1",
    }
    assert {k: r["cases"] for (s, k), r in sec.items() if s == "state"} == {
        "open": "1",
        "repaired": "4",
        "closed": "3",
    }
    # recurring: MH-JS-0001 (A and D); DS-ZY-0001's warning is a notice beside its violation, not a recurrence
    assert [(k, r["cases"]) for (s, k), r in sec.items() if s == "device"] == [("MH-JS-0001", "2")]
    js = sec[("district", "jinshui")]
    assert (js["due"], js["on_time"], js["share_on_time"], js["median_ttr_h"]) == (
        "3",
        "1",
        "0.3333",
        "3.50",
    )


def test_cases_by_iso_week(settings, scenario, tmp_path):
    w44 = parse_week("2026-W44", now_ms=NOW)  # Mon 10-26 .. Sun 11-01, Beijing time
    assert (w44.start_ms, w44.end_ms) == (t(10, 26, 0), t(11, 2, 0))
    cs = produce_cases(settings, w44, tmp_path, pdf=False)["cases"]
    # only E (10-31 20:30); by the week's end it was repaired (11-01 01:00): 4.5 h, late
    assert (cs.total.cases, cs.total.ended, cs.total.due, cs.total.on_time) == (1, 1, 1, 0)
    assert cs.total.median_h == 4.5
    w43 = produce_cases(settings, parse_week("2026-W43", now_ms=NOW), tmp_path, pdf=False)["cases"]
    assert (w43.total.cases, w43.total.on_time, w43.total.due) == (2, 1, 2)  # C late, D on time


# ------------------------------------------------------------------ calendar, empty, future


def test_month_is_city_time():
    assert (OCT.start_ms, OCT.end_ms) == (t(10, 1, 0), t(11, 1, 0))
    last = t(10, 31, 23, 30)
    assert OCT.start_ms <= last < OCT.end_ms
    from datetime import UTC, datetime

    assert datetime.fromtimestamp(last / 1000, UTC).strftime("%Y-%m-%d %H:%M") == "2026-10-31 15:30"
    assert (
        OCT.previous().label == "2026-09"
        and parse_month("2026-01", now_ms=NOW).previous().label == "2025-12"
    )
    assert parse_week("2026-W01", now_ms=NOW).previous().label == "2025-W52"


def test_future_and_malformed_periods_refused():
    with pytest.raises(CitywatchError, match=r"month 2026-12 has not begun yet.*--month 2026-11"):
        parse_month("2026-12", now_ms=NOW)
    with pytest.raises(CitywatchError, match="has not begun"):
        parse_week("2026-W49", now_ms=NOW)
    for bad in ("2026-13", "2026/10", "Oct 2026", "26-10"):
        with pytest.raises(CitywatchError, match="expected a month like 2026-10"):
            parse_month(bad, now_ms=NOW)
    with pytest.raises(CitywatchError, match="no ISO week 53"):
        parse_week("2025-W53", now_ms=NOW)


def test_empty_month_is_an_empty_correct_report(settings, scenario, tmp_path):
    _, registry = scenario
    aug = parse_month("2026-08", now_ms=NOW)
    s = produce_settlement(settings, aug, tmp_path, registry)["settlement"]
    assert s.statements == [] and s.total == 0
    assert read_csv(tmp_path / "settlement-2026-08.csv") == []
    assert [p.name for p in tmp_path.glob("settlement-2026-08*.pdf")] == [
        "settlement-2026-08-summary.pdf"
    ]
    rk = produce_ranking(settings, aug, tmp_path, registry, pdf=False)["ranking"]
    assert [r.score for r in rk.rows] == [100.0] * 6 and not rk.has_previous
    cs = produce_cases(settings, aug, tmp_path, pdf=False)["cases"]
    assert cs.total.cases == 0 and cs.total.median_h is None
    rows = read_csv(tmp_path / "cases-2026-08.csv")
    assert rows == [{k: v for k, v in zip(cases_mod.CSV_COLUMNS, ["total", "all", "全部", "0", "0", "0", "0", "0", "", "",
                                                                  ""], strict=True)}]  # fmt: skip


def test_missing_ledger_rp_or_database_is_one_clear_error(settings):
    from store.schema import create_database

    with pytest.raises(CitywatchError, match="has no database"):
        load_period(settings, OCT)
    create_database(settings)  # no ledger RP yet (and READ granted to the reader)
    with pytest.raises(CitywatchError, match="no retention policy 'ledger'"):
        load_period(settings, OCT)
