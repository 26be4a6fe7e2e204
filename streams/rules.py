"""The rules file: every amount, threshold, grace period and payer as data.

A city edits ``config/rules.yaml`` without touching Python (docs/rules.md). This
module turns it into a frozen ``Rules`` tree and refuses every mistake with
``ConfigError(file, line, message)`` naming the key path and what is allowed,
e.g. ``rules.manhole.grace_hours.main: expected a positive number, got 'two'``.
Unknown keys are refused too (a misspelt key that silently falls back to a
default would quietly change who pays what), with a "did you mean" hint.

Every key is optional; a missing key takes the default, and the defaults are
the city's table in docs/rules.md -- so ``load_rules`` of an empty file equals
``default_rules()``. The schema is documented in ``docs/rules.md`` and, line by
line, in the shipped ``config/rules.yaml``.

Durations are given in the unit their key names (``grace_hours``,
``window_minutes``); they are stored as integer milliseconds. Amounts are
whole yuan (ints: a float amount is an error, not a rounding).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from yaml.nodes import Node

from contract.clock import DEFAULT_TIMEZONE, MINUTE_MS
from foundation.cityfile import Document, Section
from foundation.errors import read_config_text
from streams.kinds import RULE_KINDS
from streams.workflow import WorkflowRules, parse_workflow

__all__ = ["Rules", "default_rules", "load_rules", "parse_rules"]


DEFAULT_LIVE_SKEW_MS = 2 * MINUTE_MS
"""How far ahead of the worker's wall clock a live journal record's time may be."""


def _default_sections() -> dict[str, Any]:
    return {name: kind.Settings() for name, kind in RULE_KINDS.items()}


@dataclass(frozen=True, slots=True)
class Rules:
    """The whole rules file. Frozen: share one instance; build a new one to change it.

    One section per registered rule kind (``streams.kinds.RULE_KINDS``), read
    as an attribute: ``rules.manhole`` is the manhole module's ``Settings``.
    """

    timezone: str = DEFAULT_TIMEZONE
    """IANA zone for every local-time rule (lamp schedules, working hours)."""
    live_skew_ms: int = DEFAULT_LIVE_SKEW_MS
    """``clock.live_skew_minutes``: in live mode no journal record may carry time past
    the worker's wall clock plus this (docs/rules.md, "The clock")."""
    sections: Mapping[str, Any] = field(default_factory=_default_sections)
    """Section name -> that rule kind's settings."""
    source: str | None = field(default=None, compare=False)
    """The file it was loaded from (not part of equality)."""
    workflow: WorkflowRules = field(default_factory=WorkflowRules)
    """The case workflow's deadlines (``streams.workflow``, docs/rules.md "The case workflow")."""

    def __getattr__(self, name: str) -> Any:
        try:
            return object.__getattribute__(self, "sections")[name]
        except KeyError:
            raise AttributeError(
                f"the rules have no section {name!r}; sections: {', '.join(RULE_KINDS)}"
            ) from None

    def section(self, name: str) -> Any:
        return self.sections[name]

    def with_sections(self, **sections: Any) -> Rules:
        """A copy with some sections replaced (tests, what-if runs)."""
        unknown = set(sections) - set(RULE_KINDS)
        if unknown:
            raise ValueError(
                f"unknown rules section(s) {sorted(unknown)}; sections: {', '.join(RULE_KINDS)}"
            )
        return Rules(
            self.timezone, self.live_skew_ms, {**self.sections, **sections}, self.source,
            self.workflow,
        )  # fmt: skip


def default_rules() -> Rules:
    """The city's table of docs/rules.md."""
    return Rules()


# --------------------------------------------------------------------------- loading


def load_rules(path: str | os.PathLike[str]) -> Rules:
    """Load and validate a rules file; ``ConfigError`` with the line on any mistake."""
    name, text = read_config_text(path, "rules file")
    return parse_rules(text, name)


def parse_rules(text: str, file: str = "<rules>") -> Rules:
    """Validate rules YAML given as text (``file`` only names it in errors)."""
    doc = _Parser.parse(text, file)
    if doc.root is None:
        return Rules(source=file)
    return doc.rules(doc.root)


class _Parser(Document):
    """The rules file's schema, section by section (docs/rules.md)."""

    # sections --------------------------------------------------------------

    def rules(self, root: Node) -> Rules:
        top = Section(self, root, "")
        v = top.get("version")
        if v is not None and self.scalar(v) != 1:
            self.fail(
                v, f"version: this citywatch reads rules files of version 1, got {self.describe(v)}"
            )
        tz = DEFAULT_TIMEZONE
        tzn = top.get("timezone")
        if tzn is not None:
            tz = str(self.scalar(tzn))
            try:
                ZoneInfo(tz)
            except (ZoneInfoNotFoundError, ValueError):
                self.fail(
                    tzn,
                    f"timezone: unknown time zone {tz!r}; use an IANA name like 'Asia/Shanghai'",
                )
        skew = DEFAULT_LIVE_SKEW_MS
        clock = top.sub("clock")
        if clock is not None:
            minutes = clock.number("live_skew_minutes", skew / MINUTE_MS, zero_ok=True)
            skew = round(minutes * MINUTE_MS)
            clock.finish()
        flow = top.sub("workflow")
        workflow = WorkflowRules() if flow is None else parse_workflow(flow)
        body = top.sub("rules")
        top.finish()
        sections = _default_sections()
        if body is not None:
            for name, kind in RULE_KINDS.items():
                sub = body.sub(name)
                if sub is not None:
                    sections[name] = kind.parse(sub)
            body.finish()
        return Rules(
            timezone=tz, live_skew_ms=skew, sections=sections, source=self.file, workflow=workflow
        )
