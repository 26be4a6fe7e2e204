"""The device kinds and their payload fields, as data (docs/contracts.md, "Payloads").

``KIND_SPECS`` is the one table of what each kind may send: field name ->
(type, min, max), plus the groups of which at least one field must be
present. ``ingest.validate`` judges every payload against it; the docs'
payload tables describe the same rows.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec

__all__ = [
    "BOOL",
    "FLEET_KINDS",
    "KINDS",
    "KIND_SPECS",
    "NUMBER",
    "TEXT",
    "TEXT_PATTERN",
    "UNBOUNDED",
    "KindSpec",
]

KINDS = ("dust", "manhole", "streetlight", "vehicle", "weighstation", "platecam")
"""The device kinds, in the order docs and reports list them."""
FLEET_KINDS = frozenset({"vehicle", "weighstation", "platecam"})
"""The kinds about vehicles (issue 18): a truck's terminal, a weigh-in-motion station, a plate
camera. Their journal records meet in one detector (contract.journal, decision 013)."""

NUMBER = "number"
"""A finite JSON number (int or float, never a boolean)."""
BOOL = "bool"
"""A JSON boolean ``true``/``false``."""
TEXT = "text"
"""A JSON string; the rule's min and max are its length (a plate: 1 to 16 characters)."""
TEXT_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"
"""What a text field may hold: no control character (C0, DEL, C1), as every registry field."""

UNBOUNDED = sys.float_info.max
"""The bound of a field with no real bound: still rejects ±inf."""
_BIG = UNBOUNDED


@dataclass(frozen=True, slots=True)
class KindSpec:
    """The known fields of one kind: ``name -> (type, min, max)`` plus required groups.

    ``required_any``: each group needs at least one of its fields present and
    not null (``("open", "tilt_deg")`` = one of the two).
    """

    fields: Mapping[str, tuple[str, float, float]]
    required_any: tuple[tuple[str, ...], ...] = ()
    numbers: Mapping[str, tuple[float, float]] = field(init=False, repr=False, compare=False)
    """Derived: number fields -> (min, max), for the hot loop."""
    bools: frozenset[str] = field(init=False, repr=False, compare=False)
    """Derived: boolean fields."""
    texts: Mapping[str, tuple[int, int]] = field(init=False, repr=False, compare=False)
    """Derived: text fields -> (min length, max length)."""
    struct: type = field(init=False, repr=False, compare=False)
    """Derived: a msgspec Struct with the same rules (every field optional), the fast check."""

    def __post_init__(self) -> None:
        for name, rule in self.fields.items():
            if rule[0] not in (NUMBER, BOOL, TEXT) or not rule[1] <= rule[2]:
                raise ValueError(
                    f"Invalid field rule {name!r}: {rule!r}; expected (type, min, max)"
                )
        for group in self.required_any:
            unknown = [f for f in group if f not in self.fields]
            if unknown:
                raise ValueError(f"required_any names unknown field(s) {unknown!r}")
        numbers = {n: (lo, hi) for n, (t, lo, hi) in self.fields.items() if t == NUMBER}
        object.__setattr__(self, "numbers", numbers)
        object.__setattr__(
            self, "bools", frozenset(n for n, r in self.fields.items() if r[0] == BOOL)
        )
        texts = {n: (int(lo), int(hi)) for n, (t, lo, hi) in self.fields.items() if t == TEXT}
        object.__setattr__(self, "texts", texts)
        object.__setattr__(self, "struct", _struct_from_table(self.fields))


def _struct_from_table(fields: Mapping[str, tuple[str, float, float]]) -> type:
    """A msgspec Struct accepting exactly what the table accepts (nulls aside)."""
    members: list[tuple[str, Any, Any]] = []
    for name, (typ, lo, hi) in fields.items():
        t: Any = bool
        if typ == TEXT:
            meta = msgspec.Meta(min_length=int(lo), max_length=int(hi), pattern=TEXT_PATTERN)
            t = Annotated[str, meta]
        elif typ == NUMBER:
            ge = lo if lo > -_BIG else None
            le = hi if hi < _BIG else None
            # floats only ever come finite from orjson; ints are accepted for floats
            t = float if ge is None and le is None else Annotated[float, msgspec.Meta(ge=ge, le=le)]
        members.append((name, t | None, None))
    return msgspec.defstruct("KindFields", members, kw_only=True)


def _n(lo: float | None = None, hi: float | None = None) -> tuple[str, float, float]:
    return (NUMBER, -_BIG if lo is None else lo, _BIG if hi is None else hi)


_B = (BOOL, 0.0, 0.0)
_PLATE = (TEXT, 1.0, 16.0)
"""A plate as the camera or the weigh station read it (豫A12345, 豫AD12345 for new energy)."""

KIND_SPECS: dict[str, KindSpec] = {
    # docs/contracts.md, "Payloads". Dust concentrations are µg/m³; 20,000 is above any real dust
    # storm and below the 65,535 / 99,999 "sensor error" values that would
    # otherwise open a 100,000-yuan case.
    "dust": KindSpec(
        fields={
            "pm25": _n(0, 20_000),
            "pm10": _n(0, 20_000),
            "tsp": _n(0, 20_000),
            "noise_db": _n(0, 200),
            "wind_speed": _n(0, 75),
            "wind_dir": _n(0, 360),
            "temp_c": _n(-60, 70),
            "humidity": _n(0, 100),
        },
        required_any=(("pm10",),),
    ),
    "manhole": KindSpec(
        fields={
            "open": _B,
            "tilt_deg": _n(0, 180),
            "water_level_cm": _n(),
            "battery_pct": _n(0, 100),
            "rssi": _n(-150, 0),
        },
        required_any=(("open", "tilt_deg"),),
    ),
    "streetlight": KindSpec(
        fields={
            "on": _B,
            "voltage_v": _n(0, 500),
            "current_a": _n(0),
            "power_w": _n(0),
            "leakage_ma": _n(0),
            "dim_pct": _n(0, 100),
        },
        # A streetlight message with only ts is a heartbeat: accepted.
    ),
    # A truck's terminal: the fields of JT/T 808's location report (0x0200), docs/contracts.md
    # "vehicle". A JT/T 808 gateway maps the binary report to this JSON one to one.
    "vehicle": KindSpec(
        fields={
            "lat": _n(-90, 90),
            "lon": _n(-180, 180),
            "altitude_m": _n(-500, 9000),
            "speed_kmh": _n(0, 250),
            "heading_deg": _n(0, 360),
            "acc_on": _B,
            "located": _B,
            "cover_closed": _B,
            "body_lifted": _B,
            "load_kg": _n(0, 200_000),
            "alarm": _n(0, 4_294_967_295),
            "status": _n(0, 4_294_967_295),
            "mileage_km": _n(0),
        },
        required_any=(("lat",), ("lon",)),
    ),
    "weighstation": KindSpec(
        fields={
            "plate": _PLATE,
            "axles": _n(1, 12),
            "gross_kg": _n(0, 200_000),
            "speed_kmh": _n(0, 250),
            "lane": _n(0, 99),
        },
        required_any=(("plate",), ("axles",), ("gross_kg",)),
    ),
    "platecam": KindSpec(
        fields={"plate": _PLATE, "lane": _n(0, 99), "confidence": _n(0, 1)},
        required_any=(("plate",),),
    ),
}
assert tuple(KIND_SPECS) == KINDS
