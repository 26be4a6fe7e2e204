"""Construction-site dust: rolling PM10 mean, warning and violation cases.

Rules-file section ``rules.dust`` (docs/rules.md#dust). docs/rules.md:

* The judged value is the mean PM10 of the site's readings with event time in
  ``(t - window, t]``, evaluated at every new reading (``t`` = its ts).
  PM10 is kept in integer milli-µg/m³, so sums are exact, restoring a state
  gives bit-identical means, and "mean above level" is an integer comparison.
* Two bands with the same hysteresis: ``dust.warning`` (above the warning
  level; a notice case for the site and its grid officer, no money) and
  ``dust`` (above the violation level: opens ONE case and books
  ``<case_id>:dust`` = 100,000 against the district government at the
  reading's event time). A case closes once the mean has stayed at or below
  its level for ``recovery`` (judged on readings, or on the watermark when the
  site goes quiet); going back above during recovery only restarts the
  recovery (no new case). An exceedance after the close is a new case.
* Per-site levels: the registry's ``pm10_warning`` / ``pm10_violation``
  override the rules file's absolute levels.
* ``mode: background``: the judged value is site mean minus the district's
  ambient = the plain mean of the current rolling means of the *other* dust
  sites of the same district that have a reading in the last window, iterated
  in device-id order. Without enough such sites (``background.min_sites``)
  the site is judged on its absolute levels -- except during the first window
  after this detector first judged the district, when the registry says the
  peers exist: they may just not have reported yet, and judging absolutely
  would fine the first site to report in a city-wide storm, so the reading is
  not judged. Needs all of a district's dust sites in one detector (see the
  partitioning note in docs/rules.md); otherwise it degrades to absolute.
* Late readings (older than the newest but inside the current window) join the
  window and the site is re-judged at its newest event time; older ones
  cannot change the current mean and are ignored. A reading with an event
  time already in the window is a redelivery and changes nothing.
* Flatline (suspected tampering): ``flatline_readings`` identical PM10 values
  in a row (in event order) open a ``dust.flatline`` case, repaired by the
  first different value.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from contract import rules as rule_ids
from contract.cases import COMMON_ACTIONS, PAYER_TYPES, OfficerAction
from contract.clock import MINUTE_MS, NEVER, LocalClock
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

RULE = rule_ids.DUST
WARNING_RULE = rule_ids.DUST_WARNING
FLATLINE_RULE = rule_ids.DUST_FLATLINE

# --------------------------------------------------------------------------- the plugin (docs/extending.md)

SECTION = "dust"
"""This kind's key under ``rules:`` in the rules file (docs/rules.md)."""
KIND = "dust"
"""The device kind it judges (``"*"``: every device)."""
RULE_IDS = (rule_ids.DUST, rule_ids.DUST_WARNING, rule_ids.DUST_FLATLINE)
"""The rule ids its cases and ledger entries carry (contract.rules)."""


@dataclass(frozen=True, slots=True)
class DustRules:
    """docs/rules.md "Dust"."""

    window_ms: int = 60 * MINUTE_MS
    warning: float = 150.0
    violation: float = 200.0
    recovery_ms: int = 60 * MINUTE_MS
    penalty_yuan: int = 100_000
    payer_type: str = "district_government"
    mode: str = "background"
    """``background`` (the default): a site is in violation when its mean is above the
    level *and* above the district's ambient by the margin; ``absolute``: the level alone."""
    background_violation: float = 80.0
    background_warning: float | None = 50.0
    background_min_sites: int = 1
    """Other sites of the district with a current mean needed to judge against ambient;
    with fewer, the site is judged on the absolute levels."""
    flatline_readings: int = 30
    """This many identical PM10 readings in a row flag suspected tampering; 0 = off."""


Settings = DustRules


def parse(m: Section) -> DustRules:
    """This kind's section of the rules file (docs/rules.md); every key optional."""
    d = DustRules()
    doc = m.doc
    warning = m.number("warning", d.warning)
    violation = m.number("violation", d.violation)
    if warning > violation:
        doc.fail(m.get("warning") or m.node,
                  f"rules.dust.warning: the warning level ({warning:g}) must not be above "
                  f"the violation level ({violation:g})")  # fmt: skip
    bg_v, bg_w, bg_min = d.background_violation, d.background_warning, d.background_min_sites
    bg = m.sub("background")
    if bg is not None:
        bg_v = bg.number("violation", bg_v)
        bg_w_node = bg.get("warning")
        if bg_w_node is not None:
            bg_w = doc.number(bg_w_node, bg.key_path("warning"))
        elif "warning" in bg.items:  # explicitly null: no warnings in background mode
            bg_w = None
        bg_min = bg.whole("min_sites", bg_min, minimum=1)
        bg.finish()
    out = DustRules(
        window_ms=round(m.number("window_minutes", d.window_ms / MINUTE_MS) * MINUTE_MS),
        warning=warning,
        violation=violation,
        recovery_ms=round(m.number("recovery_minutes", d.recovery_ms / MINUTE_MS) * MINUTE_MS),
        penalty_yuan=m.yuan("penalty_yuan", d.penalty_yuan),
        payer_type=m.choice("payer_type", d.payer_type, PAYER_TYPES),
        mode=m.choice("mode", d.mode, ("absolute", "background")),
        background_violation=bg_v,
        background_warning=bg_w,
        background_min_sites=bg_min,
        flatline_readings=m.whole("flatline_readings", d.flatline_readings),
    )
    m.finish()
    return out


@dataclass(slots=True)
class Band:
    """One hysteresis band (warning or violation) of one site."""

    rec: CaseRecord | None = None
    """The current case of this band, if open."""
    below_since: int | None = None
    """Event time the mean first went back to or below the level (recovering)."""
    closed_at: int = NEVER
    """When the band's last case ended (a new case cannot start before it)."""

    def to_dict(self) -> dict[str, Any]:
        return {"rec": None if self.rec is None else self.rec.to_dict(),
                "below_since": self.below_since, "closed_at": self.closed_at}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Band:
        return cls(CaseRecord.from_dict(d["rec"]), d["below_since"], d["closed_at"])


@dataclass(slots=True)
class DustState:
    district: str
    window: deque[tuple[int, int]] = field(default_factory=deque)
    """(ts, pm10 in milli-µg/m³), sorted by ts, ts in (max_ts - window, max_ts]."""
    total: int = 0
    mean: float = 0.0
    """total / len(window) in milli-µg/m³ (cached: background mode reads every peer's)."""
    max_ts: int = NEVER
    violation: Band = field(default_factory=Band)
    warning: Band = field(default_factory=Band)
    flat_value: int | None = None
    flat_count: int = 0
    flat: CaseRecord | None = None
    reference: bool = False
    """A reference station (registry ``role: reference``): its mean is the ambient; never judged."""


class DustRule:
    """Dispatch target of the detector for ``dust`` devices. Holds the
    district index used by background mode (derived from the states)."""

    kind = "dust"

    def __init__(self, rules: DustRules, district_sites: dict[str, int] | None = None) -> None:
        """district_sites: dust sites per district in the registry (background mode
        uses it to tell a lone site, judged on absolute levels, from a site whose
        peers have just not reported yet, which is not judged until they have)."""
        self.rules = rules
        self.district_sites = district_sites or {}
        self.window_ms = rules.window_ms
        self.recovery_ms = rules.recovery_ms
        self.background = rules.mode == "background"
        self._levels: dict[str, tuple[int, int]] = {}
        self.started: dict[str, int] = {}
        """Background mode: event time of this detector's first judgement per district
        (partition-level state, exported with the clock)."""
        self._sites: dict[str, dict[str, DustState]] = {}
        self._order: dict[str, list[str]] = {}
        """Per district, the site ids in id order: the ambient sums their means in this
        order, so it is the same float whatever order the sites were first seen in."""
        self._ordered: dict[str, list[DustState]] = {}
        """Per district, the sites' states in ``_order``'s order, kept in step with it: the
        ambient (every reading of background mode) walks it without a lookup per site."""

    def _register(self, dev: Device, st: DustState) -> DustState:
        """Index a site under its district, keeping ``_order`` and ``_ordered`` in step by
        insertion: a district's first readings, and a registry reload's ``follow`` of every
        site, cost O(n) each in memmove, not a list rebuilt per site (issue 15)."""
        old = self._sites.get(st.district)
        if old is not None and st.district != dev.district and dev.device_id in old:
            del old[dev.device_id]  # the site moved district in a reloaded registry
            order, ordered = self._order[st.district], self._ordered[st.district]
            i = bisect_left(order, dev.device_id)
            del order[i], ordered[i]
        st.district = dev.district
        st.reference = dev.role == "reference"
        sites = self._sites.setdefault(dev.district, {})
        order = self._order.setdefault(dev.district, [])
        ordered = self._ordered.setdefault(dev.district, [])
        i = bisect_left(order, dev.device_id)
        if dev.device_id in sites:
            ordered[i] = st
        else:
            order.insert(i, dev.device_id)
            ordered.insert(i, st)
        sites[dev.device_id] = st
        return st

    def set_registry(self, district_sites: dict[str, int]) -> None:
        """Forget cached per-site levels and district sizes (the registry was reloaded)."""
        self.district_sites = district_sites
        self._levels.clear()

    def on_registry(self, registry: Any) -> None:
        """The detector's hook for a reloaded registry."""
        self.set_registry(district_sites(registry))

    def export_clock(self) -> dict[str, Any]:
        """Partition-level state: when background-mode judging started per district."""
        return {"dust_started": dict(self.started)}

    def import_clock(self, d: dict[str, Any]) -> None:
        for district, t in (d.get("dust_started") or {}).items():
            if district not in self.started or t < self.started[district]:
                self.started[district] = int(t)

    def follow(self, dev: Device, st: DustState) -> None:
        """Re-index a site after a registry reload (its district may have changed)."""
        self._register(dev, st)

    def new_state(self, dev: Device) -> DustState:
        return self._register(dev, DustState(district=dev.district))

    def _levels_for(self, dev: Device) -> tuple[int, int]:
        """(warning, violation) in milli-µg/m³, the registry's per-site overrides first."""
        lv = self._levels.get(dev.device_id)
        if lv is None:
            w = dev.pm10_warning if dev.pm10_warning is not None else self.rules.warning
            v = dev.pm10_violation if dev.pm10_violation is not None else self.rules.violation
            lv = self._levels[dev.device_id] = (round(w * 1000), round(v * 1000))
        return lv

    # ------------------------------------------------------------------ readings

    def on_reading(self, st: DustState, r: Reading, dev: Device, ctx: Context) -> bool:
        pm10 = r.fields.get("pm10")
        if pm10 is None:
            return False
        v = round(pm10 * 1000)
        ts = r.ts
        win = st.window
        if ts > st.max_ts:
            self._recover_until(st, ts, dev, ctx)
            st.max_ts = ts
            win.append((ts, v))
            total = st.total + v
            lo = ts - self.window_ms
            while win[0][0] <= lo:
                total -= win.popleft()[1]
            st.total = total
            st.mean = total / len(win)
            if st.reference:
                return True  # the ambient's source: it judges no site and is not judged
            n = self.rules.flatline_readings
            if n:
                if v == st.flat_value:
                    st.flat_count += 1
                    if st.flat_count == n and st.flat is None:
                        self._open_flatline(st, r, dev, ctx)
                else:
                    st.flat_value, st.flat_count = v, 1
                    if st.flat is not None:
                        st.flat.end("repaired", ts, "reading")
                        ctx.out.append(st.flat.event(dev, ts, [reading_evidence(r)]))
                        st.flat = None
            self._judge(st, ts, r, dev, ctx)
            return True
        if ts <= st.max_ts - self.window_ms:
            return False  # too old to change the current mean
        for t, _ in win:
            if t == ts:
                return False  # redelivery
        items = list(win)
        insort(items, (ts, v))
        st.window = deque(items)
        st.total += v
        st.mean = st.total / len(st.window)
        if st.reference:
            return True
        self._judge(st, st.max_ts, r, dev, ctx)
        return True

    def _judge(self, st: DustState, t: int, r: Reading, dev: Device, ctx: Context) -> None:
        n = len(st.window)
        total = st.total
        if self.background:
            first = self.started.get(st.district)
            if first is None:
                first = self.started[st.district] = t
            amb = self._ambient(st, t)
            if (
                amb is None
                and t < first + self.window_ms
                and self.district_sites.get(dev.district, 1) - 1 >= self.rules.background_min_sites
            ):
                return  # start-up: the district's other sites may not have reported yet
            if amb is not None:
                excess = total / n / 1000 - amb
                bw = self.rules.background_warning
                w, v = self._levels_for(dev)  # the absolute levels stay a floor
                self._step(
                    st.violation,
                    RULE,
                    total > v * n and excess > self.rules.background_violation,
                    t,
                    r,
                    dev,
                    ctx,
                    amb,
                    st,
                )
                self._step(
                    st.warning,
                    WARNING_RULE,
                    bw is not None and total > w * n and excess > bw,
                    t,
                    r,
                    dev,
                    ctx,
                    amb,
                    st,
                )
                return
        w, v = self._levels_for(dev)
        self._step(st.violation, RULE, total > v * n, t, r, dev, ctx, None, st)
        self._step(st.warning, WARNING_RULE, total > w * n, t, r, dev, ctx, None, st)

    def _ambient(self, st: DustState, t: int) -> float | None:
        """The district's ambient PM10 at ``t``: the mean of its reference stations that
        reported in the last window, if it has any; else the plain mean of the other
        sites' current means (None with fewer than ``background.min_sites`` of them)."""
        lo = t - self.window_ms
        ref_s, ref_k, s, k = 0.0, 0, 0.0, 0
        for ps in self._ordered.get(st.district, ()):
            if ps.max_ts <= lo or ps is st:
                continue
            if ps.reference:
                ref_s += ps.mean
                ref_k += 1
            else:
                s += ps.mean
                k += 1
        if ref_k:
            return ref_s / ref_k / 1000
        if k < self.rules.background_min_sites:
            return None
        return s / k / 1000

    def _step(
        self, band: Band, rule: str, above: bool, t: int, r: Reading, dev: Device,
        ctx: Context, ambient: float | None, st: DustState,
    ) -> None:  # fmt: skip
        rec = band.rec
        if rec is not None:
            if above:
                band.below_since = None
            elif band.below_since is None:
                band.below_since = t
            return
        if not above or t <= band.closed_at:  # strictly after: ids are <rule>:<device>:<t>
            return
        ev = reading_evidence(r)
        rec = CaseRecord(
            case_id=f"{rule}:{dev.device_id}:{t}",
            rule=rule,
            opened_at=t,
            severity="major" if rule == RULE else "warning",
            evidence=[ev],
            extra=self._detail(dev, rule, ambient, st),
        )
        band.rec = rec
        band.below_since = None
        ctx.out.append(rec.event(dev, t))
        if rule == RULE and self.rules.penalty_yuan:
            ctx.out.append(penalty_entry(dev, rec.case_id, "dust", RULE, self.rules.payer_type,
                                         self.rules.penalty_yuan, t, [ev]))  # fmt: skip

    def _detail(
        self, dev: Device, rule: str, ambient: float | None, st: DustState
    ) -> dict[str, Any]:
        """What the opening judged: mean, window, level (and ambient in background mode)."""
        w, v = self._levels_for(dev)
        d: dict[str, Any] = {
            "mean_pm10": round(st.total / len(st.window) / 1000, 3),
            "readings_in_window": len(st.window),
            "window_minutes": self.window_ms / 60_000,
        }
        if ambient is not None:
            d["mode"] = "background"
            d["ambient_pm10"] = round(ambient, 3)
            d["level"] = (
                self.rules.background_violation if rule == RULE else self.rules.background_warning
            )
        else:
            d["mode"] = "absolute"
            d["level"] = (v if rule == RULE else w) / 1000
        return d

    def _open_flatline(self, st: DustState, r: Reading, dev: Device, ctx: Context) -> None:
        rec = CaseRecord(
            case_id=f"{FLATLINE_RULE}:{dev.device_id}:{r.ts}",
            rule=FLATLINE_RULE,
            opened_at=r.ts,
            severity="major",
            evidence=[reading_evidence(r)],
            extra={"suspected_tampering": True, "reason": "flatline",
                   "identical_readings": st.flat_count, "pm10": st.flat_value / 1000},  # type: ignore[operator]
        )  # fmt: skip
        st.flat = rec
        ctx.out.append(rec.event(dev, r.ts))

    # ------------------------------------------------------------------ clock

    def _recover_until(self, st: DustState, t: int, dev: Device, ctx: Context) -> None:
        """Close every band whose recovery period ended at or before ``t``."""
        for band in (st.violation, st.warning):
            b = band.below_since
            if band.rec is not None and b is not None and b + self.recovery_ms <= t:
                self._close(band, b + self.recovery_ms, dev, ctx)

    def _close(self, band: Band, at: int, dev: Device, ctx: Context) -> None:
        rec = band.rec
        assert rec is not None
        rec.end("closed", at, "recovery")
        band.rec, band.below_since, band.closed_at = None, None, at
        ctx.out.append(rec.event(dev, at, [clock_evidence(at)]))

    def next_due(self, st: DustState, dev: Device) -> int | None:
        due = None
        for band in (st.violation, st.warning):
            b = band.below_since
            if band.rec is not None and b is not None:
                t = b + self.recovery_ms
                if due is None or t < due:
                    due = t
        return due

    def on_clock(self, st: DustState, due: int, dev: Device, ctx: Context) -> None:
        self._recover_until(st, due, dev, ctx)

    # ------------------------------------------------------------------ officer actions

    def on_action(self, st: DustState, a: OfficerAction, dev: Device, ctx: Context) -> bool:
        """ack/close/note on the violation case, else the flatline case, else the warning."""
        if a.action not in COMMON_ACTIONS:
            return False
        bands = {"v": st.violation, "w": st.warning}
        targets: list[tuple[str, CaseRecord]] = []
        for key, rec in (("v", st.violation.rec), ("f", st.flat), ("w", st.warning.rec)):
            if rec is not None and (a.case_id is None or a.case_id == rec.case_id):
                targets.append((key, rec))
        if not targets:
            return False
        key, rec = targets[0]
        if rec.apply(a):
            ctx.out.append(rec.event(dev, a.at, [action_evidence(a)]))
            if not rec.is_open:  # an officer closed it
                if key == "f":
                    st.flat = None
                else:
                    band = bands[key]
                    band.rec, band.below_since, band.closed_at = None, None, rec.closed_at or a.at
        return True

    # ------------------------------------------------------------------ export / import

    def export(self, st: DustState) -> dict[str, Any]:
        return {
            "district": st.district,
            "window": list(map(list, st.window)),
            "max_ts": st.max_ts,
            "violation": st.violation.to_dict(),
            "warning": st.warning.to_dict(),
            "flat_value": st.flat_value,
            "flat_count": st.flat_count,
            "flat": None if st.flat is None else st.flat.to_dict(),
        }

    def restore(self, dev: Device, d: dict[str, Any]) -> DustState:
        window = deque((t, v) for t, v in d["window"])
        st = DustState(
            district=d["district"],
            window=window,
            total=sum(v for _, v in window),
            mean=sum(v for _, v in window) / len(window) if window else 0.0,
            max_ts=d["max_ts"],
            violation=Band.from_dict(d["violation"]),
            warning=Band.from_dict(d["warning"]),
            flat_value=d["flat_value"],
            flat_count=d["flat_count"],
            flat=CaseRecord.from_dict(d["flat"]),
        )
        return self._register(dev, st)


def build(settings: DustRules, clock: LocalClock, registry: Any) -> DustRule:
    """The rule object the detector runs for one partition."""
    return DustRule(settings, district_sites(registry))


def district_sites(registry: Any) -> dict[str, int]:
    """Dust sites per district, if the registry can be iterated (else {})."""
    counts: dict[str, int] = {}
    try:
        devices = list(registry)
    except TypeError:
        return counts
    for d in devices:
        if getattr(d, "kind", None) == "dust" and getattr(d, "role", "") != "reference":
            counts[d.district] = counts.get(d.district, 0) + 1
    return counts
