"""``citywatch case export``: cases and their stages for the city's platform (docs/handover.md).

Reads the ``case_stage`` points of a time range from InfluxDB, the latest
``case_event`` snapshot of each of their cases, and writes them in the
platform's terms (``contract.handover``): JSON (one object, the cases with their
stage changes) or CSV (one row per stage change, every cell through the reports'
``write_csv``, so a note starting ``=`` is text in Excel, not a formula).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

import orjson

from contract.handover import FORMAT, STAGE_COLUMNS, case_record, stage_rows

__all__ = ["export_cases", "write_export"]


def export_cases(settings: Any, start_ms: int, end_ms: int, tz: str) -> dict[str, Any]:
    """The export of the cases with a stage change in ``[start_ms, end_ms)``: each with all its
    changes up to ``end_ms`` (the platform takes a case whole), in case-id order."""
    from store import read

    changes = read.case_stages(settings, start_ms=start_ms, end_ms=end_ms)
    ids = sorted({c.case_id for c in changes})
    every = read.case_stages(settings, case_ids=ids, end_ms=end_ms) if ids else []
    by_case: dict[str, list[dict[str, Any]]] = {}
    for c in every:
        by_case.setdefault(c.case_id, []).append(c.change or {"change": c.stage, "at": c.at})
    latest: dict[str, dict[str, Any]] = {}
    for ev in read.case_events(settings, case_ids=ids, end_ms=end_ms) if ids else []:
        latest[ev.case_id] = ev.to_dict()  # in time order: the last one stays
    cases = []
    for cid in ids:
        ev = latest.get(cid)
        if ev is None:  # the stage points arrived before the case's own (the sink's order)
            first = next(c for c in every if c.case_id == cid)
            ev = {"case_id": cid, "kind": first.kind, "rule": first.rule, "device": first.device,
                  "district": first.district, "unit": first.unit}  # fmt: skip
        cases.append(case_record(ev, by_case[cid], tz))
    return {"format": FORMAT, "from": start_ms, "until": end_ms, "cases": cases}


def write_export(export: dict[str, Any], path: str, fmt: str) -> int:
    """Write ``export`` as ``fmt`` (json | csv) to ``path`` ("-": stdout, JSON only). Returns
    the number of cases."""
    if fmt == "csv":
        from citywatch.reports.output import write_csv

        if path == "-":
            raise ValueError("--format csv needs --out FILE (a CSV for Excel, with its BOM)")
        rows = [row for rec in export["cases"] for row in stage_rows(rec)]
        write_csv(path, STAGE_COLUMNS, rows)
    else:
        data = orjson.dumps(export, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        if path == "-":
            sys.stdout.buffer.write(data)
        else:
            with open(path, "wb") as f:
                f.write(data)
    return len(export["cases"])


def cmd_export(
    args: argparse.Namespace, settings_of: Callable[[argparse.Namespace], Any],
    instant: Callable[[str], int],
) -> int:  # fmt: skip
    from citywatch.reports.data import _read

    settings = settings_of(args)
    start, end = instant(args.start), instant(args.until)
    if start >= end:
        from foundation.errors import CitywatchError

        raise CitywatchError(f"--from {args.start} is not before --until {args.until}")
    from streams.rules import load_rules

    tz = load_rules(settings.paths.rules).timezone
    export = _read(settings, export_cases, start_ms=start, end_ms=end, tz=tz)
    try:
        n = write_export(export, args.out, args.format)
    except ValueError as exc:
        from foundation.errors import CitywatchError

        raise CitywatchError(str(exc)) from None
    if args.out != "-":
        print(f"{n} cases with their stages to {os.fspath(args.out)} ({args.format})")
    return 0
