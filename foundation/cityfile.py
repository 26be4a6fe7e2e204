"""One reader for every file a city edits: rules, routes, scenarios, a YAML registry.

Each of those files is hostile until proven otherwise, and the person who
wrote it needs to be told *where* it is wrong. So every reader goes through
this module and gets the same behaviour:

* positions: every mistake is a ``ConfigError`` with ``file:line:column`` and
  the key path (``rules.manhole.grace_hours.main: expected a positive number``);
* unknown keys are refused, never silently ignored (a misspelt key that falls
  back to a default would quietly change who pays what), with one phrasing of
  the hint: ``; did you mean 'grace_hours'?`` (``did_you_mean``);
* durations always carry their unit (``30s``, ``5m``, ``2h``, ``1h30m``,
  ``1d``, ``500ms``): a bare ``30`` is refused, because seconds in one file and
  minutes in another is how a 30-minute escalation becomes a 30-second one;
* a key given twice is refused, naming the line of the first.

A file is read as a YAML node tree (positions kept), and walked with
``Section`` -- one mapping under validation, with typed getters and a
``finish()`` that refuses the keys nobody asked for. A reader subclasses
``Document`` to add the sections of its own schema (see ``streams.rules``).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Iterator
from typing import Any, NoReturn

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from foundation.errors import ConfigError, read_config_text

__all__ = [
    "Document",
    "Section",
    "did_you_mean",
    "format_duration_ms",
    "parse_duration_ms",
    "read_yaml",
]

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?")
_TIME_OF_DAY = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_NULL = "tag:yaml.org,2002:null"

DURATION_HELP = "a duration with its unit, e.g. 30s, 5m, 2h, 1h30m, 1d or 500ms"


def did_you_mean(word: object, options: Iterable[str], cutoff: float = 0.6) -> str:
    """``"; did you mean 'x'?"`` for the closest option, ``""`` when none is close.

    The one phrasing of the hint in every city-edited file, the CLI and the settings.
    """
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=cutoff)
    return f"; did you mean {close[0]!r}?" if close else ""


def parse_duration_ms(value: object) -> int | None:
    """``30s``, ``5m``, ``2h``, ``1h30m``, ``1d``, ``500ms`` -> milliseconds; None if not one.

    A number without a unit is *not* a duration (see the module doc).
    """
    if not isinstance(value, str) or not value.strip():
        return None
    m = _DURATION.fullmatch(value.strip())
    if not m or not any(m.groups()):
        return None
    d, h, mi, s, ms = (int(g or 0) for g in m.groups())
    return (((d * 24 + h) * 60 + mi) * 60 + s) * 1000 + ms


def format_duration_ms(ms: int) -> str:
    """The inverse of ``parse_duration_ms`` for display (``5400000`` -> ``1h30m``)."""
    if ms <= 0:
        return "0s"
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            out.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(out)


def read_yaml(path: str | os.PathLike[str], what: str) -> Document:
    """Read a city-edited YAML file (UTF-8, BOM accepted) into a ``Document``."""
    name, text = read_config_text(path, what)
    return Document.parse(text, name)


class Document:
    """A YAML file as a node tree with positions, and the judge of its scalars."""

    def __init__(self, loader: yaml.SafeLoader, root: Node | None, file: str) -> None:
        self.loader = loader
        self.root = root
        self.file = file

    @classmethod
    def parse(cls, text: str, file: str = "<config>") -> Any:
        """Compose ``text``; ``ConfigError`` with the position of a YAML syntax error."""
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            raise ConfigError(
                file, mark.line + 1 if mark else None,
                f"not valid YAML: {exc.problem or exc.context}",
                column=mark.column + 1 if mark else None,
            ) from None  # fmt: skip
        except yaml.YAMLError as exc:
            raise ConfigError(file, None, f"not valid YAML: {exc}") from None
        if root is not None and isinstance(root, ScalarNode) and root.value == "":
            root = None
        return cls(loader, root, file)

    # ------------------------------------------------------------------ judging nodes

    def fail(self, node: Node, message: str) -> NoReturn:
        raise ConfigError(
            self.file, node.start_mark.line + 1, message, column=node.start_mark.column + 1
        )

    def section(self, node: Node | None = None, path: str = "") -> Section:
        """The root mapping (or ``node``) under validation."""
        target = self.root if node is None else node
        if target is None:
            target = MappingNode("tag:yaml.org,2002:map", [])
        return Section(self, target, path)

    def scalar(self, node: Node) -> Any:
        if not isinstance(node, ScalarNode):
            return _NotScalar(node)
        return self.plain(node)

    def plain(self, node: Node) -> Any:
        """The node as plain Python values (mappings, lists, scalars).

        A tag the safe loader does not know (``!!python/object``) or a value
        its tag cannot hold (``!!int x``) is a ``ConfigError`` at the node.
        """
        try:
            return self.loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError) as exc:
            self.fail(node, f"cannot read this value: {getattr(exc, 'problem', None) or exc}")

    def describe(self, node: Node) -> str:
        if isinstance(node, MappingNode):
            return "a mapping"
        if not isinstance(node, ScalarNode):
            return "a list"
        x = self.plain(node)
        if x is None:
            return "null"
        if isinstance(x, bool):
            return f"{str(x).lower()} (a yes/no value)"
        return repr(x) if isinstance(x, str) else str(node.value)

    def number(self, node: Node, path: str, *, zero_ok: bool = False) -> float:
        x = self.scalar(node)
        ok = (
            isinstance(x, int | float)
            and not isinstance(x, bool)
            and x == x
            and abs(x) != float("inf")
        )
        if not ok or x < 0 or (x == 0 and not zero_ok):
            kind = "a non-negative number" if zero_ok else "a positive number"
            self.fail(node, f"{path}: expected {kind}, got {self.describe(node)}")
        return float(x)

    def time_of_day(self, node: Node, path: str) -> int:
        """``"HH:MM"`` -> minutes after midnight."""
        # Read the raw text: YAML 1.1 would turn an unquoted 18:30 into 1110 (base 60).
        m = _TIME_OF_DAY.match(node.value) if isinstance(node, ScalarNode) else None
        if m is None:
            self.fail(
                node,
                f'{path}: expected a local time "HH:MM" (e.g. "18:30"), got {self.describe(node)}',
            )
        return int(m.group(1)) * 60 + int(m.group(2))

    def duration_ms(self, node: Node, path: str, *, zero_ok: bool = False) -> int:
        x = self.scalar(node)
        ms = parse_duration_ms(x) if isinstance(x, str) else None
        if ms is None or (ms == 0 and not zero_ok):
            hint = (
                f" ({x}s or {x}m?)"
                if isinstance(x, int | float) and not isinstance(x, bool)
                else ""
            )
            self.fail(node, f"{path}: expected {DURATION_HELP}, got {self.describe(node)}{hint}")
        return ms


class Section:
    """One YAML mapping under validation.

    Remembers which keys the schema asked for, so ``finish()`` can refuse the
    rest with a "did you mean".
    """

    def __init__(self, doc: Document, node: Node, path: str) -> None:
        self.doc = doc
        self.path = path
        self.node = node
        if not isinstance(node, MappingNode):
            where = f"{path}: " if path else ""
            doc.fail(
                node, f"{where}expected a mapping (key: value lines), got {doc.describe(node)}"
            )
        self.items: dict[str, tuple[Node, Node]] = {}
        for k, v in node.value:
            if not isinstance(k, ScalarNode):
                doc.fail(k, f"{path or 'top level'}: keys must be plain words")
            if k.value in self.items:
                first = self.items[k.value][0].start_mark.line + 1
                doc.fail(k, f"{self.key_path(k.value)}: given twice (first on line {first})")
            self.items[k.value] = (k, v)
        self.known: list[str] = []

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def keys(self) -> list[str]:
        """The keys the file gives, in file order (for open-ended mappings)."""
        return list(self.items)

    def key_node(self, key: str) -> Node:
        return self.items[key][0]

    def get(self, key: str) -> Node | None:
        """The value node of ``key`` (None when absent or null); marks the key as known."""
        self.known.append(key)
        kv = self.items.get(key)
        if kv is None:
            return None
        v = kv[1]
        if isinstance(v, ScalarNode) and v.tag == _NULL:
            return None
        return v

    def finish(self) -> None:
        """Refuse every key the schema did not ask for."""
        for key, (knode, _v) in self.items.items():
            if key not in self.known:
                hint = did_you_mean(key, self.known)
                msg = f"{self.key_path(key)}: unknown key"
                msg += hint if hint else f"; allowed: {', '.join(dict.fromkeys(self.known))}"
                self.doc.fail(knode, msg)

    # ------------------------------------------------------------------ typed getters

    def sub(self, key: str) -> Section | None:
        v = self.get(key)
        return None if v is None else Section(self.doc, v, self.key_path(key))

    def sections(self, key: str) -> Iterator[Section]:
        """A list of mappings under ``key`` (absent: none)."""
        for node in self.nodes(key):
            yield Section(self.doc, node, f"{self.key_path(key)}[{self._index(key, node)}]")

    def nodes(self, key: str) -> list[Node]:
        v = self.get(key)
        if v is None:
            return []
        if not isinstance(v, SequenceNode):
            self.doc.fail(v, f"{self.key_path(key)}: expected a list, got {self.doc.describe(v)}")
        return list(v.value)

    def _index(self, key: str, node: Node) -> int:
        seq = self.items[key][1]
        return next(i for i, n in enumerate(seq.value) if n is node)

    def number(self, key: str, default: float, *, zero_ok: bool = False) -> float:
        v = self.get(key)
        if v is None:
            return default
        return self.doc.number(v, self.key_path(key), zero_ok=zero_ok)

    def whole(self, key: str, default: int, *, minimum: int = 0, what: str = "whole number") -> int:
        v = self.get(key)
        if v is None:
            return default
        x = self.doc.scalar(v)
        if type(x) is not int or x < minimum:
            low = "a positive" if minimum == 1 else "a non-negative"
            self.doc.fail(
                v, f"{self.key_path(key)}: expected {low} {what}, got {self.doc.describe(v)}"
            )
        return x

    def yuan(self, key: str, default: int) -> int:
        return self.whole(key, default, what="whole number of yuan")

    def choice(self, key: str, default: str, options: tuple[str, ...]) -> str:
        v = self.get(key)
        if v is None:
            return default
        x = self.doc.scalar(v)
        if x not in options:
            msg = f"{self.key_path(key)}: expected one of {', '.join(options)}, got {self.doc.describe(v)}"
            self.doc.fail(v, msg + did_you_mean(x, options))
        return str(x)

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        v = self.get(key)
        if v is None:
            if required:
                self.doc.fail(self.node, f"{self.key_path(key)}: missing (required)")
            return default
        x = self.doc.scalar(v)
        if not isinstance(x, str) or not x.strip():
            self.doc.fail(v, f"{self.key_path(key)}: expected text, got {self.doc.describe(v)}")
        return x

    def flag(self, key: str, default: bool) -> bool:
        v = self.get(key)
        if v is None:
            return default
        x = self.doc.scalar(v)
        if not isinstance(x, bool):
            self.doc.fail(
                v, f"{self.key_path(key)}: expected true or false, got {self.doc.describe(v)}"
            )
        return x

    def time_of_day(self, key: str, default: int) -> int:
        v = self.get(key)
        if v is None:
            return default
        return self.doc.time_of_day(v, self.key_path(key))

    def duration_ms(self, key: str, default: int | None, *, zero_ok: bool = False) -> int | None:
        v = self.get(key)
        if v is None:
            return default
        return self.doc.duration_ms(v, self.key_path(key), zero_ok=zero_ok)


class _NotScalar:
    """Stands in for a mapping or list where a scalar was expected (never equal to one)."""

    def __init__(self, node: Node) -> None:
        self.node = node
