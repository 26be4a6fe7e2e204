"""The PDFs: rendered from InfluxDB data, turned into PNG pages with pdftoppm
(Debian poppler-utils), page counts checked and every page not blank; the CLI
entry points; the missing-font message; the docs/examples generator."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from citywatch.reports import pdf as pdfm
from citywatch.reports.cli import add_arguments, produce_cases, produce_ranking, produce_settlement
from citywatch.reports.data import parse_month, parse_week
from citywatch.reports.examples import U_MUNI, U_POWER, generate, png_pages, run_replay, seed, t
from foundation.errors import CitywatchError
from registry.devices import load_registry

NOW = t(11, 25, 12)


@pytest.fixture
def scenario(settings, tmp_path):
    result, reg_path, rules_path = run_replay(tmp_path / "in")
    seed(settings, result)
    return result, load_registry(reg_path), reg_path, rules_path


def pdf_pages(pdf: Path) -> int:
    out = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True, text=True).stdout
    return int(next(line.split()[-1] for line in out.splitlines() if line.startswith("Pages:")))


def assert_not_blank(pdf: Path, tmp: Path, min_ink: float = 0.01) -> list[Path]:
    pngs = png_pages(pdf, tmp / pdf.stem, resolution=40)
    assert len(pngs) == pdf_pages(pdf)
    for png in pngs:
        img = imread(png)[..., :3]
        ink = float(np.mean(img.min(axis=2) < 0.8))  # share of pixels that are not (near) white
        assert ink > min_ink, f"{png.name}: only {ink:.4f} of the page is ink"
    return pngs


def test_settlement_pdfs(settings, scenario, tmp_path):
    _, registry, _, _ = scenario
    out = tmp_path / "out"
    res = produce_settlement(settings, parse_month("2026-10", now_ms=NOW), out, registry)
    pdfs = sorted(p.name for p in out.glob("*.pdf"))
    assert pdfs == sorted([
        "settlement-2026-10-summary.pdf",
        "settlement-2026-10-district_government-erqi.pdf",
        "settlement-2026-10-district_government-zhongyuan.pdf",
        f"settlement-2026-10-property_unit-{U_MUNI}.pdf",
        f"settlement-2026-10-property_unit-{U_POWER}.pdf",
    ])  # fmt: skip
    for name in pdfs:
        pngs = assert_not_blank(out / name, tmp_path)
        assert len(pngs) == 1, name  # the scenario's statements each fit one A4 page
    assert len(res["files"]) == 3 + len(pdfs)  # the CSVs: entries, evidence, announced works
    text = subprocess.run(["pdftotext", str(out / f"settlement-2026-10-property_unit-{U_POWER}.pdf"), "-"],
                          check=True, capture_output=True, text=True).stdout  # fmt: skip
    assert (
        "城市管理扣款结算单" in text and "1,010,000" in text and "冲销" in text and "签字" in text
    )


def test_long_statement_paginates(settings, tmp_path):
    """A payer with hundreds of entries: several pages, each numbered and inked."""
    from citywatch.reports.data import Entry, PeriodData
    from citywatch.reports.settlement import build_settlement

    oct_ = parse_month("2026-10", now_ms=NOW)
    entries = [Entry(f"manhole:MH-X:1:hour:{k}", "manhole:MH-X:1", "manhole", "MH-X", U_MUNI, "property_unit",
                     "jinshui", 10_000, oct_.start_ms + k * 3_600_000, k, None) for k in range(1, 151)]  # fmt: skip
    s = build_settlement(PeriodData(oct_, entries, {}, {}), None, "郑州市")
    path = tmp_path / "long.pdf"
    n = pdfm.render_settlement(s, s.statements[0], path)
    assert n == pdf_pages(path) >= 3
    assert_not_blank(path, tmp_path)


def test_ranking_and_cases_pdfs(settings, scenario, tmp_path):
    _, registry, _, _ = scenario
    out = tmp_path / "out"
    produce_ranking(settings, parse_month("2026-10", now_ms=NOW), out, registry)
    produce_cases(settings, parse_week("2026-W44", now_ms=NOW), out)
    produce_cases(settings, parse_month("2026-08", now_ms=NOW), out)  # empty: still one page
    for name in ("ranking-2026-10.pdf", "cases-2026-W44.pdf", "cases-2026-08.pdf"):
        assert pdf_pages(out / name) == 1
        assert_not_blank(out / name, tmp_path, min_ink=0.02)


def test_cli_commands(settings, scenario, tmp_path, capsys):
    _, _, reg_path, rules_path = scenario
    parser = argparse.ArgumentParser(prog="citywatch")
    add_arguments(parser.add_subparsers(dest="command"), lambda args: settings)
    out = tmp_path / "cli"
    common = ["--out", str(out), "--registry", str(reg_path), "--rules", str(rules_path)]
    for argv in (["report", "settlement", "--month", "2026-10", *common],
                 ["report", "ranking", "--month", "2026-10", "--no-pdf", *common],
                 ["report", "cases", "--week", "2026-W44", "--no-pdf", *common]):  # fmt: skip
        args = parser.parse_args(argv)
        assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "settlement 2026-10: 4 payers, 12 entries, total 1,650,000 yuan" in text
    assert "red: shangjie, huiji, zhongyuan; black: guancheng, jinshui, erqi" in text
    assert "cases 2026-W44: 1 opened, 1 ended, 0 open" in text
    assert (out / "ranking-2026-10.csv").exists() and not (out / "ranking-2026-10.pdf").exists()
    args = parser.parse_args(["report", "settlement", "--month", "2999-01", *common])
    with pytest.raises(CitywatchError, match="has not begun yet"):
        args.func(args)
    with pytest.raises(SystemExit):
        parser.parse_args(["report", "cases", "--week", "2026-W44", "--month", "2026-10"])


def test_no_cjk_font_is_one_clear_message(monkeypatch):
    from matplotlib import font_manager

    monkeypatch.setattr(pdfm, "_font", None)
    monkeypatch.setattr(pdfm, "CJK_FONTS", ("No Such CJK Font",))
    monkeypatch.setattr(font_manager, "findSystemFonts", lambda *a, **k: [])
    monkeypatch.setattr(pdfm, "_files", None)
    with pytest.raises(CitywatchError, match=r"apt-get install fonts-noto-cjk"):
        pdfm.cjk_font()
    with pytest.raises(CitywatchError, match=r"apt-get install fonts-noto-cjk"):
        pdfm.cjk_font_files()  # the statements' fonts (fpdf2) come from the same search


def test_no_cjk_font_leaves_no_half_settlement(settings, scenario, tmp_path, monkeypatch):
    from matplotlib import font_manager

    _, registry, _, _ = scenario
    monkeypatch.setattr(pdfm, "_font", None)
    monkeypatch.setattr(pdfm, "_files", None)
    monkeypatch.setattr(pdfm, "CJK_FONTS", ("No Such CJK Font",))
    monkeypatch.setattr(font_manager, "findSystemFonts", lambda *a, **k: [])
    out = tmp_path / "out"
    with pytest.raises(CitywatchError, match=r"apt-get install fonts-noto-cjk"):
        produce_settlement(settings, parse_month("2026-10", now_ms=NOW), out, registry)
    assert list(out.iterdir()) == []  # the CSVs were not left behind either


def test_examples_generator(settings, tmp_path):
    files = generate(settings, tmp_path / "examples")
    names = {f.name for f in files}
    assert {"settlement-2026-10.csv", "ranking-2026-10.csv", "cases-2026-10.csv", "ranking-2026-10.png",
            "cases-2026-10.png", f"settlement-2026-10-property_unit-{U_POWER}.png", "units-2026-10.csv",
            "units-2026-10.png"} <= names  # fmt: skip
    for f in files:
        assert f.exists() and f.stat().st_size > 0
