"""HJ 212-2017 (污染物在线监控（监测）系统数据传输标准): the frame codec and its citywatch reading.

A construction site's dust monitor reports to the environmental platform over
TCP in HJ 212-2017, not in citywatch's MQTT JSON. One frame (the standard's
section 6.3 "通讯包结构")::

    ## <4 decimal digits: length of the data segment> <data segment> <4 hex digits: CRC16> \\r\\n

The data segment is ``QN=...;ST=..;CN=....;PW=......;MN=...;Flag=.;CP=&&...&&``
(fields may come in any order before ``CP``; ``PNUM``/``PNO`` when Flag's D bit
is set), at most 1024 characters, ASCII. The CRC is the one of appendix A over
the data segment's bytes: register 0xFFFF, for every byte
``reg = (reg >> 8) ^ byte`` and eight shifts right with 0xA001 on a carried
bit (it is not Modbus's CRC: the byte goes in after the shift). The standard's
own example (``CN=1062``, CRC ``1C80``) is in ``tests/ingest/test_hj212.py``.

``CP`` holds the data: ``DataTime=YYYYMMDDhhmmss;a34002-Rtd=0.121,a34002-Flag=N;...``
(``;`` between pollutants, ``,`` between one pollutant's values). ``decode``
checks everything (framing, length, CRC, field syntax, the command) and raises
``FrameError`` with a ``code`` (the dead-letter reason, ``CODES``) and the
reply ``QnRtn`` the standard gives for it; ``reading_fields`` turns a data
record into citywatch's dust payload (docs/gateways.md has the mapping).

Data flags (``-Flag``, the standard's table 7 "数据标记"): ``N`` (normal) and
``T`` (above the instrument's upper range: the true value is at least this)
are readings. ``F`` stopped, ``M`` maintenance, ``S`` set by hand, ``D`` fault,
``C`` calibration, ``B`` communication fault, or any other flag: the value is
not a measurement of the air, so it is kept beside the reading under
``<field>_unjudged`` with ``<field>_flag`` and is never judged.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from contract.clock import city_zone

__all__ = [
    "CN_NAMES",
    "CODES",
    "DATA_CNS",
    "FIELD_MAP",
    "JUDGED_FLAGS",
    "MAX_DATA",
    "Frame",
    "FrameError",
    "crc16",
    "data_reply",
    "decode",
    "encode",
    "reading_fields",
    "request_reply",
]

MAX_DATA = 1024
"""The standard's limit on the data segment (6.3.1: 0 <= length <= 1024)."""
FRAME_OVERHEAD = 2 + 4 + 4 + 2
"""``##``, the length, the CRC and CRLF around the data segment."""
MAX_FRAME = MAX_DATA + FRAME_OVERHEAD

DATA_CNS = {"2011": "Rtd", "2051": "Avg", "2061": "Avg"}
"""Upload commands that carry readings, and the value suffix citywatch takes from each:
2011 real-time data (实时数据), 2051 minute data (分钟数据), 2061 hour data (小时数据)."""
INTERVAL_S = {"2011": 0, "2051": 60, "2061": 3600}
CN_NAMES = {
    "2011": "real-time data",
    "2051": "minute data",
    "2061": "hour data",
    "9014": "data reply (数据应答)",
    "9011": "request reply (请求应答)",
}

# Reply QnRtn of the standard's table "请求命令返回表" (9011).
QN_REFUSED = "2"
QN_BAD_PW = "3"
QN_BAD_MN = "4"
QN_BAD_ST = "5"
QN_BAD_FLAG = "6"
QN_BAD_QN = "7"
QN_BAD_CN = "8"
QN_BAD_CRC = "9"
QN_UNKNOWN = "100"

CODES = {
    "hj212_framing": "the bytes are not an HJ 212 frame (no ## header, no CRLF, a length that is not 4 digits)",
    "hj212_length": "the length field disagrees with the data segment, or exceeds 1024",
    "hj212_crc": "the CRC16 (appendix A) does not match the data segment",
    "hj212_syntax": "a field of the data segment is missing or malformed (QN, ST, CN, PW, MN, Flag, CP, DataTime, a value)",
    "hj212_unknown_cn": "a command this gateway does not serve (docs/gateways.md lists the ones it does)",
    "hj212_unknown_mn": "the MN is not in the registry, or not behind this gateway",
    "hj212_bad_pw": "the PW is not the one issued for this MN",
    "hj212_unjudged": "a record whose PM10 is flagged as not a measurement (F, M, S, D, C, B...): kept, not judged",
    "hj212_too_many_errors": "the connection was closed after too many bad frames in a row",
}
"""Dead-letter reasons of the HJ 212 gateway (docs/contracts.md, "Gateway dead letters")."""

FIELD_MAP: dict[str, tuple[str, bool]] = {
    "a34002": ("pm10", True),
    "a34004": ("pm25", True),
    "a34001": ("tsp", True),
    "LA": ("noise_db", False),
    "a01007": ("wind_speed", False),
    "a01008": ("wind_dir", False),
    "a01001": ("temp_c", False),
    "a01002": ("humidity", False),
}
"""HJ 212 pollutant code -> (citywatch dust field, is a particle concentration to convert)."""
JUDGED_FLAGS = frozenset("NT")

_QN = re.compile(r"\d{17}")
_ST = re.compile(r"\d{2}")
_CN = re.compile(r"\d{4}")
_MN = re.compile(r"[A-Za-z0-9]{1,24}")
_PW = re.compile(r"[\x21-\x7e]{1,32}")
_FLAG = re.compile(r"\d{1,3}")
_NUM = re.compile(r"-?(\d+(\.\d*)?|\.\d+)")
_CODE = re.compile(r"[A-Za-z0-9]{1,16}")
_HEADER_FIELDS = ("QN", "ST", "CN", "PW", "MN", "Flag")


class FrameError(ValueError):
    """A frame that cannot be taken: ``code`` (``CODES``), the reply ``QnRtn``, what it had."""

    def __init__(
        self,
        code: str,
        message: str,
        qn_rtn: str | None = None,
        header: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.qn_rtn = qn_rtn
        """The 9011 ``QnRtn`` to answer with, None when the frame cannot be answered."""
        self.header = header or {}
        """The header fields that could be read (QN, MN... for the reply and the dead letter)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One checked frame: its header fields and its CP content."""

    qn: str
    st: str
    cn: str
    pw: str
    mn: str
    flag: int
    cp: str
    pnum: int | None = None
    pno: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def wants_reply(self) -> bool:
        """Flag's A bit (bit 0): the sender asks for an answer."""
        return bool(self.flag & 1)

    @property
    def version(self) -> int:
        """Flag bits 2-7: 0 = HJ 212-2005, 1 = HJ 212-2017."""
        return self.flag >> 2


def crc16(data: bytes) -> int:
    """The CRC16 of HJ 212-2017 appendix A over ``data`` (the data segment)."""
    reg = 0xFFFF
    for byte in data:
        reg = (reg >> 8) ^ byte
        for _ in range(8):
            carry = reg & 1
            reg >>= 1
            if carry:
                reg ^= 0xA001
    return reg


def _table() -> list[int]:
    out = []
    for b in range(256):
        reg = b
        for _ in range(8):
            reg = (reg >> 1) ^ 0xA001 if reg & 1 else reg >> 1
        out.append(reg)
    return out


_TABLE = _table()


def _crc16_fast(data: bytes) -> int:
    """``crc16`` with a byte table (the same numbers; what the gateway runs)."""
    reg = 0xFFFF
    t = _TABLE
    for byte in data:
        reg = t[
            (reg >> 8) ^ byte
        ]  # (reg >> 8) ^ byte is one byte: its eight shifts are the table's
    return reg


def encode(segment: str) -> bytes:
    """The whole frame around a data segment: ``##`` + length + segment + CRC + CRLF."""
    data = segment.encode("ascii")
    if len(data) > MAX_DATA:
        raise ValueError(f"data segment of {len(data)} bytes; HJ 212 allows at most {MAX_DATA}")
    return b"##%04d%s%04X\r\n" % (len(data), data, _crc16_fast(data))


def decode(raw: bytes) -> Frame:
    """Check one frame (with its CRLF) and return it; ``FrameError`` says what is wrong.

    The order of checks: framing, length, CRC, header syntax, the command.
    A frame whose CRC fails is still read as far as its QN and MN, so the
    reply (9011, QnRtn 9) can name the request.
    """
    if len(raw) < FRAME_OVERHEAD or raw[:2] != b"##" or raw[-2:] != b"\r\n":
        raise FrameError("hj212_framing", "a frame starts with ## and ends with CRLF")
    length = raw[2:6]
    if not length.isdigit():
        raise FrameError("hj212_framing", f"the length field {length!r} is not 4 decimal digits")
    n = int(length)
    body = raw[6:-2]
    if n > MAX_DATA:
        raise FrameError("hj212_length", f"length {n} exceeds HJ 212's {MAX_DATA}")
    if len(body) != n + 4:
        raise FrameError(
            "hj212_length",
            f"the length field says {n} bytes of data, the frame has {max(len(body) - 4, 0)}",
        )
    data, crc_text = body[:n], body[n:]
    try:
        segment = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise FrameError(
            "hj212_syntax", f"byte {data[exc.start]:#04x} at {exc.start} is not ASCII"
        ) from None
    header = _peek_header(segment)
    try:
        got = int(crc_text.decode("ascii"), 16)
    except (UnicodeDecodeError, ValueError):
        raise FrameError(
            "hj212_crc",
            f"the CRC field {bytes(crc_text)!r} is not 4 hex digits",
            QN_BAD_CRC,
            header,
        ) from None
    want = _crc16_fast(data)
    if got != want:
        raise FrameError(
            "hj212_crc", f"CRC {got:04X} in the frame, {want:04X} computed", QN_BAD_CRC, header
        )
    return _parse_segment(segment, header)


def _peek_header(segment: str) -> dict[str, str]:
    """The header fields before ``CP=`` (for replies to frames that fail later)."""
    head = segment.split("CP=", 1)[0]
    out = {}
    for part in head.split(";"):
        k, eq, v = part.partition("=")
        if eq and k in ("QN", "MN", "ST", "CN", "PW", "Flag") and k not in out:
            out[k] = v
    return out


def _parse_segment(segment: str, header: dict[str, str]) -> Frame:
    head, cp_mark, rest = segment.partition("CP=&&")
    if not cp_mark or not rest.endswith("&&"):
        raise FrameError(
            "hj212_syntax", "no CP=&&...&& at the end of the data segment", None, header
        )
    cp = rest[:-2]
    fields: dict[str, str] = {}
    for part in head.rstrip(";").split(";"):
        k, eq, v = part.partition("=")
        if not eq or not k:
            raise FrameError(
                "hj212_syntax", f"header part {part[:40]!r} is not KEY=VALUE", None, header
            )
        if k in fields:
            raise FrameError("hj212_syntax", f"header field {k} given twice", None, header)
        fields[k] = v
    missing = [k for k in _HEADER_FIELDS if k not in fields and k != "QN"]
    if missing:
        raise FrameError(
            "hj212_syntax", f"missing header field(s) {', '.join(missing)}", None, header
        )
    qn = fields.get("QN", "")
    checks = (
        ("QN", _QN, QN_BAD_QN, "17 digits YYYYMMDDhhmmsszzz"),
        ("ST", _ST, QN_BAD_ST, "2 digits"),
        ("CN", _CN, QN_BAD_CN, "4 digits"),
        ("PW", _PW, QN_BAD_PW, "1-32 printable ASCII characters"),
        ("MN", _MN, QN_BAD_MN, "1-24 letters or digits"),
        ("Flag", _FLAG, QN_BAD_FLAG, "an integer 0-255"),
    )
    for name, pattern, rtn, what in checks:
        value = fields.get(name)
        if name == "QN" and value is None:
            continue  # uploads need no QN (the standard: "QN 可选")
        if value is None or not pattern.fullmatch(value):
            raise FrameError("hj212_syntax", f"{name}={value!r}: expected {what}", rtn, header)
    flag = int(fields["Flag"])
    if flag > 255:
        raise FrameError("hj212_syntax", f"Flag={flag}: expected 0-255", QN_BAD_FLAG, header)
    pnum = pno = None
    if flag & 2:
        try:
            pnum, pno = int(fields["PNUM"]), int(fields["PNO"])
        except (KeyError, ValueError):
            raise FrameError(
                "hj212_syntax", "Flag's D bit is set but PNUM/PNO are missing or not numbers",
                QN_BAD_FLAG, header,
            ) from None  # fmt: skip
    extra = {k: v for k, v in fields.items() if k not in (*_HEADER_FIELDS, "PNUM", "PNO")}
    return Frame(
        qn, fields["ST"], fields["CN"], fields["PW"], fields["MN"], flag, cp, pnum, pno, extra
    )


# ------------------------------------------------------------------ replies


def _qn_now() -> str:
    now = datetime.now(city_zone())
    return now.strftime("%Y%m%d%H%M%S") + f"{now.microsecond // 1000:03d}"


def data_reply(frame: Frame | dict[str, str]) -> bytes:
    """9014 (数据应答): the platform's answer to an upload whose Flag asks for one.

    ``ST=91`` (system interaction), the request's QN, PW and MN, ``Flag=4`` (2017, no answer wanted).
    """
    qn, pw, mn = _ids(frame)
    return encode(f"QN={qn};ST=91;CN=9014;PW={pw};MN={mn};Flag=4;CP=&&&&")


def request_reply(frame: Frame | dict[str, str], qn_rtn: str) -> bytes:
    """9011 (请求应答) with ``QnRtn``: how the standard refuses a request (3 PW, 4 MN, 8 CN, 9 CRC...)."""
    qn, pw, mn = _ids(frame)
    return encode(f"QN={qn};ST=91;CN=9011;PW={pw};MN={mn};Flag=4;CP=&&QnRtn={qn_rtn}&&")


def _ids(frame: Frame | dict[str, str]) -> tuple[str, str, str]:
    if isinstance(frame, Frame):
        qn, pw, mn = frame.qn, frame.pw, frame.mn
    else:
        qn, pw, mn = frame.get("QN", ""), frame.get("PW", ""), frame.get("MN", "")
    # echo only what is safe to put back into a frame
    qn = qn if _QN.fullmatch(qn) else _qn_now()
    pw = pw if _PW.fullmatch(pw) and ";" not in pw and "&" not in pw else "000000"
    mn = mn if _MN.fullmatch(mn) else "0"
    return qn, pw, mn


# ------------------------------------------------------------------ the reading


def data_time_ms(value: str) -> int:
    """``YYYYMMDDhhmmss`` in the city's time (the monitor's clock is local) as epoch ms."""
    if len(value) != 14 or not value.isdigit():
        raise ValueError(f"DataTime={value!r}: expected YYYYMMDDhhmmss")
    try:
        v = value
        dt = datetime(int(v[:4]), int(v[4:6]), int(v[6:8]), int(v[8:10]), int(v[10:12]),
                      int(v[12:14]), tzinfo=city_zone())  # fmt: skip
    except ValueError as exc:
        raise ValueError(f"DataTime={value!r}: {exc}") from None
    return int(dt.timestamp() * 1000)


def parse_cp(cp: str) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """(plain fields such as DataTime, pollutant code -> {Rtd, Avg, Flag...}) of a CP."""
    plain: dict[str, str] = {}
    pollutants: dict[str, dict[str, str]] = {}
    if not cp:
        return plain, pollutants
    for group in cp.split(";"):
        for item in group.split(","):
            k, eq, v = item.partition("=")
            if not eq or not k:
                raise ValueError(f"CP item {item[:40]!r} is not KEY=VALUE")
            code, dash, suffix = k.rpartition("-")
            if dash and code:
                if not _CODE.fullmatch(code):
                    raise ValueError(f"CP key {k[:40]!r}: pollutant code {code!r} is malformed")
                slot = pollutants.setdefault(code, {})
                if suffix in slot:
                    raise ValueError(f"CP key {k} given twice")
                slot[suffix] = v
            else:
                if k in plain:
                    raise ValueError(f"CP key {k} given twice")
                plain[k] = v
    return plain, pollutants


def reading_fields(frame: Frame, pm_factor: float) -> tuple[int, dict[str, Any]]:
    """(event time ms, citywatch dust payload fields) of a data upload (``DATA_CNS``).

    pm_factor: multiplies particle concentrations into µg/m³ (1000 for a monitor in mg/m³).
    Raises ``ValueError`` naming the bad item. Values flagged other than N/T go to
    ``<field>_unjudged`` with ``<field>_flag``; pollutants outside ``FIELD_MAP``
    are kept as ``hj212_<code>`` (their unit unknown to citywatch).
    """
    suffix = DATA_CNS[frame.cn]
    plain, pollutants = parse_cp(frame.cp)
    if "DataTime" not in plain:
        raise ValueError("CP has no DataTime")
    ts = data_time_ms(plain["DataTime"])
    out: dict[str, Any] = {"hj212_cn": frame.cn, "interval_s": INTERVAL_S[frame.cn]}
    for code, values in pollutants.items():
        raw = values.get(suffix)
        if raw is None:
            continue
        if not _NUM.fullmatch(raw):
            raise ValueError(f"{code}-{suffix}={raw[:20]!r} is not a number")
        value = float(raw)
        if not math.isfinite(value):
            raise ValueError(f"{code}-{suffix}={raw[:20]!r} is not finite")
        flag = values.get("Flag", "N")
        name, particle = FIELD_MAP.get(code, (f"hj212_{code}", False))
        if particle:
            value = round(value * pm_factor, 6)
        if flag in JUDGED_FLAGS:
            out[name] = value
            if flag != "N":
                out[f"{name}_flag"] = flag
        else:
            out[f"{name}_unjudged"] = value
            out[f"{name}_flag"] = flag[:8]
    return ts, out
