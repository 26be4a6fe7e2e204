"""The settlement lists the month's announced works (施工报备, docs/reports.md "Announced works"),
so finance sees why a cover open for hours cost nothing -- against the real InfluxDB.

October 2026, the example registry; three announcements made through the gate by the districts'
supervisors, their acts journaled and their audit records written as the worker writes them:

* MH-JS-0001, 10-05 09:00-12:00 (water company cleaning a sewer): the cover opens 10:00, shut
  11:00, inside the window: no penalty;
* MH-EQ-0001, 10-12 08:00-10:00: the cover opens 09:00 and stays open until 15:00: the works
  overran, booked from the window's end: 11, 12, 13, 14, 15 h = 50,000 yuan;
* MH-GC-0001, 10-20 08:00-18:00: nothing happened (listed, no case).
"""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import orjson

from alerts.gate import ActRequest, Gate
from alerts.policy import load_policy
from citywatch.reports.cli import produce_settlement
from citywatch.reports.data import LEDGER_RP, parse_month
from citywatch.reports.examples import RULES_YAML, _reading, registry_csv, seed, t, write_lines
from contract import journal
from registry.devices import load_registry
from registry.officer_tokens import TokenStore
from registry.officers import load_directory
from store import points
from streams.replay import replay
from streams.rules import load_rules
from tests.citywatch.reports.finance import joined, pdf_text

OCT = parse_month("2026-10", now_ms=t(11, 25, 12))
WORKS = [
    ("MH-JS-0001", "JS-SUP-01", t(10, 5, 9), t(10, 5, 12), "供水公司清淤"),
    ("MH-EQ-0001", "EQ-SUP-01", t(10, 12, 8), t(10, 12, 10), "电力检修"),
    ("MH-GC-0001", "GC-SUP-01", t(10, 20, 8), t(10, 20, 18), "燃气管道巡检"),
]


def _announce(settings, registry) -> tuple[list[dict], list[dict]]:  # noqa: ANN001
    """The three announcements through the real gate: (journal records, audit records)."""
    acts, audit = [], []

    async def submit(a) -> None:  # noqa: ANN001
        acts.append(journal.to_record(a, registry.get(a.device).district)[1])

    async def record(r) -> None:  # noqa: ANN001
        audit.append(r.to_dict())

    directory = load_directory(settings.paths.officers)
    tokens = TokenStore(Path(settings.paths.state_dir) / "officers")
    gate = Gate(lambda: directory, tokens, load_policy(settings.paths.policy), registry.get,
                submit, record)  # fmt: skip
    for device, officer, start, until, reason in WORKS:
        token, _ = tokens.issue(officer)
        req = ActRequest(action="announce_works", device=device, channel="cli", note=reason,
                         reason=reason, works_from=start, works_until=until)  # fmt: skip
        outcome = asyncio.run(gate.with_token(token, req))
        assert outcome.accepted, outcome.message
    return acts, audit


def test_the_settlement_lists_the_months_announced_works_and_why_nothing_was_booked(
    settings, tmp_path
) -> None:
    reg, rules = tmp_path / "registry.csv", tmp_path / "rules.yaml"
    reg.write_text(registry_csv(), encoding="utf-8")
    rules.write_text(RULES_YAML, encoding="utf-8")
    registry = load_registry(reg)
    acts, audit = _announce(settings, registry)
    assert all(r["extra"]["works_from"] < r["extra"]["works_until"] for r in audit)
    lines = [orjson.dumps(a).decode() for a in acts] + [
        orjson.dumps(e).decode()
        for e in (
            _reading("MH-JS-0001", t(10, 5, 10), open=True),
            _reading("MH-JS-0001", t(10, 5, 11), open=False),
            _reading("MH-EQ-0001", t(10, 12, 9), open=True),
            _reading("MH-EQ-0001", t(10, 12, 15), open=False),
        )
    ]
    result = replay(lines, load_rules(rules), registry)
    assert result.rejected == []
    seed(settings, result)
    write_lines(
        settings, settings.influx.database, [points.audit_line(r) for r in audit], LEDGER_RP
    )
    res = produce_settlement(settings, OCT, tmp_path, registry)
    s = res["settlement"]
    assert [(w.device, w.works_from, w.reason, [(o, y) for _, o, y in w.cases]) for w in s.works] == [
        ("MH-JS-0001", t(10, 5, 9), "供水公司清淤", [("no_penalty", 0)]),
        ("MH-EQ-0001", t(10, 12, 8), "电力检修", [("overran", 50_000)]),
        ("MH-GC-0001", t(10, 20, 8), "燃气管道巡检", []),
    ]  # fmt: skip
    assert s.works[0].officer == "JS-SUP-01" and s.works[1].district == "erqi"
    assert s.total == 50_000  # the works explain the rest: nothing else was booked
    with open(tmp_path / "settlement-2026-10-works.csv", encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["device"], r["works_from"], r["outcome"][:4], r["booked_yuan"]) for r in rows] == [
        ("MH-JS-0001", "2026-10-05T09:00:00+08:00", "施工期内", "0"),
        ("MH-EQ-0001", "2026-10-12T08:00:00+08:00", "超出报备", "50000"),
        ("MH-GC-0001", "2026-10-20T08:00:00+08:00", "报备期内", "0"),
    ]  # fmt: skip
    text = joined(pdf_text(tmp_path / "settlement-2026-10-summary.pdf"))
    for needle in ("本月施工报备", "MH-JS-0001", "供水公司清淤", "超出报备时段", "报备期内无案件"):
        assert needle in text, needle


def test_works_outside_the_month_are_not_listed(settings, tmp_path) -> None:
    reg = tmp_path / "registry.csv"
    reg.write_text(registry_csv(), encoding="utf-8")
    registry = load_registry(reg)
    _, audit = _announce(settings, registry)
    from store.schema import ensure_database

    ensure_database(settings)
    write_lines(
        settings, settings.influx.database, [points.audit_line(r) for r in audit], LEDGER_RP
    )
    sept = parse_month("2026-09", now_ms=t(11, 25, 12))
    assert (
        produce_settlement(settings, sept, tmp_path, registry, pdf=False)["settlement"].works == []
    )
