"""The append-only penalty ledger.

Entries are only ever added, never edited or removed; a correction is a new
entry that reverses an old one. ``add()`` is idempotent by id, because the
pipeline is at-least-once (a restarted worker re-books what it booked before
the crash, with the same deterministic ids). The same id with *different*
content is never a redelivery: it means two code paths disagree about money,
and that must stop the line (``LedgerConflict``), not be papered over.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from contract.cases import LedgerEntry

__all__ = ["Ledger", "LedgerConflict"]


class LedgerConflict(RuntimeError):
    """Two different entries with one id: a bug, never a redelivery."""


class Ledger:
    """Entries by id, in booking order."""

    __slots__ = ("_entries",)

    def __init__(self, entries: Iterable[LedgerEntry] = ()) -> None:
        self._entries: dict[str, LedgerEntry] = {}
        for e in entries:
            self.add(e)

    def add(self, entry: LedgerEntry) -> bool:
        """Book ``entry``; False if this exact entry is already booked."""
        old = self._entries.get(entry.id)
        if old is not None:
            if old != entry:
                raise LedgerConflict(
                    f"ledger entry {entry.id!r} booked twice with different content:\n"
                    f"  booked: {old.to_dict()}\n  new:    {entry.to_dict()}"
                )
            return False
        self._entries[entry.id] = entry
        return True

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[LedgerEntry]:
        return iter(self._entries.values())

    def get(self, entry_id: str) -> LedgerEntry | None:
        return self._entries.get(entry_id)

    def entries(self) -> list[LedgerEntry]:
        """All entries in booking order."""
        return list(self._entries.values())

    def net(self) -> int:
        return sum(e.amount_yuan for e in self._entries.values())

    def net_by_payer(self) -> dict[tuple[str, str], int]:
        """Net yuan per ``(payer_type, payer)``, sorted by key."""
        acc: dict[tuple[str, str], int] = {}
        for e in self._entries.values():
            k = (e.payer_type, e.payer)
            acc[k] = acc.get(k, 0) + e.amount_yuan
        return dict(sorted(acc.items()))

    def net_by_case(self, rule: str | None = None) -> dict[str, int]:
        """Net yuan per case id (optionally of one ledger rule only), sorted by case id."""
        acc: dict[str, int] = {}
        for e in self._entries.values():
            if rule is None or e.rule == rule:
                acc[e.case_id] = acc.get(e.case_id, 0) + e.amount_yuan
        return dict(sorted(acc.items()))

    def to_json_list(self) -> list[dict[str, Any]]:
        """The ledger as the JSON array of docs/contracts.md, "Replay files and ledger JSON" (booking order)."""
        return [e.to_dict() for e in self._entries.values()]

    @classmethod
    def from_json_list(cls, items: Iterable[dict[str, Any]]) -> Ledger:
        return cls(LedgerEntry.from_dict(d) for d in items)
