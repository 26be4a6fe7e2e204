"""The detection core: readings, officer actions and the watermark in; cases and ledger entries out.

Pure and deterministic: no Faust, no Kafka, no I/O, no wall clock. The same
inputs in the same order always give the same outputs, which is what lets a
replayed day equal the live day and a restarted worker neither lose nor
double an entry (docs/rules.md).

Time comes only from the watermark: the max of every reading's
``received_at`` and every explicit ``on_watermark``. ``on_reading`` applies the
reading first (at its event time), then advances the watermark and runs the
clocks that became due. Clocks are a heap of ``(due, device, tag)``; each rule
module says when a device next needs waking (``next_due``) and the heap may
hold stale entries, which are skipped -- so the heap is derived state and is
rebuilt from the device states after ``import_device``. Due clocks fire one
at a time in ``(due, device, tag)`` order, so an uninterrupted run and a
restored one book in the same order.

Each device kind has its own rule module (manhole, dust, streetlight) with a
small per-device state; the offline rule watches every device beside it.
Per-device state is exportable (``export_device``/``import_device``) for the
Faust worker's tables, and ``take_dirty()`` says which devices changed, so
the worker writes only those (bench/RESULTS.md: keep table writes off the hot path).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from heapq import heappop, heappush
from typing import TYPE_CHECKING, Any, Protocol

from contract.cases import (
    COMMON_ACTIONS,
    STAGE_ACTIONS,
    ActionRejected,
    CaseEvent,
    OfficerAction,
    Output,
)
from contract.clock import NEVER, LocalClock
from contract.kinds import KINDS
from streams.case import Context
from streams.kinds import RULE_KINDS
from streams.rules import Rules
from streams.workflow import Workflow

if TYPE_CHECKING:
    from contract.reading import Reading
    from registry.devices import Device

__all__ = ["Detector", "RegistryLike"]

STATE_VERSION = 2

ACTED_KEPT = 64
"""Action ids remembered per device (``_Slot.acted``): a delivery repeated further back than the
device's last 64 acts is not recognised. Repeats come from a forwarder restarted before its
commit or a restore's overlap, a few records apart (decision 010, §6)."""


@functools.lru_cache(maxsize=65536)
def _device_record(device: Any) -> dict[str, Any]:
    """``dataclasses.asdict`` of a registry ``Device`` (frozen, all fields scalars), once per
    device version: asdict's deep copy was 5 % of the worker's time (bench/RESULTS.md, issue 15).
    Callers copy it (a shallow copy is a full one: the values are scalars)."""
    return dataclasses.asdict(device)


def _acted(slot: _Slot) -> dict[str, Any]:
    """The ``acted`` key of an exported state: only when there is one, so a state without
    action ids reads and writes as it did."""
    return {"acted": list(slot.acted)} if slot.acted else {}


class RegistryLike(Protocol):
    def get(self, device_id: str, /) -> Device | None: ...


class _KindRule(Protocol):
    kind: str

    def new_state(self, dev: Device) -> Any: ...
    def on_reading(self, st: Any, r: Reading, dev: Device, ctx: Context) -> bool: ...
    def next_due(self, st: Any, dev: Device) -> int | None: ...
    def on_clock(self, st: Any, due: int, dev: Device, ctx: Context) -> None: ...
    def on_action(self, st: Any, a: OfficerAction, dev: Device, ctx: Context) -> bool: ...
    def export(self, st: Any) -> dict[str, Any]: ...
    def restore(self, dev: Device, d: dict[str, Any]) -> Any: ...


@dataclass(slots=True)
class _Slot:
    """One device: its registry entry, the rules that judge it with their states, its queued timers.

    ``rules[i]`` judges the device with ``states[i]``: first the rule kinds of
    the device's kind, then those of every device (``KIND = "*"``), each in
    ``RULE_KINDS`` order; ``due[i]`` is the due time of the heap entry
    currently standing for rule ``i``'s clock (the heap's tag is ``i``).
    """

    device: Device
    rules: list[_KindRule]
    sections: list[str]
    states: list[Any]
    due: list[int | None]
    flows: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    """The device's cases in the workflow (``streams.workflow.Flow`` as dicts), by case id."""
    acted: list[str] = dataclasses.field(default_factory=list)
    """The ids of the device's last ``ACTED_KEPT`` officer actions, oldest first: each is
    applied once, however often it is delivered (decision 010, §6)."""


class Detector:
    """All rules for the devices routed to one worker (one partition).

    rules: the loaded rules file (``streams.rules.load_rules``).
    registry: anything with ``get(device_id) -> Device | None``; readings of
        devices it does not know are ignored (ingest dead-letters them).
    """

    def __init__(self, rules: Rules, registry: RegistryLike) -> None:
        self.rules = rules
        self.registry = registry
        self.clock = LocalClock(rules.timezone)
        self._rules: list[Any] = []
        """Every rule object, for the partition-level hooks (registry, clock state)."""
        specific: dict[str, list[tuple[str, _KindRule]]] = {k: [] for k in KINDS}
        every: list[tuple[str, _KindRule]] = []
        built: dict[str, Any] = {}
        for name, kind in RULE_KINDS.items():
            rule = kind.build(rules.section(name), self.clock, registry)
            self._rules.append(rule)
            built[name] = rule
            if kind.KIND == "*":
                every.append((name, rule))
            else:
                for k in (kind.KIND,) if isinstance(kind.KIND, str) else kind.KIND:
                    specific[k].append((name, rule))
        for rule in self._rules:
            bind = getattr(rule, "bind", None)
            if bind is not None:
                bind(built)  # a kind reading another's partition index (overload: the trips)
        self._by_kind: dict[str, list[tuple[str, _KindRule]]] = {
            k: pairs + every for k, pairs in specific.items() if pairs
        }
        """Device kind -> (section, rule) in judging order; a kind no rule judges is not tracked."""
        self._slots: dict[str, _Slot] = {}
        self._heap: list[tuple[int, str, int]] = []
        self._wm = NEVER
        self._dirty: set[str] = set()
        self._ctx = Context()
        self.workflow = Workflow(rules.workflow)

    # ------------------------------------------------------------------ inputs

    @property
    def watermark(self) -> int | None:
        return None if self._wm == NEVER else self._wm

    def on_reading(self, r: Reading) -> list[Output]:
        """Apply one validated reading, then advance the watermark to its ``received_at``."""
        out: list[Output] = []
        ctx = self._ctx
        ctx.out = out
        ctx.wm = self._wm
        slot = self._slots.get(r.device)
        if slot is None:
            slot = self._new_slot(r.device)
        if slot is not None:
            changed = False
            for rule, st in zip(slot.rules, slot.states, strict=True):
                if rule.on_reading(st, r, slot.device, ctx):
                    changed = True
            if changed:
                self._dirty.add(r.device)
                self._schedule(r.device, slot)
        if r.received_at > self._wm:
            self._wm = r.received_at
        heap = self._heap
        if heap and heap[0][0] <= self._wm:
            self._run_clocks(out)
        return self._follow(out) if out else out

    def on_watermark(self, at_ms: int) -> list[Output]:
        """Advance time (never backwards) and run every clock that became due."""
        out: list[Output] = []
        if at_ms > self._wm:
            self._wm = at_ms
        if self._heap and self._heap[0][0] <= self._wm:
            self._run_clocks(out)
        return self._follow(out) if out else out

    def _follow(self, out: list[Output]) -> list[Output]:
        """The rules' case events through the workflow (``streams.workflow``): each goes out with
        its stage; nothing else is touched (ledger entries pass as they are)."""
        for i, o in enumerate(out):
            if isinstance(o, CaseEvent):
                slot = self._slots.get(o.device)
                if slot is not None:
                    before = len(slot.flows)
                    out[i] = ev = self.workflow.observe(slot.flows, o, slot.device)
                    if ev is not o or len(slot.flows) != before:
                        self._dirty.add(o.device)
        return out

    def on_action(self, a: OfficerAction) -> list[Output]:
        """Apply an officer action to a case of ``a.device``.

        With ``a.case_id`` the action goes to that case. Without, it goes to the
        device's current case: ``accident`` to the manhole case (open, else the
        most recent); ``confirm_repair`` / ``reject_repair`` to the manhole case
        with a pending late repair claim (docs/rules.md, "Late repair claims");
        ack/close/note to the device's open kind case (manhole;
        dust violation, flatline, warning; streetlight leakage, fault), else
        its offline case. An action matching no case gives ``ActionRejected``.
        Repeats change nothing (an accident is booked once per case), and an
        action delivered again (the same ``action_id``: a forwarder restarted
        before its commit, a restore's overlap) gives nothing at all: its first
        delivery decided it, accepted or rejected, so a close cannot land on a
        case opened since (decision 010, §6). Actions do not move the watermark.
        """
        out: list[Output] = []
        ctx = self._ctx
        ctx.out = out
        ctx.wm = self._wm
        slot = self._slots.get(a.device)
        if slot is None and a.action == "announce_works":
            slot = self._new_slot(a.device)  # works are announced before the device says anything
        if slot is None:
            reason = (
                "unknown device"
                if self.registry.get(a.device) is None
                else "the device has no case"
            )
            out.append(ActionRejected(a, reason))
            return out
        if a.action_id is not None:
            if a.action_id in slot.acted:
                return out  # delivered again: applied once
            slot.acted.append(a.action_id)
            if len(slot.acted) > ACTED_KEPT:
                del slot.acted[0]
            self._dirty.add(a.device)
        if a.action in STAGE_ACTIONS:
            done = self.workflow.act(slot.flows, a, slot.device, out)
            if done is False:
                return out
            self._dirty.add(a.device)
            if done is True:
                return out
            # a passing check of a case the device still holds open: the inspector's close
            a = dataclasses.replace(a, action="close", passed=None, case_id=done)
        ok = False
        for i, (rule, st) in enumerate(zip(slot.rules, slot.states, strict=True)):
            if i > 0 and a.action not in COMMON_ACTIONS:
                break  # an accident or a repair claim belongs to the device kind's own case
            if rule.on_action(st, a, slot.device, ctx):
                ok = True
                break
        if not ok:
            what = (
                "manhole case"
                if a.action == "accident"
                else "open case"
                if a.action in COMMON_ACTIONS
                else "pending late repair claim"
            )
            if a.case_id is not None and what == "pending late repair claim":
                out.append(ActionRejected(a, f"case {a.case_id} has no {what}"))
            elif a.case_id is not None:
                out.append(
                    ActionRejected(a, f"case {a.case_id} is not a current case of {a.device}")
                )
            else:
                out.append(ActionRejected(a, f"{a.device} has no {what}"))
            return out
        self._dirty.add(a.device)
        self._schedule(a.device, slot)
        if self._heap and self._heap[0][0] <= self._wm:
            self._run_clocks(out)
        return self._follow(out)

    # ------------------------------------------------------------------ clocks

    def _new_slot(self, device_id: str) -> _Slot | None:
        dev = self.registry.get(device_id)
        if dev is None:
            return None
        return self._make_slot(device_id, dev, None)

    def _make_slot(self, device_id: str, dev: Device, saved: dict[str, Any] | None) -> _Slot | None:
        pairs = self._by_kind.get(dev.kind)
        if pairs is None:
            return None
        sections = [name for name, _ in pairs]
        rules = [rule for _, rule in pairs]
        if saved is None:
            states = [rule.new_state(dev) for rule in rules]
        else:
            states = [
                rule.restore(dev, saved[name]) if name in saved else rule.new_state(dev)
                for name, rule in pairs
            ]
        slot = _Slot(dev, rules, sections, states, [None] * len(rules))
        self._slots[device_id] = slot
        return slot

    def _schedule(self, device_id: str, slot: _Slot) -> None:
        for i, rule in enumerate(slot.rules):
            nd = rule.next_due(slot.states[i], slot.device)
            cur = slot.due[i]
            if nd is not None and (cur is None or nd < cur):
                slot.due[i] = nd
                heappush(self._heap, (nd, device_id, i))

    def _run_clocks(self, out: list[Output]) -> None:
        heap = self._heap
        wm = self._wm
        ctx = self._ctx
        ctx.out = out
        ctx.wm = wm
        slots = self._slots
        while heap and heap[0][0] <= wm:
            due, device_id, i = heappop(heap)
            slot = slots.get(device_id)
            if slot is None or slot.due[i] != due:
                continue  # stale
            slot.due[i] = None
            rule, st = slot.rules[i], slot.states[i]
            nd = rule.next_due(st, slot.device)
            if nd is not None and nd <= due:
                rule.on_clock(st, nd, slot.device, ctx)
                self._dirty.add(device_id)
            self._schedule(device_id, slot)

    # ------------------------------------------------------------------ state for the Faust worker

    def device_ids(self) -> Iterator[str]:
        """Devices this detector holds state for (in first-seen order)."""
        return iter(list(self._slots))

    def export_device(self, device_id: str) -> dict[str, Any] | None:
        """JSON-friendly state of one device (None if it has none): each rule's state by section."""
        slot = self._slots.get(device_id)
        if slot is None:
            return None
        return {
            "v": STATE_VERSION,
            "kind": slot.device.kind,
            "device": dict(_device_record(slot.device)),
            "states": {
                name: rule.export(st)
                for name, rule, st in zip(slot.sections, slot.rules, slot.states, strict=True)
            },
        } | ({"workflow": dict(slot.flows)} if slot.flows else {}) | _acted(slot)  # fmt: skip

    def import_device(self, device_id: str, d: dict[str, Any]) -> bool:
        """Restore one device's state (from ``export_device``), replacing what is there.

        A device removed from the registry since the state was saved keeps the
        entry it was saved with, exactly as a live registry reload keeps it
        (``set_registry``): its running clock goes on for the payer it started
        with. Returns False (nothing restored) for a state that carries no entry
        of a device the registry no longer knows. A rule kind added since the
        state was saved starts fresh; version 1 states (one kind rule and
        ``offline``) are read too.
        """
        version = d.get("v")
        if version not in (1, STATE_VERSION):
            raise ValueError(
                f"device state of version {version!r}; this detector reads 1 and {STATE_VERSION}"
            )
        dev = self.registry.get(device_id)
        if dev is None or dev.kind != d["kind"]:
            saved_dev = d.get("device")
            if not isinstance(saved_dev, dict):
                if dev is None:
                    return False
                raise ValueError(
                    f"state of a {d['kind']} device for {device_id}, which the registry says is {dev.kind}"
                )
            from registry.devices import Device

            dev = Device(**saved_dev)
        pairs = self._by_kind.get(dev.kind)
        if pairs is None:
            return False
        if version == 1:
            states = {pairs[0][0]: d["rule"], "offline": d["offline"]}
        else:
            states = d["states"]
        slot = self._make_slot(device_id, dev, states)
        assert slot is not None
        slot.flows = {k: dict(v) for k, v in (d.get("workflow") or {}).items()}
        slot.acted = [str(i) for i in d.get("acted") or ()][-ACTED_KEPT:]  # absent: from before ids
        self._schedule(device_id, slot)
        return True

    def export_clock(self) -> dict[str, Any]:
        """Partition-level state: the watermark, and when background-mode dust
        judging started per district (everything else is derived from devices)."""
        out: dict[str, Any] = {"v": STATE_VERSION, "watermark": self.watermark}
        for rule in self._rules:
            export = getattr(rule, "export_clock", None)
            if export is not None:
                out.update(export())
        return out

    def import_clock(self, d: dict[str, Any]) -> None:
        wm = d.get("watermark")
        if wm is not None and wm > self._wm:
            self._wm = int(wm)
        for rule in self._rules:
            restore = getattr(rule, "import_clock", None)
            if restore is not None:
                restore(d)

    def set_registry(self, registry: RegistryLike) -> None:
        """Swap in a reloaded registry, between two inputs.

        The detector never looks at a registry that changes under it (a
        ``RegistryWatcher`` reloads on the wall clock, which would make output
        depend on timing): the worker calls this when ``watcher.current()``
        returns a new registry. Devices already seen keep their state; from now
        on their payer, district, levels and addresses come from the new entry
        (a case's deadline, fixed when it opened, stays). A device gone from
        the registry, or whose kind changed, keeps its old entry.
        """
        self.registry = registry
        for rule in self._rules:
            hook = getattr(rule, "on_registry", None)
            if hook is not None:
                hook(registry)
        for device_id, slot in self._slots.items():
            dev = registry.get(device_id)
            if dev is None or dev.kind != slot.device.kind:
                continue
            slot.device = dev
            for rule, st in zip(slot.rules, slot.states, strict=True):
                follow = getattr(rule, "follow", None)
                if follow is not None:
                    follow(dev, st)

    def take_dirty(self) -> set[str]:
        """Devices whose state changed since the last call (then forgets them)."""
        dirty = self._dirty
        self._dirty = set()
        return dirty
