"""Manhole covers: the case, the repair deadline and the hourly penalty clock.

Rules-file section ``rules.manhole`` (docs/rules.md#manhole). Semantics are
docs/rules.md, exactly:

* abnormal = ``open: true`` or ``tilt_deg >= tilt_threshold_deg``. The first
  abnormal reading (event time ``t0``) opens case ``manhole:<device>:<t0>``,
  deadline ``t0 + grace(road_class)``.
* The k-th penalty (``<case_id>:hour:<k>``) accrues at ``deadline + k h`` and
  is booked when the watermark reaches that instant -- also when the sensor
  is silent -- unless the case was repaired *before* that instant. So a case
  repaired at ``t1`` owes exactly ``floor((t1 - deadline) / 1 h)`` entries;
  repaired at exactly ``deadline + 1 h`` it owes one.
* Repair time = min(event time of the first reading of the first accepted
  normal run after ``t0``, officer close time). A normal run is
  ``normal_run`` consecutive normal readings in event-time order.
* Late readings: a normal reading inside the case's span (after ``t0``, before
  its current repair time) that gives an earlier repair moves the repair there;
  every booked hour that accrued after the new repair time is reversed by a
  new entry ``<entry_id>:reversal`` booked at the current watermark, with the
  late reading as evidence. Booked entries are never edited.
* Late repair claims (docs/rules.md, "Late repair claims"): a normal reading
  that arrives more than ``late_repair_max_minutes`` behind the watermark is
  not accepted evidence on its own. If taking it would un-owe hours booked or
  due, the case carries a pending claim (``detail.late_repair_claim``), nothing
  is reversed and the clock keeps running; ``confirm_repair`` takes the
  readings and books the reversals (the officer is part of their evidence),
  ``reject_repair`` sets them aside for good. A late reading that would un-owe
  nothing is taken as it is.
* Backdated closes (docs/rules.md, "Backdated closes"): an officer's close
  whose ``at`` lies more than ``late_repair_max_minutes`` before the instant it
  was said (the watermark, or the gate's ``recorded_at`` when later) stops the
  clock at that instant and reverses nothing; the backdated part is a pending
  claim (``detail.backdated_close_claim``) that only a *different* officer's
  ``confirm_repair`` books; ``reject_repair`` leaves the ledger as it is.
* A late *abnormal* reading never opens a case or delays a repair: it is
  either superseded by a newer normal reading, or falls inside a case that is
  already open. An abnormal reading opens a new case only when it is newer
  than everything seen and after the most recent case's repair time.
* Accident (officer action): 500,000 against the district government and
  1,000,000 against the property unit, once per case
  (``<case_id>:accident:district_government`` / ``...:property_unit``),
  accrued at the action's time.

Per device the module keeps the most recent case (the one actions and late
readings apply to) plus any earlier repaired case whose owed hours the
watermark has not reached yet. A case's ``history`` holds the readings inside
its span (needed to judge late readings and redeliveries exactly), so it is
bounded by the case's length.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from yaml.nodes import MappingNode

from contract import rules as rule_ids
from contract.cases import PAYER_TYPES, ROAD_CLASSES, CaseEvent, LedgerEntry, OfficerAction
from contract.clock import HOUR_MS, MINUTE_MS, NEVER, LocalClock
from foundation.cityfile import Section
from streams.case import (
    Context,
    action_evidence,
    clock_evidence,
    penalty_entry,
    reading_evidence,
    reversal_of,
)

if TYPE_CHECKING:
    from contract.reading import Reading
    from registry.devices import Device

RULE = rule_ids.MANHOLE
ACCIDENT_RULE = rule_ids.MANHOLE_ACCIDENT

# --------------------------------------------------------------------------- the plugin (docs/extending.md)

SECTION = "manhole"
"""This kind's key under ``rules:`` in the rules file (docs/rules.md)."""
KIND = "manhole"
"""The device kind it judges (``"*"``: every device)."""
RULE_IDS = (rule_ids.MANHOLE, rule_ids.MANHOLE_ACCIDENT)
"""The rule ids its cases and ledger entries carry (contract.rules)."""


@dataclass(frozen=True, slots=True)
class ManholeRules:
    """docs/rules.md "Manhole" and "Accident"."""

    tilt_threshold_deg: float = 15.0
    """A cover is abnormal at or above this tilt (or when it reports ``open: true``)."""
    grace_ms: dict[str, int] = field(
        default_factory=lambda: {"default": 2 * HOUR_MS, "main": 2 * HOUR_MS,
                                 "secondary": 2 * HOUR_MS, "other": 2 * HOUR_MS}
    )  # fmt: skip
    """Repair grace per road class; ``default`` for a device without road class."""
    penalty_per_hour_yuan: int = 10_000
    payer_type: str = "property_unit"
    normal_run: int = 1
    """How many consecutive normal readings prove a repair (repair time = the first)."""
    accident_district_government_yuan: int = 500_000
    accident_property_unit_yuan: int = 1_000_000
    late_repair_max_ms: int = 15 * MINUTE_MS
    """A normal reading later than this behind the watermark reverses nothing by itself:
    it is a late repair claim an officer confirms or rejects (docs/rules.md)."""

    def grace_for(self, road_class: str | None) -> int:
        g = self.grace_ms
        return g.get(road_class, g["default"]) if road_class else g["default"]


Settings = ManholeRules


def parse(m: Section) -> ManholeRules:
    """This kind's section of the rules file (docs/rules.md); every key optional."""
    d = ManholeRules()
    doc = m.doc
    tilt = m.number("tilt_threshold_deg", d.tilt_threshold_deg)
    if tilt > 90:
        doc.fail(
            m.get("tilt_threshold_deg") or m.node,
            "rules.manhole.tilt_threshold_deg: expected at most 90 degrees",
        )
    grace = dict(d.grace_ms)
    g = m.get("grace_hours")
    if g is not None:
        path = m.key_path("grace_hours")
        if isinstance(g, MappingNode):
            gm = Section(doc, g, path)
            for rc in ("default", *ROAD_CLASSES):
                gv = gm.get(rc)
                if gv is not None:
                    grace[rc] = round(doc.number(gv, gm.key_path(rc)) * HOUR_MS)
            gm.finish()
            for rc in ROAD_CLASSES:  # unspecified classes follow the default
                if gm.items.get(rc) is None:
                    grace[rc] = grace["default"]
        else:
            ms = round(doc.number(g, path) * HOUR_MS)
            grace = dict.fromkeys(("default", *ROAD_CLASSES), ms)
    accident = m.sub("accident")
    acc_d, acc_p = d.accident_district_government_yuan, d.accident_property_unit_yuan
    if accident is not None:
        acc_d = accident.yuan("district_government_yuan", acc_d)
        acc_p = accident.yuan("property_unit_yuan", acc_p)
        accident.finish()
    out = ManholeRules(
        tilt_threshold_deg=tilt,
        grace_ms=grace,
        penalty_per_hour_yuan=m.yuan("penalty_per_hour_yuan", d.penalty_per_hour_yuan),
        payer_type=m.choice("payer_type", d.payer_type, PAYER_TYPES),
        normal_run=m.whole("normal_run", d.normal_run, minimum=1),
        accident_district_government_yuan=acc_d,
        accident_property_unit_yuan=acc_p,
        late_repair_max_ms=round(
            m.number("late_repair_max_minutes", d.late_repair_max_ms / MINUTE_MS, zero_ok=True)
            * MINUTE_MS
        ),
    )
    m.finish()
    return out


@dataclass(slots=True)
class ManholeCase:
    case_id: str
    opened_at: int
    deadline: int
    open_evidence: dict[str, Any]
    district: str
    """District of the device when the case opened: it pays this case's district entries."""
    unit: str
    """Property-rights unit when the case opened: it pays this case's unit entries, even
    if the registry is reloaded meanwhile (so a reversal always hits the original payer)."""
    history: list[tuple[int, bool]]
    """(ts, normal) of the readings from ``opened_at`` on, sorted by ts; only
    readings before the repair time are added once the case is repaired."""
    state: str = "open"
    run_repair_at: int | None = None
    repair_evidence: dict[str, Any] | None = None
    officer_close_at: int | None = None
    close_evidence: dict[str, Any] | None = None
    hours_booked: int = 0
    reversed_hours: list[int] = field(default_factory=list)
    escalated: bool = False
    acknowledged_at: int | None = None
    acknowledged_by: str | None = None
    accident_at: int | None = None
    accident_report: dict[str, Any] | None = None
    """The first officer's accident report (its evidence) while it waits for a second,
    different officer (four eyes, docs/rules.md "Accidents"); kept after the booking."""
    notes: list[dict[str, Any]] = field(default_factory=list)
    unconfirmed: list[dict[str, Any]] = field(default_factory=list)
    """Late normal readings (their evidence, by ts) not taken as evidence yet: a repair claim."""
    rejected: list[int] = field(default_factory=list)
    """Event times of readings an officer rejected as repair evidence: never counted again."""
    works: dict[str, Any] | None = None
    """The announced works the case opened under (its deadline is their end), or None."""
    claim: dict[str, Any] | None = None
    """The latest late repair claim: ``status`` (pending, confirmed, rejected, superseded),
    ``repair_at``, ``lateness_ms``, ``at``, ``readings``, ``hours_at_stake``,
    ``yuan_at_stake``, ``decided_by``, ``decided_at``."""
    close_claim: dict[str, Any] | None = None
    """A backdated close's claim (docs/rules.md, "Backdated closes"): the same statuses and
    ``repair_at`` (the claimed instant), ``claimed_by``, ``role``, ``reason``,
    ``recorded_at`` (the gate's, or None), ``at`` (when it was said: the clock stopped
    there), ``lateness_ms``, ``hours_at_stake``, ``yuan_at_stake``, ``decided_by``,
    ``decided_at``."""

    @property
    def repair_at(self) -> int | None:
        a, b = self.run_repair_at, self.officer_close_at
        if a is None:
            return b
        return a if b is None or a <= b else b


@dataclass(slots=True)
class ManholeState:
    max_ts: int = NEVER
    """Newest event time seen from the device (a reading at exactly this ts is a redelivery)."""
    case: ManholeCase | None = None
    pending: list[ManholeCase] = field(default_factory=list)
    """Earlier, repaired cases with hours still owed but not yet reached by the
    watermark (a new case opened before the clock caught up with the old one)."""
    streak: int = 0
    """Consecutive normal readings at the end of the open case's history."""
    streak_start: int = 0
    works: list[dict[str, Any]] = field(default_factory=list)
    """Announced works (报备) on the cover: ``from``, ``until``, ``officer``, ``role``,
    ``reason``, ``recorded_at`` (docs/rules.md, "Announced works")."""


def _ts(item: tuple[int, bool]) -> int:
    return item[0]


def _ev_ts(ev: dict[str, Any]) -> int:
    return int(ev["ts"])


def _pending(claim: dict[str, Any] | None) -> bool:
    return claim is not None and claim["status"] == "pending"


def _first_run(
    history: list[tuple[int, bool]], n: int, skip: set[int] | frozenset[int] = frozenset()
) -> int | None:
    """Event time of the first reading of the first run of ``n`` normal readings.

    Readings whose ts is in ``skip`` (unconfirmed or rejected) count as not heard.
    """
    run = 0
    start = 0
    for ts, ok in history:
        if skip and ts in skip:
            continue
        if ok:
            if run == 0:
                start = ts
            run += 1
            if run >= n:
                return start
        else:
            run = 0
    return None


class ManholeRule:
    """Dispatch target of the detector for ``manhole`` devices."""

    kind = "manhole"

    def __init__(self, rules: ManholeRules) -> None:
        self.rules = rules
        self.threshold = rules.tilt_threshold_deg
        self.normal_run = rules.normal_run
        self.per_hour = rules.penalty_per_hour_yuan
        self.late_max = rules.late_repair_max_ms

    def new_state(self, dev: Device) -> ManholeState:
        return ManholeState()

    # ------------------------------------------------------------------ readings

    def on_reading(self, st: ManholeState, r: Reading, dev: Device, ctx: Context) -> bool:
        """Apply one reading; True if the device's state changed."""
        f = r.fields
        tilt = f.get("tilt_deg")
        normal = f.get("open") is not True and (tilt is None or tilt < self.threshold)
        ts = r.ts
        case = st.case
        if ts > st.max_ts:
            st.max_ts = ts
            if case is not None:
                rep = case.repair_at
                if rep is None:  # the hot path of an open case: readings in order
                    case.history.append((ts, normal))
                    late = normal and max(ctx.wm, r.received_at) - ts > self.late_max
                    if late or case.unconfirmed or case.rejected:
                        # in order but late (a silent cover), or a claim in the history
                        if late:
                            case.unconfirmed.append(reading_evidence(r))
                        self._judge(st, case, r, normal, dev, ctx)
                        return True
                    if normal:
                        if st.streak == 0:
                            st.streak_start = ts
                        st.streak += 1
                        if st.streak >= self.normal_run:
                            self._set_repair(
                                case, st.streak_start, None, reading_evidence(r), dev, ctx
                            )
                    else:
                        st.streak = 0
                    return True
                if ts < rep:  # before an officer's close time
                    self._in_span(st, case, ts, normal, r, dev, ctx)
                    return True
                if ts == rep:
                    return True
            if not normal:
                self._open(st, r, dev, ctx)
            return True
        if ts == st.max_ts or case is None:
            return False
        rep = case.repair_at
        if ts <= case.opened_at or (rep is not None and ts >= rep):
            return False
        return self._in_span(st, case, ts, normal, r, dev, ctx)

    def _open(self, st: ManholeState, r: Reading, dev: Device, ctx: Context) -> None:
        t0 = r.ts
        ev = reading_evidence(r)
        works = next((w for w in st.works if w["from"] <= t0 < w["until"]), None)
        case = ManholeCase(
            case_id=f"{RULE}:{dev.device_id}:{t0}",
            opened_at=t0,
            # announced works: no grace and no money inside the window; still open at its
            # end, the case is an ordinary one that books from the window's end
            deadline=t0 + self.rules.grace_for(dev.road_class) if works is None else works["until"],
            open_evidence=ev,
            district=dev.district,
            unit=dev.unit,
            history=[(t0, False)],
            works=None if works is None else dict(works),
        )
        if works is not None:
            case.state = "planned"
        old = st.case
        if old is not None and self._keep(old):
            st.pending.append(old)
        st.case = case
        st.streak = 0
        ctx.out.append(self._event(case, dev, t0))

    def _in_span(
        self, st: ManholeState, case: ManholeCase, ts: int, normal: bool,
        r: Reading, dev: Device, ctx: Context,
    ) -> bool:  # fmt: skip
        """A reading inside the case's span that is not the newest: late, or before an officer close."""
        h = case.history
        i = bisect_left(h, ts, key=_ts)
        if i < len(h) and h[i][0] == ts:
            return False  # redelivery
        h.insert(i, (ts, normal))
        if normal and max(ctx.wm, r.received_at) - ts > self.late_max:
            ev = reading_evidence(r)
            u = case.unconfirmed
            u.insert(bisect_left(u, ts, key=_ev_ts), ev)
        self._judge(st, case, r, normal, dev, ctx)
        return True

    def _judge(
        self, st: ManholeState, case: ManholeCase, r: Reading, normal: bool,
        dev: Device, ctx: Context,
    ) -> None:  # fmt: skip
        """After the history changed: the repair the accepted readings prove, then any claim."""
        h = case.history
        skip = set(case.rejected)
        if case.unconfirmed:
            skip.update(e["ts"] for e in case.unconfirmed)
        if normal:
            start = _first_run(h, self.normal_run, skip)
            rep = case.repair_at
            if start is not None and (rep is None or start < rep):
                self._set_repair(case, start, None, reading_evidence(r), dev, ctx)
        if case.unconfirmed:
            self._weigh_claim(case, r, dev, ctx)
        if case.repair_at is None:
            n, start = 0, 0
            for t, ok in reversed(h):
                if skip and t in skip:
                    continue
                if not ok:
                    break
                n, start = n + 1, t
            st.streak, st.streak_start = n, start

    # ------------------------------------------------------------------ late repair claims

    def _at_stake(self, case: ManholeCase, at: int, now: int) -> int:
        """How many hourly entries booked or due by ``now`` a repair at ``at`` would un-owe.

        Hour ``k`` accrues at ``deadline + k h`` and is owed unless the case was repaired
        before that instant; the accepted repair (if any) bounds what was ever due, and
        every hour after it is already reversed or was never booked.
        """
        if not self.per_hour:
            return 0
        rep = case.repair_at
        limit = now if rep is None else min(now, rep)
        first = max(1, (at - case.deadline) // HOUR_MS + 1)  # the first hour accruing after ``at``
        last = (limit - case.deadline) // HOUR_MS  # the last hour accrued by ``limit``
        return max(0, last - first + 1)

    def _weigh_claim(self, case: ManholeCase, r: Reading, dev: Device, ctx: Context) -> None:
        """The repair the late readings would prove: taken when it un-owes nothing, else claimed."""
        now = max(ctx.wm, r.received_at)
        start = _first_run(case.history, self.normal_run, set(case.rejected))
        rep = case.repair_at
        claim = case.claim if case.claim is not None and case.claim["status"] == "pending" else None
        ev = reading_evidence(r)
        if start is None or (rep is not None and start >= rep):
            if claim is not None:  # the accepted evidence already proves as much
                case.claim = {**claim, "status": "superseded"}
                ctx.out.append(self._event(case, dev, now, [ev]))
            return
        if not self._at_stake(case, start, now):
            case.unconfirmed = []  # erases nothing booked or due: taken as it is
            if claim is not None:
                case.claim = {**claim, "status": "superseded"}
            self._set_repair(case, start, None, ev, dev, ctx)
            return
        readings = [e["ts"] for e in case.unconfirmed]
        if claim is not None and claim["repair_at"] == start and claim["readings"] == readings:
            return
        hours = self._at_stake(case, start, now)
        case.claim = {
            "status": "pending", "repair_at": start, "lateness_ms": now - start, "at": now,
            "readings": readings, "hours_at_stake": hours, "yuan_at_stake": hours * self.per_hour,
            "decided_by": None, "decided_at": None,
        }  # fmt: skip
        ctx.out.append(self._event(case, dev, now, [ev]))

    def _decide_claim(self, st: ManholeState, a: OfficerAction, dev: Device, ctx: Context) -> bool:
        """``confirm_repair`` / ``reject_repair``: the pending claims of the most recent case
        that has one (or of ``a.case_id``'s); a repeat of the decision changes nothing.

        The late readings' claim is decided first, then the backdated close's, so a
        confirmation that decides both books each reversal once, with the evidence that
        un-owed it. Four eyes: the officer who made a backdated close cannot confirm it
        (their confirmation changes nothing, as an accident reporter's second report);
        they may reject it, which books nothing.
        """
        cases = [c for c in (st.case, *reversed(st.pending)) if c is not None]
        if a.case_id is not None:
            cases = [c for c in cases if c.case_id == a.case_id]
        case = next((c for c in cases if _pending(c.claim) or _pending(c.close_claim)), None)
        want = "confirmed" if a.action == "confirm_repair" else "rejected"
        if case is None:
            for c in cases:  # the most recent decision: repeating it is no mistake
                claims = [d for d in (c.claim, c.close_claim) if d is not None]
                if claims:
                    return any(d["status"] == want for d in claims)
            return False
        act = action_evidence(a)
        decided = {"status": want, "decided_by": a.officer, "decided_at": a.at}
        changed = False
        claim = case.claim
        by_readings = claim is not None and _pending(claim)
        if claim is not None and by_readings:
            case.claim = {**claim, **decided}
            readings = case.unconfirmed
            case.unconfirmed = []
            if want == "confirmed":
                start = _first_run(case.history, self.normal_run, set(case.rejected))
                rep = case.repair_at
                if start is not None and (rep is None or start < rep):
                    ev = next(
                        (e for e in readings if e["ts"] == start), readings[0] if readings else act
                    )
                    changed = self._set_repair(case, start, None, ev, dev, ctx, [act])
            else:
                case.rejected = sorted({*case.rejected, *(e["ts"] for e in readings)})
        close = case.close_claim
        if close is not None and _pending(close):
            if want == "confirmed" and close["claimed_by"] == a.officer:
                if not by_readings:
                    return True  # four eyes: nothing was decided, nothing changes
            else:
                case.close_claim = {**close, **decided}
                close_ev = case.close_evidence  # the backdated close's own action
                if want == "confirmed" and close_ev is not None:
                    at = close["repair_at"]
                    changed = self._set_repair(case, at, a, close_ev, dev, ctx, [act]) or changed
        if not changed:
            ctx.out.append(self._event(case, dev, a.at, [act]))
        if st.pending:
            st.pending = [c for c in st.pending if self._keep(c)]
        return True

    def _keep(self, case: ManholeCase) -> bool:
        """An earlier case stays while it owes hours or waits for an officer's decision."""
        return (
            self._case_due(case) is not None or _pending(case.claim) or _pending(case.close_claim)
        )

    # ------------------------------------------------------------------ backdated closes

    def _close(self, case: ManholeCase, a: OfficerAction, dev: Device, ctx: Context) -> None:
        """An officer's close (docs/rules.md, "Backdated closes").

        The close repairs the case at its ``at`` -- unless ``at`` lies more than
        ``late_repair_max`` before the instant it was said (the watermark, or the
        gate's ``recorded_at`` when later) and a repair at ``at`` would un-owe hours
        booked or due by then. Then the clock stops at the instant it was said (no
        hour accrues after an officer said the cover is repaired), nothing booked is
        reversed, and the backdated part is a pending claim a different officer
        confirms (``confirm_repair``) or anyone with the role rejects.
        """
        ev = action_evidence(a)
        said = max(ctx.wm, a.at if a.recorded_at is None else a.recorded_at)
        claimed = max(a.at, case.opened_at)
        hours = self._at_stake(case, claimed, said) if said - a.at > self.late_max else 0
        if not hours:
            self._set_repair(case, a.at, a, ev, dev, ctx)
            return
        case.close_claim = {
            "status": "pending", "repair_at": claimed, "claimed_by": a.officer,
            "role": a.role or None, "reason": a.reason, "recorded_at": a.recorded_at,
            "lateness_ms": said - a.at, "at": said,
            "hours_at_stake": hours, "yuan_at_stake": hours * self.per_hour,
            "decided_by": None, "decided_at": None,
        }  # fmt: skip
        if not self._set_repair(case, said, a, ev, dev, ctx):
            ctx.out.append(self._event(case, dev, said, [ev]))  # its sensor stopped the clock first

    def _set_repair(
        self, case: ManholeCase, at: int, officer: OfficerAction | None,
        evidence: dict[str, Any], dev: Device, ctx: Context,
        more: list[dict[str, Any]] | None = None,
    ) -> bool:  # fmt: skip
        """Record a repair (reading run or officer close) and reverse what it un-owes.

        ``more``: further evidence of the reversals and the event (the officer
        who confirmed a late repair claim). False when the repair time did not move.
        """
        old = case.repair_at
        if officer is None:
            case.run_repair_at = at
            case.repair_evidence = evidence
        else:
            case.officer_close_at = max(at, case.opened_at)
            case.close_evidence = evidence
        new = case.repair_at
        assert new is not None
        if old is not None and new >= old:
            return False  # an officer closing a case its sensor already proved repaired
        case.state = "repaired" if new == case.run_repair_at else "closed"
        proof = [evidence, *more] if more else [evidence]
        if self.per_hour:
            for k in range(1, case.hours_booked + 1):
                if case.deadline + k * HOUR_MS > new and k not in case.reversed_hours:
                    ctx.out.append(reversal_of(self._hour_entry(case, k, dev), ctx.wm, proof))
                    case.reversed_hours.append(k)
        claim = case.claim
        if claim is not None and claim["status"] == "pending" and claim["repair_at"] >= new:
            case.claim = {**claim, "status": "superseded"}  # an earlier repair was proved
        close = case.close_claim
        if close is not None and close["status"] == "pending" and close["repair_at"] >= new:
            case.close_claim = {**close, "status": "superseded"}
        ctx.out.append(self._event(case, dev, new, proof))
        return True

    # ------------------------------------------------------------------ clock

    @staticmethod
    def _case_due(case: ManholeCase) -> int | None:
        """When the case next needs the clock: its deadline, or its next owed hour."""
        rep = case.repair_at
        if rep is None and not case.escalated:
            return case.deadline
        t = case.deadline + (case.hours_booked + 1) * HOUR_MS
        if rep is None or t <= rep:
            return t
        return None

    def next_due(self, st: ManholeState, dev: Device) -> int | None:
        """The next instant the watermark must wake this device."""
        case = st.case
        due = None if case is None else self._case_due(case)
        for old in st.pending:
            t = self._case_due(old)
            if t is not None and (due is None or t < due):
                due = t
        return due

    def on_clock(self, st: ManholeState, due: int, dev: Device, ctx: Context) -> None:
        case = None
        for old in st.pending:  # older cases first, so equal instants book in case order
            if self._case_due(old) == due:
                case = old
                break
        if case is None:
            case = st.case
        assert case is not None and self._case_due(case) == due
        self._tick(case, due, dev, ctx)
        if st.pending:
            st.pending = [c for c in st.pending if self._keep(c)]

    def _tick(self, case: ManholeCase, due: int, dev: Device, ctx: Context) -> None:
        if due == case.deadline and not case.escalated and case.repair_at is None:
            case.escalated = True
            case.state = "escalated"
            ctx.out.append(self._event(case, dev, due, [clock_evidence(due)]))
            return
        case.hours_booked += 1
        if self.per_hour:
            ctx.out.append(self._hour_entry(case, case.hours_booked, dev))

    def _hour_entry(self, case: ManholeCase, k: int, dev: Device) -> LedgerEntry:
        return self._entry(
            case, dev, f"hour:{k}", RULE, self.rules.payer_type, self.per_hour,
            case.deadline + k * HOUR_MS, [case.open_evidence], hour_index=k,
        )  # fmt: skip

    @staticmethod
    def _entry(
        case: ManholeCase, dev: Device, suffix: str, rule: str, payer_type: str, amount: int,
        at: int, evidence: list[dict[str, Any]], hour_index: int | None = None,
    ) -> LedgerEntry:  # fmt: skip
        """An entry ``<case_id>:<suffix>`` paid by the parties of the case's opening."""
        return penalty_entry(
            dev,
            case.case_id,
            suffix,
            rule,
            payer_type,
            amount,
            at,
            evidence,
            hour_index,
            district=case.district,
            unit=case.unit,
        )

    # ------------------------------------------------------------------ officer actions

    def on_action(self, st: ManholeState, a: OfficerAction, dev: Device, ctx: Context) -> bool:
        """Apply an action to the device's most recent case; False if it is not for it."""
        if a.action in ("confirm_repair", "reject_repair"):
            return self._decide_claim(st, a, dev, ctx)
        if a.action == "announce_works":
            assert a.works_from is not None and a.works_until is not None
            w = {"from": a.works_from, "until": a.works_until, "officer": a.officer, "role": a.role,
                 "reason": a.note, "recorded_at": a.recorded_at if a.recorded_at is not None else a.at}  # fmt: skip
            if w not in st.works:  # a repeat changes nothing
                st.works.append(w)
                # works that ended a window ago can no longer explain an opening: forget them
                horizon = max(x["until"] for x in st.works) - 30 * 24 * HOUR_MS
                st.works = [x for x in st.works if x["until"] >= horizon]
            return True
        case = st.case
        if case is None or (a.case_id is not None and a.case_id != case.case_id):
            return False
        is_open = case.repair_at is None
        if a.action == "accident":
            if case.accident_at is None:
                report = case.accident_report
                if report is None:  # the first officer: pending, nothing booked
                    case.accident_report = action_evidence(a)
                    ctx.out.append(self._event(case, dev, a.at, [case.accident_report]))
                    return True
                if report.get("officer") == a.officer:
                    return True  # four eyes: the reporting officer cannot confirm it
                case.accident_at = a.at
                ev = [report, action_evidence(a)]
                r = self.rules
                for payer_type, amount in (("district_government", r.accident_district_government_yuan),
                                           ("property_unit", r.accident_property_unit_yuan)):  # fmt: skip
                    if amount:
                        ctx.out.append(self._entry(case, dev, f"accident:{payer_type}",
                                                   ACCIDENT_RULE, payer_type, amount, a.at, ev))  # fmt: skip
                ctx.out.append(self._event(case, dev, a.at, ev))
            return True
        if a.case_id is None and not is_open and a.action != "note":
            return False  # "the open case of the device": this one is over
        if a.action == "ack":
            if is_open and case.acknowledged_at is None:
                case.acknowledged_at, case.acknowledged_by = a.at, a.officer
                if case.state == "open":
                    case.state = "acknowledged"
                ctx.out.append(self._event(case, dev, a.at, [action_evidence(a)]))
        elif a.action == "close":
            if case.officer_close_at is None:
                self._close(case, a, dev, ctx)
        elif a.action == "note":
            n = {"at": a.at, "officer": a.officer, "note": a.note}
            if n not in case.notes:
                case.notes.append(n)
                ctx.out.append(self._event(case, dev, a.at, [action_evidence(a)]))
        return True

    # ------------------------------------------------------------------ output

    def _event(self, case: ManholeCase, dev: Device, at: int,
               evidence: list[dict[str, Any]] | None = None) -> CaseEvent:  # fmt: skip
        rep = case.repair_at
        detail: dict[str, Any] = {
            "road_class": dev.road_class,
            "repair_at": rep,
            "repaired_by": None
            if rep is None
            else ("reading" if rep == case.run_repair_at else "officer"),
            "escalated": case.escalated,
            "acknowledged_at": case.acknowledged_at,
            "acknowledged_by": case.acknowledged_by,
            "officer_close_at": case.officer_close_at,
            "accident_at": case.accident_at,
        }
        if case.accident_report is not None:
            detail["accident_report"] = dict(case.accident_report)
        if case.reversed_hours:
            detail["reversed_hours"] = sorted(case.reversed_hours)
        if case.notes:
            detail["notes"] = list(case.notes)
        if case.claim is not None:
            detail["late_repair_claim"] = dict(case.claim)
        if case.works is not None:
            detail["planned_works"] = dict(case.works)
        if case.close_claim is not None:
            detail["backdated_close_claim"] = dict(case.close_claim)
        return CaseEvent(
            case_id=case.case_id,
            kind="manhole",
            rule=RULE,
            device=dev.device_id,
            district=case.district,
            grid=dev.grid,
            unit=case.unit,
            severity="critical" if case.accident_at is not None else "major",
            state=case.state,
            at=at,
            opened_at=case.opened_at,
            deadline=case.deadline,
            evidence=[case.open_evidence, *(evidence or [])],
            component_code=dev.component_code,
            address=dev.address,
            detail=detail,
        )

    # ------------------------------------------------------------------ export / import

    def export(self, st: ManholeState) -> dict[str, Any]:
        return {
            "max_ts": st.max_ts,
            "streak": st.streak,
            "streak_start": st.streak_start,
            "case": None if st.case is None else _case_to_dict(st.case),
            "pending": [_case_to_dict(c) for c in st.pending],
            "works": [dict(w) for w in st.works],
        }

    def restore(self, dev: Device, d: dict[str, Any]) -> ManholeState:
        return ManholeState(
            max_ts=d["max_ts"],
            case=None if d["case"] is None else _case_from_dict(d["case"]),
            pending=[_case_from_dict(c) for c in d["pending"]],
            streak=d["streak"],
            streak_start=d["streak_start"],
            works=[dict(w) for w in d.get("works", ())],
        )


def _case_to_dict(c: ManholeCase) -> dict[str, Any]:
    return {
        "case_id": c.case_id, "opened_at": c.opened_at, "deadline": c.deadline,
        "open_evidence": c.open_evidence, "district": c.district, "unit": c.unit,
        "history": [[t, ok] for t, ok in c.history],
        "state": c.state, "run_repair_at": c.run_repair_at,
        "repair_evidence": c.repair_evidence, "officer_close_at": c.officer_close_at,
        "close_evidence": c.close_evidence, "hours_booked": c.hours_booked,
        "reversed_hours": list(c.reversed_hours), "escalated": c.escalated,
        "acknowledged_at": c.acknowledged_at, "acknowledged_by": c.acknowledged_by,
        "accident_at": c.accident_at, "notes": [dict(n) for n in c.notes],
        "accident_report": None if c.accident_report is None else dict(c.accident_report),
        "unconfirmed": [dict(e) for e in c.unconfirmed], "rejected": list(c.rejected),
        "claim": None if c.claim is None else dict(c.claim),
        "close_claim": None if c.close_claim is None else dict(c.close_claim),
    }  # fmt: skip


def _case_from_dict(c: dict[str, Any]) -> ManholeCase:
    return ManholeCase(
        case_id=c["case_id"], opened_at=c["opened_at"], deadline=c["deadline"],
        open_evidence=c["open_evidence"], district=c["district"], unit=c["unit"],
        history=[(t, ok) for t, ok in c["history"]],
        state=c["state"], run_repair_at=c["run_repair_at"],
        repair_evidence=c["repair_evidence"], officer_close_at=c["officer_close_at"],
        close_evidence=c["close_evidence"], hours_booked=c["hours_booked"],
        reversed_hours=list(c["reversed_hours"]), escalated=c["escalated"],
        acknowledged_at=c["acknowledged_at"], acknowledged_by=c["acknowledged_by"],
        accident_at=c["accident_at"], notes=[dict(n) for n in c["notes"]],
        accident_report=None if c.get("accident_report") is None else dict(c["accident_report"]),
        unconfirmed=[dict(e) for e in c.get("unconfirmed", ())],
        rejected=list(c.get("rejected", ())),
        claim=None if c.get("claim") is None else dict(c["claim"]),
        close_claim=None if c.get("close_claim") is None else dict(c["close_claim"]),
    )  # fmt: skip


def build(settings: ManholeRules, clock: LocalClock, registry: Any) -> ManholeRule:
    """The rule object the detector runs for one partition."""
    return ManholeRule(settings)
