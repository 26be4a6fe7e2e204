"""``citywatch report settlement | ranking | cases`` (docs/reports.md).

Wiring (citywatch/cli.py)::

    from citywatch.reports.cli import add_arguments
    add_arguments(sub, _settings, parser_class=_Parser)

or per command: ``add_settlement_arguments(parser)`` + ``main_settlement(args,
settings)`` (likewise ``ranking`` and ``cases``); each ``main_*`` prints the
files it wrote and returns 0, and raises ``CitywatchError`` for the one-line
errors (bad or future period, InfluxDB unreachable, no CJK font).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from citywatch.reports.data import Period, load_period, parse_month, parse_period
from contract.clock import DEFAULT_TIMEZONE
from foundation.errors import CitywatchError

__all__ = [
    "DEFAULT_CITY",
    "add_arguments",
    "add_cases_arguments",
    "add_ranking_arguments",
    "add_settlement_arguments",
    "main_cases",
    "main_ranking",
    "main_settlement",
    "produce_cases",
    "produce_ranking",
    "produce_settlement",
]

DEFAULT_CITY = "郑州市"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", default=".", metavar="DIR", help="directory for the CSV and PDF files (default: .)"
    )
    p.add_argument(
        "--city",
        default=DEFAULT_CITY,
        help=f"city name in the title block (default {DEFAULT_CITY})",
    )
    p.add_argument("--no-pdf", action="store_true", help="CSV only")
    p.add_argument("--registry", help="device registry file (overrides settings)")
    p.add_argument("--rules", help="rules file (overrides settings; its timezone is the city's)")


def add_settlement_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--month", required=True, metavar="YYYY-MM", help="the month, city time, e.g. 2026-10"
    )
    _common(p)


def add_ranking_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--month", required=True, metavar="YYYY-MM", help="the month, city time, e.g. 2026-10"
    )
    _common(p)


def add_cases_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--week", metavar="YYYY-Www", help="ISO week, city time, e.g. 2026-W44")
    g.add_argument("--month", metavar="YYYY-MM", help="the month, city time, e.g. 2026-10")
    _common(p)


def add_arguments(subparsers: Any, settings_of: Callable[[argparse.Namespace], Any],
                  parser_class: type | None = None) -> argparse.ArgumentParser:  # fmt: skip
    """Add ``report {settlement,ranking,cases}``; ``func(args)`` loads settings with ``settings_of``."""
    p = subparsers.add_parser(
        "report", help="monthly settlement, district ranking, case statistics (CSV + PDF)"
    )
    kw = {"parser_class": parser_class} if parser_class else {}
    rsub = p.add_subparsers(dest="verb", metavar="VERB", required=True, **kw)
    for name, text, add, main in (
        (
            "settlement",
            "one statement per payer for a month (扣款结算单)",
            add_settlement_arguments,
            main_settlement,
        ),
        (
            "ranking",
            "districts ranked, red and black lists (月排名、红黑榜)",
            add_ranking_arguments,
            main_ranking,
        ),
        (
            "cases",
            "case statistics for a week or a month (案件统计)",
            add_cases_arguments,
            main_cases,
        ),
    ):
        q = rsub.add_parser(name, help=text)
        add(q)
        q.set_defaults(func=lambda args, _m=main: _m(args, settings_of(args)))
    return p


# ------------------------------------------------------------------ shared


def _paths(settings: Any, args: argparse.Namespace) -> tuple[str, str]:
    return (getattr(args, "registry", None) or settings.paths.registry,
            getattr(args, "rules", None) or settings.paths.rules)  # fmt: skip


def city_tz(rules_path: str | None) -> str:
    """The rules file's ``timezone`` (Asia/Shanghai by default)."""
    if not rules_path:
        return DEFAULT_TIMEZONE
    from streams.rules import load_rules

    return load_rules(rules_path).timezone


def _registry(path: str | None) -> Any:
    if not path:
        return None
    from registry.devices import load_registry

    return load_registry(path)


def _safe(name: str) -> str:
    return re.sub(r'[\\/:*?"<>|\s]+', "_", name).strip("._") or "payer"


def _out(out_dir: str | os.PathLike[str]) -> Path:
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    return d


# ------------------------------------------------------------------ produce (the steps as functions)


def produce_settlement(settings: Any, period: Period, out_dir: str | os.PathLike[str], registry: Any = None,
                       city: str = DEFAULT_CITY, pdf: bool = True) -> dict[str, Any]:  # fmt: skip
    """Load, build and write; returns ``{"settlement": Settlement, "files": [paths]}``."""
    from citywatch.reports import settlement as sm

    d = _out(out_dir)
    data = load_period(settings, period)
    s = sm.build_settlement(data, registry, city)
    files = [d / f"settlement-{period.label}.csv", d / f"settlement-{period.label}-evidence.csv"]
    sm.write_csv(s, files[0])
    sm.write_evidence_csv(s, files[1])
    if pdf:
        from citywatch.reports import pdf as pdfm

        summary = d / f"settlement-{period.label}-summary.pdf"
        pdfm.render_settlement_summary(s, summary)
        files.append(summary)
        for st in s.statements:
            path = d / f"settlement-{period.label}-{st.payer_type}-{_safe(st.payer)}.pdf"
            pdfm.render_settlement(s, st, path)
            files.append(path)
    return {"settlement": s, "files": files}


def produce_ranking(settings: Any, period: Period, out_dir: str | os.PathLike[str], registry: Any,
                    city: str = DEFAULT_CITY, pdf: bool = True) -> dict[str, Any]:  # fmt: skip
    from citywatch.reports import ranking as rm

    d = _out(out_dir)
    rk = rm.build_ranking(
        load_period(settings, period), load_period(settings, period.previous()), registry
    )
    files = [d / f"ranking-{period.label}.csv"]
    rm.write_csv(rk, files[0])
    if pdf:
        from citywatch.reports.pdf import render_ranking

        files.append(d / f"ranking-{period.label}.pdf")
        render_ranking(rk, files[-1], city)
    return {"ranking": rk, "files": files}


def produce_cases(settings: Any, period: Period, out_dir: str | os.PathLike[str], city: str = DEFAULT_CITY,
                  pdf: bool = True) -> dict[str, Any]:  # fmt: skip
    from citywatch.reports import cases as cm

    d = _out(out_dir)
    cs = cm.build_case_stats(load_period(settings, period))
    files = [d / f"cases-{period.label}.csv"]
    cm.write_csv(cs, files[0])
    if pdf:
        from citywatch.reports.pdf import render_cases

        files.append(d / f"cases-{period.label}.pdf")
        render_cases(cs, files[-1], city)
    return {"cases": cs, "files": files}


# ------------------------------------------------------------------ mains


def _print_files(files: list[Path]) -> None:
    for f in files:
        print(f"  {f}")


def main_settlement(args: argparse.Namespace, settings: Any) -> int:
    reg_path, rules_path = _paths(settings, args)
    period = parse_month(args.month, city_tz(rules_path))
    registry = _registry(reg_path) if reg_path and os.path.exists(reg_path) else None
    res = produce_settlement(settings, period, args.out, registry, args.city, pdf=not args.no_pdf)
    s = res["settlement"]
    state = "" if period.complete else f" (provisional: {period.label} has not ended)"
    print(f"settlement {period.label}{state}: {len(s.statements)} payers, "
          f"{sum(len(x.lines) for x in s.statements)} entries, total {s.total:,} yuan")  # fmt: skip
    _print_files(res["files"])
    return 0


def main_ranking(args: argparse.Namespace, settings: Any) -> int:
    reg_path, rules_path = _paths(settings, args)
    period = parse_month(args.month, city_tz(rules_path))
    if not reg_path or not os.path.exists(reg_path):
        raise CitywatchError(
            f"the ranking needs the device registry (devices per district); {reg_path!r} not found"
        )
    res = produce_ranking(
        settings, period, args.out, _registry(reg_path), args.city, pdf=not args.no_pdf
    )
    rk = res["ranking"]
    print(f"ranking {period.label}: {len(rk.rows)} districts; red: {', '.join(r.district for r in rk.red) or '-'}; "
          f"black: {', '.join(r.district for r in rk.black) or '-'}")  # fmt: skip
    _print_files(res["files"])
    return 0


def main_cases(args: argparse.Namespace, settings: Any) -> int:
    _, rules_path = _paths(settings, args)
    period = parse_period(args.month, args.week, city_tz(rules_path))
    res = produce_cases(settings, period, args.out, args.city, pdf=not args.no_pdf)
    cs = res["cases"]
    print(
        f"cases {period.label}: {cs.total.cases} opened, {cs.total.ended} ended, {cs.total.open} open"
    )
    _print_files(res["files"])
    return 0
