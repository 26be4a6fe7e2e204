"""The HJ 212-2017 codec: the standard's frames, round trips, and every way a frame is wrong."""

from __future__ import annotations

import pytest

from ingest.hj212 import (
    CODES,
    FrameError,
    crc16,
    data_reply,
    decode,
    encode,
    reading_fields,
    request_reply,
)
from sim.hj212 import frame_for

# HJ 212-2017 appendix A's own example: its CRC is 1C80.
STANDARD_EXAMPLE = (
    b"##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;"
    b"Flag=5;CP=&&RtdInterval=30&&1C80\r\n"
)
# An hour-data frame as a deployed monitor sent it (length 0285, CRC C181).
FIELD_HOUR_FRAME = (
    b"##0285QN=20190925181031464;ST=22;CN=2061;PW=BF470F88957588DE902D1A52;MN=Z13401000010301;"
    b"Flag=5;CP=&&DataTime=20190924220000;a34006-Avg=2.69700,a34006-Flag=N;a34007-Avg=7.96600,"
    b"a34007-Flag=N;a34048-Avg=3.30600,a34048-Flag=N;a34047-Avg=7.35700,a34047-Flag=N;"
    b"a34049-Avg=10.66300,a34049-Flag=N&&C181\r\n"
)
TS = 1_785_000_000_000 - 1_785_000_000_000 % 1000


def test_the_standards_example_has_the_crc_the_standard_prints() -> None:
    segment = STANDARD_EXAMPLE[6:-6]
    assert crc16(segment) == 0x1C80
    frame = decode(STANDARD_EXAMPLE)
    assert (frame.qn, frame.st, frame.cn, frame.pw, frame.mn, frame.flag, frame.cp) == (
        "20160801085857223", "32", "1062", "100000", "010000A8900016F000169DC0", 5,
        "RtdInterval=30",
    )  # fmt: skip
    assert frame.wants_reply and frame.version == 1
    assert encode(STANDARD_EXAMPLE[6:-6].decode()) == STANDARD_EXAMPLE


def test_a_deployed_monitors_hour_frame_decodes_and_unknown_pollutants_are_kept() -> None:
    frame = decode(FIELD_HOUR_FRAME)
    ts, fields = reading_fields(frame, 1000.0)
    assert ts == 1_569_333_600_000  # 2019-09-24 22:00 Beijing time
    assert fields["hj212_cn"] == "2061" and fields["interval_s"] == 3600
    assert fields["hj212_a34006"] == 2.697  # not a dust field: kept under its code, unconverted


def test_a_simulated_realtime_frame_round_trips_to_the_dust_payload_in_micrograms() -> None:
    payload = {"ts": TS, "pm10": 183.25, "pm25": 61.5, "tsp": 240.0, "noise_db": 68.2,
               "wind_speed": 2.4, "wind_dir": 135.0, "temp_c": 21.5, "humidity": 48.0}  # fmt: skip
    raw = frame_for(payload, "MN0001", "abc123")
    frame = decode(raw)
    assert (frame.cn, frame.mn, frame.pw) == ("2011", "MN0001", "abc123")
    ts, fields = reading_fields(frame, 1000.0)
    assert ts == TS
    for name, value in payload.items():
        if name != "ts":
            assert fields[name] == pytest.approx(value), name
    assert "pm10_flag" not in fields


@pytest.mark.parametrize("mark", ["D", "M", "F", "C", "S", "B"])
def test_a_value_flagged_other_than_n_or_t_is_kept_but_not_a_reading(mark: str) -> None:
    raw = frame_for(
        {"ts": TS, "pm10": 900.0, "pm25": 50.0}, "MN1", "pw1", data_flags={"pm10": mark}
    )
    _, fields = reading_fields(decode(raw), 1000.0)
    assert "pm10" not in fields
    assert fields["pm10_unjudged"] == pytest.approx(900.0)
    assert fields["pm10_flag"] == mark
    assert fields["pm25"] == pytest.approx(50.0)


def test_a_value_above_the_instruments_range_is_judged_and_marked() -> None:
    raw = frame_for({"ts": TS, "pm10": 10_000.0}, "MN1", "pw1", data_flags={"pm10": "T"})
    _, fields = reading_fields(decode(raw), 1000.0)
    assert fields["pm10"] == pytest.approx(10_000.0) and fields["pm10_flag"] == "T"


def test_a_monitor_reporting_micrograms_is_not_converted() -> None:
    raw = frame_for({"ts": TS, "pm10": 150.0}, "MN1", "pw1", pm_divisor=1.0)
    _, fields = reading_fields(decode(raw), 1.0)
    assert fields["pm10"] == pytest.approx(150.0)


def test_minute_and_hour_data_take_the_average() -> None:
    for cn, interval in (("2051", 60), ("2061", 3600)):
        _, fields = reading_fields(
            decode(frame_for({"ts": TS, "pm10": 90.0}, "M", "p", cn=cn)), 1000.0
        )
        assert fields["pm10"] == pytest.approx(90.0) and fields["interval_s"] == interval


def _corrupt_crc(raw: bytes) -> bytes:
    return raw[:-6] + (b"0000" if raw[-6:-2] != b"0000" else b"1111") + b"\r\n"


GOOD = frame_for({"ts": TS, "pm10": 80.0}, "MN1", "pw1")
BAD_FRAMES = [
    ("no header", GOOD[2:], "hj212_framing", None),
    ("no CRLF", GOOD[:-2] + b"\n\n", "hj212_framing", None),
    ("length not digits", b"##01x1" + GOOD[6:], "hj212_framing", None),
    ("length too short", b"##%04d" % (int(GOOD[2:6]) - 1) + GOOD[6:], "hj212_length", None),
    ("length over 1024", b"##1025" + GOOD[6:], "hj212_length", None),
    ("crc wrong", _corrupt_crc(GOOD), "hj212_crc", "9"),
    ("crc not hex", GOOD[:-6] + b"ZZZZ\r\n", "hj212_crc", "9"),
    ("no CP", encode("QN=20260101000000000;ST=22;CN=2011;PW=p;MN=M;Flag=5"), "hj212_syntax", None),
    (
        "MN missing",
        encode("QN=20260101000000000;ST=22;CN=2011;PW=p;Flag=5;CP=&&&&"),
        "hj212_syntax",
        None,
    ),
    ("CN not 4 digits", encode("ST=22;CN=20x1;PW=p;MN=M;Flag=5;CP=&&&&"), "hj212_syntax", "8"),
    ("QN malformed", encode("QN=2026;ST=22;CN=2011;PW=p;MN=M;Flag=5;CP=&&&&"), "hj212_syntax", "7"),
    ("Flag not a number", encode("ST=22;CN=2011;PW=p;MN=M;Flag=x;CP=&&&&"), "hj212_syntax", "6"),
    (
        "a header field twice",
        encode("ST=22;CN=2011;PW=p;MN=M;MN=N;Flag=5;CP=&&&&"),
        "hj212_syntax",
        None,
    ),
    ("split without PNUM", encode("ST=22;CN=2011;PW=p;MN=M;Flag=7;CP=&&&&"), "hj212_syntax", "6"),
    ("not ASCII", b"##0004\xff\xfe\xfd\xfc0000\r\n", "hj212_syntax", None),
]


@pytest.mark.parametrize(
    "raw,code,qn_rtn", [b[1:] for b in BAD_FRAMES], ids=[b[0] for b in BAD_FRAMES]
)
def test_a_bad_frame_is_refused_with_its_code_and_the_standards_reply(
    raw: bytes, code: str, qn_rtn: str | None
) -> None:
    with pytest.raises(FrameError) as err:
        decode(raw)
    assert err.value.code == code, str(err.value)
    assert err.value.code in CODES
    assert err.value.qn_rtn == qn_rtn
    assert str(err.value)


@pytest.mark.parametrize(
    "cp,why",
    [
        ("a34002-Rtd=0.1", "DataTime"),
        ("DataTime=2026130100000;a34002-Rtd=0.1", "DataTime"),
        ("DataTime=20260101000000;a34002-Rtd=abc", "not a number"),
        ("DataTime=20260101000000;a34002-Rtd=1,a34002-Rtd=2", "twice"),
        ("DataTime=20260101000000;a34002", "KEY=VALUE"),
    ],
)
def test_a_bad_record_names_the_item(cp: str, why: str) -> None:
    frame = decode(encode(f"QN=20260101000000000;ST=22;CN=2011;PW=p;MN=M;Flag=5;CP=&&{cp}&&"))
    with pytest.raises(ValueError, match=why):
        reading_fields(frame, 1000.0)


def test_replies_echo_the_request_and_are_frames_themselves() -> None:
    frame = decode(GOOD)
    ok = decode(data_reply(frame))
    assert (ok.cn, ok.st, ok.qn, ok.mn, ok.flag) == ("9014", "91", frame.qn, "MN1", 4)
    refused = decode(request_reply(frame, "3"))
    assert refused.cn == "9011" and refused.cp == "QnRtn=3"


def test_a_reply_never_echoes_what_would_break_its_own_frame() -> None:
    refused = decode(request_reply({"QN": "x;CN=1", "MN": "M&&", "PW": "p;q"}, "9"))
    assert refused.mn == "0" and refused.pw == "000000" and len(refused.qn) == 17
