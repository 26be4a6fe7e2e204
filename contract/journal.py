"""The journal's records: what travels on ``<prefix>.telemetry`` (docs/contracts.md, "Journal").

Three record types, the detector's whole input: ``reading`` (from the
bridges), ``action`` (officer actions, forwarded from ``<prefix>.acks``) and
``watermark`` (time passing with no reading). Writers and readers of the
journal (the bridge, ``citywatch journal load``, the worker, replay) all go
through this codec, so a record means the same thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from contract.cases import OfficerAction
from contract.reading import Reading

__all__ = ["JournalItem", "Watermark", "encode", "from_record", "to_record"]


@dataclass(frozen=True, slots=True)
class Watermark:
    """Time passes with no reading (a silent city)."""

    at: int


JournalItem = Reading | OfficerAction | Watermark


def to_record(item: JournalItem) -> tuple[bytes | None, dict[str, Any]]:
    """(Kafka key, record) of one journal item; readings and actions are keyed by device."""
    if isinstance(item, Reading):
        return item.device.encode(), item.to_record()
    if isinstance(item, OfficerAction):
        return item.device.encode(), item.to_dict() | {"type": "action"}
    return None, {"type": "watermark", "at": item.at}


def from_record(rec: dict[str, Any]) -> JournalItem:
    """The inverse of ``to_record``; raises ValueError on a record of unknown type."""
    kind = rec.get("type")
    if kind == "reading":
        return Reading.from_record(rec)
    if kind == "action":
        return OfficerAction.from_dict(rec)
    if kind == "watermark":
        return Watermark(int(rec["at"]))
    raise ValueError(f"journal record of unknown type {kind!r}")


def encode(rec: dict[str, Any]) -> bytes:
    """A record's bytes on Kafka: sorted keys, so the same record is the same bytes."""
    return orjson.dumps(rec, option=orjson.OPT_SORT_KEYS)
