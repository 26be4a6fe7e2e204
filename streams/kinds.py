"""The rule kinds, registered once: one line per kind (docs/extending.md).

A rule kind is one module of ``streams/`` that declares its rules-file
section (``SECTION``, ``Settings``, ``parse``), the device kind it judges
(``KIND``, ``"*"`` for every device, or a tuple of kinds), the rule ids it emits (``RULE_IDS``,
named in ``contract.rules``) and ``build``, which makes the object the
detector runs. Adding a kind touches its module, this table, its section of
docs/rules.md and its test -- nothing else.
"""

from __future__ import annotations

from types import ModuleType

from streams import (
    battery,
    dust,
    illegal,
    manhole,
    muck,
    noise,
    offline,
    overload,
    streetlight,
    water,
)

RULE_KINDS: dict[str, ModuleType] = {
    m.SECTION: m
    for m in (manhole, dust, streetlight, offline, battery, water, noise, muck, overload, illegal)
}
"""Section name -> rule-kind module, in the order the rules file documents them."""
