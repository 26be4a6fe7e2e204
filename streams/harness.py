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
        _dev("T-1", "vehicle", unit="顺达渣土"),
        _dev("T-2", "vehicle", district="erqi", unit="宏远土方"),
        _dev("T-3", "vehicle", unit="过期渣土"),
        _dev("WIM-1", "weighstation", district="zhongmou", unit="治超办", lat=34.8015, lon=113.85),
        _dev("CAM-1", "platecam", unit="交警支队", lat=34.79, lon=113.68),
        _dev("CAM-OUT", "platecam", district="zhongmou", unit="交警支队", lat=34.80, lon=113.95),
    ])  # fmt: skip


FLEET = """
vehicles:
  - {plate: 豫A11111, terminal: T-1, company: 顺达渣土, owner_district: jinshui, axles: 3,
     permit: {number: P-1, valid_from: 2025-11-01, valid_until: 2025-11-30,
              hours: ["22:00", "06:00"], routes: [R-1], sites: [L-1, D-1]}}
  - {plate: 豫A22222, terminal: T-2, company: 宏远土方, owner_district: erqi, axles: 4}
  - {plate: 豫A33333, terminal: T-3, company: 过期渣土, owner_district: jinshui, axles: 2,
     permit: {number: P-3, valid_from: 2025-01-01, valid_until: 2025-10-31}}
  - {plate: 豫A44444, company: 无终端运输, owner_district: huiji, axles: 6, gross_limit_kg: 46000}
sites:
  - {id: L-1, kind: loading, district: jinshui,
     polygon: [[113.700, 34.800], [113.704, 34.800], [113.704, 34.803], [113.700, 34.803]]}
  - {id: L-2, kind: loading, district: erqi,
     polygon: [[113.620, 34.700], [113.624, 34.700], [113.624, 34.703], [113.620, 34.703]]}
  - {id: D-1, kind: disposal, district: zhongmou,
     polygon: [[113.900, 34.798], [113.908, 34.798], [113.908, 34.805], [113.900, 34.805]]}
  - {id: D-X, kind: disposal, district: zhongmou,
     polygon: [[113.950, 34.700], [113.958, 34.700], [113.958, 34.705], [113.950, 34.705]]}
routes:
  - {id: R-1, width_m: 150, line: [[113.702, 34.8015], [113.904, 34.8015]]}
zones:
  - {id: ring4, name: 四环以内, control: true, speed_limit_kmh: 40,
     polygon: [[113.55, 34.67], [113.80, 34.67], [113.80, 34.86], [113.55, 34.86]]}
"""
"""The test city's trucks: T-1 (豫A11111) holds a night permit for route R-1 from loading
site L-1 (jinshui, inside the Fourth Ring) east to disposal site D-1 (zhongmou, outside),
through weigh station WIM-1; T-2 (豫A22222) has no permit, T-3's expired in October."""
ROUTE_LAT = 34.8015
"""R-1 runs along this latitude from L-1 (lon 113.702) to D-1 (lon 113.904)."""


def fleet_registry() -> Registry:
    from registry.fleet import parse_fleet

    reg = registry()
    reg.fleet = parse_fleet(FLEET, "<harness fleet>", reg)
    return reg


REG = fleet_registry()


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
