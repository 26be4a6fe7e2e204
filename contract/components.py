"""CJ/T 214 component codes (数字城管部件编码): what a registry's ``component_code`` says.

A code is either the 4-digit minor category (大类 2 digits + 小类 2 digits, e.g. 0102
污水井盖) or the 16-digit component id (部件标识码: the 6-digit district code, the
4-digit category, a 6-digit serial). The filed stage of a case (立案) hands both,
and the major category's name, to the city's platform (docs/contracts.md, "Case stages").
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CATEGORY_NAMES", "Component", "component_of", "component_problem"]

CATEGORY_NAMES: dict[str, tuple[str, str]] = {
    "01": ("公用设施", "public utilities"),
    "02": ("道路交通", "roads and traffic"),
    "03": ("市容环境", "city appearance and environment"),
    "04": ("园林绿化", "landscaping"),
    "05": ("房屋土地", "buildings and land"),
    "06": ("其他设施", "other facilities"),
}
"""CJ/T 214's major categories (大类), by their 2-digit code."""


@dataclass(frozen=True, slots=True)
class Component:
    code: str
    """The 4-digit minor category (大类 + 小类)."""
    category: str
    """The 2-digit major category (大类)."""
    component_id: str | None
    """The 16-digit component id, when the registry carries it."""

    def to_dict(self) -> dict[str, str | None]:
        return {
            "component_code": self.code,
            "component_category": self.category,
            "component_category_name": CATEGORY_NAMES[self.category][0],
            "component_id": self.component_id,
        }


def component_problem(code: str) -> str | None:
    """Why ``code`` is not a CJ/T 214 code (None: it is)."""
    if not (code.isascii() and code.isdigit() and len(code) in (4, 16)):
        return "must be 4 digits (CJ/T 214 minor category, e.g. 0102) or the 16-digit component id"
    category = code[:2] if len(code) == 4 else code[6:8]
    if category not in CATEGORY_NAMES:
        where = "its first two digits" if len(code) == 4 else "digits 7-8 (the major category)"
        return f"{where} {category!r} are no CJ/T 214 major category; categories: " + ", ".join(
            f"{k} {v[0]}" for k, v in CATEGORY_NAMES.items()
        )
    return None


def component_of(code: str | None) -> Component | None:
    """The parts of a registry's (already validated) component code; None without one."""
    if not code or component_problem(code) is not None:
        return None
    if len(code) == 16:
        return Component(code[6:10], code[6:8], code)
    return Component(code, code[:2], None)
