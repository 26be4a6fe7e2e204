"""Replay files (docs/contracts.md, "Replay files and ledger JSON"): file order, actions, watermarks, deterministic JSON."""

from __future__ import annotations

import json
from pathlib import Path

from streams.harness import REG, T0, H, M, rules_with
from streams.replay import format_json, format_table, replay, replay_file
from streams.rules import default_rules

CASE = f"manhole:MH-MAIN:{T0}"


def reading_line(device: str, kind: str, ts: int, received_at: int | None = None, district: str = "jinshui",
                 **payload: object) -> str:  # fmt: skip
    return json.dumps({
        "topic": f"city/{district}/{kind}/{device}/telemetry",
        "payload": {"ts": ts, **payload},
        "received_at": ts + 200 if received_at is None else received_at,
    }, ensure_ascii=False)  # fmt: skip


def stolen_cover_file() -> list[str]:
    return [
        reading_line("MH-MAIN", "manhole", T0, open=True, tilt_deg=3.5, battery_pct=88),
        json.dumps({"action": "ack", "device": "MH-MAIN", "at": T0 + 10 * M, "officer": "grid-07"}),
        json.dumps({"watermark": T0 + 4 * H}),
        reading_line("DS-1", "dust", T0 + 4 * H, pm10=260.0),
        json.dumps(
            {
                "topic": "city/jinshui/dust/DS-1/telemetry",
                "raw": "{not json",
                "received_at": T0 + 4 * H,
            }
        ),
        json.dumps(
            {"action": "accident", "device": "MH-MAIN", "at": T0 + 4 * H + M, "officer": "grid-07"}
        ),
        json.dumps(
            {
                "action": "accident",
                "device": "MH-MAIN",
                "at": T0 + 4 * H + 2 * M,
                "officer": "grid-08",
            }
        ),
        "",
        json.dumps(
            {
                "action": "close",
                "device": "MH-MAIN",
                "at": T0 + 5 * H + 30 * M,
                "officer": "grid-07",
            }
        ),
        json.dumps({"action": "close", "device": "SL-1", "at": T0 + 5 * H, "officer": "grid-07"}),
    ]


ABSOLUTE = rules_with(dust={"mode": "absolute"})
"""The day's lone dust site judged on its level alone (background mode waits a window for peers)."""


def test_replay_stolen_cover_day() -> None:
    res = replay(stolen_cover_file(), ABSOLUTE, REG)
    doc = json.loads(format_json(res))
    assert set(doc) == {"cases", "ledger"}
    ids = [e["id"] for e in doc["ledger"]]
    # hours at deadline+1h, +2h, +3h (T0+3h..T0+5h); the close at T0+5h30 owes floor(3.5) = 3
    assert ids == [
        f"{CASE}:hour:1", f"{CASE}:hour:2",
        f"dust:DS-1:{T0 + 4 * H}:dust",
        f"{CASE}:accident:district_government", f"{CASE}:accident:property_unit",
        f"{CASE}:hour:3",
    ]  # fmt: skip
    for e in doc["ledger"]:
        assert {"id", "case_id", "rule", "device", "payer", "payer_type", "district", "amount_yuan",
                "accrued_at", "reverses"} <= set(e)  # fmt: skip
        assert type(e["amount_yuan"]) is int
    assert sum(e["amount_yuan"] for e in doc["ledger"]) == 30_000 + 100_000 + 1_500_000
    case = next(c for c in doc["cases"] if c["case_id"] == CASE)
    assert case["state"] == "closed" and case["severity"] == "critical"
    assert case["component_code"] == "0102"
    assert [r["code"] for r in res.rejected] == ["not_json", "no_case"]
    assert [r["line"] for r in res.rejected] == [5, 10]


def test_replay_end_advances_time_to_last_event() -> None:
    lines = [
        reading_line("MH-MAIN", "manhole", T0, open=True),
        json.dumps(
            {"action": "close", "device": "MH-MAIN", "at": T0 + 6 * H, "officer": "grid-07"}
        ),
    ]
    res = replay(lines, default_rules(), REG)
    assert res.ledger.net() == 40_000  # hours at T0+3h..T0+6h, booked by the end-of-file advance
    assert res.watermark == T0 + 6 * H


def test_replay_same_file_twice_is_byte_identical(tmp_path: Path) -> None:
    p = tmp_path / "day.jsonl"
    p.write_text("\n".join(stolen_cover_file()) + "\n", encoding="utf-8")
    a = format_json(replay_file(str(p), default_rules(), REG))
    b = format_json(replay_file(str(p), default_rules(), REG))
    assert a == b and a.endswith("\n")


def test_replay_accepts_parsed_dicts_and_reports_bad_lines() -> None:
    lines = [
        {"watermark": T0},
        "[1, 2]",
        '{"something": 1}',
        '{"topic": "city/jinshui/manhole/MH-MAIN/telemetry", "payload": {"ts": 1}}',
        '{"action": "explode", "device": "MH-MAIN", "at": 1, "officer": "x"}',
        '{"watermark": "soon"}',
        reading_line("MH-GHOST", "manhole", T0, open=True),
    ]
    res = replay(lines, default_rules(), REG)  # type: ignore[arg-type]
    assert [(r["line"], r["code"]) for r in res.rejected] == [
        (2, "bad_line"), (3, "bad_line"), (4, "bad_line"), (5, "bad_action"), (6, "bad_line"),
        (7, "unknown_device"),
    ]  # fmt: skip


def test_format_table_shows_net_by_payer() -> None:
    text = format_table(replay(stolen_cover_file(), ABSOLUTE, REG))
    net = text.split("Net by payer")[1]
    assert "市政工程管理处" in net and "1,030,000" in net  # property unit: 3 hours + accident
    assert "jinshui" in net and "600,000" in net  # district: dust case + accident


def backdated_close_day() -> list[str]:
    """The issue's attack as a replay file: a close backdated to the opening, then the decisions."""
    close = {"action": "close", "device": "MH-MAIN", "at": T0, "officer": "sup-jinshui",
             "role": "district_supervisor", "channel": "cli", "credential": "token:t1",
             "reason": "巡查记录", "recorded_at": T0 + 12 * H + M}  # fmt: skip
    return [
        reading_line("MH-MAIN", "manhole", T0, open=True),
        json.dumps({"watermark": T0 + 12 * H}),
        json.dumps(close, ensure_ascii=False),
        json.dumps(
            {
                "action": "confirm_repair",
                "device": "MH-MAIN",
                "at": T0 + 12 * H + 2 * M,
                "officer": "sup-jinshui",
                "recorded_at": T0 + 12 * H + 2 * M,
            }
        ),  # fmt: skip
        json.dumps(
            {
                "action": "confirm_repair",
                "device": "MH-MAIN",
                "at": T0 + 12 * H + 3 * M,
                "officer": "sup-city",
                "recorded_at": T0 + 12 * H + 3 * M,
            }
        ),  # fmt: skip
        json.dumps({"watermark": T0 + 20 * H}),
    ]


def test_a_backdated_close_in_a_replay_file_is_a_claim_a_second_officer_confirms() -> None:
    lines = backdated_close_day()
    claimed = replay(lines[:4], default_rules(), REG)  # the claimant's own confirmation included
    assert claimed.ledger.net() == 100_000 and len(claimed.ledger.entries()) == 10
    case = next(c for c in claimed.cases if c.case_id == CASE)
    claim = case.detail["backdated_close_claim"]
    assert (claim["status"], claim["claimed_by"], claim["reason"]) == (
        "pending", "sup-jinshui", "巡查记录",
    )  # fmt: skip
    assert claim["recorded_at"] == T0 + 12 * H + M
    done = replay(lines, default_rules(), REG)
    assert done.ledger.net() == 0 and done.rejected == []
    case = next(c for c in done.cases if c.case_id == CASE)
    assert case.detail["backdated_close_claim"]["decided_by"] == "sup-city"


def test_replay_keeps_the_gate_s_recorded_at_as_the_live_journal_does() -> None:
    """Replay and live read an action with the same codec: the same claim, the same ledger."""
    from contract.cases import LedgerEntry, OfficerAction
    from contract.journal import decode, encode, to_record
    from contract.reading import Reading
    from streams.detector import Detector
    from streams.ledger import Ledger
    from streams.replay import BadLine, parse_lines

    lines = [
        reading_line("MH-MAIN", "manhole", T0, open=True),
        json.dumps({"watermark": T0 + 4 * H}),  # hours 1, 2
        # five minutes behind the watermark, but recorded 1 h 35 min after the act
        json.dumps(
            {
                "action": "close",
                "device": "MH-MAIN",
                "at": T0 + 4 * H - 5 * M,
                "officer": "sup-jinshui",
                "reason": "巡查",
                "recorded_at": T0 + 5 * H + 30 * M,
            }
        ),  # fmt: skip
        json.dumps({"watermark": T0 + 9 * H}),
    ]
    res = replay(lines, default_rules(), REG)
    case = next(c for c in res.cases if c.case_id == CASE)
    assert case.detail["backdated_close_claim"]["status"] == "pending"
    assert res.ledger.net() == 30_000  # hour 3 accrued before the officer said it
    # the live path: each item through the journal's bytes, as `journal load` and the worker do
    det, live = Detector(default_rules(), REG), Ledger()
    for _, item in parse_lines(lines, REG):
        assert not isinstance(item, BadLine)
        back = decode(encode(to_record(item)[1]))
        if isinstance(back, Reading):
            outs = det.on_reading(back)
        elif isinstance(back, OfficerAction):
            outs = det.on_action(back)
        else:
            outs = det.on_watermark(back.at)
        for o in outs:
            if isinstance(o, LedgerEntry):
                live.add(o)
    assert live.to_json_list() == res.ledger.to_json_list()
