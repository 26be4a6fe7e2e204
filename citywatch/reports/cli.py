"""``citywatch report settlement | ranking | cases | units`` (docs/reports.md).

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from citywatch.reports.data import Period, load_lighting, load_period, parse_month, parse_period
from citywatch.reports.output import Output, file_component
from contract.clock import DEFAULT_TIMEZONE
from foundation.errors import CitywatchError

__all__ = [
    "DEFAULT_CITY",
    "add_arguments",
    "add_cases_arguments",
    "add_ranking_arguments",
    "add_settlement_arguments",
    "add_units_arguments",
    "main_cases",
    "main_ranking",
    "main_settlement",
    "main_units",
    "produce_cases",
    "produce_ranking",
    "produce_settlement",
    "produce_units",
    "statement_file_name",
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


def add_units_arguments(p: argparse.ArgumentParser) -> None:
    add_cases_arguments(p)


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
        (
            "units",
            "responsible units ranked by on-time closure, rework, extension (责任单位考核通报)",
            add_units_arguments,
            main_units,
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


def statement_file_name(label: str, payer_type: str, payer: str) -> str:
    """``settlement-<label>-<payer_type>-<payer>.pdf``, one distinct name per payer
    (``output.file_component``: a plain name verbatim, any other shortened with a stable hash)."""
    return f"settlement-{label}-{file_component(payer_type)}-{file_component(payer)}.pdf"


# ------------------------------------------------------------------ produce (the steps as functions)
#
# Each loads and builds first, then names every file and has ``Output`` check them all before
# the first byte is written; files are written under temporary names and renamed into place
# together, so a failure (a name the file system refuses, no CJK font, a full disk) leaves no
# half report behind.


def produce_settlement(settings: Any, period: Period, out_dir: str | os.PathLike[str], registry: Any = None,
                       city: str = DEFAULT_CITY, pdf: bool = True) -> dict[str, Any]:  # fmt: skip
    """Load, build and write; returns ``{"settlement": Settlement, "files": [paths]}``."""
    from citywatch.reports import settlement as sm
    from citywatch.reports.data import load_announcements
    from citywatch.reports.works import write_works_csv

    data = load_period(settings, period)
    s = sm.build_settlement(
        data, registry, city, announcements=load_announcements(settings, period)
    )
    names = [f"settlement-{period.label}.csv", f"settlement-{period.label}-evidence.csv",
             f"settlement-{period.label}-works.csv"]  # fmt: skip
    if pdf:
        names.append(f"settlement-{period.label}-summary.pdf")
        names += [statement_file_name(period.label, st.payer_type, st.payer) for st in s.statements]
    out = Output(out_dir, names)
    with out.writing() as tmp:
        sm.write_csv(s, tmp[0])
        sm.write_evidence_csv(s, tmp[1])
        write_works_csv(s.works, period.tz, tmp[2])
        if pdf:
            from citywatch.reports import pdf as pdfm

            pdfm.render_settlement_summary(s, tmp[3])
            for st, path in zip(s.statements, tmp[4:], strict=True):
                pdfm.render_settlement(s, st, path)
    return {"settlement": s, "files": out.paths}


def produce_ranking(settings: Any, period: Period, out_dir: str | os.PathLike[str], registry: Any,
                    city: str = DEFAULT_CITY, pdf: bool = True) -> dict[str, Any]:  # fmt: skip
    from citywatch.reports import ranking as rm

    rk = rm.build_ranking(
        load_period(settings, period), load_period(settings, period.previous()), registry,
        lighting=load_lighting(settings, period),
    )  # fmt: skip
    names = [f"ranking-{period.label}.csv"] + ([f"ranking-{period.label}.pdf"] if pdf else [])
    out = Output(out_dir, names)
    with out.writing() as tmp:
        rm.write_csv(rk, tmp[0])
        if pdf:
            from citywatch.reports.pdf import render_ranking

            render_ranking(rk, tmp[1], city)
    return {"ranking": rk, "files": out.paths}


def produce_cases(settings: Any, period: Period, out_dir: str | os.PathLike[str], city: str = DEFAULT_CITY,
                  pdf: bool = True) -> dict[str, Any]:  # fmt: skip
    from citywatch.reports import cases as cm

    cs = cm.build_case_stats(load_period(settings, period))
    names = [f"cases-{period.label}.csv"] + ([f"cases-{period.label}.pdf"] if pdf else [])
    out = Output(out_dir, names)
    with out.writing() as tmp:
        cm.write_csv(cs, tmp[0])
        if pdf:
            from citywatch.reports.pdf import render_cases

            render_cases(cs, tmp[1], city)
    return {"cases": cs, "files": out.paths}


def produce_units(settings: Any, period: Period, out_dir: str | os.PathLike[str], registry: Any = None,
                  city: str = DEFAULT_CITY, pdf: bool = True) -> dict[str, Any]:  # fmt: skip
    from citywatch.reports import units as um

    b = um.build_units(
        load_period(settings, period), load_period(settings, period.previous()), registry
    )
    names = [f"units-{period.label}.csv"] + ([f"units-{period.label}.pdf"] if pdf else [])
    out = Output(out_dir, names)
    with out.writing() as tmp:
        um.write_csv(b, tmp[0])
        if pdf:
            from citywatch.reports.pdf import render_units

            render_units(b, tmp[1], city)
    return {"units": b, "files": out.paths}


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


def main_units(args: argparse.Namespace, settings: Any) -> int:
    reg_path, rules_path = _paths(settings, args)
    period = parse_period(args.month, args.week, city_tz(rules_path))
    registry = _registry(reg_path) if reg_path and os.path.exists(reg_path) else None
    res = produce_units(settings, period, args.out, registry, args.city, pdf=not args.no_pdf)
    b = res["units"]
    best = ", ".join(f"{r.unit} {r.score:.2f}" for r in b.ranked[:3]) or "-"
    print(f"units {period.label}: {len(b.ranked)} ranked of {len(b.rows)} units; best: {best}")
    _print_files(res["files"])
    return 0
