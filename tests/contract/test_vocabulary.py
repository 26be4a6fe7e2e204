"""The contract is the one home of the shared vocabulary (docs/contracts.md).

Kinds, case states, severities, payer types, road classes, rule names, the
city's time zone and the time formatters are defined in ``contract/`` and
nowhere else: a second copy is how one rule came to have three Chinese names.
These tests read every module of the project as source (AST, not text) and
name the file and line of a copy.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from contract import cases, clock, kinds, rules

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "foundation",
    "registry",
    "bus",
    "store",
    "ingest",
    "streams",
    "alerts",
    "sim",
    "citywatch",
    "bench",
)

VOCABULARY_NAMES = {
    "KINDS", "CASE_STATES", "FINAL_STATES", "SEVERITIES", "PAYER_TYPES", "ROAD_CLASSES", "NEVER",
    "RULE_NAMES", "CASE_RULE_NAMES", "SEVERITY_NAMES", "STATE_NAMES", "PAYER_TYPE_NAMES",
    "CITY_TZ", "TZ_OFFSET_MS", "CST",
}  # fmt: skip
"""Module-level names that would be a copy of the contract's vocabulary."""

FORMATTER = re.compile(r"^_?(fmt|format)_(time|local|iso|ts|instant)$|^_?iso(_utc|_local)?$")


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _is_docstring(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    parent = parents.get(node)
    return isinstance(parent, ast.Expr)


def _findings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    rel = path.relative_to(ROOT)
    out: list[str] = []
    for node in tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        for t in targets:
            if isinstance(t, ast.Name) and t.id in VOCABULARY_NAMES and not _imported_alias(node):
                out.append(f"{rel}:{node.lineno}: defines {t.id} (import it from contract/)")
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and FORMATTER.match(node.name):
            out.append(
                f"{rel}:{node.lineno}: defines the time formatter {node.name}() (use contract.clock)"
            )
        if (
            isinstance(node, ast.Constant)
            and node.value == "Asia/Shanghai"
            and not _is_docstring(node, parents)
        ):
            out.append(
                f"{rel}:{node.lineno}: names the city's time zone (use contract.clock.DEFAULT_TIMEZONE)"
            )
        if isinstance(node, ast.Dict):
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
            if {"dust.warning", "streetlight.fault"} <= keys:
                out.append(
                    f"{rel}:{node.lineno}: a table keyed by rule ids (names live in contract.rules)"
                )
    return out


def _imported_alias(node: ast.stmt) -> bool:
    """``X = contract_module.X`` re-binds the contract's object; that is not a copy."""
    value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
    return isinstance(value, ast.Attribute | ast.Name)


def test_no_module_outside_the_contract_copies_its_vocabulary() -> None:
    findings = [f for p in _modules() for f in _findings(p)]
    assert findings == []


@pytest.mark.parametrize(
    ("names", "values"),
    [
        (kinds.KINDS, kinds.KIND_SPECS),
        (cases.SEVERITIES, cases.SEVERITY_NAMES),
        (cases.CASE_STATES, cases.STATE_NAMES),
        (cases.PAYER_TYPES, cases.PAYER_TYPE_NAMES),
    ],
)
def test_every_term_has_its_entry(names: tuple[str, ...], values: dict[str, object]) -> None:
    assert tuple(values) == names


def test_every_rule_a_rule_kind_emits_has_one_name() -> None:
    from streams.kinds import RULE_KINDS

    emitted = {r for kind in RULE_KINDS.values() for r in kind.RULE_IDS}
    assert emitted == set(rules.RULES)
    for rule, name in rules.RULES.items():
        assert name.zh and name.en, rule
        assert name.kind in (*kinds.KINDS, "*"), rule


def test_the_contracts_page_lists_every_rule_id() -> None:
    page = (ROOT / "docs" / "contracts.md").read_text(encoding="utf-8")
    for rule, name in rules.RULES.items():
        assert f"| `{rule}` | {name.zh} |" in page, rule


def test_times_for_machines_are_utc_with_milliseconds_and_for_people_local() -> None:
    t = 1_793_590_991_978  # 2026-11-02 11:43:11.978 in Zhengzhou
    assert clock.iso_utc(t) == "2026-11-02T03:43:11.978Z"
    assert clock.local(t) == "2026-11-02 11:43"
    assert clock.iso_local(t) == "2026-11-02T11:43:11.978+08:00"
    assert clock.local(None, empty="-") == "-" and clock.iso_utc(None) == "-"
    assert (
        clock.iso_utc(1 << 62) == f"{1 << 62} ms"
    )  # no calendar holds it: still one line, never a traceback
