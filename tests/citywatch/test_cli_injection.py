"""What a person types into a CLI filter reaches InfluxDB as a bound value, never as query text (issue 13).

Two proofs. Without a server: every query the real command sends is recorded
(``store.influxql``'s HTTP call replaced), and the hostile text is in its
``params``, not in its statement, which stays one statement. Against the real
InfluxDB 1.6: a value that would widen the filter if it were spliced in matches
nothing, a multi-statement value is a value (the command succeeds, the ledger is
intact), and the same filter with an honest value finds the case, so the
filter does filter. Filters that are not free text (``--kind``, ``--outcome``,
``--since``, ``--limit``, a report's ``--month``/``--week``) are refused before
any query is made.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from citywatch import cli
from citywatch.run import settings_env
from contract.cases import CaseEvent, LedgerEntry
from contract.officers import AuditRecord
from foundation.settings import Settings
from store import influxql, points, read
from store.identity import credentials
from store.schema import LEDGER_RP, ensure_database
from store.writer import InfluxWriter
from tests.kit.cli import ROOT, run_cli

DROP = 'x\'; DROP MEASUREMENT penalty; SELECT * FROM "ledger"."case_event" WHERE district = \'x'
"""The issue's example: a second and third statement, if the value were spliced in."""
WIDEN = "x' OR district =~ /.*/ OR district = 'y"
"""If spliced, every district's cases."""
QUOTE = 'x" OR 1=1 -- $start \\'
"""An identifier quote, a comment, a parameter name and a trailing backslash."""
HOSTILE = (DROP, WIDEN, QUOTE)


# ------------------------------------------------------------------ what the command sends


class _Recorder:
    """Stands in for ``urllib.request.urlopen`` in ``store.influxql``: keeps each request's
    form and answers as InfluxDB does for a query that matched nothing."""

    def __init__(self) -> None:
        self.forms: list[dict[str, str]] = []

    def __call__(self, req: Any, timeout: float | None = None) -> io.BytesIO:
        self.forms.append(dict(urllib.parse.parse_qsl(req.data.decode())))
        return io.BytesIO(b'{"results": [{"statement_id": 0}]}')


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[_Recorder]:
    recorder = _Recorder()
    monkeypatch.setattr(influxql.urllib.request, "urlopen", recorder)
    monkeypatch.chdir(ROOT)
    for name in [k for k in os.environ if k.startswith("CITYWATCH_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CITYWATCH_INFLUX_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("CITYWATCH_PATHS_STATE_DIR", str(tmp_path / "state"))
    yield recorder


FREE_TEXT = [
    ("case", "list", "--district", "{v}"),
    ("case", "list", "--all", "--district", "{v}"),
    ("case", "show", "{v}"),
    ("audit", "--officer", "{v}"),
    ("audit", "--case", "{v}"),
    ("audit", "--officer", "{v}", "--case", "{v}", "--since", "0"),
]


@pytest.mark.parametrize("value", HOSTILE, ids=("drop", "widen", "quote"))
@pytest.mark.parametrize("template", FREE_TEXT, ids=lambda t: " ".join(t).replace("{v}", "V"))
def test_a_free_text_filter_travels_as_a_bound_parameter_never_in_the_statement(
    template: tuple[str, ...], value: str, sent: _Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.format(v=value) for a in template]
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err  # case show: "no case ..." is exit 2
    assert sent.forms, "the command sent no query"
    for form in sent.forms:
        statement = form["q"]
        assert ";" not in statement and "'" not in statement, statement
        assert value not in statement, statement
        assert value in json.loads(form["params"]).values(), form


REFUSED = [
    ("case", "list", "--kind", DROP),
    ("audit", "--outcome", DROP),
    ("audit", "--since", DROP),
    ("audit", "--limit", "1; DROP MEASUREMENT penalty"),
    ("report", "settlement", "--month", "2026-01'; DROP MEASUREMENT penalty; --"),
    ("report", "ranking", "--month", DROP),
    ("report", "cases", "--week", "2026-W02' OR 1=1"),
]


def _exit_code(argv: list[str]) -> int:
    """``citywatch ARGV``'s exit code, in process (argparse exits with its own)."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.mark.parametrize("argv", REFUSED, ids=lambda a: " ".join(a[:2]) + " " + a[2])
def test_a_filter_that_is_not_free_text_refuses_anything_else_before_any_query(
    argv: tuple[str, ...], sent: _Recorder, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = ["--out", str(tmp_path)] if argv[0] == "report" else []
    assert _exit_code([*argv, *out]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("citywatch: ") and "Traceback" not in err
    assert sent.forms == []


# ------------------------------------------------------------------ the real InfluxDB

NOW = (int(time.time()) // 60) * 60_000 - 3_600_000


def _seed(settings: Settings, unique: str) -> str:
    """One open case in jinshui with a ledger entry, and one audit record: as the worker writes them."""
    ensure_database(settings)
    case_id = f"manhole:MH-{unique}:1"
    event = CaseEvent(
        case_id=case_id, kind="manhole", rule="manhole", device=f"MH-{unique}", district="jinshui",
        grid="JS-G07", unit="Water Co", severity="major", state="open", at=NOW, opened_at=NOW,
        deadline=None, evidence=[], component_code="0102", address="花园路", detail={},
    )  # fmt: skip
    entry = LedgerEntry(
        id=f"{case_id}:hour:1", case_id=case_id, rule="manhole", device=f"MH-{unique}",
        payer="Water Co", payer_type="property_unit", district="jinshui", amount_yuan=10_000,
        accrued_at=NOW + 1, hour_index=1, reverses=None, evidence=[],
    )  # fmt: skip
    audit = AuditRecord(
        at=NOW + 2, officer="JS-DUTY-01", roles=("duty",), channel="cli", credential="token:ab12",
        action="ack", device=f"MH-{unique}", case_id=case_id, outcome="accepted",
    )  # fmt: skip
    lines = [
        points.case_event_line(event.to_dict()),
        points.penalty_line(entry.to_dict()),
        points.audit_line(audit.to_dict()),
    ]

    async def go() -> None:
        async with InfluxWriter(
            settings.influx.url, settings.influx.database, retention_policy=LEDGER_RP,
            flush_interval_s=0.05, **credentials(settings, "admin"),
        ) as w:  # fmt: skip
            await w.add(lines)
        assert w.stats.written == len(lines), w.stats

    asyncio.run(go())
    return case_id


@pytest.mark.services
def test_hostile_filters_on_the_real_influxdb_match_nothing_and_change_nothing(
    settings: Settings, unique: str
) -> None:
    case_id = _seed(settings, unique)
    env = {k: v for k, v in settings_env(settings).items() if k.startswith("CITYWATCH_")}

    def cli_ok(*args: str) -> str:
        done = run_cli(*args, env=env)
        assert done.returncode == 0 and done.stderr == "", (args, done.stderr)
        return done.stdout

    # the filters filter: an honest value finds the case and the act
    assert case_id in cli_ok("case", "list", "--district", "jinshui")
    assert cli_ok("audit", "--officer", "JS-DUTY-01").startswith("1 audit records")
    for value in HOSTILE:
        assert cli_ok("case", "list", "--all", "--district", value).startswith("0 cases")
        assert cli_ok("audit", "--officer", value).startswith("0 audit records")
        assert cli_ok("audit", "--case", value).startswith("0 audit records")
        done = run_cli("case", "show", value, env=env)
        assert done.returncode == 2 and done.stderr.startswith("citywatch: no case "), done.stderr
    # The reader could not have dropped anything (READ only); what a splice would have shown is
    # the widened filter above listing the case. The ledger is as written:
    assert [e.id for e in read.ledger_entries(settings)] == [f"{case_id}:hour:1"]
    measurements = {r["name"] for r in influxql.query(settings, None, "SHOW MEASUREMENTS")}
    assert {"case_event", "penalty", "audit"} <= measurements
