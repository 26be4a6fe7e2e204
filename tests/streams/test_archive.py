"""The journal archive's lines are the replay file format and give back the very records (decision 010)."""

from __future__ import annotations

from pathlib import Path

import orjson

from contract.cases import OfficerAction
from contract.journal import decode, encode, to_record
from contract.topics import KafkaTopics
from ingest.bridge import kafka_record
from ingest.validate import parse_message
from registry.devices import load_registry
from streams.archive import Archive, journal_line, journal_record, read_lines
from streams.replay import replay, replay_file
from streams.rules import load_rules

H = 3_600_000
T0 = 1_763_800_000_000


def _registry(tmp_path: Path) -> Path:
    path = tmp_path / "registry.csv"
    path.write_text(
        "device_id,kind,district,grid,unit,road_class,address,lat,lon,pm10_warning,pm10_violation,component_code\n"
        "MH-A1,manhole,jinshui,JS-G07,郑州市市政工程管理处,main,花园路,34.79,113.67,,,0102\n"
    )
    return path


def _sent() -> list[dict]:
    """What the city sent (the replay file a test would write): a cover left open, then closed."""
    lines: list[dict] = [
        {"topic": "city/jinshui/manhole/MH-A1/telemetry",
         "payload": {"ts": T0 + i * 60_000, "open": i >= 2, "tilt_deg": 1.5, "rssi": -70},
         "received_at": T0 + i * 60_000}
        for i in range(6)
    ]  # fmt: skip
    lines.append({"watermark": T0 + 5 * H})
    lines.append(
        {"action": "close", "device": "MH-A1", "at": T0 + 5 * H + 10, "officer": "grid-07"}
    )
    return lines


def _journal(reg_path: Path) -> list[tuple[bytes | None, bytes]]:
    """What the bridge and the worker put on the journal for ``_sent()``, and a record nobody can read."""
    reg = load_registry(reg_path)
    topics = KafkaTopics("t")
    out = []
    for line in _sent():
        if "topic" in line:
            reading = parse_message(
                line["topic"], orjson.dumps(line["payload"]), line["received_at"], reg
            )
            _topic, key, value = kafka_record(reading, topics)  # type: ignore[arg-type]
            out.append((key, value))
        elif "watermark" in line:
            out.append((None, encode({"type": "watermark", "at": line["watermark"]})))
        else:
            action = OfficerAction(line["action"], line["device"], line["at"], line["officer"])
            key, rec = to_record(action, "jinshui")
            out.append((key, encode(rec)))
    out.append((None, b"\xff not json"))
    return out


def test_an_archived_journal_record_comes_back_as_the_same_journal_item(tmp_path: Path) -> None:
    for key, value in _journal(_registry(tmp_path)):
        line = journal_line(value, 0)
        assert line["partition"] == 0
        back_key, back = journal_record(orjson.loads(orjson.dumps(line)))
        if b"not json" in value:
            assert back == value, "what the worker could not read is kept byte for byte"
            continue
        assert decode(back) == decode(value)
        if key is not None and b'"reading"' in value:
            assert back_key == key, "a reading keeps its district key"


def test_citywatch_replay_reads_a_day_of_the_archive_and_books_what_the_journal_did(
    tmp_path: Path,
) -> None:
    reg_path = _registry(tmp_path)
    reg, rules = load_registry(reg_path), load_rules("config/rules.yaml")
    journal = _journal(reg_path)
    archive = Archive(tmp_path / "archive", clock=lambda: T0 / 1000)
    archive.write({"journal": [journal_line(v, 0) for _k, v in journal]})
    archive.close()
    (path,) = sorted((tmp_path / "archive").glob("journal-*.jsonl"))
    assert path.name == "journal-2025-11-22.jsonl"
    from_archive = replay_file(str(path), rules, reg)
    sent = replay(_sent(), rules, reg)
    ledger = from_archive.ledger.to_json_list()
    assert len(ledger) == 2, "hours 1 and 2 past the deadline (2 h after it opened), then closed"
    assert ledger == sent.ledger.to_json_list(), "the same entries, ids and amounts"
    assert [c.to_dict() for c in from_archive.cases] == [c.to_dict() for c in sent.cases]
    assert [r["code"] for r in from_archive.rejected] == ["bad_line"], "the raw record, reported"


def test_a_last_line_cut_short_is_skipped_and_any_other_bad_line_named(tmp_path: Path) -> None:
    import pytest

    from streams.archive import ArchiveError

    path = tmp_path / "journal-2026-01-01.jsonl"
    path.write_bytes(b'{"watermark": 1, "partition": 0}\n{"watermark": 2, "parti')
    assert [n for n, _ in read_lines(path)] == [1]
    path.write_bytes(b'{"watermark": 1}\nnot json\n{"watermark": 2}\n')
    with pytest.raises(ArchiveError, match=r"journal-2026-01-01.jsonl:2: not a JSON line"):
        list(read_lines(path))


def test_the_day_of_a_file_never_goes_back(tmp_path: Path) -> None:
    now = [T0 / 1000]
    archive = Archive(tmp_path, clock=lambda: now[0])
    archive.write({"journal": [{"watermark": 1, "partition": 0}]})
    now[0] -= 86_400  # the clock steps back a day
    archive.write({"journal": [{"watermark": 2, "partition": 0}]})
    archive.close()
    assert [p.name for p in tmp_path.glob("*.jsonl")] == ["journal-2025-11-22.jsonl"]


def test_an_ack_and_the_journal_record_it_was_forwarded_as_are_the_same_action(
    tmp_path: Path,
) -> None:
    """What restore leaves out of the acks (decision 010, §6): an action the journal archive
    holds, by its id, or by its content for a record from before ids."""
    from streams.archive import action_key, journaled_actions, other_line

    with_id = OfficerAction("close", "MH-A1", T0, "grid-07", role="grid", action_id="a" * 32)
    old = OfficerAction("ack", "MH-A1", T0 + 1, "grid-07")
    pending = OfficerAction("close", "MH-A1", T0 + 2, "grid-07", action_id="b" * 32)
    journal = [journal_line(encode(to_record(a, "jinshui")[1]), 1) for a in (with_id, old)]
    journal.append(journal_line(encode({"type": "watermark", "at": T0}), 1))
    archive = Archive(tmp_path, clock=lambda: T0 / 1000)
    archive.write({
        "journal": journal,
        "acks": [other_line(a.device.encode(), orjson.dumps(a.to_dict()), 0)
                 for a in (with_id, old, pending)],
    })  # fmt: skip
    archive.close()
    forwarded = journaled_actions(tmp_path)
    acks = [line["value"] for _n, line in read_lines(tmp_path / "acks-2025-11-22.jsonl")]
    assert [action_key(v) in forwarded for v in acks] == [True, True, False]
    assert action_key(acks[0]) == "a" * 32
    assert action_key({"action": "close", "at": "not ms"}) is None, "quarantined, never journaled"
    assert action_key(old.to_dict()) != action_key(
        OfficerAction("ack", "MH-A1", T0 + 2, "grid-07").to_dict()
    ), "two id-less acts differ by their content"
