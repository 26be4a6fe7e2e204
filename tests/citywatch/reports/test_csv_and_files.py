"""Report files the finance office can open safely (issue 13).

* CSV cells a spreadsheet would run as formulas are neutralised (OWASP, "CSV
  Injection") in every report CSV, and numbers stay numbers;
* one file per payer, whatever its name, long names shortened with a stable hash;
* every output path checked before the first byte is written, and a failure
  while writing leaves no half report.
"""

from __future__ import annotations

import hashlib
import unicodedata
from decimal import Decimal
from pathlib import Path

import pytest

from citywatch.reports import cases as cases_mod
from citywatch.reports import pdf as pdfm
from citywatch.reports import ranking as ranking_mod
from citywatch.reports import settlement as sm
from citywatch.reports.cli import produce_settlement, statement_file_name
from citywatch.reports.data import PeriodData
from citywatch.reports.examples import write_lines
from citywatch.reports.output import (
    MAX_COMPONENT_BYTES,
    Output,
    csv_cell,
    decimal_text,
    file_component,
)
from foundation.errors import CitywatchError
from tests.citywatch.reports.finance import (
    FOO,
    LONG_UNIT,
    NOW,
    OCT,
    POWER,
    H,
    assert_no_formula_cells,
    case,
    entry,
    joined,
    pdf_text,
    read_cells,
)

# ------------------------------------------------------------------ CSV cells


@pytest.mark.parametrize(
    "text",
    ["=HYPERLINK(\"http://evil.example/\",\"点击\")", "+1+cmd|' /C calc'!A0", "-2+3+cmd|' /C calc'!A0",
     "@SUM(1+9)*cmd|' /C calc'!A0", "\t=1+1", "\r=1+1"],
    ids=["equals", "plus", "minus", "at", "tab", "carriage_return"],
)  # fmt: skip
def test_csv_cell_starting_with_a_formula_character_is_neutralised(text: str) -> None:
    assert csv_cell(text) == "'" + text


@pytest.mark.parametrize("text", ["郑州供电公司", "a=1", "1+1", " =1", "'=x", "", "ＡＢ＝１"])
def test_csv_text_cell_not_starting_with_a_formula_character_is_unchanged(text: str) -> None:
    assert csv_cell(text) == text


@pytest.mark.parametrize("value", [-10_000, 0, 10_000, -0.5, Decimal("-2.50"), None])
def test_csv_numbers_are_written_as_numbers_even_when_negative(value: object) -> None:
    assert csv_cell(value) is value
    assert decimal_text(-2.5) == Decimal("-2.50") and str(decimal_text(-2.5)) == "-2.50"
    assert decimal_text(None) == ""


def test_settlement_csvs_neutralise_text_cells_and_keep_negative_amounts(tmp_path: Path) -> None:
    payer = '=HYPERLINK("http://evil.example/","付款")'
    entries = [
        entry(1, payer),
        entry(2, payer),
        entry(2, payer, -10_000, reverses="manhole:MH-X:1:hour:2"),
    ]
    originals = {"manhole:MH-X:1:hour:2": entries[1]}
    evidence = [{"type": "action", "at": OCT.start_ms + 3 * H, "action": "ack", "officer": "-2+3"},
                {"type": "reading", "ts": OCT.start_ms + 4 * H, "fields": {"note": "@SUM(1)"}}]  # fmt: skip
    c = case(address="+cmd|' /C calc'!A0", unit=payer, evidence=evidence,
             detail={"acknowledged_by": "@officer", "acknowledged_at": OCT.start_ms + 3 * H})  # fmt: skip
    s = sm.build_settlement(
        PeriodData(OCT, entries, {c.case_id: c}, originals), None, "郑州市", NOW
    )
    sm.write_csv(s, tmp_path / "s.csv")
    sm.write_evidence_csv(s, tmp_path / "e.csv")
    rows = read_cells(tmp_path / "s.csv")
    assert_no_formula_cells(rows)
    entry_rows = [r for r in rows if r[0] == "entry"]
    assert {r[2] for r in rows[1:]} == {"'" + payer}
    assert [r[7] for r in entry_rows] == ["'+cmd|' /C calc'!A0"] * 3
    assert [r[-1] for r in entry_rows] == [
        "10000",
        "10000",
        "-10000",
    ]  # numbers, the reversal negative
    assert rows[-1][0] == "total" and rows[-1][-1] == "10000"
    ev = read_cells(tmp_path / "e.csv")
    assert_no_formula_cells(ev)
    by_col = dict(zip(ev[0], ev[1], strict=True))
    assert by_col["payer"] == "'" + payer and by_col["address"] == "'+cmd|' /C calc'!A0"
    assert by_col["acknowledged_by"] == "'@officer"


def test_ranking_and_cases_csvs_neutralise_text_and_keep_negative_figures(tmp_path: Path) -> None:
    row = ranking_mod.DistrictRow("jinshui", "=金水区", 400, 3, -10_000, [5.5, 3.5, 1.0], 3, 1, 3, score=58.44,
                                  rank=2, list="black", prev_rank=1, prev_score=70.0)  # fmt: skip
    ranking_mod.write_csv(ranking_mod.Ranking(OCT, [row], [], [row], True), tmp_path / "r.csv")
    header, cells = read_cells(tmp_path / "r.csv")
    assert_no_formula_cells([cells])
    got = dict(zip(header, cells, strict=True))
    assert got["name"] == "'=金水区"
    assert (got["penalty_yuan"], got["penalty_per_1000_yuan"]) == ("-10000", "-25000.00")
    assert (got["rank_change"], got["score"], got["score_change"]) == ("-1", "58.44", "-11.56")

    cs = [
        case(f"manhole:-MH{i}:1", device="-MH1", address="=1+2 花园路", opened=i) for i in range(2)
    ]
    stats = cases_mod.build_case_stats(PeriodData(OCT, [], {c.case_id: c for c in cs}, {}))
    cases_mod.write_csv(stats, tmp_path / "c.csv")
    rows = read_cells(tmp_path / "c.csv")
    assert_no_formula_cells(rows)
    assert ["device", "'-MH1", "'=1+2 花园路", "2"] == rows[-1][:4]
    assert next(r for r in rows if r[0] == "total")[9] == "5.00"  # median hours: a number


# ------------------------------------------------------------------ one file per payer


def test_plain_payer_name_is_kept_verbatim_in_its_file_name() -> None:
    for name in ("郑州供电公司", "郑州市市政工程管理处", "erqi", "a-b.c", "unit-12345678x"):
        assert file_component(name) == name
    assert statement_file_name("2026-10", "property_unit", "郑州供电公司") == (
        "settlement-2026-10-property_unit-郑州供电公司.pdf"
    )


ALIKE = ["A/B", "A B", "A_B", "A:B", "A\\B", "A  B", "A*B", "A?B", "A\u200bB", "a b", "a/b", "AB", "A B ", ".A B",
         "A\u0301B", "\u00c1B", "\u00e1b", "ab", "Ab", "A\nB", "A|B", "A_B-" + file_component("A/B").split("-")[-1]]  # fmt: skip


def test_payer_names_that_normalise_alike_get_distinct_file_names() -> None:
    names = [file_component(n) for n in ALIKE]
    assert len(set(names)) == len(ALIKE)
    # distinct also where case and Unicode normalisation are ignored (Windows, macOS)
    folded = {unicodedata.normalize("NFD", n).casefold() for n in names}
    assert len(folded) == len(ALIKE)
    for n in names:
        assert all(ch not in n for ch in '/\\:*?"<>| \n\u200b') and not n.startswith(".")


def test_a_name_that_looks_hashed_is_hashed_again() -> None:
    hashed = file_component("A/B")
    assert hashed.startswith("A_B-") and len(hashed) == len("A_B-") + 8
    assert file_component(hashed) != hashed


def test_long_payer_name_is_shortened_with_a_stable_sha256_suffix() -> None:
    name = LONG_UNIT
    assert len(name) >= 80 and len(name.encode()) > 240
    got = file_component(name)
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    assert got.endswith("-" + digest) and got == file_component(name)
    assert len(got.encode()) <= MAX_COMPONENT_BYTES and name.startswith(got[: -len(digest) - 1])
    assert len(statement_file_name("2026-10", "property_unit", name).encode()) < 255
    other = file_component(name[:-1] + "司司")  # same first characters, another payer
    assert other != got and other[:-8] == got[:-8]


# ------------------------------------------------------------------ all or nothing


def test_report_paths_are_checked_before_anything_is_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(CitywatchError, match=r"over this file system's 255"):
        Output(out, ["settlement-2026-10.csv", "x" * 300 + ".pdf"])
    with pytest.raises(CitywatchError, match=r"two report files would share the name"):
        Output(out, ["a.pdf", "b.csv", "A.pdf"])
    (out / "settlement-2026-10.csv").mkdir()
    with pytest.raises(CitywatchError, match=r"is a directory"):
        Output(out, ["settlement-2026-10.csv"])
    assert [p.name for p in out.iterdir()] == ["settlement-2026-10.csv"]


def test_output_renames_into_place_only_when_every_file_was_written(tmp_path: Path) -> None:
    out = Output(tmp_path, ["a.csv", "b.pdf"])
    with pytest.raises(RuntimeError), out.writing() as tmp:
        tmp[0].write_text("a")
        raise RuntimeError("render failed")
    assert list(tmp_path.iterdir()) == []
    with out.writing() as tmp:
        tmp[0].write_text("a")
        tmp[1].write_text("b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.pdf"]


# ------------------------------------------------------------------ the command, against InfluxDB

HOSTILE = ["A/B", "A B", LONG_UNIT, '=HYPERLINK("http://evil.example/","x")', f"郑州{FOO}{POWER}"]


def seed_payers(settings, payers: list[str]) -> None:
    from store import points
    from store.schema import LEDGER_RP, ensure_database

    ensure_database(settings)
    lines = []
    for i, payer in enumerate(payers):
        cid, at = f"manhole:MH-{i}:1", OCT.start_ms + (i + 1) * H
        lines.append(points.penalty_line({
            "id": f"{cid}:hour:1", "case_id": cid, "rule": "manhole", "device": f"MH-{i}", "payer": payer,
            "payer_type": "property_unit", "district": "jinshui", "amount_yuan": 10_000 * (i + 1),
            "accrued_at": at, "hour_index": 1, "reverses": None, "evidence": [],
        }))  # fmt: skip
        lines.append(points.case_event_line({
            "case_id": cid, "kind": "manhole", "rule": "manhole", "device": f"MH-{i}", "district": "jinshui",
            "grid": "JS-G07", "unit": payer, "severity": "major", "opened_at": at - 3 * H, "evidence": [],
            "component_code": "0102", "address": f"花园路 {i} 号", "state": "open", "at": at - 3 * H,
            "deadline": at - H, "detail": {"repair_at": None},
        }))  # fmt: skip
    write_lines(settings, settings.influx.database, lines, LEDGER_RP)


def test_settlement_writes_one_file_per_payer_whatever_its_name(settings, tmp_path: Path) -> None:
    seed_payers(settings, HOSTILE)
    out = tmp_path / "out"
    res = produce_settlement(settings, OCT, out, None, "郑州市")
    statements = sorted(p.name for p in out.glob("settlement-2026-10-property_unit-*.pdf"))
    assert len(statements) == len(HOSTILE)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        p.name for p in res["files"]
    )  # no temporary left
    for st in res["settlement"].statements:
        path = out / statement_file_name("2026-10", st.payer_type, st.payer)
        assert joined(st.payer) in joined(pdf_text(path)), st.payer  # each payer its own statement
        assert f"{st.total:,}" in pdf_text(path)
    assert_no_formula_cells(read_cells(out / "settlement-2026-10.csv"))


def test_a_failure_while_writing_leaves_no_half_report(
    settings, tmp_path: Path, monkeypatch
) -> None:
    seed_payers(settings, HOSTILE[:3])
    calls = []

    def fail_on_second(s, st, path):
        calls.append(st.payer)
        if len(calls) == 2:
            raise CitywatchError("disk full (simulated)")
        Path(path).write_bytes(b"%PDF-1.4\n")
        return 1

    monkeypatch.setattr(pdfm, "render_settlement", fail_on_second)
    out = tmp_path / "out"
    with pytest.raises(CitywatchError, match="disk full"):
        produce_settlement(settings, OCT, out, None, "郑州市")
    assert list(out.iterdir()) == []  # the CSVs and the first statement were not left behind
