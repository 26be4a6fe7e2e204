"""A gateway's dead-letter report: what it publishes on ``city/gateway/<id>/deadletter``.

docs/contracts.md, "Gateway dead letters". The gateway builds the report
(``report_payload``); the bridge reads it (``parse_report``) into the same
``Rejection`` its own validation makes, so a bad HJ 212 frame lands on
``<prefix>.deadletter`` (and in InfluxDB's ``deadletter``) with its reason
code, its sentence and its raw bytes, next to bad JSON from MQTT devices.
The report is hostile input too: anything but a well-formed report of a known
code is itself dead-lettered as ``bad_gateway_report`` with the bytes received.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from contract.topics import is_valid_segment
from ingest.hj212 import CODES as HJ212_CODES
from ingest.jt808 import CODES as JT808_CODES

__all__ = ["GATEWAY_CODES", "MAX_RAW", "parse_report", "report_payload"]

GATEWAY_CODES: dict[str, str] = {**HJ212_CODES, **JT808_CODES}
"""Every reason a gateway may give, with what it means (one dict per gateway module)."""
MAX_RAW = 2048
"""Raw bytes a report carries at most (an HJ 212 frame is at most 1036 bytes; a JT/T 808
message is at most 2,094 on the wire, fully escaped, and garbage is cut): their base64 and
the sentence stay under the broker's 4 KiB payload (docs/contracts.md, "MQTT"), which a
larger report would exceed, and the broker would drop the gateway's connection for it."""


def report_payload(
    code: str, message: str, raw: bytes, received_at: int, device: str | None, peer: str
) -> bytes:
    """The report's JSON; ``raw`` cut to ``MAX_RAW`` bytes (the message says so)."""
    if code not in GATEWAY_CODES:
        raise ValueError(
            f"unknown gateway dead-letter code {code!r}; one of {', '.join(GATEWAY_CODES)}"
        )
    if len(raw) > MAX_RAW:
        message += f"; raw bytes truncated to the first {MAX_RAW} of {len(raw)}"
        raw = raw[:MAX_RAW]
    return orjson.dumps(
        {
            "code": code,
            "message": message,
            "raw_b64": base64.b64encode(raw).decode("ascii"),
            "received_at": received_at,
            "device": device,
            "peer": peer,
        }
    )


def parse_report(payload: bytes) -> tuple[str, str, bytes, str | None] | str:
    """(code, message, raw bytes, device) of a report, or a sentence saying why it is none."""
    try:
        data: Any = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return f"the report is not JSON ({exc})"
    if not isinstance(data, dict):
        return "the report is not a JSON object"
    code, message = data.get("code"), data.get("message")
    if not isinstance(code, str) or code not in GATEWAY_CODES:
        return f"code {str(code)[:40]!r} is not a gateway dead-letter code ({', '.join(GATEWAY_CODES)})"
    if not isinstance(message, str):
        return "message is missing or not a string"
    try:
        raw = base64.b64decode(data.get("raw_b64", ""), validate=True)
    except (binascii.Error, TypeError, ValueError):
        return "raw_b64 is not base64"
    device = data.get("device")
    if device is not None and not (isinstance(device, str) and is_valid_segment(device)):
        return f"device {str(device)[:70]!r} is not a device id"
    peer = data.get("peer")
    if isinstance(peer, str) and peer:
        message = f"{message} (from {peer[:64]})"
    return code, message[:1000], raw, device
