"""Offline devices and suspected tampering with dust monitors.

Rules-file section ``rules.offline`` (docs/rules.md#offline). docs/rules.md:

* Every device that has sent at least one reading is watched: silent for longer
  than its kind's heartbeat allowance (``last received_at + allowance``, judged
  on the watermark) opens ``offline:<device>:<that instant>`` (severity minor,
  no money unless ``penalty_yuan`` is set). The next reading that *arrives*
  later (larger ``received_at``) repairs it. Arrival time, not event time, is
  what counts here: offline is about the device reaching us, and a redelivered
  old message (same ``received_at``) proves nothing.
* A dust monitor offline during working hours (local ``dust_working_hours``)
  gets ``suspected_tampering: true`` and severity major: at once if it went
  silent inside working hours, else when the watermark reaches the next
  working-hours start while it is still silent (sites switch monitors off to
  hide dust).
* Offline cases sit beside the kind's own cases: an open manhole case keeps
  its penalty clock (that clock runs on the watermark, never on the sensor).
* Devices that never sent anything are not watched (a partition's detector
  only knows the devices routed to it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from contract import rules as rule_ids
from contract.cases import COMMON_ACTIONS, PAYER_TYPES, OfficerAction
from contract.clock import MINUTE_MS, NEVER, LocalClock, in_daily_window
from contract.kinds import KINDS
from foundation.cityfile import Section
from streams.case import (
    CaseRecord,
    Context,
    action_evidence,
    clock_evidence,
    penalty_entry,
    reading_evidence,
)

if TYPE_CHECKING:
    from contract.reading import Reading
    from registry.devices import Device

RULE = rule_ids.OFFLINE

# --------------------------------------------------------------------------- the plugin (docs/extending.md)

SECTION = "offline"
"""This kind's key under ``rules:`` in the rules file (docs/rules.md)."""
KIND = "*"
"""The device kind it judges (``"*"``: every device)."""
RULE_IDS = (rule_ids.OFFLINE,)
"""The rule ids its cases and ledger entries carry (contract.rules)."""


@dataclass(frozen=True, slots=True)
class OfflineRules:
    """docs/rules.md "Offline"."""

    heartbeat_ms: dict[str, int] = field(
        default_factory=lambda: {"dust": 10 * MINUTE_MS, "manhole": 120 * MINUTE_MS,
                                 "streetlight": 30 * MINUTE_MS, "vehicle": 1440 * MINUTE_MS,
                                 "weighstation": 1440 * MINUTE_MS, "platecam": 1440 * MINUTE_MS}
    )  # fmt: skip
    penalty_yuan: int = 0
    payer_type: str = "property_unit"
    dust_working_start: int = 7 * 60
    dust_working_end: int = 20 * 60


Settings = OfflineRules


def parse(m: Section) -> OfflineRules:
    """This kind's section of the rules file (docs/rules.md); every key optional."""
    d = OfflineRules()
    doc = m.doc
    hb = dict(d.heartbeat_ms)
    hbm = m.sub("heartbeat_minutes")
    if hbm is not None:
        for kind in KINDS:
            hb[kind] = round(hbm.number(kind, hb[kind] / MINUTE_MS) * MINUTE_MS)
        hbm.finish()
    start, end = d.dust_working_start, d.dust_working_end
    wh = m.sub("dust_working_hours")
    if wh is not None:
        start = wh.time_of_day("start", start)
        end = wh.time_of_day("end", end)
        if start == end:
            doc.fail(
                wh.node, "rules.offline.dust_working_hours: 'start' and 'end' are the same time"
            )
        wh.finish()
    out = OfflineRules(
        heartbeat_ms=hb,
        penalty_yuan=m.yuan("penalty_yuan", d.penalty_yuan),
        payer_type=m.choice("payer_type", d.payer_type, PAYER_TYPES),
        dust_working_start=start,
        dust_working_end=end,
    )
    m.finish()
    return out


@dataclass(slots=True)
class OfflineState:
    last_received: int = NEVER
    rec: CaseRecord | None = None
    """The open offline case, if any."""
    last_opened_at: int = NEVER
    """Opening instant of the device's last offline case (never open the same one twice)."""
    tamper_at: int | None = None
    """When to flag the open case of a dust monitor as suspected tampering."""


class OfflineRule:
    """Watches every device, beside its kind's own rule."""

    def __init__(self, rules: OfflineRules, clock: LocalClock) -> None:
        self.rules = rules
        self.clock = clock
        self.heartbeat = rules.heartbeat_ms

    def new_state(self, dev: Device) -> OfflineState:
        return OfflineState()

    def on_reading(self, st: OfflineState, r: Reading, dev: Device, ctx: Context) -> bool:
        ra = r.received_at
        if ra <= st.last_received:
            return False
        st.last_received = ra
        rec = st.rec
        if rec is not None:
            rec.end("repaired", ra, "reading")
            ctx.out.append(rec.event(dev, rec.closed_at or ra, [reading_evidence(r)]))
            st.rec = None
            st.tamper_at = None
        return True

    def next_due(self, st: OfflineState, dev: Device) -> int | None:
        if st.rec is not None:
            return st.tamper_at
        if st.last_received == NEVER:
            return None
        due = st.last_received + self.heartbeat.get(dev.kind, 30 * 60_000)
        return due if due > st.last_opened_at else None

    def on_clock(self, st: OfflineState, due: int, dev: Device, ctx: Context) -> None:
        if st.rec is not None:
            if st.tamper_at == due:
                st.tamper_at = None
                self._flag(st.rec, due)
                ctx.out.append(st.rec.event(dev, due, [clock_evidence(due)]))
            return
        rec = CaseRecord(
            case_id=f"{RULE}:{dev.device_id}:{due}",
            rule=RULE,
            opened_at=due,
            severity="minor",
            evidence=[clock_evidence(due)],
            extra={
                "last_received_at": st.last_received,
                "heartbeat_minutes": self.heartbeat.get(dev.kind, 30 * 60_000) / 60_000,
            },  # fmt: skip
        )
        st.rec, st.last_opened_at = rec, due
        if dev.kind == "dust":
            r = self.rules
            if in_daily_window(
                self.clock.minute_of_day(due), r.dust_working_start, r.dust_working_end
            ):
                self._flag(rec, due)
            else:
                st.tamper_at = self.clock.next_at(due, r.dust_working_start)
        ctx.out.append(rec.event(dev, due))
        if self.rules.penalty_yuan:
            ctx.out.append(penalty_entry(dev, rec.case_id, "offline", RULE, self.rules.payer_type,
                                         self.rules.penalty_yuan, due, [clock_evidence(due)]))  # fmt: skip

    @staticmethod
    def _flag(rec: CaseRecord, at: int) -> None:
        rec.severity = "major"
        rec.extra["suspected_tampering"] = True
        rec.extra["reason"] = "offline_in_working_hours"
        rec.extra["flagged_at"] = at

    def on_action(self, st: OfflineState, a: OfficerAction, dev: Device, ctx: Context) -> bool:
        rec = st.rec
        if (
            a.action not in COMMON_ACTIONS
            or rec is None
            or (a.case_id is not None and a.case_id != rec.case_id)
        ):
            return False
        if rec.apply(a):
            ctx.out.append(rec.event(dev, a.at, [action_evidence(a)]))
            if not rec.is_open:
                st.rec, st.tamper_at = None, None
        return True

    def export(self, st: OfflineState) -> dict[str, Any]:
        return {
            "last_received": st.last_received,
            "rec": None if st.rec is None else st.rec.to_dict(),
            "last_opened_at": st.last_opened_at,
            "tamper_at": st.tamper_at,
        }

    def restore(self, dev: Device, d: dict[str, Any]) -> OfflineState:
        return OfflineState(
            last_received=d["last_received"],
            rec=CaseRecord.from_dict(d["rec"]),
            last_opened_at=d["last_opened_at"],
            tamper_at=d["tamper_at"],
        )


def build(settings: OfflineRules, clock: LocalClock, registry: Any) -> OfflineRule:
    """The rule object the detector runs for one partition."""
    return OfflineRule(settings, clock)
