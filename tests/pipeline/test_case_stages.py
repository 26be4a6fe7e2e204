"""A case through every stage of the workflow on the real pipeline (docs/rules.md "The case
workflow"): officers act through the CLI and the gate, the stages land on the cases topic and in
InfluxDB, and the ledger is the one the same readings book without any stage."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from alerts.acks import submit
from contract.cases import OfficerAction
from contract.journal import from_record
from contract.topics import KafkaTopics
from foundation.settings import Settings
from registry.devices import load_registry
from store.errors import InfluxQueryError
from store.influxql import query
from store.schema import CASE_STAGE
from streams import journal
from streams.detector import Detector
from streams.ledger import Ledger
from streams.rules import load_rules
from tests.kit.cli import officer_cli
from tests.kit.kafka import read_topic_sync
from tests.kit.officers import with_officers
from tests.kit.procs import Proc, wait_until

pytestmark = pytest.mark.services
H, M = 3_600_000, 60_000


def test_a_case_walks_every_stage_on_the_pipeline_and_books_what_the_readings_alone_book(
    settings: Settings, registry_file: Path, unique: str, tmp_path: Path
) -> None:
    s = settings.replace("paths", registry=str(registry_file))
    s, tokens = with_officers(s, tmp_path, unique)
    mh = f"MH-{unique}-1"  # a main road in jinshui: 2 h to repair, 2 h to dispose
    reg = load_registry(s.paths.registry)
    now = time.time_ns() // 1_000_000
    t0 = now - 6 * H
    topic = f"city/jinshui/manhole/{mh}/telemetry"
    opening = [
        {"topic": topic, "payload": {"ts": t0, "open": True}, "received_at": t0},
        {"watermark": t0 + H},
    ]
    repaired = now + 10 * M  # after the officers' acts, which are dated now
    closing = [
        {"topic": topic, "payload": {"ts": repaired, "open": False}, "received_at": repaired}
    ]
    prefix = s.kafka.topic_prefix
    asyncio.run(journal.load(opening, reg, s.kafka.bootstrap, prefix, final_watermark=False))
    worker = Proc(["worker", "--simulation", "--session-timeout", "3"], s, tmp_path / "worker.log")
    topics = KafkaTopics(prefix)

    def snapshots() -> list[dict]:
        return [r for r in read_topic_sync(s.kafka.bootstrap, topics.cases, 10**6, 1)
                if r["device"] == mh]  # fmt: skip

    def stage() -> str | None:
        snaps = snapshots()
        return ((snaps[-1]["detail"].get("workflow") or {}).get("stage")) if snaps else None

    try:
        wait_until(lambda: stage() == "dispatched", what="the case filed and dispatched")
        refused = officer_cli(s, "case", "feedback", mh, "--note", "已处理", token=tokens["duty"])
        assert "may not feedback: that needs grid officer" in refused.stderr  # a duty officer
        steps = [
            ("feedback", "--note", "已更换井盖", "--photo", "oss://cw/1.jpg", "handled"),
            ("check", "--failed", "--note", "井盖仍缺失", "dispatched"),
            ("feedback", "--note", "重新安装", "--photo", "oss://cw/2.jpg", "handled"),
        ]
        for verb, *args, then in steps:
            done = officer_cli(s, "case", verb, mh, *args, token=tokens["grid"])
            assert done.returncode == 0, done.stderr
            wait_until(lambda then=then: stage() == then, what=f"{verb}: the case {then}")
        early = officer_cli(s, "case", "dispatch", mh, token=tokens["sup"])  # out of turn: the gate
        assert early.returncode != 0 and len(early.stderr.strip().splitlines()) == 1, early.stderr
        assert "dispatch is for a filed case" in early.stderr and "allowed now: " in early.stderr
        # an act past a gate whose view lagged: the workflow refuses it and says so on the topic
        before = snapshots()[-1]["detail"]["workflow"]["history"]
        raced = OfficerAction(
            "dispatch", mh, int(time.time() * 1000), f"sup-{unique}", role="district_supervisor"
        )
        asyncio.run(submit(s, raced))
        told = wait_until(
            lambda: [x for x in snapshots() if (x["detail"].get("workflow") or {}).get("refused")],
            what="the refused act on the cases topic",
        )
        refusal = told[-1]["detail"]["workflow"]
        assert (
            refusal["refused"]["action"] == "dispatch" and refusal["refused"]["stage"] == "handled"
        )
        assert refusal["changes"] == [] and refusal["history"] == before
        asyncio.run(journal.load(closing, reg, s.kafka.bootstrap, prefix))
        final = wait_until(
            lambda: (snaps := snapshots()) and snaps[-1]["state"] == "repaired" and snaps[-1],
            what="the case repaired on the cases topic",
        )
        flow = final["detail"]["workflow"]
        assert [c["change"] for c in flow["history"]] == [
            "filed", "dispatched", "handled", "check_failed", "dispatched", "handled",
            "checked", "closed", "evaluated",
        ]  # fmt: skip
        assert flow["reworks"] == 1 and flow["evaluation"] == "late"
        assert flow["history"][0]["component_code"] == "0102"
        assert flow["history"][2]["by"] == f"officer:grid-{unique}"
        assert flow["history"][2]["photos"] == ["oss://cw/1.jpg"]

        def stages_in_influx() -> list | None:
            try:
                rows = query(s, None, f"SELECT * FROM {CASE_STAGE} WHERE device = '{mh}'")
            except InfluxQueryError:
                return None
            return rows if len(rows) == 9 else None

        rows = wait_until(stages_in_influx, what="9 case_stage points in InfluxDB")
        # one point per change at its instant (filed and dispatched share one: two series)
        assert sorted((r["time"], r["stage"]) for r in rows) == sorted(
            (c["at"], c["change"]) for c in flow["history"]
        )
        [evaluated] = [r for r in rows if r["stage"] == "evaluated"]
        assert evaluated["evaluation"] == "late" and evaluated["reworks"] == 1
    finally:
        worker.stop()
    booked = sorted(
        (r["id"], r["amount_yuan"], r["accrued_at"])
        for r in read_topic_sync(s.kafka.bootstrap, topics.penalties, 10**6, 1)
        if r["device"] == mh
    )
    # the same journal without the officers' acts, through the pure detector: the same ledger
    det, ledger = Detector(load_rules(s.paths.rules), reg), Ledger()
    for rec in opening + closing:
        if "watermark" in rec:
            outs = det.on_watermark(rec["watermark"])
        else:
            item = from_record(
                {"type": "reading", "device": mh, "kind": "manhole", "district": "jinshui",
                 "ts": rec["payload"]["ts"], "received_at": rec["received_at"],
                 "fields": {"open": rec["payload"]["open"]}}
            )  # fmt: skip
            outs = det.on_reading(item)  # type: ignore[arg-type]
        for o in outs:
            if hasattr(o, "amount_yuan"):
                ledger.add(o)
    alone = sorted((e.id, e.amount_yuan, e.accrued_at) for e in ledger)
    assert booked == alone and len(alone) >= 4
    audit = officer_cli(s, "audit", "--since", str(now - M)).stdout
    mine = [line for line in audit.splitlines() if unique in line]
    assert sum("accepted" in line and "feedback" in line for line in mine) == 2
    assert sum("accepted" in line and "check" in line for line in mine) == 1
    assert sum("refused" in line and "feedback" in line for line in mine) == 1
