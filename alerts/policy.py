"""Who may do what, as data the city edits (``paths.policy``; docs/officers.md, "The policy").

::

    actions:
      ack:            {roles: [duty, grid, district_supervisor, city_supervisor]}
      close:          {roles: [grid, district_supervisor, city_supervisor]}
      accident:       {roles: [district_supervisor, city_supervisor], four_eyes: true}
      ...
    backdate:
      tolerance: 5m          # an act up to this much before now is not backdated
      roles: [district_supervisor, city_supervisor]
    note:
      max_length: 500
    silences:                # muting pushes (docs/alerts.md, "Silences and inhibition")
      roles: [district_supervisor, city_supervisor]
      max_duration: 7d

Every rule is also scoped: an officer acts only on cases of the districts the
directory gives them (a city-wide role: everywhere). ``decide`` answers in one
line, in the words an officer understands, and never changes anything itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from contract.cases import ACTIONS
from contract.officers import OFFICER_ROLES, ROLE_NAMES
from foundation.cityfile import Section, did_you_mean, format_duration_ms, read_yaml
from registry.officers import Officer

__all__ = ["Decision", "Policy", "Rule", "default_policy", "load_policy"]

SUPERVISORS = ("district_supervisor", "city_supervisor")
SILENCE_ACTS = ("silence_add", "silence_expire")
"""Acts on the pushes rather than on a case (the gate's ``push_act``); audited under these names."""


@dataclass(frozen=True)
class Rule:
    roles: tuple[str, ...]
    four_eyes: bool = False


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    """One line: why refused, or what happens (e.g. "booked when a second officer confirms")."""
    role: str = ""
    """The role the officer acts in (the first of theirs the rule allows)."""
    backdated: bool = False


@dataclass(frozen=True)
class Policy:
    actions: dict[str, Rule]
    backdate_tolerance_ms: int = 5 * 60_000
    backdate_roles: tuple[str, ...] = SUPERVISORS
    note_max_length: int = 500
    source: str = "<default policy>"
    silence_roles: tuple[str, ...] = SUPERVISORS
    """Who may add and expire silences: a silence hides cases from every level of the
    escalation, the supervisors above whoever sets it included, so it takes a supervisor."""
    silence_max_ms: int = 7 * 24 * 3_600_000
    """The longest silence: a forgotten one would hide a district's cases for good."""

    def decide_silence(self, officer: Officer, act: str, scope: tuple[str, ...] | None,
                       duration_ms: int | None = None) -> Decision:  # fmt: skip
        """May ``officer`` add (or expire) a silence confined to the districts ``scope``
        (None: it may match cases anywhere, which only a city-wide officer may silence)?"""
        if act not in SILENCE_ACTS:
            return Decision(False, f"'{act}' is not an act on silences ({', '.join(SILENCE_ACTS)})")
        role = next((r for r in officer.roles if r in self.silence_roles), None)
        if role is None:
            allowed = ", ".join(ROLE_NAMES[r][1] for r in self.silence_roles)
            return Decision(
                False, f"{officer.officer_id} may not silence pushes: that needs {allowed}"
            )
        if scope is None and not officer.city_wide:
            return Decision(False, (
                f"{officer.officer_id} acts in {', '.join(officer.districts) or 'no district'} only: "
                "confine the silence with district=<one of theirs> (or device=<a device there>)"))  # fmt: skip
        outside = [d for d in scope or () if not officer.covers(d)]
        if outside:
            return Decision(False, f"{officer.officer_id} does not act in district {', '.join(outside)} "
                                   f"(theirs: {', '.join(officer.districts) or 'none'})")  # fmt: skip
        if act == "silence_add" and duration_ms is not None and duration_ms > self.silence_max_ms:
            return Decision(False, (
                f"a silence lasts at most {format_duration_ms(self.silence_max_ms)} (policy "
                f"silences.max_duration); this one would last {format_duration_ms(duration_ms)}"))  # fmt: skip
        return Decision(True, "recorded", role)

    def decide(
        self,
        officer: Officer,
        action: str,
        district: str | None,
        *,
        acted_at: int,
        now: int,
        note: str | None = None,
        reason: str | None = None,
    ) -> Decision:
        rule = self.actions.get(action)
        if rule is None:
            return Decision(False, f"'{action}' is not an action officers may take here")
        role = next((r for r in officer.roles if r in rule.roles), None)
        if role is None:
            allowed = ", ".join(ROLE_NAMES[r][1] for r in rule.roles)
            return Decision(False, f"{officer.officer_id} may not {action}: that needs {allowed}")
        if district is not None and not officer.covers(district):
            return Decision(
                False, f"{officer.officer_id} does not act in district {district} "
                f"(theirs: {', '.join(officer.districts) or 'none'})",
            )  # fmt: skip
        if action == "note" or note is not None:
            if not isinstance(note, str) or not note.strip():
                if action == "note":
                    return Decision(False, "a note needs text")
            elif len(note) > self.note_max_length:
                return Decision(False, f"a note is at most {self.note_max_length} characters")
        if acted_at > now + 60_000:
            return Decision(False, "an act cannot be dated in the future")
        backdated = acted_at < now - self.backdate_tolerance_ms
        if backdated:
            if not any(r in self.backdate_roles for r in officer.roles):
                return Decision(
                    False,
                    f"{officer.officer_id} may not backdate an act; that needs "
                    + ", ".join(ROLE_NAMES[r][1] for r in self.backdate_roles),
                )
            if not reason or not reason.strip():
                return Decision(False, "a backdated act needs a reason (--reason)")
        what = "recorded"
        if rule.four_eyes:
            what = "recorded; booked when a second, different officer confirms it (four eyes)"
        if backdated:
            what += (
                f"; backdated by {(now - acted_at) // 60_000} min, shown as such in the evidence"
            )
        return Decision(True, what, role, backdated)


def default_policy() -> Policy:
    """The policy when the city has no file: as docs/officers.md prints it."""
    working = ("duty", "grid", *SUPERVISORS)
    return Policy(
        {
            "ack": Rule(working),
            "note": Rule(working),
            "close": Rule(("grid", *SUPERVISORS)),
            "accident": Rule(SUPERVISORS, four_eyes=True),
            "confirm_repair": Rule(SUPERVISORS),
            "reject_repair": Rule(SUPERVISORS),
            "announce_works": Rule(("grid", *SUPERVISORS)),
            # the workflow (docs/rules.md "The case workflow"): the command center dispatches,
            # the grid officer relays the unit's report and checks it, a supervisor extends
            "dispatch": Rule(("duty", *SUPERVISORS)),
            "feedback": Rule(("grid", *SUPERVISORS)),
            "check": Rule(("grid", *SUPERVISORS)),
            "extend": Rule(SUPERVISORS),
        }
    )


def _roles(sec: Section, key: str) -> tuple[str, ...]:
    out = []
    for node in sec.nodes(key):
        value = sec.doc.scalar(node)
        if value not in OFFICER_ROLES:
            sec.doc.fail(
                node,
                f"{sec.key_path(key)}: unknown role {value!r}; roles: {', '.join(OFFICER_ROLES)}"
                + did_you_mean(value, OFFICER_ROLES),
            )
        out.append(str(value))
    if not out:
        sec.doc.fail(sec.node, f"{sec.key_path(key)}: list at least one role")
    return tuple(dict.fromkeys(out))


def load_policy(path: str | os.PathLike[str] | None) -> Policy:
    """The city's policy file, or the default when ``path`` is None or empty."""
    if not path:
        return default_policy()
    doc = read_yaml(path, "policy file")
    root = doc.section()
    base = default_policy()
    actions = dict(base.actions)
    sec = root.sub("actions")
    if sec is not None:
        for name in sec.keys():
            if name not in ACTIONS:
                doc.fail(sec.key_node(name), f"actions.{name}: unknown action; actions: "
                                             f"{', '.join(ACTIONS)}{did_you_mean(name, ACTIONS)}")  # fmt: skip
            one = sec.sub(name)
            assert one is not None
            actions[name] = Rule(_roles(one, "roles"), one.flag("four_eyes", actions[name].four_eyes
                                                                  if name in actions else False))  # fmt: skip
            one.finish()
        sec.finish()
    tolerance, roles = base.backdate_tolerance_ms, base.backdate_roles
    back = root.sub("backdate")
    if back is not None:
        tolerance = back.duration_ms("tolerance", tolerance, zero_ok=True) or 0
        if back.get("roles") is not None:
            roles = _roles(back, "roles")
        back.finish()
    max_len = base.note_max_length
    note = root.sub("note")
    if note is not None:
        max_len = note.whole("max_length", max_len, minimum=1)
        note.finish()
    silence_roles, silence_max = base.silence_roles, base.silence_max_ms
    sil = root.sub("silences")
    if sil is not None:
        if sil.get("roles") is not None:
            silence_roles = _roles(sil, "roles")
        silence_max = sil.duration_ms("max_duration", silence_max) or silence_max
        sil.finish()
    root.finish()
    return Policy(actions, tolerance, roles, max_len, str(path), silence_roles, silence_max)
