"""PDF text is never interpreted (issue 13): ``$\\foo$`` and ``$10^{9}$`` in evidence,
addresses and names come out of the statements (fpdf2) and the charts (matplotlib,
mathtext off) as written, read back with pdftotext (Debian poppler-utils, which
setup installs); the statement's table header repeats on every page, the
signature block stays on one page, long text wraps whole, and the same data
gives the same bytes."""

from __future__ import annotations

import subprocess
from pathlib import Path

from citywatch.reports import cases as cases_mod
from citywatch.reports import pdf as pdfm
from citywatch.reports import ranking as ranking_mod
from citywatch.reports import settlement as sm
from citywatch.reports.data import PeriodData
from tests.citywatch.reports.finance import (
    FOO,
    LONG_UNIT,
    NOW,
    OCT,
    POWER,
    H,
    case,
    entry,
    joined,
    pdf_text,
)


def dollar_settlement(n_entries: int = 2) -> sm.Settlement:
    payer = f"郑州 {FOO} 供电 {POWER}"
    evidence = [{"type": "reading", "ts": OCT.start_ms + 4 * H, "fields": {"note": FOO, "power": POWER}},
                {"type": "action", "at": OCT.start_ms + 5 * H, "action": "close", "officer": "o1",
                 "note": f"备注 {FOO} {POWER} \x00\x1b[2J"}]  # fmt: skip
    c = case(address=f"花园路 {POWER} 号", unit=payer, evidence=evidence)
    entries = [entry(k, payer) for k in range(1, n_entries + 1)]
    return sm.build_settlement(PeriodData(OCT, entries, {c.case_id: c}, {}), None, "郑州市", NOW)


def test_statement_prints_dollar_evidence_literally(tmp_path: Path) -> None:
    s = dollar_settlement()
    path = tmp_path / "statement.pdf"
    assert pdfm.render_settlement(s, s.statements[0], path) == 1  # `$\foo$` used to stop the report
    text = joined(pdf_text(path))
    for literal in (
        f"note={FOO}",
        f"power={POWER}",
        f"备注{FOO}{POWER}",
        f"花园路{POWER}号",
        f"郑州{FOO}供电{POWER}",
    ):
        assert literal in text, literal
    assert "\ufffd\ufffd[2J" in text  # NUL and ESC drawn as U+FFFD, not written into the page
    info = subprocess.run(["pdfinfo", str(path)], check=True, capture_output=True, text=True).stdout
    assert f"郑州 {FOO} 供电 {POWER}" in info  # the metadata's title too


def test_summary_prints_dollar_payer_literally(tmp_path: Path) -> None:
    s = dollar_settlement()
    pdfm.render_settlement_summary(s, tmp_path / "summary.pdf")
    assert f"郑州{FOO}供电{POWER}" in joined(pdf_text(tmp_path / "summary.pdf"))


def test_cases_and_ranking_charts_draw_dollar_text_literally(tmp_path: Path) -> None:
    cs = [
        case(f"manhole:MH-Y:{i}", device="MH-Y", address=f"花园路{FOO}{POWER}", opened=i)
        for i in range(2)
    ]
    stats = cases_mod.build_case_stats(PeriodData(OCT, [], {c.case_id: c for c in cs}, {}))
    pdfm.render_cases(stats, tmp_path / "cases.pdf", city=f"郑州{POWER}")
    text = joined(pdf_text(tmp_path / "cases.pdf"))
    assert f"花园路{FOO}{POWER}" in text and f"郑州{POWER}城市管理案件统计" in text
    row = ranking_mod.DistrictRow(
        "jinshui", f"金水{FOO}", 400, 2, 20_000, [5.0, 5.0], 2, 1, 2, score=60.0, rank=1
    )
    pdfm.render_ranking(
        ranking_mod.Ranking(OCT, [row], [], [], False), tmp_path / "ranking.pdf", f"郑州{POWER}"
    )
    text = joined(pdf_text(tmp_path / "ranking.pdf"))
    assert f"金水{FOO}" in text and f"郑州{POWER}城市管理月度排名" in text


def test_statement_table_header_repeats_on_every_page_and_signatures_stay_together(
    tmp_path: Path,
) -> None:
    s = dollar_settlement(150)
    path = tmp_path / "long.pdf"
    n = pdfm.render_settlement(s, s.statements[0], path)
    assert n >= 3
    pages = [pdf_text(path, i) for i in range(1, n + 1)]
    with_entries = [p for p in pages if "超时第" in p]
    assert len(with_entries) >= 3
    for i, page in enumerate(pages, 1):
        assert f"第 {i} / {n} 页" in page
    for page in with_entries:
        assert (
            "案件编号 / 设备" in page and "金额(元)" in page
        )  # the header on every page of the table
    last = pages[-1]
    assert all(k in last for k in ("编制人", "审核人", "付款单位确认", "盖章"))


def test_statement_wraps_long_text_whole_instead_of_cutting_it(tmp_path: Path) -> None:
    address = "郑州市金水区" + "花园路与农业路交叉口东北角人行道井盖" * 4
    c = case(address=address)
    s = sm.build_settlement(
        PeriodData(OCT, [entry(1, LONG_UNIT)], {c.case_id: c}, {}), None, "郑州市", NOW
    )
    s.statements[0].lines[0] = sm.Line(1, s.statements[0].lines[0].entry, address, None)
    pdfm.render_settlement(s, s.statements[0], tmp_path / "wrap.pdf")
    text = joined(pdf_text(tmp_path / "wrap.pdf"))
    assert (
        text.count(address) >= 2 and LONG_UNIT in text
    )  # the entries table and the evidence; the title block


def test_the_same_statement_gives_the_same_bytes(tmp_path: Path) -> None:
    s = dollar_settlement()
    pdfm.render_settlement(s, s.statements[0], tmp_path / "a.pdf")
    pdfm.render_settlement(s, s.statements[0], tmp_path / "b.pdf")
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes()
