"""Replay a JSON Lines file through the detection core (docs/contracts.md, "Replay files and ledger JSON").

``citywatch replay FILE`` is this module: the file's lines in file order, each

* a reading as it arrived over MQTT:
  ``{"topic": ..., "payload": {...} | "raw": "<string>", "received_at": ms}``
  -- validated by ``ingest.validate.parse_message`` exactly as the bridge
  does (a ``payload`` value is re-encoded as JSON bytes, ``raw`` is taken as
  its UTF-8 bytes), so a replayed day and a live day feed the detector the
  same ``Reading``s; a line that fails validation is reported in
  ``rejected`` with its line number, never silently dropped;
* an officer action on the device's current case:
  ``{"action": "ack"|"close"|"accident"|"note"|"confirm_repair"|"reject_repair",
  "device": ..., "at": ms, "officer": ...}`` (optionally ``case_id``, ``note`` and
  the gate's provenance ``role``, ``channel``, ``credential``, ``reason``,
  ``recorded_at``) -- read by the journal's own codec, as the worker reads it;
* ``{"watermark": ms}``: time passes with no reading.

At the end time advances to the latest instant any line named (received_at,
action ``at`` or watermark), so clocks due by then -- e.g. the hours up to an
officer's close -- are booked. The same file, registry and rules always give
byte-identical ``format_json`` output.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from contract.cases import ActionRejected, CaseEvent, LedgerEntry, OfficerAction
from contract.clock import iso_utc
from contract.journal import JournalError, JournalItem, Watermark, from_record
from contract.reading import Reading
from streams.detector import Detector, RegistryLike
from streams.ledger import Ledger
from streams.rules import Rules

__all__ = [
    "BadLine", "ReplayResult", "Watermark", "format_json", "format_table", "item_time",
    "parse_lines", "replay", "replay_file",
]  # fmt: skip


@dataclass
class ReplayResult:
    cases: list[CaseEvent]
    """The last snapshot of every case, sorted by (opened_at, case_id)."""
    ledger: Ledger
    rejected: list[dict[str, Any]]
    """Lines that were not applied: ``{"line", "code", "message"}`` (plus the
    ``topic`` for readings), in file order."""
    case_events: list[CaseEvent] = field(default_factory=list)
    """Every case event in the order the detector emitted it."""
    watermark: int | None = None


@dataclass(frozen=True, slots=True)
class BadLine:
    line: int
    code: str
    message: str
    topic: str | None = None
    at: int | None = None
    """A rejected reading's receive time: the end-of-input watermark still counts it."""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"line": self.line, "code": self.code, "message": self.message}
        if self.topic is not None:
            d["topic"] = self.topic
        return d


def parse_lines(
    lines: Iterable[str | bytes | dict[str, Any]], registry: RegistryLike
) -> Iterator[tuple[int, JournalItem | BadLine]]:
    """The replay file's lines as detector input, in file order, with their line numbers.

    One parser for ``citywatch replay`` and for loading a file into a live
    pipeline's journal, so both feed the detector the very same items.
    """
    from ingest.validate import (  # lazy: keeps the pure core importable alone
        Rejection,
        parse_message,
    )

    for lineno, line in enumerate(lines, 1):
        if isinstance(line, dict):
            obj: Any = line
        else:
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield lineno, BadLine(lineno, "not_json", f"not a JSON line: {exc}")
                continue
        if not isinstance(obj, dict):
            yield lineno, BadLine(lineno, "bad_line", "expected a JSON object")
            continue
        if "topic" in obj:
            received_at = obj.get("received_at")
            if type(received_at) is not int:
                yield lineno, BadLine(
                    lineno, "bad_line",
                    f"a reading needs integer 'received_at' (epoch ms), got {received_at!r}",
                )  # fmt: skip
                continue
            if "payload" in obj:
                payload = orjson.dumps(obj["payload"])
            elif isinstance(obj.get("raw"), str):
                payload = obj["raw"].encode("utf-8")
            else:
                yield (
                    lineno,
                    BadLine(
                        lineno, "bad_line", "a reading needs 'payload' (JSON) or 'raw' (a string)"
                    ),
                )
                continue
            topic = obj["topic"]
            # cast: ingest's _DeviceLike protocol declares mutable attributes; Device is frozen
            res = parse_message(
                topic if isinstance(topic, str) else repr(topic),
                payload,
                received_at,
                cast(Any, registry),
            )
            if isinstance(res, Rejection):
                yield lineno, BadLine(lineno, res.code, res.message, res.topic, received_at)
                continue
            yield lineno, res
        elif "action" in obj:
            # read as the worker reads an acks record (contract.journal), provenance and all: a
            # backdated close's ``recorded_at`` decides whether it is a claim (docs/rules.md)
            try:
                action = from_record({**obj, "type": "action"})
            except JournalError as exc:
                yield lineno, BadLine(lineno, "bad_action", f"bad officer action: {exc.message}")
                continue
            yield lineno, action
        elif "watermark" in obj:
            wm = obj["watermark"]
            if type(wm) is not int:
                yield (
                    lineno,
                    BadLine(
                        lineno, "bad_line", f"'watermark' must be integer epoch ms, got {wm!r}"
                    ),
                )
                continue
            yield lineno, Watermark(wm)
        else:
            yield (
                lineno,
                BadLine(lineno, "bad_line", "not a reading (topic), an action or a watermark"),
            )


def item_time(item: JournalItem) -> int:
    """The instant a journal item names (for the end-of-input watermark)."""
    if isinstance(item, Reading):
        return item.received_at
    return item.at


def replay(
    lines: Iterable[str | bytes | dict[str, Any]], rules: Rules, registry: RegistryLike
) -> ReplayResult:
    """Run ``lines`` (JSON text lines or already-parsed dicts) through a fresh ``Detector``."""
    det = Detector(rules, registry)
    ledger = Ledger()
    latest: dict[str, CaseEvent] = {}
    events: list[CaseEvent] = []
    rejected: list[dict[str, Any]] = []
    end: int | None = None

    def take(outputs: list[Any], lineno: int) -> None:
        for o in outputs:
            if isinstance(o, LedgerEntry):
                ledger.add(o)
            elif isinstance(o, CaseEvent):
                latest[o.case_id] = o
                events.append(o)
            elif isinstance(o, ActionRejected):
                rejected.append({"line": lineno, "code": "no_case", "message": o.reason,
                                 "device": o.action.device})  # fmt: skip

    for lineno, item in parse_lines(lines, registry):
        if isinstance(item, BadLine):
            rejected.append(item.to_dict())
            if item.at is not None:
                end = item.at if end is None else max(end, item.at)
            continue
        at = item_time(item)
        end = at if end is None else max(end, at)
        if isinstance(item, Reading):
            take(det.on_reading(item), lineno)
        elif isinstance(item, OfficerAction):
            take(det.on_action(item), lineno)
        else:
            take(det.on_watermark(item.at), lineno)
    if end is not None:
        take(det.on_watermark(end), 0)
    cases = sorted(latest.values(), key=lambda c: (c.opened_at, c.case_id))
    return ReplayResult(cases, ledger, rejected, events, det.watermark)


def replay_file(path: str, rules: Rules, registry: RegistryLike) -> ReplayResult:
    with open(path, "rb") as f:
        return replay(f, rules, registry)  # type: ignore[arg-type]


def format_json(result: ReplayResult) -> str:
    """``{"cases": [...], "ledger": [...]}``: sorted keys, cases by (opened_at, id),
    ledger in booking order. Byte-identical for identical input."""
    doc = {
        "cases": [c.to_dict() for c in result.cases],
        "ledger": result.ledger.to_json_list(),
    }
    return (
        orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2).decode("utf-8") + "\n"
    )


def format_table(result: ReplayResult) -> str:
    """A plain-text report for people: cases, ledger, and the net per payer."""
    lines: list[str] = []

    def table(header: list[str], rows: list[list[str]]) -> None:
        widths = [
            max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
            for i, h in enumerate(header)
        ]
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
        lines.append("  ".join("-" * w for w in widths))
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())

    lines.append(f"Cases ({len(result.cases)})")
    table(
        ["case", "rule", "device", "district", "severity", "state", "opened (UTC)", "deadline (UTC)"],
        [[c.case_id, c.rule, c.device, c.district, c.severity, c.state, iso_utc(c.opened_at), iso_utc(c.deadline)]
         for c in result.cases],
    )  # fmt: skip
    lines.append("")
    entries = result.ledger.entries()
    lines.append(f"Ledger ({len(entries)} entries, net {result.ledger.net():,} yuan)")
    table(
        ["entry", "payer_type", "payer", "amount_yuan", "accrued (UTC)", "reverses"],
        [[e.id, e.payer_type, e.payer, f"{e.amount_yuan:,}", iso_utc(e.accrued_at), e.reverses or ""]
         for e in entries],
    )  # fmt: skip
    lines.append("")
    lines.append("Net by payer")
    table(
        ["payer_type", "payer", "net_yuan"],
        [[pt, p, f"{amt:,}"] for (pt, p), amt in result.ledger.net_by_payer().items()],
    )
    if result.rejected:
        lines.append("")
        lines.append(f"Rejected lines ({len(result.rejected)})")
        for r in result.rejected:
            lines.append(f"  line {r['line']}: {r['code']}: {r['message']}")
    return "\n".join(lines) + "\n"
