"""Label matchers, as Alertmanager writes them: ``name=value``, ``name!=value``, ``name=~regex``, ``name!~regex``.

Silences (``alerts/silence.py``) and inhibition rules (``inhibit_rules`` in the
routing file, ``alerts/inhibit.py``) say which cases they mute with these, so an
officer who knows Alertmanager's ``amtool silence add`` writes the same thing
here (docs/alerts.md, "Silences and inhibition")::

    district=jinshui  rule="streetlight.fault"  severity=~"minor|warning"  device!~"SL-JS-00.."

* The value may be quoted (``"..."``, with ``\\"`` and ``\\\\`` inside) or bare.
* A regular expression must match the *whole* value (Alertmanager anchors it
  as ``^(?:...)$``); an absent label is the empty string.
* The label is one of ``MUTE_LABELS``: a case's routing labels plus the
  lamp's ``cabinet`` and ``circuit`` (from the registry; a circuit case's own
  detail), so a cabinet under repair can be silenced as one.

A matcher that cannot be read is a ``MatcherError`` saying what is wrong in
the officer's words, never half a silence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from foundation.cityfile import did_you_mean

__all__ = [
    "MUTE_LABELS",
    "OPS",
    "LabelMatcher",
    "MatcherError",
    "matches_all",
    "parse_matcher",
]

MUTE_LABELS = (
    "kind", "rule", "severity", "district", "grid", "unit", "device", "case_id", "cabinet", "circuit",
)  # fmt: skip
"""What a silence or an inhibition rule can match on (docs/alerts.md, "Silences and inhibition")."""

OPS = ("=", "!=", "=~", "!~")

VALUE_MAX = 200
"""A matcher's value is at most this many characters (it is shown in lists, pushes and the audit)."""

_FORM = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class MatcherError(ValueError):
    """A matcher that cannot be read; the message says what is wrong and how to write it."""


@dataclass(frozen=True)
class LabelMatcher:
    name: str
    op: str
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise MatcherError(f"unknown operator {self.op!r}; use one of {' '.join(OPS)}")
        if self.op in ("=~", "!~") and self._regex is None:
            try:
                object.__setattr__(self, "_regex", re.compile(self.value))
            except re.error as exc:
                raise MatcherError(
                    f"{self.name}{self.op}{self.value!r}: not a regular expression ({exc})"
                ) from None

    def matches(self, labels: Mapping[str, str]) -> bool:
        v = labels.get(self.name) or ""
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        assert self._regex is not None
        hit = self._regex.fullmatch(v) is not None
        return hit if self.op == "=~" else not hit

    @property
    def matches_empty(self) -> bool:
        """Matches a case without this label: a silence made only of such would mute everything."""
        return self.matches({})

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "op": self.op, "value": self.value}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], labels: Iterable[str] = MUTE_LABELS) -> LabelMatcher:
        """A matcher as ``to_dict`` wrote it, checked as ``parse_matcher`` checks one."""
        name, op, value = d.get("name"), d.get("op"), d.get("value")
        if not isinstance(name, str) or not isinstance(op, str) or not isinstance(value, str):
            raise MatcherError(f"a matcher needs text name, op and value, got {dict(d)!r}")
        return _checked(name, op, value, tuple(labels))


def _checked(name: str, op: str, value: str, labels: tuple[str, ...]) -> LabelMatcher:
    if name not in labels:
        hint = did_you_mean(name, labels) or f"; labels: {', '.join(labels)}"
        raise MatcherError(f"unknown label {name!r}{hint}")
    if len(value) > VALUE_MAX:
        raise MatcherError(
            f"{name}{op}...: the value is {len(value)} characters; at most {VALUE_MAX}"
        )
    if _CONTROL.search(value):
        raise MatcherError(f"{name}{op}...: control characters (line breaks, tabs) are not allowed")
    return LabelMatcher(name, op, value)


def _unquote(raw: str, text: str) -> str:
    if not raw.startswith('"'):
        if '"' in raw:
            raise MatcherError(
                f'{text!r}: a value with a double quote must be quoted and the quote escaped (\\")'
            )
        return raw
    if len(raw) < 2 or not raw.endswith('"'):
        raise MatcherError(f"{text!r}: the quoted value has no closing double quote")
    out, escaped = [], False
    for ch in raw[1:-1]:
        if escaped:
            out.append(ch if ch in '"\\' else "\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            raise MatcherError(
                f'{text!r}: a double quote inside a quoted value needs a backslash (\\")'
            )
        else:
            out.append(ch)
    if escaped:
        out.append("\\")
    return "".join(out)


def parse_matcher(text: str, labels: Iterable[str] = MUTE_LABELS) -> LabelMatcher:
    """One matcher from its text form (module doc); ``MatcherError`` naming the mistake."""
    m = _FORM.match(text)
    if m is None:
        raise MatcherError(
            f"{text!r}: expected label, operator and value, e.g. district=jinshui, "
            'rule="streetlight.fault" or severity=~"minor|warning" (operators: = != =~ !~)'
        )
    name, op, raw = m.groups()
    return _checked(name, op, _unquote(raw, text), tuple(labels))


def matches_all(matchers: Iterable[LabelMatcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)
