"""An officer directory of one test's own officers (docs/officers.md), and a personal token each.

Ids carry the test's unique tag (``grid-<unique>``), so the tokens issued into the shared state
directory are nobody else's; the roles and districts are what the tests act with.
"""

from __future__ import annotations

from pathlib import Path

from foundation.settings import Settings
from registry.officer_tokens import TokenStore

OFFICERS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "grid": ("网格员", "grid", ("jinshui",)),
    "sup": ("督办", "district_supervisor", ("jinshui",)),
    "city": ("市督办", "city_supervisor", ()),
    "duty": ("值班员", "duty", ("erqi",)),
}
"""Key -> (name, role, districts): the officer ``<key>-<unique>``. A city supervisor acts
city-wide, so the directory gives them no districts."""


def with_officers(
    s: Settings, tmp_path: Path, unique: str, *keys: str
) -> tuple[Settings, dict[str, str]]:
    """``s`` reading a directory of the officers ``keys`` (of ``OFFICERS``; all of them when
    none is named), and each one's token by key."""
    keys = keys or tuple(OFFICERS)
    lines = ["officers:"]
    for key in keys:
        name, role, districts = OFFICERS[key]
        where = f", districts: [{', '.join(districts)}]" if districts else ""
        lines.append(f"  - {{id: {key}-{unique}, name: {name}, roles: [{role}]{where}}}")
    path = tmp_path / "officers.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    s = s.replace("paths", officers=str(path))
    store = TokenStore(Path(s.paths.state_dir) / "officers")
    return s, {key: store.issue(f"{key}-{unique}")[0] for key in keys}
