"""A harness for the pure detection core: a small city, readings, actions and a run that collects.

Public so that the tests of every rule kind and the benchmarks drive the core
the same way (``from streams.harness import Run, reading, rules_with``): a
``Run`` feeds a ``Detector`` and keeps the ledger, the cases and the log of
outputs, with times given as wall clocks in the city's zone. Nothing here
talks to Kafka or InfluxDB.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from contract.cases import ActionRejected, CaseEvent, LedgerEntry, OfficerAction
from contract.clock import DEFAULT_TIMEZONE
from contract.reading import Reading
from registry.devices import Device, Registry
from streams.detector import Detector
from streams.ledger import Ledger
from streams.rules import Rules, default_rules

SH = ZoneInfo(DEFAULT_TIMEZONE)
S = 1000
M = 60_000
H = 3_600_000


def local(hour: int, minute: int = 0, day: int = 22) -> int:
    """Epoch ms of a Beijing-time wall clock on November ``day``, 2025."""
    return int(datetime(2025, 11, day, hour, minute, tzinfo=SH).timestamp() * 1000)


T0 = local(10)  # 10:00 Beijing time: daytime, inside dust working hours


def _dev(
    device_id: str, kind: str, district: str = "jinshui", unit: str = "UnitA", **kw: Any
) -> Device:
    base = dict(
        grid="JS-G07",
        road_class=None,
        address=f"addr of {device_id}",
        lat=None,
        lon=None,
        pm10_warning=None,
        pm10_violation=None,
        component_code=None,
    )
    base.update(kw)
    return Device(device_id=device_id, kind=kind, district=district, unit=unit, **base)  # type: ignore[arg-type]


def registry() -> Registry:
    return Registry([
        _dev("MH-MAIN", "manhole", road_class="main", unit="市政工程管理处", component_code="0102"),
        _dev("MH-SEC", "manhole", road_class="secondary", unit="供电公司", component_code="0105"),
        _dev("MH-OTHER", "manhole", road_class="other", unit="燃气公司"),
        _dev("MH-NONE", "manhole", road_class=None, unit="UnitX"),
        _dev("DS-1", "dust", unit="BuilderOne"),
        _dev("DS-2", "dust", unit="BuilderTwo"),
        _dev("DS-3", "dust", unit="BuilderThree"),
        _dev("DS-OVR", "dust", unit="BuilderStrict", pm10_warning=100.0, pm10_violation=120.0),
        _dev("DS-EQ", "dust", district="erqi", unit="BuilderErqi"),
        _dev("SL-1", "streetlight", unit="路灯管理处", component_code="0118"),
        _dev("SL-EQ", "streetlight", district="erqi", unit="路灯管理处"),
    ])  # fmt: skip


REG = registry()


def reading(
    device: str, ts: int, received_at: int | None = None, reg: Registry | None = None, **fields: Any
) -> Reading:
    dev = (reg or REG).get(device)
    assert dev is not None, device
    return Reading(device=device, kind=dev.kind, district=dev.district, ts=ts,
                   received_at=ts if received_at is None else received_at, fields=fields)  # fmt: skip


def action(kind: str, device: str, at: int, officer: str = "grid-07", **kw: Any) -> OfficerAction:
    return OfficerAction(kind, device, at, officer, **kw)


class Run:
    """A detector plus everything it put out: the ledger, the latest case snapshots."""

    def __init__(self, rules: Rules | None = None, reg: Registry | None = None) -> None:
        self.reg = reg or REG
        self.det = Detector(rules or default_rules(), self.reg)
        self.ledger = Ledger()
        self.cases: dict[str, CaseEvent] = {}
        self.events: list[CaseEvent] = []
        self.rejected: list[ActionRejected] = []
        self.outputs: list[Any] = []

    def take(self, outs: list[Any]) -> list[Any]:
        for o in outs:
            self.outputs.append(o)
            if isinstance(o, LedgerEntry):
                self.ledger.add(o)
            elif isinstance(o, CaseEvent):
                self.cases[o.case_id] = o
                self.events.append(o)
            elif isinstance(o, ActionRejected):
                self.rejected.append(o)
        return outs

    def read(
        self, device: str, ts: int, received_at: int | None = None, **fields: Any
    ) -> list[Any]:
        return self.take(self.det.on_reading(reading(device, ts, received_at, self.reg, **fields)))

    def act(self, kind: str, device: str, at: int, **kw: Any) -> list[Any]:
        return self.take(self.det.on_action(action(kind, device, at, **kw)))

    def tick(self, at: int) -> list[Any]:
        return self.take(self.det.on_watermark(at))

    def feed(self, events: list[tuple[Any, ...]]) -> None:
        """Events: ("r", device, ts, received_at|None, fields) / ("a", kind, device, at) / ("w", at)."""
        for ev in events:
            if ev[0] == "r":
                self.read(ev[1], ev[2], ev[3], **ev[4])
            elif ev[0] == "a":
                self.act(ev[1], ev[2], ev[3])
            else:
                self.tick(ev[1])

    def of_rule(self, rule: str) -> list[CaseEvent]:
        return sorted((c for c in self.cases.values() if c.rule == rule), key=lambda c: c.opened_at)

    def amounts(self, rule: str | None = None) -> list[int]:
        return [e.amount_yuan for e in self.ledger if rule is None or e.rule == rule]


def rules_with(**sections: dict[str, Any]) -> Rules:
    """Default rules with some fields of some sections replaced, e.g. ``rules_with(dust={"mode": "background"})``."""
    r = default_rules()
    return r.with_sections(
        **{name: replace(getattr(r, name), **fields) for name, fields in sections.items()}
    )
