"""An officer acts through the CLI; the case changes on the cases topic and in InfluxDB."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from contract.topics import KafkaTopics
from foundation.settings import Settings
from registry.devices import load_registry
from store.errors import InfluxQueryError
from store.influxql import query
from store.schema import PENALTY
from streams import journal
from tests.kit.cli import officer_cli
from tests.kit.kafka import read_topic_sync
from tests.kit.officers import with_officers
from tests.kit.procs import Proc, wait_until

pytestmark = pytest.mark.services
H, M = 3_600_000, 60_000
T0 = (time.time_ns() // 1_000_000 // H - 10) * H  # recent: the raw retention policy keeps 30 days


def test_officer_closes_a_case_from_the_cli_and_the_clock_stops(
    settings: Settings, registry_file: Path, unique: str, tmp_path: Path
) -> None:
    s = settings.replace("paths", registry=str(registry_file))
    s, tokens = with_officers(s, tmp_path, unique)
    mh = f"MH-{unique}-1"
    reg = load_registry(s.paths.registry)
    opening = [
        {
            "topic": f"city/jinshui/manhole/{mh}/telemetry",
            "payload": {"ts": T0, "open": True},
            "received_at": T0,
        },
        {"watermark": T0 + 5 * H},
    ]
    asyncio.run(
        journal.load(opening, reg, s.kafka.bootstrap, s.kafka.topic_prefix, final_watermark=False)
    )
    worker = Proc(["worker", "--simulation", "--session-timeout", "3"], s, tmp_path / "worker.log")
    penalties = KafkaTopics(s.kafka.topic_prefix).penalties
    cases = KafkaTopics(s.kafka.topic_prefix).cases
    try:
        wait_until(
            lambda: (
                len({r["id"] for r in read_topic_sync(s.kafka.bootstrap, penalties, 3, 1)}) == 3
            ),
            what="3 hourly entries (deadline at 2 h, entries at 3, 4 and 5 h)",
        )
        at = str(T0 + 5 * H + 30 * M)  # hours ago: a backdated close
        refused = officer_cli(s, "case", "close", mh, "--at", at, token=tokens["grid"])
        assert refused.returncode != 0
        assert f"refused: grid-{unique} may not backdate an act" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        outside = officer_cli(s, "case", "ack", mh, token=tokens["duty"])  # a duty officer of erqi
        assert "does not act in district jinshui" in outside.stderr
        nameless = officer_cli(s, "case", "close", mh, "--officer", "grid-07", "--at", at)
        assert "--officer is gone" in nameless.stderr
        done = officer_cli(
            s, "case", "close", mh, "--at", at, "--reason", "巡查记录：已修复", token=tokens["sup"]
        )
        assert done.returncode == 0, done.stderr
        said_before = time.time_ns() // 1_000_000  # the gate records the close about now

        def claim() -> dict | None:
            """The backdated close claim of the latest case event that carries one."""
            found = None
            for r in read_topic_sync(s.kafka.bootstrap, cases, 10**6, 1):
                c = (r.get("detail") or {}).get("backdated_close_claim")
                if c is not None and r["state"] == "closed":
                    found = c
            return found

        # backdated by hours: a claim, not a booking; the clock stopped when the close was said
        pending = wait_until(claim, what="the backdated close as a pending claim")
        assert pending["status"] == "pending" and pending["claimed_by"] == f"sup-{unique}"
        assert pending["reason"] == "巡查记录：已修复" and pending["repair_at"] == int(at)
        assert pending["at"] >= said_before - 60_000
        # time goes on to 9 h: the hours at 6..9 h accrued before the officer said it, so they
        # are owed until a second officer confirms the backdated repair
        asyncio.run(
            journal.load([{"watermark": T0 + 9 * H}], reg, s.kafka.bootstrap, s.kafka.topic_prefix)
        )
        wait_until(
            lambda: (
                len({r["id"] for r in read_topic_sync(s.kafka.bootstrap, penalties, 7, 1)}) == 7
            ),
            what="7 hourly entries (the backdated close reversed none)",
        )
        own = officer_cli(s, "case", "confirm_repair", mh, token=tokens["sup"])
        assert own.returncode == 0, own.stderr  # accepted as an act; four eyes: it decides nothing
        confirmed = officer_cli(s, "case", "confirm_repair", mh, token=tokens["city"])
        assert confirmed.returncode == 0, confirmed.stderr

        def in_influx() -> list | None:
            try:
                return query(s, None, f"SELECT * FROM {PENALTY} WHERE device = '{mh}'") or None
            except InfluxQueryError:
                return None

        entries = wait_until(
            lambda: (rows := in_influx()) and len(rows) == 11 and rows,
            what="7 hours and 4 reversals in InfluxDB",
        )
        assert sum(e["amount_yuan"] for e in entries) == 30_000
        decided = wait_until(
            lambda: (c := claim()) and c["status"] == "confirmed" and c,
            what="the claim confirmed on the cases topic",
        )
        assert decided["decided_by"] == f"city-{unique}"
        wait_until(
            lambda: "closed" in officer_cli(s, "case", "list", "--all").stdout,
            what="case list shows it closed",
        )
    finally:
        worker.stop()
    ids = {r["id"] for r in read_topic_sync(s.kafka.bootstrap, penalties, 10**6, 1)}
    assert len(ids) == 11, "an hour accrued after the officer said it was repaired"
    listing = officer_cli(s, "case", "list", "--all").stdout
    case_id = next(line.split()[0] for line in listing.splitlines() if mh in line)
    shown = officer_cli(s, "case", "show", case_id)
    assert shown.returncode == 0, shown.stderr
    assert "net 30,000 yuan" in shown.stdout
    audit = officer_cli(s, "audit", "--since", str(T0)).stdout
    mine = [line for line in audit.splitlines() if unique in line]
    assert (
        sum("refused" in line and f"grid-{unique}" in line and "backdate" in line for line in mine)
        == 1
    )
    assert sum("refused" in line and f"duty-{unique}" in line for line in mine) == 1
    assert (
        sum("accepted" in line and f"sup-{unique}" in line and "close" in line for line in mine)
        == 1
    )


def test_case_show_of_an_unknown_case_says_how_to_find_one(settings: Settings) -> None:
    from store.schema import ensure_database

    ensure_database(s := settings)
    done = officer_cli(s, "case", "show", "manhole:NOPE:1")
    assert done.returncode == 2
    assert "no case 'manhole:NOPE:1'" in done.stderr and "Traceback" not in done.stderr


def test_a_signed_ack_link_acknowledges_the_case_on_the_cases_topic(
    settings: Settings, registry_file: Path, unique: str, tmp_path: Path
) -> None:
    """Officer's phone -> alerts HTTP endpoint -> acks topic -> worker journal -> case acknowledged."""
    from urllib.parse import parse_qsl, urlencode, urlsplit

    import aiohttp

    from alerts.http import make_link
    from alerts.service import AlertsService

    s = settings.replace("paths", registry=str(registry_file))
    mh = f"MH-{unique}-2"
    reg = load_registry(s.paths.registry)
    opening = [
        {
            "topic": f"city/erqi/manhole/{mh}/telemetry",
            "payload": {"ts": T0, "tilt_deg": 40.0},
            "received_at": T0,
        },
        {"watermark": T0 + H},
    ]
    asyncio.run(
        journal.load(opening, reg, s.kafka.bootstrap, s.kafka.topic_prefix, final_watermark=False)
    )
    worker = Proc(["worker", "--simulation", "--session-timeout", "3"], s, tmp_path / "worker.log")
    cases = KafkaTopics(s.kafka.topic_prefix).cases
    try:
        opened = wait_until(
            lambda: [
                r for r in read_topic_sync(s.kafka.bootstrap, cases, 1, 1) if r["device"] == mh
            ],
            what="the case opened",
        )
        case_id = opened[0]["case_id"]

        async def click() -> tuple[int, str]:
            svc = AlertsService(
                s, "config/routes.yaml", tmp_path / "alerts", http_port=0, http_host="127.0.0.1"
            )
            stop = asyncio.Event()
            task = asyncio.create_task(svc.run(stop))
            try:
                for _ in range(200):
                    if svc.http is not None and svc.http.port:
                        break
                    await asyncio.sleep(0.05)
                cfg = svc.config.ack
                officer = svc.link_officer("grid-officer", mh)  # the shipped routes: roles [grid]
                assert officer == "EQ-GRID-01"  # the example directory's grid officer of erqi
                link = make_link(cfg, case_id, mh, "ack", officer, T0 + 30 * M + 10 * H)
                query = dict(parse_qsl(urlsplit(link).query))
                async with (
                    aiohttp.ClientSession() as http,
                    http.post(f"http://127.0.0.1:{svc.http.port}/ack?{urlencode(query)}") as r,
                ):
                    return r.status, await r.text()
            finally:
                stop.set()
                await asyncio.wait_for(task, 20)

        status, page = asyncio.run(click())
        assert status == 200, page

        def acknowledged() -> list:
            return [
                r
                for r in read_topic_sync(s.kafka.bootstrap, cases, 10**6, 1)
                if r["case_id"] == case_id and r["state"] == "acknowledged"
            ]

        event = wait_until(acknowledged, what="the case acknowledged on the cases topic")[0]
        assert event["detail"]["acknowledged_by"] == "EQ-GRID-01"
    finally:
        worker.stop()
