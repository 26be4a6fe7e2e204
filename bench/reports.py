"""A month's settlement for a 10,000-device simulated city: load + CSV + PDF (issue 8).

Builds the simulated Zhengzhou fleet (``sim.city.build_city``), makes a
month (October 2026, Asia/Shanghai) of cases and ledger entries for it with
deliberately generous, seeded counts (see ``RATES``), writes them as the
pipeline does (``points.penalty_line`` / ``points.case_event_line``, retention
policy ``ledger``) into a scratch database, then times:

* baseline: the raw InfluxQL fetch of the month's ``penalty`` and
  ``case_event`` points alone (what any report has to pay);
* load: ``load_period`` (the fetch plus parsing, reversed originals, cases);
* CSV: build the settlement and write both CSVs;
* PDF: the summary and one statement per payer (fpdf2, citywatch/reports/statement.py).

Wall seconds and this process's CPU seconds (``time.process_time``) are both
printed: on a shared machine the CPU figure is the steadier one.

Target: the whole settlement (load + CSV + PDF) under 60 s on this machine.
Needs InfluxDB (``citywatch services up``). Run:
``.venv/bin/python bench/reports.py [--devices 10000] [--seed 7]``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

# bench/ingest.py would shadow the ingest package: the repository root goes first
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from citywatch.reports.cli import produce_settlement  # noqa: E402
from citywatch.reports.data import LEDGER_RP, load_period, parse_month  # noqa: E402
from citywatch.reports.examples import t, write_lines  # noqa: E402
from foundation.settings import load_settings  # noqa: E402
from sim.city import build_city, split_devices  # noqa: E402
from store import points  # noqa: E402
from store.influxql import query  # noqa: E402
from store.schema import CASE_EVENT, PENALTY, drop_database, ensure_database  # noqa: E402

H = 3_600_000
RATES = {
    "manhole": 0.06,  # cases per cover per month (6%: far above what a city sees)
    "manhole_late": 0.4,  # share of those repaired after the 2 h deadline
    "accident": 0.002,  # share of manhole cases with an accident
    "dust": 0.25,  # violation cases per site per month
    "reversal": 0.05,  # share of late manhole cases whose last hours are reversed
}


def synthesize(city, month, rng: random.Random) -> tuple[list[dict], list[dict]]:
    """Ledger entries and case events (as the detector's dicts) for one month."""
    entries: list[dict] = []
    events: list[dict] = []
    span = month.end_ms - month.start_ms - 30 * H
    for dev in city:
        if dev.kind == "manhole":
            n = 1 if rng.random() < RATES["manhole"] else 0
        elif dev.kind == "dust":
            n = 1 if rng.random() < RATES["dust"] else 0
        else:
            n = 0
        for _ in range(n):
            t0 = month.start_ms + rng.randrange(span // 60_000) * 60_000
            cid = f"{dev.kind}:{dev.device_id}:{t0}"
            base = {"case_id": cid, "kind": dev.kind, "rule": dev.kind, "device": dev.device_id,
                    "district": dev.district, "grid": dev.grid, "unit": dev.unit, "severity": "major",
                    "opened_at": t0, "evidence": [], "component_code": dev.component_code or None,
                    "address": dev.address}  # fmt: skip
            if dev.kind == "dust":
                close = t0 + rng.randrange(60, 300) * 60_000
                entries.append({"id": f"{cid}:dust", "case_id": cid, "rule": "dust", "device": dev.device_id,
                                "payer": dev.district, "payer_type": "district_government", "district": dev.district,
                                "amount_yuan": 100_000, "accrued_at": t0, "hour_index": None, "reverses": None,
                                "evidence": []})  # fmt: skip
                events.append({**base, "state": "open", "at": t0, "deadline": None, "detail": {}})
                events.append({**base, "state": "closed", "at": close, "deadline": None,
                               "detail": {"closed_at": close, "closed_by": "recovery"}})  # fmt: skip
                continue
            deadline = t0 + 2 * H
            late = rng.random() < RATES["manhole_late"]
            repair = (
                deadline + rng.randrange(60, 8 * 60) * 60_000
                if late
                else t0 + rng.randrange(10, 120) * 60_000
            )
            hours = max(0, (repair - deadline) // H)

            def mk(
                k: int, amount: int, at: int, rev: str | None = None, cid: str = cid, dev=dev
            ) -> dict:
                return {
                    "id": f"{cid}:hour:{k}" + (":reversal" if rev else ""), "case_id": cid, "rule": "manhole",
                    "device": dev.device_id, "payer": dev.unit, "payer_type": "property_unit",
                    "district": dev.district, "amount_yuan": amount, "accrued_at": at, "hour_index": k,
                    "reverses": rev, "evidence": [],
                }  # fmt: skip

            for k in range(1, hours + 1):
                entries.append(mk(k, 10_000, deadline + k * H))
            if hours >= 2 and rng.random() < RATES["reversal"]:
                entries.append(mk(hours, -10_000, repair + 10 * 60_000, f"{cid}:hour:{hours}"))
            detail = {"repair_at": repair, "repaired_by": "reading", "accident_at": None}
            if rng.random() < RATES["accident"]:
                at = t0 + 30 * 60_000
                detail["accident_at"] = at
                for pt, amount in (("district_government", 500_000), ("property_unit", 1_000_000)):
                    entries.append({"id": f"{cid}:accident:{pt}", "case_id": cid, "rule": "manhole.accident",
                                    "device": dev.device_id, "payer": dev.district if pt == "district_government"
                                    else dev.unit, "payer_type": pt, "district": dev.district, "amount_yuan": amount,
                                    "accrued_at": at, "hour_index": None, "reverses": None, "evidence": []})  # fmt: skip
            events.append(
                {
                    **base,
                    "state": "open",
                    "at": t0,
                    "deadline": deadline,
                    "detail": {"repair_at": None},
                }
            )
            if late:
                events.append({**base, "state": "escalated", "at": deadline, "deadline": deadline,
                               "detail": {"repair_at": None, "escalated": True}})  # fmt: skip
            events.append(
                {**base, "state": "repaired", "at": repair, "deadline": deadline, "detail": detail}
            )
    return entries, events


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--config")
    args = ap.parse_args()
    settings = load_settings(args.config)
    settings = settings.replace("influx", database=f"cw_bench_reports_{uuid.uuid4().hex[:8]}")
    month = parse_month("2026-10", now_ms=t(11, 25, 12))
    city = build_city(args.seed, *split_devices(args.devices))
    entries, events = synthesize(city, month, random.Random(args.seed))
    lines = [points.penalty_line(e) for e in entries] + [points.case_event_line(e) for e in events]
    db = settings.influx.database
    try:
        ensure_database(settings)
        t0 = time.perf_counter()
        write_lines(settings, db, lines, LEDGER_RP)
        t_write = time.perf_counter() - t0
        q = "WHERE time >= $start AND time < $end"
        span = {"start": month.start_ms * 1_000_000, "end": month.end_ms * 1_000_000}  # bound: ns
        t0 = time.perf_counter()
        raw = query(settings, None, f"SELECT * FROM {PENALTY} {q}", params=span)
        raw += query(settings, None, f"SELECT * FROM {CASE_EVENT} {q}", params=span)
        t_base = time.perf_counter() - t0
        t0 = time.perf_counter()
        data = load_period(settings, month)
        t_load = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as out:
            t0, c0 = time.perf_counter(), time.process_time()
            res = produce_settlement(settings, month, Path(out), city.registry(), pdf=False)
            t_csv, c_csv = time.perf_counter() - t0, time.process_time() - c0
            t0, c0 = time.perf_counter(), time.process_time()
            res = produce_settlement(settings, month, Path(out), city.registry(), pdf=True)
            t_all, c_all = time.perf_counter() - t0, time.process_time() - c0
            pdfs = [f for f in res["files"] if f.suffix == ".pdf"]
            import subprocess

            pages = 0
            for f in pdfs:
                info = subprocess.run(["pdfinfo", str(f)], capture_output=True, text=True).stdout
                pages += int(
                    next(x.split()[-1] for x in info.splitlines() if x.startswith("Pages:"))
                )
        s = res["settlement"]
    finally:
        drop_database(settings)
    counts = city.counts()
    print(f"city: {len(city)} devices ({counts['manhole']} covers, {counts['dust']} dust sites, "
          f"{counts['streetlight']} lamps); month {month.label}: {len(entries)} ledger entries, "
          f"{len({e['case_id'] for e in events})} cases, {len(events)} case events; "
          f"{len(lines)} points written in {t_write:.2f} s")  # fmt: skip
    print(f"settlement: {len(s.statements)} payers, {sum(len(x.lines) for x in s.statements)} entries, "
          f"total {s.total:,} yuan; {len(pdfs)} PDFs, {pages} pages")  # fmt: skip
    print(f"{'step':<48}{'seconds':>9}{'x baseline':>12}{'cpu s':>9}")
    print(
        f"{'baseline: raw InfluxQL fetch (' + str(len(raw)) + ' rows)':<48}{t_base:>9.3f}{1:>12.1f}"
    )
    for name, sec, cpu in (("load_period (fetch + parse + cases)", t_load, None),
                           ("load + settlement + 2 CSVs", t_csv, c_csv),
                           ("load + settlement + CSVs + PDFs (the command)", t_all, c_all),
                           ("  of which PDF rendering", t_all - t_csv, c_all - c_csv),
                           (f"  per PDF file ({len(pdfs)})", (t_all - t_csv) / max(1, len(pdfs)),
                            (c_all - c_csv) / max(1, len(pdfs))),
                           (f"  per PDF page ({pages})", (t_all - t_csv) / max(1, pages),
                            (c_all - c_csv) / max(1, pages))):  # fmt: skip
        cpu_text = "" if cpu is None else f"{cpu:>9.3f}"
        print(f"{name:<48}{sec:>9.3f}{sec / t_base:>12.1f}{cpu_text}")
    ok = t_all < 60
    print(f"target: a month's settlement under 60 s: {'OK' if ok else 'MISSED'} ({t_all:.1f} s)")
    assert len(data.entries) == len(entries)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
