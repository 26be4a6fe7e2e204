"""Rule kinds are plugins: each is one module, registered once (docs/extending.md)."""

from __future__ import annotations

import json
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from contract.reading import Reading
from foundation.cityfile import Section
from streams import kinds
from streams.detector import Detector
from streams.harness import REG, T0, M
from streams.kinds import RULE_KINDS
from streams.rules import Rules, default_rules, load_rules

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", list(RULE_KINDS))
def test_every_registered_kind_declares_what_the_detector_and_the_rules_file_need(
    name: str,
) -> None:
    kind = RULE_KINDS[name]
    assert kind.SECTION == name
    assert kind.KIND in ("dust", "manhole", "streetlight", "*")
    assert kind.RULE_IDS and all(isinstance(r, str) for r in kind.RULE_IDS)
    assert isinstance(default_rules().section(name), kind.Settings)
    assert callable(kind.parse) and callable(kind.build)


@pytest.mark.parametrize("name", list(RULE_KINDS))
def test_every_kind_has_its_section_in_the_docs_and_the_shipped_rules_file(name: str) -> None:
    assert f"\n## {name}\n" in (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    shipped = load_rules(ROOT / "config" / "rules.yaml")
    assert isinstance(shipped.section(name), RULE_KINDS[name].Settings)


@dataclass(frozen=True)
class _NoiseSettings:
    limit_db: float = 55.0


class _NoiseRule:
    """A toy second rule for dust monitors: counts readings above a noise limit."""

    def __init__(self, settings: _NoiseSettings) -> None:
        self.settings = settings

    def new_state(self, dev: Any) -> dict[str, int]:
        return {"loud": 0}

    def on_reading(self, st: dict[str, int], r: Reading, dev: Any, ctx: Any) -> bool:
        if r.fields.get("noise_db", 0) > self.settings.limit_db:
            st["loud"] += 1
            return True
        return False

    def next_due(self, st: Any, dev: Any) -> int | None:
        return None

    def on_clock(
        self, st: Any, due: int, dev: Any, ctx: Any
    ) -> None:  # pragma: no cover - never due
        raise AssertionError

    def on_action(self, st: Any, a: Any, dev: Any, ctx: Any) -> bool:
        return False

    def export(self, st: dict[str, int]) -> dict[str, int]:
        return dict(st)

    def restore(self, dev: Any, d: dict[str, int]) -> dict[str, int]:
        return dict(d)


def _noise_module() -> types.ModuleType:
    m = types.ModuleType("loudness")
    m.SECTION = "loudness"  # type: ignore[attr-defined]
    m.KIND = "dust"  # type: ignore[attr-defined]
    m.RULE_IDS = ("loudness.night",)  # type: ignore[attr-defined]
    m.Settings = _NoiseSettings  # type: ignore[attr-defined]

    def parse(sec: Section) -> _NoiseSettings:
        out = _NoiseSettings(limit_db=sec.number("limit_db", 55.0))
        sec.finish()
        return out

    m.parse = parse  # type: ignore[attr-defined]
    m.build = lambda settings, clock, registry: _NoiseRule(settings)  # type: ignore[attr-defined]
    return m


def test_a_kind_added_to_the_table_is_read_from_the_rules_file_and_judges_beside_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(kinds.RULE_KINDS, "loudness", _noise_module())
    from streams.rules import parse_rules

    rules = parse_rules(
        "rules:\n  loudness:\n    limit_db: 70\n  dust:\n    violation: 150\n    warning: 100\n"
    )
    assert rules.loudness.limit_db == 70 and rules.dust.violation == 150
    with pytest.raises(
        Exception, match="rules.loudness.limit: unknown key; did you mean 'limit_db'"
    ):
        parse_rules("rules:\n  loudness:\n    limit: 70\n")

    det = Detector(rules, REG)
    det.on_reading(Reading("DS-1", "dust", "jinshui", T0, T0, {"pm10": 50.0, "noise_db": 80.0}))
    det.on_reading(
        Reading("DS-1", "dust", "jinshui", T0 + M, T0 + M, {"pm10": 50.0, "noise_db": 40.0})
    )
    state = json.loads(json.dumps(det.export_device("DS-1")))
    assert set(state["states"]) == {"dust", "noise", "loudness", "offline"}
    assert state["states"]["loudness"] == {"loud": 1}

    restarted = Detector(rules, REG)
    assert restarted.import_device("DS-1", state)
    assert restarted.export_device("DS-1") == state


def test_a_state_saved_before_a_kind_was_added_restores_with_that_kind_fresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    det = Detector(default_rules(), REG)
    det.on_reading(Reading("DS-1", "dust", "jinshui", T0, T0, {"pm10": 50.0, "noise_db": 80.0}))
    old = json.loads(json.dumps(det.export_device("DS-1")))
    monkeypatch.setitem(kinds.RULE_KINDS, "loudness", _noise_module())
    later = Detector(Rules(), REG)
    assert later.import_device("DS-1", old)
    assert later.export_device("DS-1")["states"]["loudness"] == {"loud": 0}  # type: ignore[index]


def test_a_version_1_state_from_the_previous_release_is_read() -> None:
    det = Detector(default_rules(), REG)
    det.on_reading(Reading("MH-MAIN", "manhole", "jinshui", T0, T0, {"open": True}))
    now = det.export_device("MH-MAIN")
    assert now is not None
    v1 = {
        "v": 1,
        "kind": "manhole",
        "rule": now["states"]["manhole"],
        "offline": now["states"]["offline"],
    }
    again = Detector(default_rules(), REG)
    assert again.import_device("MH-MAIN", v1)
    # a version 1 state has no workflow: the case is filed again at its next change
    assert again.export_device("MH-MAIN") == {k: v for k, v in now.items() if k != "workflow"}
