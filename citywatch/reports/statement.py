"""The settlement documents (statement per payer, summary) laid out with fpdf2.

A statement is a document, not a chart: it is set with a PDF library made
for documents (fpdf2) instead of matplotlib, for three reasons:

* **Text is text.** Every string is drawn as given: nothing is parsed
  (matplotlib read ``$...$`` in a device's evidence as mathtext: ``$\\foo$``
  stopped the report and ``$10^{9}$`` changed the printed statement). No
  markdown, no markup; control characters are shown as ``\\ufffd`` instead of
  moving the pen (``literal``); the page-count alias is a random token no
  text can contain.
* **Real font metrics.** Cells wrap with the CJK font's own advance widths,
  so a long address or case id is printed whole on a second line, never cut
  with "…" on a guessed width.
* **Tables that read across pages.** The entries table repeats its header on
  every page; the signature block is kept together on one page.

Fonts: the CJK font of ``pdf.cjk_font_files`` (Noto Sans CJK SC from Debian's
``fonts-noto-cjk``, regular and bold, CFF outlines in a TrueType collection)
embedded as subsets, with matplotlib's DejaVu Sans as fallback for the
symbols a CJK font lacks. A PDF's creation date is the statement's prepared
instant (not the clock), so the same data gives the same bytes.
"""

from __future__ import annotations

import os
import secrets
import unicodedata
from datetime import UTC, datetime
from typing import Any

from citywatch.reports.settlement import (
    Settlement,
    Statement,
    describe_entry,
    evidence_items,
    rule_name,
)
from contract.cases import PAYER_TYPE_NAMES, name_of
from contract.clock import local as local_time

__all__ = ["literal", "render_settlement", "render_settlement_summary"]

# A4 portrait, millimetres; margins as the matplotlib pages had them (0.55/0.6/0.75 in).
LEFT, RIGHT, TOP, BOTTOM = 14.0, 14.0, 15.0, 19.0
WIDTH = 210.0 - LEFT - RIGHT
RED, GREY, DARK = (176, 0, 0), (85, 85, 85), (68, 68, 68)
PT = 25.4 / 72  # one point in mm


def literal(text: object) -> str:
    """``text`` as a string to draw as is: control characters (NUL, C0, DEL, C1) become
    U+FFFD, line breaks and tabs a space, so no text can move the pen or end a line."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(
        " " if ch in "\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
        else "\ufffd" if unicodedata.category(ch) == "Cc" else ch
        for ch in s
    )  # fmt: skip


def _document(title: str, footer: str, prepared_ms: int) -> Any:
    from fpdf import FPDF

    from citywatch.reports.pdf import cjk_font_files

    alias = "{nb-" + secrets.token_hex(8) + "}"  # no text can contain it

    class Doc(FPDF):  # type: ignore[misc]
        cjk_chars: frozenset[int] = frozenset()
        """Code points the CJK font has a glyph for."""
        has_fallback = False
        """Whether the fallback font (DejaVu Sans) has been added, see ``_lit``."""

        def footer(self) -> None:
            self.set_y(-10)
            self.set_font("cjk", "", 7)
            self.set_text_color(*GREY)
            page = f"    第 {self.page_no()} / {alias} 页"
            room = WIDTH - self.get_string_width(page) - 2
            self.cell(0, 4, _fit(self, _lit(self, footer), room) + page, align="C")

    doc = Doc(orientation="P", unit="mm", format="A4")
    # the prepared instant of the title block, not the clock: the same data, the same bytes
    doc.set_creation_date(datetime.fromtimestamp(prepared_ms / 1000, tz=UTC))
    doc.alias_nb_pages(alias)
    doc.set_margins(LEFT, TOP, RIGHT)
    doc.set_auto_page_break(True, margin=BOTTOM)
    (regular, ri), (bold, bi) = cjk_font_files()
    doc.add_font("cjk", "", regular, collection_font_number=ri)
    doc.add_font("cjk", "B", bold, collection_font_number=bi)
    doc.cjk_chars = frozenset(getattr(doc.fonts["cjk"], "cmap", {}))
    doc.set_title(literal(title))  # metadata too: no control character from a payer name
    doc.set_creator("citywatch")
    doc.set_producer("citywatch (fpdf2)")
    doc.set_lang("zh-CN")
    doc.add_page()
    return doc


def _lit(doc: Any, text: object) -> str:
    """``literal(text)``; the first text with a character the CJK font lacks (U+FFFD, a rare
    symbol) adds matplotlib's DejaVu Sans as fallback, so a document without one does not pay
    for embedding a second font family."""
    s = literal(text)
    if not doc.has_fallback and not doc.cjk_chars.issuperset(map(ord, s)):
        from citywatch.reports.pdf import latin_fallback_files

        latin, latin_bold = latin_fallback_files()
        doc.add_font("fallback", "", latin)
        doc.add_font("fallback", "B", latin_bold)
        doc.set_fallback_fonts(["fallback"], exact_match=False)
        doc.has_fallback = True
    return s


def _fit(doc: Any, text: str, width: float) -> str:
    """``text`` cut with "…" to ``width`` mm in the current font (real metrics)."""
    if doc.get_string_width(text) <= width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # the longest prefix that fits with the ellipsis
        mid = (lo + hi + 1) // 2
        if doc.get_string_width(text[:mid] + "…") <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + "…"


def _text(doc: Any, text: str, size: float, *, bold: bool = False, color: tuple[int, int, int] = (0, 0, 0),
          align: str = "L", x: float = LEFT, height: float | None = None, after: float = 0.0) -> None:  # fmt: skip
    """One paragraph, wrapped to the right margin with the font's metrics."""
    doc.set_font("cjk", "B" if bold else "", size)
    doc.set_text_color(*color)
    doc.set_x(x)
    doc.multi_cell(210.0 - RIGHT - x, height or size * 1.5 * PT, _lit(doc, text), align=align,
                   new_x="LMARGIN", new_y="NEXT")  # fmt: skip
    doc.set_text_color(0, 0, 0)
    if after:
        doc.ln(after)


def _rule(doc: Any, width_pt: float, gap: float) -> None:
    doc.set_line_width(width_pt * PT)
    doc.line(LEFT, doc.get_y(), 210.0 - RIGHT, doc.get_y())
    doc.ln(gap)


def _table(doc: Any, widths: tuple[float, ...], header: list[str], rows: list[list[str]], size: float,
           align: str, bold_last: bool = False) -> None:  # fmt: skip
    """A table whose header row is repeated on every page it runs onto; ``align`` one letter per column."""
    from fpdf.fonts import FontFace

    doc.set_font("cjk", "", size)
    bold = FontFace(emphasis="BOLD")
    with doc.table(
        col_widths=widths, width=sum(widths), align="LEFT", text_align=tuple(align),
        borders_layout="SINGLE_TOP_LINE", line_height=size * 1.35 * PT, padding=(0.5, 0.8),
        headings_style=bold, repeat_headings=1, markdown=False, first_row_as_headings=True,
    ) as table:  # fmt: skip
        table.row([_lit(doc, h) for h in header])
        for i, row in enumerate(rows):
            style = bold if bold_last and i == len(rows) - 1 else None
            table.row([_lit(doc, c) for c in row], style=style)


def _title_block(doc: Any, title_zh: str, title_en: str, pairs: list[tuple[str, str]]) -> None:
    """Title, subtitle, a rule, the key/value pairs in two columns, a rule (as the matplotlib pages had)."""
    from fpdf.fonts import FontFace

    _text(doc, title_zh, 17, bold=True, align="C", height=9)
    _text(doc, title_en, 9, color=DARK, align="C", height=6, after=1)
    _rule(doc, 1.2, 2.5)
    half = (len(pairs) + 1) // 2
    left, right = pairs[:half], pairs[half:] + [("", "")] * (2 * half - len(pairs))
    doc.set_font("cjk", "", 8.5)
    key = FontFace(emphasis="BOLD")
    with doc.table(
        col_widths=(34, 57, 34, 57), width=WIDTH, align="LEFT", borders_layout="NONE",
        first_row_as_headings=False, line_height=8.5 * 1.4 * PT, padding=(0.4, 0), markdown=False,
    ) as table:  # fmt: skip
        for (k1, v1), (k2, v2) in zip(left, right, strict=True):
            row = table.row()
            row.cell(_lit(doc, k1), style=key)
            row.cell(_lit(doc, v1))
            row.cell(_lit(doc, k2), style=key)
            row.cell(_lit(doc, v2))
    doc.ln(1.5)
    _rule(doc, 0.6, 3)


def _yuan(n: int) -> str:
    return f"{n:,}"


def render_settlement(
    settlement: Settlement, statement: Statement, path: str | os.PathLike[str]
) -> int:
    """One payer's statement (docs/reports.md, "Settlement"); returns the number of pages."""
    p = settlement.period
    tz = p.tz
    st = statement
    city = settlement.city
    doc = _document(
        f"{city}城市管理扣款结算单 {p.label} {st.payer}",
        f"{st.payer} · {p.label} 扣款结算单",
        settlement.prepared_ms,
    )
    _title_block(doc, f"{city}城市管理扣款结算单", "Settlement of city-management deductions", [
        ("城市 City", city or "—"),
        ("结算月份 Month", f"{p.title_zh}（{p.label}）"),
        ("付款单位 Payer", st.payer_label),
        ("单位类型 Payer type", name_of(PAYER_TYPE_NAMES, st.payer_type)),
        ("编制日期 Prepared", local_time(settlement.prepared_ms, tz)[:10]),
        ("统计区间 Period", f"{local_time(p.start_ms, tz)[:10]} — {local_time(p.end_ms - 1, tz)[:10]}"),
        ("时区 Time zone", tz),
        ("扣款条目 Entries", str(len(st.lines))),
    ])  # fmt: skip
    if not p.complete:
        _text(doc, f"本月尚未结束，本结算单截至 {local_time(p.as_of_ms, tz)}，仅供核对（provisional）。", 8,
              color=RED)  # fmt: skip
    _text(
        doc,
        f"本月应扣款合计 Total to deduct：{_yuan(st.total)} 元",
        12,
        bold=True,
        height=8,
        after=1,
    )
    _text(
        doc, "一、扣款明细 Entries（时间为城市时间 city time）", 9.5, bold=True, height=6, after=0.5
    )
    _table(doc, (9, 25, 51, 38, 43, 16), ["序号", "计费时间", "案件编号 / 设备", "地址", "事项", "金额(元)"],
           [[str(ln.seq), local_time(ln.entry.accrued_at, tz), f"{ln.entry.case_id}", ln.address,
             describe_entry(ln, tz), _yuan(ln.entry.amount_yuan)] for ln in st.lines],
           7, "RLLLLR")  # fmt: skip
    doc.ln(3)
    _text(doc, "二、分项小计 Subtotals by rule", 9.5, bold=True, height=6, after=0.5)
    sub_rows = [[rule_name(r), r, str(n), _yuan(a)] for r, n, a in st.subtotals]
    sub_rows.append(["合计 Total", "", str(len(st.lines)), _yuan(st.total)])
    _table(
        doc,
        (61, 56, 20, 30),
        ["事项", "规则 rule", "条数", "金额(元)"],
        sub_rows,
        8,
        "LLRR",
        bold_last=True,
    )
    doc.ln(3)
    _text(
        doc,
        "三、案件证据 Evidence per case（立案、确认、事故、修复/结案）",
        9.5,
        bold=True,
        height=6,
        after=0.5,
    )
    for c in st.cases:
        items = "；".join(evidence_items(c, tz, p.as_of_ms))
        head = f"{c.case_id}　{c.device}　{c.address}"
        doc.set_font("cjk", "", 7)
        lines = len(
            doc.multi_cell(WIDTH - 6, 7 * 1.45 * PT, _lit(doc, items), dry_run=True, output="LINES")
        )
        need = 7.5 * 1.5 * PT + lines * 7 * 1.45 * PT
        if need < 297 - TOP - BOTTOM and doc.will_page_break(need):
            doc.add_page()  # a case's evidence stays on one page when it can
        _text(doc, head, 7.5, bold=True)
        _text(doc, items, 7, x=LEFT + 6, height=7 * 1.45 * PT, after=1)
    for cid in st.missing_cases:
        _text(doc, f"{cid}：InfluxDB 中无此案件事件记录", 7, color=RED)
    _signatures(doc)
    doc.output(os.fspath(path))
    return int(doc.pages_count)


def _signatures(doc: Any) -> None:
    """The closing sentence, three signature lines with dates and the seal, on one page."""
    if doc.will_page_break(62):
        doc.add_page()
    doc.ln(6)
    _text(doc, "以上扣款依据《城市管理考核扣款规则》及案件证据核定。", 8, height=5, after=5)
    doc.set_line_width(0.6 * PT)
    for label in ("编制人 Prepared by", "审核人 Reviewed by", "付款单位确认 Payer"):
        y = doc.get_y()
        doc.set_font("cjk", "", 8.5)
        doc.set_xy(LEFT, y)
        doc.cell(50, 5, f"{label}（签字）：")
        doc.line(LEFT + 51, y + 5, LEFT + 107, y + 5)
        doc.set_xy(LEFT + 114, y)
        doc.cell(13, 5, "日期：")
        doc.line(LEFT + 127, y + 5, 210.0 - RIGHT, y + 5)
        doc.set_y(y + 11.5)
    doc.set_x(210.0 - RIGHT - 30)
    doc.cell(30, 5, "（盖章 Seal）")


def _works(doc: Any, works: list[Any], tz: str) -> None:
    """The month's announced works: why a cover open for hours cost nothing (docs/reports.md)."""
    from citywatch.reports.works import OUTCOMES

    doc.ln(6)
    _text(doc, "本月施工报备（未扣款说明）", 11, bold=True, height=7)
    _text(doc, "Announced works this month: why no penalty was booked", 8, after=2)
    rows = []
    for w in works:
        window = f"{local_time(w.works_from, tz)[5:]} – {local_time(w.works_until, tz)[5:]}"
        outcomes = [OUTCOMES[o].split(" / ")[0] + (f" {_yuan(y)} 元" if y else "")
                    for _, o, y in w.cases] or [OUTCOMES["no_case"].split(" / ")[0]]  # fmt: skip
        rows.append([w.device, window, w.reason or "—", w.officer or "—", "；".join(outcomes)])
    _table(doc, (28, 52, 40, 22, 40), ["设备 Device", "报备时段 Window", "事由 Reason", "报备人",
                                       "结果 Outcome"], rows, 7, "LLLLL")  # fmt: skip


def render_settlement_summary(settlement: Settlement, path: str | os.PathLike[str]) -> int:
    """All payers and their totals; states "no deductions" for an empty month. Returns pages."""
    p = settlement.period
    tz = p.tz
    city = settlement.city
    doc = _document(
        f"{city}城市管理扣款结算汇总表 {p.label}",
        f"{p.label} 扣款结算汇总表",
        settlement.prepared_ms,
    )
    _title_block(doc, f"{city}城市管理扣款结算汇总表", "Settlement summary: deductions per payer", [
        ("城市 City", city or "—"), ("结算月份 Month", f"{p.title_zh}（{p.label}）"),
        ("编制日期 Prepared", local_time(settlement.prepared_ms, tz)[:10]), ("时区 Time zone", tz),
    ])  # fmt: skip
    if not p.complete:
        _text(
            doc, f"本月尚未结束，截至 {local_time(p.as_of_ms, tz)}（provisional）。", 8, color=RED
        )
    if not settlement.statements:
        doc.ln(7)
        _text(doc, "本月无扣款记录。", 14, bold=True, height=9)
        _text(doc, "No deductions this month: the ledger has no entry in this period.", 9)
    else:
        rows = [[st.payer_label, name_of(PAYER_TYPE_NAMES, st.payer_type), str(len(st.lines)), _yuan(st.total)]
                for st in settlement.statements]  # fmt: skip
        rows.append(["合计 Total", "", str(sum(len(s.lines) for s in settlement.statements)),
                     _yuan(settlement.total)])  # fmt: skip
        _table(doc, (84, 41, 23, 34), ["付款单位 Payer", "类型", "条目", "扣款合计(元)"], rows, 8, "LLRR",
               bold_last=True)  # fmt: skip
    if settlement.works:
        _works(doc, settlement.works, tz)
    doc.output(os.fspath(path))
    return int(doc.pages_count)
