"""Streetlights: dark lamps at night (fault), lamps burning by day, and leakage current (safety).

Rules-file section ``rules.streetlight`` (docs/rules.md#streetlight). docs/rules.md:

* "Should be lit" follows the sun at the lamp's coordinates by default, from
  sunset + ``after_sunset`` to sunrise − ``before_sunrise``; ``fixed`` mode
  keeps a timetable (``on``/``off``, optionally per month); both per district
  (``streams.daylight``).
* Lamp fault (``streetlight.fault``, severity minor): the lamp shows no light
  (``on: false``, or ``current_a`` below ``current_threshold_a``) inside the
  lit window, and stays dark for ``fault.dark_for`` (no lit reading, still in
  the window): the case opens at the first dark reading + ``dark_for``, so a
  lamp a few minutes slow to light is no case. It is repaired by the first
  reading that shows current again (``current_a`` at or above the threshold,
  or ``on: true`` when the lamp reports no current). A dark lamp in the
  daytime is no fault (and no repair either).
* Day burner (``streetlight.day_burner``, severity minor): lit outside the
  window for ``day_burner.lit_for`` (default 2 h); ends when the lamp goes
  dark or the window begins.
* Leakage (``streetlight.leakage``, severity critical: electric-shock risk):
  ``leakage_ma`` at or above ``leakage_threshold_ma`` opens it at once;
  repaired by a reading below the threshold.
* No money unless the rules file sets ``fault.penalty_yuan`` /
  ``leakage.penalty_yuan``: then ``<case_id>:penalty`` is booked once, when the
  case opens.
* Only readings newer than everything seen from the lamp are judged (the lamp's
  state now is what matters); older ones and redeliveries change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from contract import rules as rule_ids
from contract.cases import COMMON_ACTIONS, PAYER_TYPES, OfficerAction
from contract.clock import MINUTE_MS, NEVER, LocalClock
from foundation.cityfile import Section
from streams.case import CaseRecord, Context, action_evidence, penalty_entry, reading_evidence
from streams.daylight import MODES, Schedule, SunTable

if TYPE_CHECKING:
    from contract.reading import Reading
    from registry.devices import Device

FAULT_RULE = rule_ids.STREETLIGHT_FAULT
LEAKAGE_RULE = rule_ids.STREETLIGHT_LEAKAGE
BURNER_RULE = rule_ids.STREETLIGHT_DAY_BURNER
CIRCUIT_RULE = rule_ids.STREETLIGHT_CIRCUIT

# --------------------------------------------------------------------------- the plugin (docs/extending.md)

SECTION = "streetlight"
"""This kind's key under ``rules:`` in the rules file (docs/rules.md)."""
KIND = "streetlight"
"""The device kind it judges (``"*"``: every device)."""
RULE_IDS = (
    rule_ids.STREETLIGHT_FAULT,
    rule_ids.STREETLIGHT_LEAKAGE,
    rule_ids.STREETLIGHT_DAY_BURNER,
    rule_ids.STREETLIGHT_CIRCUIT,
)
"""The rule ids its cases and ledger entries carry (contract.rules)."""


@dataclass(frozen=True, slots=True)
class StreetlightRules:
    """docs/rules.md "Streetlight"."""

    schedule: Schedule = field(default_factory=Schedule)
    district_schedule: dict[str, Schedule] = field(default_factory=dict)
    """Per-district overrides of the schedule."""
    current_threshold_a: float = 0.05
    """Below this current a lamp counts as drawing no current."""
    leakage_threshold_ma: float = 30.0
    dark_for_ms: int = 15 * MINUTE_MS
    """A lamp dark this long inside the lit window opens a fault case."""
    fault_penalty_yuan: int = 0
    fault_payer_type: str = "property_unit"
    leakage_penalty_yuan: int = 0
    leakage_payer_type: str = "property_unit"
    lit_for_ms: int = 2 * 60 * MINUTE_MS
    """A lamp lit this long outside the window opens a day-burner case."""
    circuit_dark_share: float = 0.6
    """This share of a circuit's lamps dark together: one circuit case, not one per lamp."""
    circuit_min_lamps: int = 3
    """A circuit with fewer lamps in the registry is judged lamp by lamp."""
    burner_penalty_yuan: int = 0
    burner_payer_type: str = "property_unit"

    @property
    def on_minute(self) -> int:
        return self.schedule.on_minute

    @property
    def off_minute(self) -> int:
        return self.schedule.off_minute

    def schedule_for(self, district: str) -> Schedule:
        return self.district_schedule.get(district, self.schedule)


Settings = StreetlightRules


def _schedule(sec: Section, base: Schedule) -> Schedule:
    doc = sec.doc
    mode = sec.choice("mode", base.mode, MODES)
    on = sec.time_of_day("on", base.on_minute)
    off = sec.time_of_day("off", base.off_minute)
    if on == off:
        doc.fail(sec.get("off") or sec.node, f"{sec.path}: 'on' and 'off' are the same time")
    months = dict(base.months)
    msec = sec.sub("months")
    if msec is not None:
        for key in msec.keys():
            if not key.isdigit() or not 1 <= int(key) <= 12:
                doc.fail(msec.key_node(key), f"{msec.path}.{key}: a month is 1-12")
            one = msec.sub(key)
            assert one is not None
            m_on, m_off = one.time_of_day("on", on), one.time_of_day("off", off)
            if m_on == m_off:
                doc.fail(one.node, f"{one.path}: 'on' and 'off' are the same time")
            one.finish()
            months[int(key)] = (m_on, m_off)
        msec.finish()
    after = sec.duration_ms("after_sunset", base.after_sunset_ms, zero_ok=True)
    before = sec.duration_ms("before_sunrise", base.before_sunrise_ms, zero_ok=True)
    lat, lon = base.latitude, base.longitude
    loc = sec.get("location")
    if loc is not None:
        pair = sec.doc.plain(loc)
        ok = (
            isinstance(pair, list) and len(pair) == 2
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in pair)
            and -90 <= pair[0] <= 90 and -180 <= pair[1] <= 180
        )  # fmt: skip
        if not ok:
            doc.fail(
                loc,
                f"{sec.key_path('location')}: expected [latitude, longitude], e.g. [34.75, 113.65]",
            )
        lat, lon = float(pair[0]), float(pair[1])
    return Schedule(mode, after or 0, before or 0, on, off, months, lat, lon)


def parse(m: Section) -> StreetlightRules:
    """This kind's section of the rules file (docs/rules.md); every key optional."""
    d = StreetlightRules()
    schedule, per = d.schedule, {}
    sched = m.sub("schedule")
    if sched is not None:
        districts = sched.sub("districts")
        sched.known.append("districts")
        schedule = _schedule(sched, schedule)
        if districts is not None:
            for name in districts.keys():
                dm = districts.sub(name)
                assert dm is not None
                per[name] = _schedule(dm, schedule)
                dm.finish()
            districts.finish()
        sched.finish()
    fault = m.sub("fault")
    f_pen, f_pay, dark_for = d.fault_penalty_yuan, d.fault_payer_type, d.dark_for_ms
    if fault is not None:
        f_pen = fault.yuan("penalty_yuan", f_pen)
        f_pay = fault.choice("payer_type", f_pay, PAYER_TYPES)
        dark_for = fault.duration_ms("dark_for", dark_for, zero_ok=True) or 0
        fault.finish()
    leak = m.sub("leakage")
    l_pen, l_pay = d.leakage_penalty_yuan, d.leakage_payer_type
    if leak is not None:
        l_pen = leak.yuan("penalty_yuan", l_pen)
        l_pay = leak.choice("payer_type", l_pay, PAYER_TYPES)
        leak.finish()
    circ = m.sub("circuit")
    c_share, c_min = d.circuit_dark_share, d.circuit_min_lamps
    if circ is not None:
        c_share = circ.number("dark_share", c_share)
        if c_share > 1:
            m.doc.fail(
                circ.get("dark_share") or circ.node,
                f"{circ.key_path('dark_share')}: a share is at most 1",
            )
        c_min = circ.whole("min_lamps", c_min, minimum=2)
        circ.finish()
    burner = m.sub("day_burner")
    b_pen, b_pay, lit_for = d.burner_penalty_yuan, d.burner_payer_type, d.lit_for_ms
    if burner is not None:
        b_pen = burner.yuan("penalty_yuan", b_pen)
        b_pay = burner.choice("payer_type", b_pay, PAYER_TYPES)
        lit_for = burner.duration_ms("lit_for", lit_for) or lit_for
        burner.finish()
    out = StreetlightRules(
        schedule=schedule,
        district_schedule=per,
        current_threshold_a=m.number("current_threshold_a", d.current_threshold_a),
        leakage_threshold_ma=m.number("leakage_threshold_ma", d.leakage_threshold_ma),
        dark_for_ms=dark_for,
        fault_penalty_yuan=f_pen,
        fault_payer_type=f_pay,
        leakage_penalty_yuan=l_pen,
        leakage_payer_type=l_pay,
        lit_for_ms=lit_for,
        circuit_dark_share=c_share,
        circuit_min_lamps=c_min,
        burner_penalty_yuan=b_pen,
        burner_payer_type=b_pay,
    )
    m.finish()
    return out


@dataclass(slots=True)
class LampState:
    max_ts: int = NEVER
    fault: CaseRecord | None = None
    leakage: CaseRecord | None = None
    dark_since: int | None = None
    """First dark reading inside the lit window since the lamp was last seen lit."""
    dark_ev: dict[str, Any] | None = None
    lit_since: int | None = None
    """First lit reading outside the window since the lamp was last seen dark or at night."""
    lit_ev: dict[str, Any] | None = None
    burner: CaseRecord | None = None
    circuit: tuple[str, str] | None = None
    """(cabinet, circuit) of the lamp from the registry, None when it has none."""
    dark: bool = False
    """Its newest reading (inside the window) showed it dark: what a circuit counts."""


class StreetlightRule:
    """Dispatch target of the detector for ``streetlight`` devices."""

    kind = "streetlight"

    def __init__(self, rules: StreetlightRules, clock: LocalClock, registry: Any = None) -> None:
        self.rules = rules
        self.clock = clock
        self.sun = SunTable(clock)
        self.registry = registry
        self._sizes: dict[tuple[str, str], int] = circuit_sizes(registry)
        self._members: dict[tuple[str, str], dict[str, LampState]] = {}
        self._ccases: dict[tuple[str, str], CaseRecord] = {}
        """Open circuit cases (partition-level state, exported with the clock)."""
        self.current_threshold = rules.current_threshold_a
        self.leak_threshold = rules.leakage_threshold_ma

    def new_state(self, dev: Device) -> LampState:
        return self._index(dev, LampState())

    def _index(self, dev: Device, st: LampState) -> LampState:
        old = st.circuit
        key = (dev.cabinet, dev.circuit) if dev.cabinet and dev.circuit else None
        if old is not None and old != key:
            self._members.get(old, {}).pop(dev.device_id, None)
        st.circuit = key
        if key is not None:
            self._members.setdefault(key, {})[dev.device_id] = st
        return st

    def follow(self, dev: Device, st: LampState) -> None:
        self._index(dev, st)

    def on_registry(self, registry: Any) -> None:
        self.registry = registry
        self._sizes = circuit_sizes(registry)

    def should_be_on(self, dev: Device, ts: int) -> bool:
        return self.sun.should_be_lit(self.rules.schedule_for(dev.district), dev.lat, dev.lon, ts)

    def on_reading(self, st: LampState, r: Reading, dev: Device, ctx: Context) -> bool:
        ts = r.ts
        if ts <= st.max_ts:
            return False
        st.max_ts = ts
        self._timers(st, dev, ts, ctx)  # what was due before this reading, as the clock would
        f = r.fields
        cur = f.get("current_a")
        on = f.get("on")
        if cur is not None:
            lit = cur >= self.current_threshold and on is not False
        else:
            lit = on is True
        dark = on is False or (cur is not None and cur < self.current_threshold)
        night = self.should_be_on(dev, ts)
        st.dark = bool(dark and night)
        if lit and st.circuit in self._ccases:
            self._circuit_lamp_lit(st, dev, ts, ctx)
        if st.fault is not None:
            if lit:
                st.fault.end("repaired", ts, "reading")
                ctx.out.append(st.fault.event(dev, ts, [reading_evidence(r)]))
                st.fault = None
        if lit or not night:
            st.dark_since = st.dark_ev = None
        elif dark and st.fault is None and st.dark_since is None:
            st.dark_since, st.dark_ev = ts, reading_evidence(r)
            self._timers(st, dev, ts, ctx)  # dark_for 0: at once
        if st.burner is not None and (dark or night):
            st.burner.end("repaired", ts, "reading")
            ctx.out.append(st.burner.event(dev, ts, [reading_evidence(r)]))
            st.burner = None
        if dark or night:
            st.lit_since = st.lit_ev = None
        elif lit and st.burner is None and st.lit_since is None:
            st.lit_since, st.lit_ev = ts, reading_evidence(r)
        leak = f.get("leakage_ma")
        if leak is not None:
            if leak >= self.leak_threshold:
                if st.leakage is None:
                    st.leakage = self._open(
                        LEAKAGE_RULE,
                        "critical",
                        r.ts,
                        reading_evidence(r),
                        dev,
                        ctx,
                        self.rules.leakage_penalty_yuan,
                        self.rules.leakage_payer_type,
                        {"leakage_ma": leak, "threshold_ma": self.leak_threshold},
                    )
            elif st.leakage is not None:
                st.leakage.end("repaired", ts, "reading")
                ctx.out.append(st.leakage.event(dev, ts, [reading_evidence(r)]))
                st.leakage = None
        return True

    def _timers(self, st: LampState, dev: Device, now: int, ctx: Context) -> None:
        """Open what has been due by ``now``: a lamp dark for ``dark_for`` in the window (a
        fault), or lit for ``lit_for`` outside it (a day burner). The case opens at the due
        instant itself, whichever of a reading or the watermark gets there first, so live
        and replay agree."""
        r = self.rules
        if st.dark_since is not None and st.fault is None:
            due = st.dark_since + r.dark_for_ms
            if due <= now:
                since, ev = st.dark_since, st.dark_ev or {}
                st.dark_since = st.dark_ev = None
                if self.should_be_on(dev, due) and not self._circuit_dark(
                    st, dev, since, ev, due, ctx
                ):
                    st.fault = self._open(
                        FAULT_RULE, "minor", since, ev, dev, ctx, r.fault_penalty_yuan,
                        r.fault_payer_type,
                        {"schedule": self._schedule_text(dev), "dark_since": since,
                         "dark_for_ms": r.dark_for_ms},
                        at=due,
                    )  # fmt: skip
        if st.lit_since is not None and st.burner is None:
            due = st.lit_since + r.lit_for_ms
            if due <= now:
                since, ev = st.lit_since, st.lit_ev or {}
                st.lit_since = st.lit_ev = None
                if not self.should_be_on(dev, due):
                    st.burner = self._open(
                        BURNER_RULE, "minor", since, ev, dev, ctx, r.burner_penalty_yuan,
                        r.burner_payer_type,
                        {"schedule": self._schedule_text(dev), "lit_since": since,
                         "lit_for_ms": r.lit_for_ms},
                        at=due,
                    )  # fmt: skip

    # ------------------------------------------------------------------ circuits

    def _circuit_dark(self, st: LampState, dev: Device, since: int, ev: dict[str, Any],
                      due: int, ctx: Context) -> bool:  # fmt: skip
        """True when this lamp's darkness is its circuit's (one circuit case: opened now
        when most of the circuit is dark, or joined if it is open); False: a lamp case."""
        key = st.circuit
        size = self._sizes.get(key, 0) if key is not None else 0
        if key is None or size < self.rules.circuit_min_lamps:
            return False
        case = self._ccases.get(key)
        if case is None:
            members = self._members.get(key, {})
            dark = sorted(d for d, m in members.items() if m.dark or m is st)
            if len(dark) < self.rules.circuit_dark_share * size:
                return False
            case = CaseRecord(
                case_id=f"{CIRCUIT_RULE}:{key[0]}/{key[1]}:{since}", rule=CIRCUIT_RULE,
                opened_at=since, severity="major", evidence=[ev],
                extra={"cabinet": key[0], "circuit": key[1], "lamps": size, "dark_lamps": dark,
                       "reported_by": dark[0]},
            )  # fmt: skip
            self._ccases[key] = case
            ctx.out.append(case.event(self._reporter(case, dev), due))
            return True
        lamps = case.extra["dark_lamps"]
        if dev.device_id not in lamps:
            case.extra["dark_lamps"] = sorted([*lamps, dev.device_id])
            ctx.out.append(case.event(self._reporter(case, dev), due, [ev]))
        return True

    def _circuit_lamp_lit(self, st: LampState, dev: Device, ts: int, ctx: Context) -> None:
        """A lamp of an open circuit case lights: the case ends when most of the circuit is lit."""
        assert st.circuit is not None
        case = self._ccases[st.circuit]
        members = self._members.get(st.circuit, {})
        still = sorted(d for d, m in members.items() if m.dark and m is not st)
        if len(still) >= self.rules.circuit_dark_share * self._sizes.get(st.circuit, 0):
            return
        case.extra["dark_lamps"] = still
        case.end("repaired", ts, "reading")
        ctx.out.append(case.event(self._reporter(case, dev), ts))
        del self._ccases[st.circuit]
        for did in still:  # what stays dark now is a lamp's own fault: a fresh dark_for from here
            m = members[did]
            m.dark_since, m.dark_ev = ts, {"type": "clock", "at": ts, "after": case.case_id}

    def _reporter(self, case: CaseRecord, dev: Device) -> Device:
        """The device a circuit case is told under (its first dark lamp by id), fixed for its life."""
        first = case.extra.get("reported_by")
        if first and first != dev.device_id and self.registry is not None:
            found = self.registry.get(first)
            if found is not None:
                return found
        return dev

    def export_clock(self) -> dict[str, Any]:
        return {
            "circuits": {f"{k[0]}/{k[1]}": c.to_dict() for k, c in sorted(self._ccases.items())}
        }

    def import_clock(self, d: dict[str, Any]) -> None:
        for name, rec in (d.get("circuits") or {}).items():
            cabinet, _, circuit = name.partition("/")
            case = CaseRecord.from_dict(rec)
            if case is not None:
                self._ccases[(cabinet, circuit)] = case

    def _schedule_text(self, dev: Device) -> str:
        return self.rules.schedule_for(dev.district).describe()

    def _open(
        self, rule: str, severity: str, since: int, ev: dict[str, Any], dev: Device, ctx: Context,
        penalty: int, payer_type: str, extra: dict[str, Any], at: int | None = None,
    ) -> CaseRecord:  # fmt: skip
        """A case that began at ``since`` (its id), found at ``at`` (its first event)."""
        when = since if at is None else at
        rec = CaseRecord(
            case_id=f"{rule}:{dev.device_id}:{since}", rule=rule, opened_at=since,
            severity=severity, evidence=[ev], extra=extra,
        )  # fmt: skip
        ctx.out.append(rec.event(dev, when))
        if penalty:
            ctx.out.append(
                penalty_entry(dev, rec.case_id, "penalty", rule, payer_type, penalty, when, [ev])
            )
        return rec

    def next_due(self, st: LampState, dev: Device) -> int | None:
        dues = []
        if st.dark_since is not None and st.fault is None:
            dues.append(st.dark_since + self.rules.dark_for_ms)
        if st.lit_since is not None and st.burner is None:
            dues.append(st.lit_since + self.rules.lit_for_ms)
        return min(dues) if dues else None

    def on_clock(self, st: LampState, due: int, dev: Device, ctx: Context) -> None:
        self._timers(st, dev, due, ctx)

    def on_action(self, st: LampState, a: OfficerAction, dev: Device, ctx: Context) -> bool:
        """ack/close/note on the leakage case first (it is the dangerous one), else the fault."""
        if a.action not in COMMON_ACTIONS:
            return False
        for attr in ("leakage", "fault", "burner"):
            rec: CaseRecord | None = getattr(st, attr)
            if rec is not None and (a.case_id is None or a.case_id == rec.case_id):
                if rec.apply(a):
                    ctx.out.append(rec.event(dev, a.at, [action_evidence(a)]))
                    if not rec.is_open:
                        setattr(st, attr, None)
                return True
        return False

    def export(self, st: LampState) -> dict[str, Any]:
        return {
            "max_ts": st.max_ts,
            "fault": None if st.fault is None else st.fault.to_dict(),
            "leakage": None if st.leakage is None else st.leakage.to_dict(),
            "dark_since": st.dark_since,
            "dark_ev": st.dark_ev,
            "dark": st.dark,
            "lit_since": st.lit_since,
            "lit_ev": st.lit_ev,
            "burner": None if st.burner is None else st.burner.to_dict(),
        }

    def restore(self, dev: Device, d: dict[str, Any]) -> LampState:
        """A state exported by this or an earlier version (no timers: none running)."""
        return self._index(
            dev,
            LampState(
                max_ts=d["max_ts"],
                fault=CaseRecord.from_dict(d["fault"]),
                leakage=CaseRecord.from_dict(d["leakage"]),
                dark_since=d.get("dark_since"),
                dark_ev=d.get("dark_ev"),
                dark=bool(d.get("dark", False)),
                lit_since=d.get("lit_since"),
                lit_ev=d.get("lit_ev"),
                burner=CaseRecord.from_dict(d.get("burner")),
            ),
        )


def build(settings: StreetlightRules, clock: LocalClock, registry: Any) -> StreetlightRule:
    """The rule object the detector runs for one partition."""
    return StreetlightRule(settings, clock, registry)


def circuit_sizes(registry: Any) -> dict[tuple[str, str], int]:
    """Lamps per (cabinet, circuit) in the registry (empty when it cannot be iterated)."""
    sizes: dict[tuple[str, str], int] = {}
    try:
        devices = list(registry) if registry is not None else []
    except TypeError:
        return sizes
    for d in devices:
        cab, circ = getattr(d, "cabinet", None), getattr(d, "circuit", None)
        if getattr(d, "kind", None) == "streetlight" and cab and circ:
            sizes[(cab, circ)] = sizes.get((cab, circ), 0) + 1
    return sizes


class LightingMarks:
    """Per lamp reading, what the lighting rate (亮灯率) counts: ``should_lit`` (1 inside the
    lit window) and ``lit_when_should`` (1 when also lit), written beside the reading's
    telemetry (docs/rules.md "Lighting rate"). Lamps report on a fixed cadence, so the
    share of readings is the share of time."""

    def __init__(self, rules: StreetlightRules, clock: LocalClock) -> None:
        self.rules = rules
        self.sun = SunTable(clock)

    def marks(self, r: Reading, dev: Device | None) -> dict[str, float] | None:
        if r.kind != "streetlight" or dev is None:
            return None
        should = self.sun.should_be_lit(
            self.rules.schedule_for(dev.district), dev.lat, dev.lon, r.ts
        )
        cur, on = r.fields.get("current_a"), r.fields.get("on")
        if cur is not None:
            lit = (
                isinstance(cur, int | float)
                and cur >= self.rules.current_threshold_a
                and on is not False
            )
        else:
            lit = on is True
        return {
            "should_lit": 1.0 if should else 0.0,
            "lit_when_should": 1.0 if should and lit else 0.0,
        }
