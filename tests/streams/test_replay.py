"""Replay files (docs/contracts.md, "Replay files and ledger JSON"): file order, actions, watermarks, deterministic JSON."""

from __future__ import annotations

import json
from pathlib import Path

from streams.harness import REG, T0, H, M
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


def test_replay_stolen_cover_day() -> None:
    res = replay(stolen_cover_file(), default_rules(), REG)
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
    text = format_table(replay(stolen_cover_file(), default_rules(), REG))
    net = text.split("Net by payer")[1]
    assert "市政工程管理处" in net and "1,030,000" in net  # property unit: 3 hours + accident
    assert "jinshui" in net and "600,000" in net  # district: dust case + accident
