"""Builders shared by the finance-safety tests (issue 13): entries, cases, PDF text."""

from __future__ import annotations

import csv
import subprocess
from decimal import Decimal
from pathlib import Path

from citywatch.reports.data import Case, Entry, parse_month
from citywatch.reports.examples import t

NOW = t(11, 25, 12)
OCT = parse_month("2026-10", now_ms=NOW)
H = 3_600_000
FOO, POWER = "$\\foo$", "$10^{9}$"
LONG_UNIT = (
    "郑州市" + "某某区城市基础设施建设投资与市政公用设施养护管理" * 3 + "有限责任公司"
)  # 80+ characters


def entry(k: int, payer: str, amount: int = 10_000, *, case: str = "manhole:MH-X:1", reverses: str | None = None,
          payer_type: str = "property_unit") -> Entry:  # fmt: skip
    return Entry(f"{case}:hour:{k}" + (":reversal" if reverses else ""), case, "manhole", "MH-X", payer,
                 payer_type, "jinshui", amount, OCT.start_ms + k * H, k, reverses)  # fmt: skip


def case(case_id: str = "manhole:MH-X:1", *, device: str = "MH-X", address: str = "花园路", unit: str = "U",
         evidence: list[dict] | None = None, detail: dict | None = None, opened: int = 0) -> Case:  # fmt: skip
    at = OCT.start_ms + opened * H
    return Case(case_id, "manhole", "manhole", device, "jinshui", "JS-G07", unit, address, "0102", "major",
                "repaired", at, at + 2 * H, {"repair_at": at + 5 * H, "repaired_by": "reading", **(detail or {})},
                [(at, "open"), (at + 5 * H, "repaired")], evidence or [])  # fmt: skip


def pdf_text(path: Path, page: int | None = None) -> str:
    pages = ["-f", str(page), "-l", str(page)] if page else []
    return subprocess.run(["pdftotext", *pages, str(path), "-"], check=True, capture_output=True,
                          text=True).stdout  # fmt: skip


def joined(text: str) -> str:
    """The text without white space, so a string wrapped across two lines is found whole."""
    return "".join(text.split())


def read_cells(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.reader(f))


def is_number(cell: str) -> bool:
    try:
        Decimal(cell)
    except ArithmeticError:
        return False
    return True


def assert_no_formula_cells(rows: list[list[str]]) -> None:
    """No cell of the file would be run by a spreadsheet: each starting with = + - @ TAB CR is a number."""
    for row in rows:
        for cell in row:
            if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
                assert cell[:1] == "-" and is_number(cell), f"formula cell {cell!r} in {row}"
