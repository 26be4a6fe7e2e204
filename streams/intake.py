"""What the worker takes from the journal: strict decoding and, live, the wall clock's bound.

Two gates stand between a journal record and the detector (docs/contracts.md,
"Kafka"; docs/rules.md, "The clock"):

* ``decode``: the record's bytes as a ``Reading``, ``OfficerAction`` or
  ``Watermark`` (``contract.journal.decode``, strict), or a ``Refused`` with the
  reason -- never an exception, so no record can stop the worker;
* ``LiveBound``: in live mode, a record whose time is past the worker's wall
  clock plus the rules file's ``clock.live_skew_minutes`` is ``Refused``
  (``ahead_of_clock``), so no record can move time past it. Simulation and
  replay have no bound: their input's own time drives the clocks.

Pure: the wall clock is an argument, nothing here talks to Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass

from contract.cases import OfficerAction
from contract.clock import iso_utc
from contract.journal import JournalError, JournalItem, Watermark
from contract.journal import decode as decode_record
from contract.reading import Reading

__all__ = ["LiveBound", "Refused", "decode"]


@dataclass(frozen=True, slots=True)
class Refused:
    """A journal record the detector does not take: ``reason`` is a ``QUARANTINE_REASONS`` key."""

    reason: str
    message: str


def decode(raw: bytes | None) -> JournalItem | Refused:
    """The record as detector input, or why not."""
    try:
        return decode_record(raw)
    except JournalError as exc:
        return Refused(exc.code, exc.message)
    except Exception as exc:  # a codec gap must not stop the worker either
        return Refused("bad_record", f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True, slots=True)
class LiveBound:
    """Live mode's ceiling on time: ``now + skew_ms``.

    skew_ms: the rules file's ``clock.live_skew_minutes``.
    ts_allowance_ms: how far a reading's ``ts`` may be after its ``received_at``
        (the bridge's own ``IngestLimits.max_future_ms``); a journal record past
        the ceiling by more than that was not written by a bridge.
    """

    skew_ms: int
    ts_allowance_ms: int

    def check(self, item: JournalItem, now_ms: int) -> Refused | None:
        """None when ``item`` may be applied at wall-clock ``now_ms``."""
        ceiling = now_ms + self.skew_ms
        if isinstance(item, Reading):
            if item.received_at > ceiling:
                return self._ahead("reading received_at", item.received_at, now_ms)
            if item.ts > ceiling + self.ts_allowance_ms:
                return self._ahead("reading ts", item.ts, now_ms)
            return None
        if isinstance(item, OfficerAction):
            return self._ahead("action at", item.at, now_ms) if item.at > ceiling else None
        assert isinstance(item, Watermark)
        return self._ahead("watermark at", item.at, now_ms) if item.at > ceiling else None

    def _ahead(self, what: str, at: int, now_ms: int) -> Refused:
        return Refused(
            "ahead_of_clock",
            f"{what} {iso_utc(at)} is {(at - now_ms) / 1000:.0f} s past the wall clock "
            f"{iso_utc(now_ms)}; at most {self.skew_ms / 1000:.0f} s is allowed "
            "(rules clock.live_skew_minutes)",
        )
