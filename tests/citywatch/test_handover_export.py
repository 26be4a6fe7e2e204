"""``citywatch case export`` (docs/handover.md): cases and their stages from the real InfluxDB,
written as the worker writes them, exported as JSON and CSV and read back."""

from __future__ import annotations

import csv
import subprocess
import sys

import orjson
import pytest

from citywatch.reports.data import LEDGER_RP
from citywatch.reports.examples import write_lines
from contract.handover import STAGE_COLUMNS, case_record
from store import points
from store.schema import ensure_database
from streams.harness import T0, H, M, Run
from tests.conftest import settings_env

pytestmark = pytest.mark.services


def _walk() -> Run:
    run = Run()
    run.read("MH-MAIN", T0, open=True)
    run.act(
        "feedback",
        "MH-MAIN",
        T0 + 10 * M,
        note='=HYPERLINK("http://x")',
        photos=("p/1.jpg", "p/2.jpg"),
    )
    run.act("check", "MH-MAIN", T0 + 20 * M, officer="insp-01", passed=False, note="未修复")
    run.act(
        "extend", "MH-MAIN", T0 + 25 * M, officer="sup-01", deadline=T0 + 5 * H, reason="定制井盖"
    )
    run.act("feedback", "MH-MAIN", T0 + 40 * M, note="已重新安装")
    run.read("MH-MAIN", T0 + H, open=False)
    run.read("MH-SEC", T0 + 2 * H, open=True)  # still open at the export: filed and dispatched
    return run


def _cli(settings, *args: str) -> subprocess.CompletedProcess:  # noqa: ANN001
    return subprocess.run([sys.executable, "-m", "citywatch", *args], env=settings_env(settings),
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_an_exported_json_reads_back_as_the_cases_and_their_stages(settings, tmp_path) -> None:
    run = _walk()
    ensure_database(settings)
    lines = [line for ev in run.events if (line := points.case_lines(ev.to_dict()))]
    write_lines(settings, settings.influx.database, lines, LEDGER_RP)
    out = tmp_path / "cases.json"
    done = _cli(settings, "case", "export", "--from", str(T0), "--until", str(T0 + 3 * H),
                "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "2 cases with their stages" in done.stdout
    got = orjson.loads(out.read_bytes())
    assert got["format"] == "citywatch.handover/1" and (got["from"], got["until"]) == (
        T0,
        T0 + 3 * H,
    )
    expected = []
    for c in sorted(run.cases.values(), key=lambda c: c.case_id):
        ev = c.to_dict()
        expected.append(case_record(ev, ev["detail"]["workflow"]["history"]))
    assert got["cases"] == orjson.loads(orjson.dumps(expected))
    mh = next(c for c in got["cases"] if c["device"] == "MH-MAIN")
    assert [s["change"] for s in mh["stages"]] == [
        "filed", "dispatched", "handled", "check_failed", "dispatched", "extended", "handled",
        "checked", "closed", "evaluated",
    ]  # fmt: skip
    assert (mh["reworks"], mh["extensions"], mh["evaluation"]) == (1, 1, "reworked")
    sec = next(c for c in got["cases"] if c["device"] == "MH-SEC")
    assert sec["stage"] == "dispatched" and [s["change"] for s in sec["stages"]] == [
        "filed",
        "dispatched",
    ]


def test_the_exported_csv_has_one_neutralised_row_per_stage_change(settings, tmp_path) -> None:
    run = _walk()
    ensure_database(settings)
    lines = [line for ev in run.events if (line := points.case_lines(ev.to_dict()))]
    write_lines(settings, settings.influx.database, lines, LEDGER_RP)
    out = tmp_path / "cases.csv"
    done = _cli(settings, "case", "export", "--from", str(T0), "--until", str(T0 + 3 * H),
                "--format", "csv", "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.read_bytes().startswith(b"\xef\xbb\xbf")
    with open(out, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == STAGE_COLUMNS and len(rows) == 1 + 10 + 2
    handled = next(dict(zip(rows[0], r, strict=True)) for r in rows[1:] if r[13] == "handled")
    assert handled["note"] == '\'=HYPERLINK("http://x")'  # text in Excel, never a formula
    assert handled["photos"] == "p/1.jpg p/2.jpg" and handled["change_name"] == "处置反馈"
    refused = _cli(settings, "case", "export", "--from", str(T0), "--until", str(T0 + 3 * H),
                   "--format", "csv")  # fmt: skip
    assert refused.returncode != 0 and "--format csv needs --out FILE" in refused.stderr
    backwards = _cli(settings, "case", "export", "--from", str(T0 + H), "--until", str(T0))
    assert backwards.returncode != 0 and "is not before --until" in backwards.stderr
