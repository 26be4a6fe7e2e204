"""The officer directory the city edits: who may act, as what, where (docs/officers.md).

A YAML file (``paths.officers``, default ``config/officers.yaml``) read
through ``foundation.cityfile``, so a mistake is refused at start with
``file:line:column`` and the key path, never half-way through a night shift::

    officers:
      - id: JS-DUTY-01
        name: 王芳
        roles: [duty]
        districts: [jinshui]
        wecom: wangfang          # WeCom user id, for @mentions in pushes
        dingtalk: "13800000001"  # DingTalk mobile or user id
        phone: "13800000001"
        email: wangfang@example.gov.cn

``districts`` is where the officer may act; a ``city_supervisor`` and
``finance`` act city-wide and list none. An officer's credentials (API tokens)
are issued by ``citywatch officers token issue`` (``registry.officer_tokens``),
never kept in this file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from contract.officers import OFFICER_ROLES
from contract.topics import is_valid_segment
from foundation.cityfile import Section, read_yaml
from foundation.errors import ConfigError

__all__ = ["CITY_WIDE_ROLES", "Directory", "Officer", "load_directory"]

CITY_WIDE_ROLES = ("city_supervisor", "finance")
_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Officer:
    officer_id: str
    name: str
    roles: tuple[str, ...]
    districts: tuple[str, ...]
    wecom: str = ""
    dingtalk: str = ""
    phone: str = ""
    email: str = ""

    @property
    def city_wide(self) -> bool:
        return any(r in CITY_WIDE_ROLES for r in self.roles)

    def covers(self, district: str) -> bool:
        """May act on a case of ``district``."""
        return self.city_wide or district in self.districts


@dataclass(frozen=True)
class Directory:
    officers: dict[str, Officer]
    source: str = "<directory>"

    def get(self, officer_id: str) -> Officer | None:
        return self.officers.get(officer_id)

    def __len__(self) -> int:
        return len(self.officers)


def _text(sec: Section, key: str, required: bool = False) -> str:
    value = sec.text(key, "", required=required) or ""
    node = sec.get(key)
    if _CONTROL.search(value) and node is not None:
        sec.doc.fail(node, f"{sec.key_path(key)}: control characters are not allowed")
    return value.strip()


def _words(sec: Section, key: str) -> list[tuple[str, object]]:
    out = []
    for node in sec.nodes(key):
        value = sec.doc.scalar(node)
        if not isinstance(value, str):
            sec.doc.fail(node, f"{sec.key_path(key)}: expected words, got {sec.doc.describe(node)}")
        out.append((value, node))
    return out


def load_directory(path: str | os.PathLike[str]) -> Directory:
    """Read and check the directory; ``ConfigError`` names file, line and what to fix."""
    doc = read_yaml(path, "officer directory")
    root = doc.section()
    officers: dict[str, Officer] = {}
    lines: dict[str, int] = {}
    for sec in root.sections("officers"):
        oid = _text(sec, "id", required=True)
        id_node = sec.get("id")
        assert id_node is not None
        if not _ID.fullmatch(oid):
            doc.fail(id_node, f"{sec.key_path('id')}: {oid!r} is not an officer id "
                              "(1-64 letters, digits, '_', '.', '-')")  # fmt: skip
        if oid in officers:
            doc.fail(
                id_node, f"{sec.key_path('id')}: {oid!r} given twice (first on line {lines[oid]})"
            )
        roles = []
        for role, node in _words(sec, "roles"):
            if role not in OFFICER_ROLES:
                from foundation.cityfile import did_you_mean

                doc.fail(node, f"{sec.key_path('roles')}: unknown role {role!r}; roles: "  # type: ignore[arg-type]
                               f"{', '.join(OFFICER_ROLES)}{did_you_mean(role, OFFICER_ROLES)}")  # fmt: skip
            roles.append(role)
        if not roles:
            doc.fail(sec.node, f"{sec.key_path('roles')}: an officer needs at least one role "
                               f"({', '.join(OFFICER_ROLES)})")  # fmt: skip
        districts = []
        for district, node in _words(sec, "districts"):
            if not is_valid_segment(district):
                doc.fail(node, f"{sec.key_path('districts')}: {district!r} is not a district "  # type: ignore[arg-type]
                               "id (as in the device registry)")  # fmt: skip
            districts.append(district)
        officer = Officer(
            officer_id=oid,
            name=_text(sec, "name", required=True),
            roles=tuple(dict.fromkeys(roles)),
            districts=tuple(dict.fromkeys(districts)),
            wecom=_text(sec, "wecom"),
            dingtalk=_text(sec, "dingtalk"),
            phone=_text(sec, "phone"),
            email=_text(sec, "email"),
        )
        if not officer.city_wide and not officer.districts:
            doc.fail(sec.node, f"{sec.path}: officer {oid!r} acts in no district; list its "
                               "districts, or give it a city-wide role (city_supervisor, finance)")  # fmt: skip
        sec.finish()
        officers[oid] = officer
        lines[oid] = id_node.start_mark.line + 1
    root.finish()
    if not officers:
        raise ConfigError(
            str(path), None, "the officer directory lists no officers (officers: [...])"
        )
    return Directory(officers, str(path))
