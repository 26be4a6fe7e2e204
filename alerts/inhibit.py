"""Inhibition: an open case that explains others mutes their pushes (Alertmanager's ``inhibit_rules``).

A rule of the routing file (docs/alerts.md, "Silences and inhibition")::

    inhibit_rules:
      - name: circuit explains its lamps
        source_matchers: ['rule="streetlight.circuit"']
        target_matchers: ['rule="streetlight.fault"']
        equal: [cabinet, circuit]

mutes a notice about a case that matches ``target_matchers`` while another
case that matches ``source_matchers`` is *firing* (not repaired or closed) and
has the same values of the ``equal`` labels (an absent label equals an absent
label, as in Alertmanager). As in Alertmanager, when a case matches both
sides of a rule, only a source that does not also match the target side can
mute it, so two cases of one kind never mute each other; nor does a case mute
itself.

Like a silence it touches pushes only: the muted case, its escalation and the
ledger go on as ever, and each muted notice is recorded (``status:
inhibited`` on ``<prefix>.alerts``, naming the source case).

The firing sources are indexed per rule by their equal labels, so deciding a
notice costs a dictionary lookup per rule, not a scan of the open cases.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from alerts.matchers import LabelMatcher, matches_all

__all__ = ["InhibitRule", "Inhibitor"]


@dataclass(frozen=True)
class InhibitRule:
    source: tuple[LabelMatcher, ...]
    target: tuple[LabelMatcher, ...]
    equal: tuple[str, ...]
    name: str = ""
    line: int = 0

    def equal_key(self, labels: Mapping[str, str]) -> tuple[str, ...]:
        return tuple(labels.get(label) or "" for label in self.equal)

    @property
    def title(self) -> str:
        """How a record names the rule: its ``name``, else its source and target matchers."""
        if self.name:
            return self.name
        return (f"{', '.join(map(str, self.source))} -> {', '.join(map(str, self.target))}"
                + (f" equal {', '.join(self.equal)}" if self.equal else ""))  # fmt: skip


class Inhibitor:
    """Which firing cases can mute which, per rule."""

    def __init__(self, rules: list[InhibitRule]) -> None:
        self.rules = list(rules)
        self._index: list[dict[tuple[str, ...], set[str]]] = [{} for _ in self.rules]
        self._labels: dict[str, dict[str, str]] = {}
        self._keys: dict[str, list[tuple[int, tuple[str, ...]]]] = {}

    def update(self, case_id: str, labels: Mapping[str, str], firing: bool) -> None:
        """A case's latest labels and whether it is firing (open); call on every change."""
        for i, key in self._keys.pop(case_id, ()):
            bucket = self._index[i].get(key)
            if bucket is not None:
                bucket.discard(case_id)
                if not bucket:
                    del self._index[i][key]
        self._labels.pop(case_id, None)
        if not firing:
            return
        keys = []
        for i, rule in enumerate(self.rules):
            if matches_all(rule.source, labels):
                key = rule.equal_key(labels)
                self._index[i].setdefault(key, set()).add(case_id)
                keys.append((i, key))
        if keys:
            self._keys[case_id] = keys
            self._labels[case_id] = dict(labels)

    def firing(self, case_id: str) -> bool:
        """The case is a firing source of some rule (it may be muting others)."""
        return case_id in self._keys

    def muted_by(self, case_id: str, labels: Mapping[str, str]) -> tuple[InhibitRule, str] | None:
        """(rule, source case id) of the first rule whose firing source mutes this case, or None."""
        for i, rule in enumerate(self.rules):
            if not matches_all(rule.target, labels):
                continue
            two_sided = matches_all(rule.source, labels)
            for source in sorted(self._index[i].get(rule.equal_key(labels), ())):
                if source == case_id:
                    continue
                if two_sided and matches_all(rule.target, self._labels[source]):
                    continue
                return rule, source
        return None
