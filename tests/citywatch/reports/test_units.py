"""The unit bulletin (责任单位考核通报, issue 16) against the real InfluxDB, hand-computed for a small month.

The month (October 2026, Asia/Shanghai), replayed through the rules with the example registry
(citywatch.reports.examples) and written into the test's database as the worker writes it:

* 郑州市市政工程管理处 (U_MUNI): MH-JS-0001 open 10-05 10:00, repaired 11:00 (deadline 12:00:
  on time) and open again 20:00, 9 h after its repair (within 72 h: the first case is reworked),
  repaired 10-06 01:00 (deadline 22:00: late); MH-GC-0001 10-10 08:00 - 09:00 (on time).
  3 cases, 3 due, 2 on time, 3 handled, 1 reworked: 100 - 50·(1/3) - 30·(1/3) = 73.33.
* 郑州供电公司 (U_POWER): MH-EQ-0001 10-12 09:00 - 15:00 (deadline 11:00: late); MH-JS-0002
  10-20 00:00 - 01:00 and 10-26 08:00 - 09:00, six days apart (no rework), both on time.
  3 cases, 3 due, 2 on time, none reworked: 100 - 50·(1/3) = 83.33.
* 郑州市城市照明灯饰管理处: SL-HJ-0001 leakage 10-15 21:00 - 21:30 and again 10-16 20:00 - 20:10,
  22.5 h later (reworked). No deadline: S = 1. 2 handled, 1 reworked: 100 - 30·(1/2) = 85.00.
* 河南五建建设集团有限公司: DS-ZY-0001's dust case closed by an officer 10-13 11:00 and reopened
  10-14 08:00 (the case events are written as the officer workflow will write them), closed
  10:00: 1 case, reworked: 100 - 30 = 70.00.

No extension is recorded anywhere: 0 for every unit.
"""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
import pytest

from citywatch.reports.cli import produce_units
from citywatch.reports.data import LEDGER_RP, Case, PeriodData, parse_month, parse_week
from citywatch.reports.examples import (
    RULES_YAML,
    U_MUNI,
    U_POWER,
    _reading,
    registry_csv,
    seed,
    t,
    write_lines,
)
from citywatch.reports.units import UnitRef, build_units, reworked
from registry.devices import load_registry
from store import points
from streams.replay import replay
from streams.rules import load_rules
from tests.citywatch.reports.finance import FOO, POWER, joined, pdf_text

U_LIGHT = "郑州市城市照明灯饰管理处"
U_WUJIAN = "河南五建建设集团有限公司"
NOW = t(11, 25, 12)
OCT = parse_month("2026-10", now_ms=NOW)
H = 3_600_000


def readings() -> list[str]:
    ev = [
        _reading("MH-JS-0001", t(10, 5, 10), open=True), _reading("MH-JS-0001", t(10, 5, 11), open=False),
        _reading("MH-JS-0001", t(10, 5, 20), open=True), _reading("MH-JS-0001", t(10, 6, 1), open=False),
        _reading("MH-GC-0001", t(10, 10, 8), open=True), _reading("MH-GC-0001", t(10, 10, 9), open=False),
        _reading("MH-EQ-0001", t(10, 12, 9), open=True), _reading("MH-EQ-0001", t(10, 12, 15), open=False),
        _reading("SL-HJ-0001", t(10, 15, 21), on=True, current_a=0.5, leakage_ma=45),
        _reading("SL-HJ-0001", t(10, 15, 21, 30), on=True, current_a=0.5, leakage_ma=2),
        _reading("SL-HJ-0001", t(10, 16, 20), on=True, current_a=0.5, leakage_ma=45),
        _reading("SL-HJ-0001", t(10, 16, 20, 10), on=True, current_a=0.5, leakage_ma=2),
        _reading("MH-JS-0002", t(10, 20, 0), open=True), _reading("MH-JS-0002", t(10, 20, 1), open=False),
        _reading("MH-JS-0002", t(10, 26, 8), open=True), _reading("MH-JS-0002", t(10, 26, 9), open=False),
    ]  # fmt: skip
    return [orjson.dumps(e).decode() for e in ev]


def reopened_dust_case() -> list[dict]:
    """A dust case closed by an officer, reopened the next morning, closed again."""
    opened = t(10, 13, 9)
    base = {
        "case_id": f"dust:DS-ZY-0001:{opened}", "kind": "dust", "rule": "dust", "device": "DS-ZY-0001",
        "district": "zhongyuan", "grid": "ZY-G02", "unit": U_WUJIAN, "severity": "major", "opened_at": opened,
        "deadline": None, "evidence": [], "component_code": None, "address": "郑州市中原区建设路与桐柏路交叉口西南角工地",
    }  # fmt: skip
    steps = [(opened, "open", None), (t(10, 13, 11), "closed", t(10, 13, 11)), (t(10, 14, 8), "reopened", None),
             (t(10, 14, 10), "closed", t(10, 14, 10))]  # fmt: skip
    return [base | {"at": at, "state": state, "detail": {"closed_at": closed, "closed_by": "officer:ZY-GRID-01"
                                                         if closed else None}} for at, state, closed in steps]  # fmt: skip


@pytest.fixture
def month(settings, tmp_path):
    reg, rules = tmp_path / "registry.csv", tmp_path / "rules.yaml"
    reg.write_text(registry_csv(), encoding="utf-8")
    rules.write_text(RULES_YAML, encoding="utf-8")
    registry = load_registry(reg)
    result = replay(readings(), load_rules(rules), registry)
    assert result.rejected == []
    seed(settings, result)
    write_lines(settings, settings.influx.database, [points.case_event_line(e) for e in reopened_dust_case()],
                LEDGER_RP)  # fmt: skip
    return registry


def read_csv(path: Path) -> list[dict[str, str]]:
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def test_the_unit_bulletin_of_a_small_month_is_the_hand_computed_one(settings, month, tmp_path):
    res = produce_units(settings, OCT, tmp_path, month)
    assert sorted(p.name for p in res["files"]) == ["units-2026-10.csv", "units-2026-10.pdf"]
    rows = read_csv(tmp_path / "units-2026-10.csv")
    got = [(r["rank"], r["unit"], r["devices"], r["cases"], r["due"], r["on_time"], r["on_time_rate"], r["handled"],
            r["reworked"], r["rework_rate"], r["extended"], r["extension_rate"], r["score"], r["prev_rank"])
           for r in rows]  # fmt: skip
    assert got == [
        ("1", U_LIGHT, "1495", "2", "0", "0", "", "2", "1", "0.5000", "0", "0.0000", "85.00", ""),
        ("2", U_POWER, "2", "3", "3", "2", "0.6667", "3", "0", "0.0000", "0", "0.0000", "83.33", ""),
        ("3", U_MUNI, "2", "3", "3", "2", "0.6667", "3", "1", "0.3333", "0", "0.0000", "73.33", ""),
        ("4", U_WUJIAN, "1", "1", "0", "0", "", "1", "1", "1.0000", "0", "0.0000", "70.00", ""),
    ]  # fmt: skip
    assert res["units"].has_previous is False  # September had no case
    text = joined(pdf_text(tmp_path / "units-2026-10.pdf"))
    for needle in (
        "责任单位考核通报",
        U_LIGHT,
        "85.00",
        "73.33",
        "50.0%",
        "66.7%",
        "延期率：本期立案中经督办批准延期的案件占比",
    ):
        assert needle in text, needle


def test_a_week_ranks_only_the_units_with_a_case_and_tells_the_change(settings, month, tmp_path):
    """W42 (10-12 to 10-18): MH-EQ-0001 late (50.00), the lamp's rework (85.00), the reopened dust
    case (70.00); 郑州市市政工程管理处 had no case this week: listed, unranked. W41 had only its
    three cases, so it was first then, and no other unit had a rank to change from."""
    week = parse_week("2026-W42", now_ms=NOW)
    b = produce_units(settings, week, tmp_path, month, pdf=False)["units"]
    assert [(r.rank, r.unit, r.score, r.prev_rank, r.rank_change) for r in b.rows] == [
        (1, U_LIGHT, 85.0, None, None),
        (2, U_WUJIAN, 70.0, None, None),
        (3, U_POWER, 50.0, None, None),
        (None, U_MUNI, None, 1, None),
    ]
    assert b.has_previous
    row = read_csv(tmp_path / "units-2026-W42.csv")[-1]
    assert (row["rank"], row["unit"], row["cases"], row["score"], row["on_time_rate"]) == (
        "",
        U_MUNI,
        "0",
        "",
        "",
    )


def case(cid: str, opened: int, end: int | None, rule: str = "manhole", device: str = "MH-1",
         events: list[tuple[int, str]] | None = None) -> Case:  # fmt: skip
    state = "repaired" if end is not None else "open"
    return Case(cid, "manhole", rule, device, "jinshui", "JS-G07", "U", "", "", "major", state, opened, None,
                {"repair_at": end}, events or ([(opened, "open")] + ([(end, "repaired")] if end else [])))  # fmt: skip


def test_rework_is_a_repair_followed_within_72_hours_by_a_case_of_the_same_rule_on_the_same_device() -> (
    None
):
    t0, within = OCT.start_ms, 72 * H
    first = case("a", t0, t0 + H)
    on_the_bound = case("b", t0 + 73 * H, None)  # 72 h after the repair: counts
    assert reworked([first], [first, on_the_bound], OCT.end_ms, within) == {"a"}
    just_after = case("b", t0 + 73 * H + 1, None)
    assert reworked([first], [first, just_after], OCT.end_ms, within) == set()
    other_rule = case("b", t0 + 2 * H, None, rule="manhole.battery_low")
    other_device = case("c", t0 + 2 * H, None, device="MH-2")
    assert reworked([first], [first, other_rule, other_device], OCT.end_ms, within) == set()
    assert (
        reworked([first], [first, case("b", t0 + 2 * H, None)], t0 + H + 30 * 60_000, within)
        == set()
    )  # not yet
    still_open = case("d", t0, None)
    assert (
        reworked([still_open], [still_open, case("e", t0 + H, None)], OCT.end_ms, within) == set()
    )
    back = case("f", t0, t0 + 5 * H, events=[(t0, "open"), (t0 + H, "closed"), (t0 + 2 * H, "reopened"),
                                            (t0 + 5 * H, "repaired")])  # fmt: skip
    assert reworked([back], [back], OCT.end_ms, within) == {"f"}


def test_the_score_weights_and_an_empty_period() -> None:
    b = build_units(PeriodData(OCT, [], {}, {}), None, None)
    assert b.rows == [] and b.ranked == []
    ref = UnitRef()
    assert (ref.on_time_weight, ref.rework_weight, ref.extension_weight, ref.rework_within_h) == (
        50,
        30,
        20,
        72,
    )


def test_the_bulletin_pdf_draws_unit_names_literally(tmp_path: Path) -> None:
    from citywatch.reports import pdf as pdfm

    cs = {
        c.case_id: c
        for c in (case("a", OCT.start_ms, OCT.start_ms + H), case("b", OCT.start_ms + 2 * H, None))
    }
    for c in cs.values():
        c.unit = f"郑州{FOO}{POWER}"
    b = build_units(PeriodData(OCT, [], cs, {}), None, None)
    pdfm.render_units(b, tmp_path / "units.pdf", city=f"郑州{POWER}")
    text = joined(pdf_text(tmp_path / "units.pdf"))
    assert f"郑州{FOO}{POWER}" in text and f"郑州{POWER}责任单位考核通报" in text


def test_recorded_extensions_and_failed_checks_feed_the_extension_and_rework_rates(
    settings, tmp_path
):
    """The same month, with MH-GC-0001's case worked through the stages: the unit's report at
    08:20 fails the inspector's check at 08:30 (rework), a supervisor extends the disposal
    deadline at 08:40, the second report at 08:50, the cover back at 09:00 (the repair deadline,
    10:00, is not moved: still on time). 郑州市市政工程管理处: 3 cases, 2 of 3 on time, 3 handled,
    2 reworked, 1 extended: 100 - 50·(1/3) - 30·(2/3) - 20·(1/3) = 56.67; the others as before."""
    reg, rules = tmp_path / "registry.csv", tmp_path / "rules.yaml"
    reg.write_text(registry_csv(), encoding="utf-8")
    rules.write_text(RULES_YAML, encoding="utf-8")
    registry = load_registry(reg)

    def act(action: str, at: int, **kw: object) -> str:
        return orjson.dumps({"action": action, "device": "MH-GC-0001", "at": at, **kw}).decode()

    lines = readings()
    at = lines.index(orjson.dumps(_reading("MH-GC-0001", t(10, 10, 9), open=False)).decode())
    lines[at:at] = [
        act("feedback", t(10, 10, 8, 20), officer="GC-GRID-01", note="已更换"),
        act("check", t(10, 10, 8, 30), officer="GC-GRID-02", passed=False, note="未更换"),
        act("extend", t(10, 10, 8, 40), officer="GC-SUP-01", deadline=t(10, 10, 12), reason="定制"),
        act("feedback", t(10, 10, 8, 50), officer="GC-GRID-01", note="已重新更换"),
    ]
    result = replay(lines, load_rules(rules), registry)
    assert result.rejected == []
    seed(settings, result)
    b = produce_units(settings, OCT, tmp_path, registry, pdf=False)["units"]
    got = {r.unit: (r.cases, r.on_time, r.handled, r.reworked, r.extended, r.score) for r in b.rows}
    assert got[U_MUNI] == (3, 2, 3, 2, 1, 56.67)
    assert got[U_POWER] == (3, 2, 3, 0, 0, 83.33) and got[U_LIGHT] == (2, 0, 2, 1, 0, 85.0)
