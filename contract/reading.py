"""The reading as it leaves ingest: the contract between the bridge and the streams.

A ``Reading`` is one validated telemetry message, enriched with the device's
district from the registry. It travels on ``citywatch.telemetry`` (keyed by
device id) as a JSON object with ``"type": "reading"``; the streams side also
builds it from replay files through the same validation (``ingest.validate``),
so a replayed day and a live day give the detector identical input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from contract.kinds import KINDS

__all__ = ["KINDS", "Reading"]


@dataclass(frozen=True, slots=True)
class Reading:
    device: str
    """Device id, from the MQTT topic (the device's identity)."""
    kind: str
    """``dust``, ``manhole`` or ``streetlight``."""
    district: str
    """District id from the topic (checked against the registry)."""
    ts: int
    """Event time, epoch milliseconds (the sensor's ``ts``, normalised)."""
    received_at: int
    """When the bridge received it, epoch milliseconds: the pipeline's clock source."""
    fields: dict[str, Any] = field(default_factory=dict)
    """Validated measurement fields without ``ts``; unknown extras are kept."""
    topic: str = ""

    def to_record(self) -> dict[str, Any]:
        return {
            "type": "reading",
            "device": self.device,
            "kind": self.kind,
            "district": self.district,
            "ts": self.ts,
            "received_at": self.received_at,
            "fields": self.fields,
            "topic": self.topic,
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Reading:
        return cls(
            device=rec["device"],
            kind=rec["kind"],
            district=rec["district"],
            ts=int(rec["ts"]),
            received_at=int(rec["received_at"]),
            fields=dict(rec.get("fields") or {}),
            topic=rec.get("topic", ""),
        )
