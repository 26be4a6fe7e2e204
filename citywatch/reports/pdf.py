"""PDF rendering of the reports, Chinese first: charts with matplotlib, documents with fpdf2.

The settlement statements and summary are documents (tables over pages,
signature lines): ``citywatch.reports.statement`` sets them with fpdf2, with
the CJK font's real metrics and table headers repeated on every page. The
ranking and the case statistics are one page of charts each and stay with
matplotlib (``PdfPages``), with mathtext off: every string is drawn
literally (``text.parse_math`` false, usetex off), so a ``$`` in a district
or unit name is a dollar sign.

Chinese needs a CJK font: the first installed of ``CJK_FONTS`` (Debian:
``apt-get install fonts-noto-cjk``), found through ``matplotlib.font_manager``;
``cjk_font_files`` gives the same family's files to fpdf2. matplotlib
embeds it as Type 3 subsets (``pdf.fonttype`` 3): embedding the large
CFF-based Noto CJK collection as Type 42 costs ~0.7 s per file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from citywatch.reports.data import district_name
from contract.clock import local as local_time
from foundation.errors import CitywatchError

__all__ = [
    "CJK_FONTS",
    "cjk_font",
    "cjk_font_files",
    "latin_fallback_files",
    "render_cases",
    "render_ranking",
    "render_settlement",
    "render_settlement_summary",
    "render_units",
]

CJK_FONTS = (
    "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN", "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei", "Noto Serif CJK SC", "AR PL UMing CN", "Droid Sans Fallback",
)  # fmt: skip
W, H = 8.27, 11.69  # A4 in inches
LEFT, RIGHT, TOP, BOTTOM = 0.55, 0.55, 0.6, 0.75

_font: str | None = None


def cjk_font() -> str:
    """The family name of an installed CJK font; CitywatchError naming the package if none."""
    global _font
    if _font is not None:
        return _font
    from matplotlib import font_manager as fm

    def pick() -> str | None:
        have = {f.name for f in fm.fontManager.ttflist}
        return next((n for n in CJK_FONTS if n in have), None)

    name = pick()
    if name is None:  # installed after matplotlib cached its font list
        for path in fm.findSystemFonts():
            base = os.path.basename(path).lower()
            if any(k in base for k in ("cjk", "wqy", "sourcehan", "droidsansfallback", "uming")):
                try:
                    fm.fontManager.addfont(path)
                except Exception:  # noqa: BLE001,S112 - a broken font file is skipped
                    continue
        name = pick()
    if name is None:
        raise CitywatchError(
            "no Chinese (CJK) font found for the PDF reports; install one, e.g. "
            "`apt-get install fonts-noto-cjk` (Debian/Ubuntu), then run the report again"
        )
    _font = name
    return name


FontFile = tuple[str, int]
"""A font file and the font's index in it (a TrueType collection holds several; 0 otherwise)."""

_files: tuple[FontFile, FontFile] | None = None


def _collection_index(path: str, family: str) -> int:
    """Index of ``family`` in a collection (``.ttc``/``.otc``), 0 for a single font file."""
    if not path.lower().endswith((".ttc", ".otc")):
        return 0
    from fontTools.ttLib import TTCollection

    fonts = TTCollection(path, lazy=True).fonts
    for i, font in enumerate(fonts):
        names = font["name"]
        if family in (names.getDebugName(16), names.getDebugName(1)):
            return i
    return 0


def cjk_font_files() -> tuple[FontFile, FontFile]:
    """(regular, bold) files of the ``cjk_font`` family, for fpdf2; bold is the regular when the
    family has no bold face installed. CitywatchError naming the package if there is no CJK font."""
    global _files
    if _files is not None:
        return _files
    from matplotlib import font_manager as fm

    family = cjk_font()
    faces = [f for f in fm.fontManager.ttflist if f.name == family and f.style == "normal"]
    if not faces:
        raise CitywatchError(
            f"the CJK font {family!r} has no upright face installed; "
            "`apt-get install fonts-noto-cjk`, then run the report again"
        )

    def weight(f: Any) -> int:
        w = f.weight
        return (
            int(w)
            if isinstance(w, int | float) or str(w).isdigit()
            else {"bold": 700}.get(str(w), 400)
        )

    regular = min(faces, key=lambda f: (abs(weight(f) - 400), f.fname))
    bolds = [f for f in faces if weight(f) >= 600]
    bold = min(bolds, key=lambda f: (abs(weight(f) - 700), f.fname)) if bolds else regular

    def file_of(f: Any) -> FontFile:
        path = os.fspath(f.fname)
        index = getattr(f, "index", None)  # matplotlib >= 3.11 knows the face in a collection
        return path, index if isinstance(index, int) else _collection_index(path, family)

    _files = (file_of(regular), file_of(bold))
    return _files


def latin_fallback_files() -> tuple[str, str]:
    """matplotlib's own DejaVu Sans (regular, bold): always there, for symbols a CJK font lacks."""
    import matplotlib

    base = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
    return os.path.join(base, "DejaVuSans.ttf"), os.path.join(base, "DejaVuSans-Bold.ttf")


@contextmanager
def _style() -> Iterator[None]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    family = cjk_font()
    with plt.rc_context({
        "font.family": [family, "DejaVu Sans"], "pdf.fonttype": 3, "axes.unicode_minus": False,
        "text.parse_math": False, "text.usetex": False,  # every string literal: no mathtext, no TeX
        "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
    }):  # fmt: skip
        yield


def _metadata(title: str) -> dict[str, Any]:
    # no CreationDate: the same data gives the same bytes (docs/examples stay stable)
    return {
        "Title": title,
        "Creator": "citywatch",
        "Producer": "citywatch (matplotlib)",
        "CreationDate": None,
    }


# ------------------------------------------------------------------ text flow


def _width(text: str, size: float) -> float:
    """Rough width in inches: CJK and full-width glyphs ~1 em, others ~0.55 em."""
    em = size / 72
    return sum(em if ord(ch) > 0x2E80 else 0.56 * em for ch in text)


def fit(text: str, width_in: float, size: float) -> str:
    if _width(text, size) <= width_in:
        return text
    out = ""
    for ch in text:
        if _width(out + ch + "…", size) > width_in:
            break
        out += ch
    return out + "…"


@dataclass(frozen=True, slots=True)
class Col:
    title: str
    width: float
    align: str = "left"


def render_settlement(settlement: Any, statement: Any, path: str | os.PathLike[str]) -> int:
    """One payer's statement (fpdf2, ``citywatch.reports.statement``); returns the number of pages."""
    from citywatch.reports.statement import render_settlement as render

    return render(settlement, statement, path)


def render_settlement_summary(settlement: Any, path: str | os.PathLike[str]) -> int:
    """Every payer and its total (fpdf2, ``citywatch.reports.statement``); returns the number of pages."""
    from citywatch.reports.statement import render_settlement_summary as render

    return render(settlement, path)


# ------------------------------------------------------------------ charts


def _chart_page(title_zh: str, title_en: str, sub: str) -> Any:
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(W, H))
    fig.text(0.5, 1 - 0.45 / H, title_zh, ha="center", va="top", fontsize=16, fontweight="bold")
    fig.text(0.5, 1 - 0.8 / H, title_en, ha="center", va="top", fontsize=9, color="#444444")
    fig.text(0.5, 1 - 1.02 / H, sub, ha="center", va="top", fontsize=8, color="#444444")
    return fig


def _text_table(fig: Any, top_in: float, cols: list[Col], rows: list[list[str]], size: float = 7,
                colors: list[str] | None = None) -> float:  # fmt: skip
    lh = size * 1.7 / 72
    y = top_in
    x = LEFT
    for c in cols:
        fig.text((x if c.align == "left" else x + c.width - 0.04) / W, 1 - y / H, c.title, ha=c.align, va="top",
                 fontsize=size, fontweight="bold")  # fmt: skip
        x += c.width
    y += lh
    for i, row in enumerate(rows):
        x = LEFT
        for c, cell in zip(cols, row, strict=True):
            fig.text((x if c.align == "left" else x + c.width - 0.04) / W, 1 - y / H, fit(cell, c.width - 0.05, size),
                     ha=c.align, va="top", fontsize=size, color=(colors[i] if colors else "black"))  # fmt: skip
            x += c.width
        y += lh
    return y


def _f(v: float | None, digits: int = 1, suffix: str = "") -> str:
    return "—" if v is None else f"{v:.{digits}f}{suffix}"


def render_ranking(rk: Any, path: str | os.PathLike[str], city: str = "") -> int:
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    p = rk.period
    with _style(), PdfPages(path, metadata=_metadata(f"{city}城市管理月度排名 {p.label}")) as pdf:
        note = "" if p.complete else f"（截至 {local_time(p.as_of_ms, p.tz)}，本月未结束）"
        fig = _chart_page(f"{city}城市管理月度排名与红黑榜", "District ranking, red and black lists",
                          f"{p.title_zh}（{p.label}，{p.tz}）{note}")  # fmt: skip
        cols = [Col("名次", 0.4, "right"), Col("区域", 1.3), Col("设备", 0.55, "right"), Col("案件", 0.5, "right"),
                Col("每千台", 0.6, "right"), Col("扣款(元)", 0.95, "right"), Col("修复中位(h)", 0.8, "right"),
                Col("按期率", 0.6, "right"), Col("得分", 0.6, "right"), Col("较上月", 0.7, "right")]  # fmt: skip
        rows, colors = [], []
        for r in rk.rows:
            ch = "—" if r.rank_change is None else (f"↑{r.rank_change}" if r.rank_change > 0 else
                                                     f"↓{-r.rank_change}" if r.rank_change < 0 else "0")  # fmt: skip
            rows.append([str(r.rank), r.name, str(r.devices), str(r.cases), _f(r.cases_per_1000, 2),
                         f"{r.penalty_yuan:,}", _f(r.median_ttr_h), _f(None if r.share_on_time is None else
                         100 * r.share_on_time, 0, "%"), f"{r.score:.2f}", ch])  # fmt: skip
            colors.append({"red": "#b00000", "black": "#000000"}.get(r.list, "#333333"))
        y = _text_table(fig, 1.35, cols, rows, size=7.5, colors=colors)
        y += 0.15
        red = "、".join(f"{r.name}（{r.score:.2f}）" for r in rk.red) or "—"
        black = "、".join(f"{r.name}（{r.score:.2f}）" for r in rk.black) or "—"
        fig.text(LEFT / W, 1 - y / H, fit(f"红榜 Red list（最好）：{red}", W - 1.2, 9), color="#b00000", fontsize=9,
                 fontweight="bold", va="top")  # fmt: skip
        fig.text(LEFT / W, 1 - (y + 0.25) / H, fit(f"黑榜 Black list（最差）：{black}", W - 1.2, 9), fontsize=9,
                 fontweight="bold", va="top")  # fmt: skip
        y += 0.6
        names = [r.name for r in rk.rows]
        chart_top = y + 0.2
        ax1 = fig.add_axes((LEFT / W + 0.05, 1 - (chart_top + 2.7) / H, 0.38, 2.5 / H))
        ax1.barh(names[::-1], [r.penalty_yuan / 10_000 for r in rk.rows][::-1], color="#c0392b")
        ax1.set_title("各区扣款（万元）Penalties per district")
        ax1.tick_params(axis="y", labelsize=7)
        ax2 = fig.add_axes((0.6, 1 - (chart_top + 2.7) / H, 0.35, 2.5 / H))
        data = [r.ttr_h for r in rk.rows if r.ttr_h]
        if data:
            labels = [r.name for r in rk.rows if r.ttr_h][::-1]
            try:  # matplotlib >= 3.10
                ax2.boxplot(data[::-1], orientation="horizontal", tick_labels=labels)
            except TypeError:  # 3.8, 3.9
                ax2.boxplot(data[::-1], vert=False, tick_labels=labels)
            ax2.set_xlabel("小时 hours")
        else:
            ax2.text(
                0.5, 0.5, "本月无已修复案件", ha="center", va="center", transform=ax2.transAxes
            )
            ax2.set_yticks([])
        ax2.set_title("修复时长分布 Time to repair")
        ax2.tick_params(axis="y", labelsize=7)
        fy = chart_top + 3.2
        for line in (
            "得分 Score = 100 − 25·min(1, 每千台设备案件数/10) − 25·min(1, 每千台设备扣款/1,000,000元)",
            "               − 25·min(1, 修复时长中位数/24h) − 25·(1 − 按期处置率)；越高越好。详见 docs/reports.md。",
            "案件：当月立案（不含扬尘预警）；扣款：当月发生于该区的全部扣款条目净额（含产权单位）；按期：在修复时限内修复/结案。",
            "红榜为得分最高的 3 个区，黑榜为得分最低的 3 个区（少于 6 个区时各取 n//2）；较上月：名次变化（↑ 上升）。",
        ):
            fig.text(LEFT / W, 1 - fy / H, line, fontsize=7, va="top", color="#333333")
            fy += 0.2
        fig.text(
            0.5,
            0.35 / H,
            f"{p.label} 月度排名    第 1 / 1 页",
            ha="center",
            fontsize=7,
            color="#555555",
        )
        pdf.savefig(fig)
        plt.close(fig)
    return 1


def render_cases(cs: Any, path: str | os.PathLike[str], city: str = "") -> int:
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    p = cs.period
    t = cs.total
    with _style(), PdfPages(path, metadata=_metadata(f"{city}城市管理案件统计 {p.label}")) as pdf:
        note = "" if p.complete else f"（截至 {local_time(p.as_of_ms, p.tz)}，未结束）"
        fig = _chart_page(
            f"{city}城市管理案件统计", "Case statistics", f"{p.title_zh}（{p.label}，{p.tz}）{note}"
        )
        share = "—" if t.share_on_time is None else f"{100 * t.share_on_time:.1f}%"
        figures = [("立案 Cases", str(t.cases)), ("结案 Ended", str(t.ended)), ("在办 Open", str(t.open)),
                   ("按期结案率 On time", share), ("修复中位 Median", _f(t.median_h, 1, " h")),
                   ("修复 P90", _f(t.p90_h, 1, " h"))]  # fmt: skip
        for i, (k, v) in enumerate(figures):
            x = (LEFT + i * (W - LEFT - RIGHT) / 6) / W
            fig.text(x, 1 - 1.35 / H, k, fontsize=7.5, va="top", color="#444444")
            fig.text(x, 1 - 1.55 / H, v, fontsize=14, va="top", fontweight="bold")
        top = 2.2
        ax = fig.add_axes((0.19, 1 - (top + 2.3) / H, 0.3, 2.2 / H))
        if cs.by_rule:
            names = [g.name for g in cs.by_rule][::-1]
            ax.barh(
                names, [g.ended for g in cs.by_rule][::-1], color="#27ae60", label="已结案 ended"
            )
            ax.barh(names, [g.open for g in cs.by_rule][::-1], left=[g.ended for g in cs.by_rule][::-1],
                    color="#e67e22", label="在办 open")  # fmt: skip
            ax.legend(fontsize=6, loc="lower right")
        else:
            ax.text(
                0.5, 0.5, "本期无案件 No cases", ha="center", va="center", transform=ax.transAxes
            )
        ax.set_title("按类型 By rule")
        ax.tick_params(axis="y", labelsize=6.5)
        ax = fig.add_axes((0.6, 1 - (top + 2.3) / H, 0.35, 2.2 / H))
        if cs.by_district:
            ax.barh(
                [g.name for g in cs.by_district][::-1],
                [g.cases for g in cs.by_district][::-1],
                color="#2980b9",
            )
        else:
            ax.text(
                0.5, 0.5, "本期无案件 No cases", ha="center", va="center", transform=ax.transAxes
            )
        ax.set_title("按区域 By district")
        ax.tick_params(axis="y", labelsize=6.5)
        top2 = top + 2.85
        ax = fig.add_axes((0.1, 1 - (top2 + 2.1) / H, 0.36, 2.0 / H))
        if t.ttr_h:
            ax.hist(t.ttr_h, bins=min(20, max(5, len(t.ttr_h))), color="#8e44ad")
            for v, lab, style in ((t.median_h, "中位", "--"), (t.p90_h, "P90", ":")):
                if v is not None:
                    ax.axvline(v, color="black", linestyle=style, linewidth=1)
                    ax.text(v, ax.get_ylim()[1] * 0.92, f" {lab} {v:.1f}h", fontsize=6.5)
            ax.set_xlabel("小时 hours")
        else:
            ax.text(0.5, 0.5, "本期无已结案案件", ha="center", va="center", transform=ax.transAxes)
        ax.set_title("修复时长分布 Time to repair")
        ax = fig.add_axes((0.6, 1 - (top2 + 2.1) / H, 0.35, 2.0 / H))
        from contract.cases import STATE_NAMES, name_of

        if cs.by_state:
            ax.bar(
                [name_of(STATE_NAMES, s) for s, _ in cs.by_state],
                [n for _, n in cs.by_state],
                color="#7f8c8d",
            )
        else:
            ax.text(0.5, 0.5, "—", ha="center", va="center", transform=ax.transAxes)
        ax.set_title("处置状态（期末）Status at period end")
        ax.tick_params(axis="x", labelsize=6.5)
        y = top2 + 2.5
        fig.text(
            LEFT / W,
            1 - y / H,
            "高发网格 Grids with most cases",
            fontsize=8.5,
            fontweight="bold",
            va="top",
        )
        fig.text((LEFT + 3.7) / W, 1 - y / H, "重复报案设备 Recurring devices", fontsize=8.5, fontweight="bold",
                 va="top")  # fmt: skip
        grids = sorted(cs.by_grid, key=lambda g: (-g.cases, g.key))[:10]
        lh = 7 * 1.7 / 72
        yy = y + 0.25
        for g in grids:
            fig.text(LEFT / W, 1 - yy / H, fit(f"{g.key}", 1.6, 7), fontsize=7, va="top")
            fig.text(
                (LEFT + 2.2) / W, 1 - yy / H, f"{g.cases} 件", fontsize=7, va="top", ha="right"
            )
            fig.text(
                (LEFT + 3.2) / W,
                1 - yy / H,
                _f(g.median_h, 1, " h"),
                fontsize=7,
                va="top",
                ha="right",
            )
            yy += lh
        yy = y + 0.25
        for dev, n, address, district in cs.top_devices:
            fig.text((LEFT + 3.7) / W, 1 - yy / H, fit(f"{dev} {district_name(district)} {address}", 3.0, 7),
                     fontsize=7, va="top")  # fmt: skip
            fig.text((W - RIGHT) / W, 1 - yy / H, f"{n} 件", fontsize=7, va="top", ha="right")
            yy += lh
        if not cs.top_devices:
            fig.text(
                (LEFT + 3.7) / W, 1 - yy / H, "无（本期没有设备重复报案）", fontsize=7, va="top"
            )
        fig.text(
            0.5,
            0.35 / H,
            f"{p.label} 案件统计    第 1 / 1 页",
            ha="center",
            fontsize=7,
            color="#555555",
        )
        pdf.savefig(fig)
        plt.close(fig)
    return 1


UNIT_ROWS = 25
"""Units in the bulletin's table (the CSV has all of them)."""


def render_units(b: Any, path: str | os.PathLike[str], city: str = "") -> int:
    """The unit bulletin (``citywatch.reports.units``): one page, the table, the rates per unit,
    the formula and what each rate counts. Unit names come from the registry: drawn literally."""
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    from citywatch.reports.units import EXTENSIONS_NOTE

    p, ref = b.period, b.ref
    with _style(), PdfPages(path, metadata=_metadata(f"{city}责任单位考核通报 {p.label}")) as pdf:
        note = "" if p.complete else f"（截至 {local_time(p.as_of_ms, p.tz)}，未结束）"
        fig = _chart_page(f"{city}责任单位考核通报", "Unit bulletin: on-time closure, rework and extension rates",
                          f"{p.title_zh}（{p.label}，{p.tz}）{note}")  # fmt: skip
        cols = [Col("名次", 0.4, "right"), Col("责任单位", 2.35), Col("设备", 0.5, "right"), Col("案件", 0.45, "right"),
                Col("按期结案率", 0.8, "right"), Col("返工率", 0.6, "right"), Col("延期率", 0.55, "right"),
                Col("得分", 0.6, "right"), Col("较上期", 0.6, "right")]  # fmt: skip

        def pct(v: float | None) -> str:
            return _f(None if v is None else 100 * v, 1, "%")

        rows = []
        for r in b.rows[:UNIT_ROWS]:
            ch = "—" if r.rank_change is None else (f"↑{r.rank_change}" if r.rank_change > 0 else
                                                     f"↓{-r.rank_change}" if r.rank_change < 0 else "0")  # fmt: skip
            rows.append(["—" if r.rank is None else str(r.rank), r.unit, "—" if r.devices is None else str(r.devices),
                         str(r.cases), pct(r.on_time_rate), pct(r.rework_rate), pct(r.extension_rate),
                         "—" if r.score is None else f"{r.score:.2f}", ch])  # fmt: skip
        y = _text_table(fig, 1.35, cols, rows, size=7.5)
        if len(b.rows) > UNIT_ROWS:
            fig.text(LEFT / W, 1 - (y + 0.05) / H, f"……另有 {len(b.rows) - UNIT_ROWS} 个单位，见 CSV / "
                     f"{len(b.rows) - UNIT_ROWS} more units in the CSV", fontsize=7, va="top", color="#555555")  # fmt: skip
            y += 0.2
        if not b.rows:
            fig.text(
                LEFT / W, 1 - y / H, "本期无案件 No cases in this period", fontsize=8, va="top"
            )
            y += 0.2
        chart_top = y + 0.35
        ranked = b.ranked[:15]
        ax = fig.add_axes((0.34, 1 - (chart_top + 2.6) / H, 0.6, 2.5 / H))
        if ranked:
            names = [fit(r.unit, 2.3, 7) for r in ranked][::-1]
            pos = list(range(len(ranked)))
            rev = ranked[::-1]
            on = [100 * (r.on_time_rate or 0.0) for r in rev]
            redo = [100 * (r.rework_rate or 0.0) for r in rev]
            ax.barh(
                [i + 0.2 for i in pos], on, height=0.4, color="#27ae60", label="按期结案率 on time"
            )
            ax.barh(
                [i - 0.2 for i in pos], redo, height=0.4, color="#c0392b", label="返工率 rework"
            )
            for i, r in enumerate(
                rev
            ):  # no deadline was due: no rate to draw (the score counts it as 100 %)
                if r.on_time_rate is None:
                    ax.text(
                        1, i + 0.2, "无到期时限 none due", va="center", fontsize=6, color="#555555"
                    )
            ax.set_yticks(pos, names)
            ax.set_xlim(0, 100)
            ax.legend(
                fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, frameon=False
            )
        else:
            ax.text(
                0.5, 0.5, "本期无案件 No cases", ha="center", va="center", transform=ax.transAxes
            )
            ax.set_yticks([])
        ax.set_title("各单位按期结案率与返工率（%）On-time closure and rework per unit (%)")
        ax.tick_params(axis="y", labelsize=6.5)
        fy = chart_top + 3.0
        w_on, w_re, w_ext = (
            f"{v:g}" for v in (ref.on_time_weight, ref.rework_weight, ref.extension_weight)
        )
        for line in (
            f"得分 Score = 100 − {w_on}·(1 − 按期结案率) − {w_re}·返工率 − {w_ext}·延期率；越高越好。详见 docs/reports.md。",
            "案件：本期立案（不含扬尘预警）。按期结案率：在处置时限内修复/结案的案件 / 时限已到或已结束的案件（无时限到期时计 100%）。",
            f"返工率：修复后 {ref.rework_within_h:g} 小时内同一设备同类再次立案，或结案后重新打开的案件 / 曾修复或结案的案件。",
            EXTENSIONS_NOTE[0],
            "名次：有案件的单位按得分排序（同分时案件多者在前）；本期无案件的单位列于其后，不排名。",
        ):
            fig.text(LEFT / W, 1 - fy / H, line, fontsize=7, va="top", color="#333333")
            fy += 0.2
        fig.text(0.5, 0.35 / H, f"{p.label} 责任单位考核通报    第 1 / 1 页", ha="center", fontsize=7,
                 color="#555555")  # fmt: skip
        pdf.savefig(fig)
        plt.close(fig)
    return 1
