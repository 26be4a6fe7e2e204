"""Records -> line protocol (store/points.py): the exact lines, and the escaping
checked by writing awkward text to the real InfluxDB 1.6.7 and reading it back."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from contract.reading import Reading
from registry.devices import Device
from store import points
from store.identity import credentials
from store.influxql import query
from store.schema import create_database
from store.writer import InfluxWriter

NOW = (int(time.time()) // 60) * 60_000  # recent: inside any retention policy


def device(**kw) -> Device:
    base = dict(
        device_id="MH-0001",
        kind="manhole",
        district="jinshui",
        grid="g-07",
        unit="Water Co",
        road_class="main",
        address="1 Road",
        lat=34.7,
        lon=113.6,
        pm10_warning=None,
        pm10_violation=None,
        component_code="0102",
    )
    base.update(kw)
    return Device(**base)


def reading(fields, kind="manhole", dev="MH-0001", ts=NOW) -> Reading:
    return Reading(
        device=dev, kind=kind, district="jinshui", ts=ts, received_at=ts + 5, fields=fields
    )


# ------------------------------------------------------------------ exact lines


def test_telemetry_line_numbers_are_floats_known_bools_stay_bools_strings_skipped():
    r = reading(
        {
            "open": True,
            "tilt_deg": 15,
            "rssi": -70.5,
            "fw": "1.2",
            "extra_flag": False,
            "nested": {"a": 1},
            "device": 3.0,
            "time": 1.0,
            "n": None,
        }
    )
    line = points.telemetry_line(r, device())
    assert line == (
        f"manhole,device=MH-0001,district=jinshui,grid=g-07,unit=Water\\ Co "
        f"open=true,tilt_deg=15,rssi=-70.5,extra_flag=0.0 {NOW}"
    )


def test_telemetry_without_registry_entry_tags_device_and_district_only():
    line = points.telemetry_line(reading({"pm10": 80}, kind="dust", dev="DU-9"))
    assert line == f"dust,device=DU-9,district=jinshui pm10=80 {NOW}"


def test_telemetry_with_nothing_storable_is_none():
    assert points.telemetry_line(reading({"note": "hello"})) is None


def test_telemetry_prefix_cache_follows_a_new_registry_entry():
    r = reading({"tilt_deg": 1.0})
    assert ",unit=A " in points.telemetry_line(r, device(unit="A"))
    assert ",unit=B " in points.telemetry_line(r, device(unit="B"))


def test_penalty_line_integer_amount_and_entry_id_tag():
    entry = {
        "id": "MH-0001:c1:3",
        "case_id": "MH-0001:c1",
        "rule": "manhole",
        "device": "MH-0001",
        "payer": "Water Co",
        "payer_type": "property_unit",
        "district": "jinshui",
        "amount_yuan": 10_000,
        "accrued_at": NOW,
        "hour_index": 3,
        "reverses": None,
        "evidence": [],
    }
    assert points.penalty_line(entry) == (
        "penalty,case_id=MH-0001:c1,district=jinshui,entry_id=MH-0001:c1:3,payer=Water\\ Co,"
        "payer_type=property_unit,rule=manhole "
        f'amount_yuan=10000i,hour_index=3i,reverses="",device="MH-0001",unit="Water Co" {NOW}'
    )
    rev = dict(
        entry,
        id="MH-0001:c1:3:rev",
        amount_yuan=-10_000,
        hour_index=None,
        reverses="MH-0001:c1:3",
        payer="jinshui",
        payer_type="district_government",
    )
    line = points.penalty_line(rev)
    assert (
        'amount_yuan=-10000i,hour_index=-1i,reverses="MH-0001:c1:3",device="MH-0001",unit=""'
        in line
    )


def test_penalty_refuses_a_float_amount():
    with pytest.raises(TypeError, match="amount_yuan must be an int"):
        points.penalty_line({"id": "x", "case_id": "c", "amount_yuan": 1.5, "accrued_at": NOW})


def test_case_event_line_open_flag_deadline_and_detail():
    ev = {
        "case_id": "MH-0001:c1",
        "kind": "manhole",
        "rule": "manhole",
        "device": "MH-0001",
        "district": "jinshui",
        "grid": "g-07",
        "unit": "Water Co",
        "severity": "major",
        "state": "escalated",
        "at": NOW,
        "opened_at": NOW - 7_200_000,
        "deadline": NOW,
        "address": 'No. 1 "East" Rd',
        "lat": 34.7,
        "lon": 113.6,
        "component_code": None,
        "detail": {"tilt_deg": 20, "reason": "tilt"},
        "evidence": [{"x": 1}],
    }
    line = points.case_event_line(ev)
    assert line.startswith(
        "case_event,case_id=MH-0001:c1,district=jinshui,kind=manhole,rule=manhole,"
        "severity=major,state=escalated,unit=Water\\ Co open=1i,"
    )
    assert f"opened_at={NOW - 7_200_000}i,deadline={NOW}i," in line
    assert 'address="No. 1 \\"East\\" Rd"' in line and "lat=34.7,lon=113.6" in line
    assert 'detail="{\\"reason\\":\\"tilt\\",\\"tilt_deg\\":20}"' in line
    assert "component_code" not in line
    assert 'evidence="[{\\"x\\":1}]"' in line  # the proof travels with the case event
    closed = points.case_event_line(dict(ev, state="repaired", deadline=None))
    assert " open=0i," in closed and "deadline" not in closed
    minimal = points.case_event_line({"case_id": "c", "state": "open", "at": NOW})
    assert minimal == f"case_event,case_id=c,state=open open=1i,opened_at={NOW}i {NOW}"


def test_deadletter_line_unknowns():
    rec = {
        "type": "deadletter",
        "code": "not_json",
        "message": "payload is not JSON",
        "topic": "city/erqi/dust/DU-1/telemetry",
        "raw_b64": "",
        "received_at": NOW,
        "device": "DU-1",
    }
    assert points.deadletter_line(rec) == (
        'deadletter,code=not_json,device=DU-1,district=erqi count=1i,message="payload is not JSON",'
        f'topic="city/erqi/dust/DU-1/telemetry" {NOW}'
    )
    bad = points.deadletter_line(dict(rec, topic="weird/topic", device=None))
    assert bad.startswith("deadletter,code=not_json,device=unknown,district=unknown ")


def test_quarantine_line_tags_reason_topic_partition():
    from contract.journal import quarantine_record

    rec = quarantine_record("not_json", 'not JSON: "x', b"{broken", "cw.telemetry", 2, 41, NOW)
    assert points.quarantine_line(rec) == (
        'quarantine,partition=2,reason=not_json,topic=cw.telemetry count=1i,message="not JSON: \\"x",'
        f"offset=41i {NOW}"
    )
    assert points.record_line(rec) == points.quarantine_line(rec)


def test_record_line_dispatches_by_shape():
    r = reading({"tilt_deg": 1.0})
    assert points.record_line(r.to_record()).startswith("manhole,")
    assert points.record_line(
        {"id": "e", "case_id": "c", "amount_yuan": 1, "accrued_at": NOW}
    ).startswith("penalty,")
    assert points.record_line({"case_id": "c", "state": "open", "at": NOW}).startswith(
        "case_event,"
    )
    with pytest.raises(ValueError, match="not a citywatch record"):
        points.record_line({"foo": 1})


# ------------------------------------------------------------------ round trip on the real server

AWKWARD = [
    "plain",
    "a b",
    "a,b=c",
    "=,",
    'q"uote',
    "中文 单位（东区）",
    "tab\there",
    "a\\b",
    "C:\\dir\\file",
    "emoji 🚧",
    " lead",
    "trail ",
    "x=1,y=2 z",
    '""',
    "'single'",
    "#hash",
    "a\\",
    "a\\ b",
    "\\",
    "a\\,b",
]


def _random_texts(n: int, seed: int = 7) -> list[str]:
    rnd = random.Random(seed)
    alphabet = list("ab ,=\"'\\\n\t\r:;#{}[]()") + ["中", "é", "🚧", "\u00a0", "\u2028"]
    return ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 12))) for _ in range(n)]


def _expected_tag(value: str) -> str:
    """What 1.x stores for a tag value: see the module doc of store.points."""
    import re

    v = re.sub(r"\\(?=[,= \n\r\t]|\Z)", "/", value)
    return v.replace("\n", " ").replace("\r", " ").replace("\t", " ")


def test_awkward_text_round_trips_through_real_influxdb(settings):
    texts = AWKWARD + _random_texts(300)
    lines = []
    for i, text in enumerate(texts):
        ev = {
            "case_id": f"c{i:04d}",
            "unit": text,
            "state": "open",
            "at": NOW + i,
            "message": text,
            "address": text,
        }
        lines.append(points.case_event_line(ev))

    create_database(settings)

    async def write():
        w = InfluxWriter(
            settings.influx.url,
            settings.influx.database,
            **credentials(settings, "admin"),
            flush_interval_s=0.05,
        )
        await w.start()
        await w.add(lines)
        await w.stop(timeout=20)
        return w.stats

    stats = asyncio.run(write())
    assert stats.rejected == 0 and stats.written == len(lines), stats
    rows = query(settings, None, "SELECT * FROM case_event")
    assert len(rows) == len(texts)
    by_id = {r["case_id"]: r for r in rows}
    for i, text in enumerate(texts):
        row = by_id[f"c{i:04d}"]
        assert row["message"] == text and row["address"] == text, (i, text, row)
        assert row["unit"] == _expected_tag(text), (i, text, row["unit"])
