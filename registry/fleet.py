"""The fleet file (docs/contracts.md, "Fleet"): vehicles and their permits, sites, routes and zones.

The device registry knows a truck's terminal as a device (kind ``vehicle``); this file
knows the truck: its plate, its company (the responsible unit, payer of 野蛮渣土车 and
illegal-operation entries), its owner district (one payer of 超载超限), its axles and legal
gross weight, and its transport permit (准运证) with the dates, hours, routes and sites it
allows. It also holds the places the rules judge a position against: loading sites
(construction sites, 出土工地) and disposal sites (消纳场) as polygons, approved routes as
lines with a corridor width, and zones (a speed limit, or a control zone such as inside the
Fourth Ring where an unpermitted truck is illegal).

One YAML file, every mistake refused with the file, line, column and key path, and the fix
(``foundation.cityfile``)::

    vehicles:
      - {plate: 豫A12345, terminal: T-0001, company: 郑州顺达渣土运输有限公司,
         owner_district: jinshui, axles: 3,
         permit: {number: ZZ-ZT-2026-0001, valid_from: 2026-10-01, valid_until: 2026-12-31,
                  hours: ["22:00", "06:00"], routes: [R-JS-1], sites: [L-JS-1, D-ZM-1]}}
    sites:
      - {id: L-JS-1, kind: loading, district: jinshui, name: 北三环工地,
         polygon: [[113.66, 34.80], [113.67, 34.80], [113.67, 34.81], [113.66, 34.81]]}
    routes:
      - {id: R-JS-1, width_m: 120, line: [[113.665, 34.805], [113.70, 34.78]]}
    zones:
      - {id: ring4, name: 四环内, control: true, speed_limit_kmh: 40, polygon: [...]}

Coordinates are ``[lon, lat]`` in WGS-84 degrees, GeoJSON's order. Geometry is shapely's;
every shape is projected once, at load, onto a local plane in metres (equirectangular about
the fleet's centre: well under 1 % off across a city), so a position costs two
multiplications and a point-in-polygon test, and distances (a route's corridor) are metres.
A position's places come from ``Fleet.places(lat, lon)``: a grid of cells built at load (with
an ``STRtree`` when there are many shapes), decision 013.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import shapely
from shapely.geometry import LineString, Polygon
from shapely.validation import explain_validity
from yaml.nodes import Node, SequenceNode

from contract.topics import is_valid_segment
from foundation.cityfile import Document, Section, did_you_mean
from foundation.errors import read_config_text

__all__ = [
    "SITE_KINDS",
    "Fleet",
    "Permit",
    "Places",
    "Route",
    "Site",
    "Vehicle",
    "Zone",
    "empty_fleet",
    "load_fleet",
    "parse_fleet",
]

SITE_KINDS = ("loading", "disposal")
"""A loading site (a construction site trucks load at, 出土工地) or a disposal site (消纳场)."""

INDEX_FROM = 16
"""From this many shapes of one family on, the grid's cells are paired with shapes by an STRtree."""

_PLATE = re.compile(r"^[^\x00-\x1f\x7f-\x9f\s]{2,16}$")


@dataclass(frozen=True, slots=True)
class Permit:
    """A transport permit (准运证): when, at what hours, on which routes, between which sites."""

    number: str
    valid_from: str
    """First valid day, ``YYYY-MM-DD`` in the city's time zone."""
    valid_until: str
    """Last valid day (inclusive)."""
    hours: tuple[int, int] | None = None
    """(start, end) minutes after local midnight; None: any hour. 22:00-06:00 crosses midnight."""
    routes: tuple[str, ...] = ()
    """Approved route ids; empty: no route is imposed."""
    sites: tuple[str, ...] = ()
    """Approved site ids (where it may load and dump); empty: any site of the file."""

    def valid_on(self, day: str) -> bool:
        return self.valid_from <= day <= self.valid_until


@dataclass(frozen=True, slots=True)
class Vehicle:
    plate: str
    terminal: str | None
    """The terminal's device id in the device registry (None: a truck known only by plate)."""
    company: str
    """The responsible unit: payer of reckless-driving and illegal-operation entries."""
    owner_district: str
    """Where the vehicle is registered: one payer of an overload."""
    axles: int
    gross_limit_kg: int | None = None
    """This vehicle's legal gross weight; None: GB 1589-2016's limit for its axles (rules file)."""
    permit: Permit | None = None


@dataclass(frozen=True, slots=True)
class Site:
    id: str
    kind: str
    district: str
    name: str
    shape: Polygon = field(compare=False, repr=False)
    """In the fleet's plane (metres)."""
    lonlat: tuple[tuple[float, float], ...] = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Route:
    id: str
    width_m: float
    corridor: Polygon = field(compare=False, repr=False)
    """The line buffered by half the width, in the fleet's plane."""
    lonlat: tuple[tuple[float, float], ...] = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Zone:
    id: str
    name: str
    control: bool
    """A control zone: a truck without a valid permit operating here is illegal."""
    speed_limit_kmh: float | None
    shape: Polygon = field(compare=False, repr=False)
    lonlat: tuple[tuple[float, float], ...] = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Places:
    """What a position is inside of."""

    site: Site | None
    zones: tuple[Zone, ...]

    @property
    def control(self) -> Zone | None:
        return next((z for z in self.zones if z.control), None)

    def speed_limit(self, default: float) -> float:
        """The lowest limit of the zones the position is in, else ``default``."""
        limits = [z.speed_limit_kmh for z in self.zones if z.speed_limit_kmh is not None]
        return min(limits) if limits else default


_NOWHERE = Places(None, ())


class _Shapes:
    """Point-in-polygon over one family of shapes, through a grid of cells built at load.

    Each cell of ``cell`` metres lists the shapes that touch it, and says for each whether
    the cell lies wholly inside (no test needed then), so a position costs one dict lookup
    and, on a cell a shape's edge crosses, one prepared ``intersects_xy``. The cell-shape
    pairs come from an STRtree when the family has ``INDEX_FROM`` shapes or more, else from
    each shape's bounding box (decision 013).
    """

    __slots__ = ("items", "cell", "grid", "tree")

    def __init__(self, items: Sequence[tuple[Any, Polygon]], cell_m: float = 250.0) -> None:
        self.items = list(items)
        geoms = [g for _, g in self.items]
        for g in geoms:
            shapely.prepare(g)
        self.tree = shapely.STRtree(geoms) if len(geoms) >= INDEX_FROM else None
        self.grid: dict[tuple[int, int], list[tuple[int, bool]]] = {}
        cell = cell_m

        def span(b: tuple[float, float, float, float], c: float) -> tuple[range, range]:
            return (range(math.floor(b[0] / c), math.floor(b[2] / c) + 1),
                    range(math.floor(b[1] / c), math.floor(b[3] / c) + 1))  # fmt: skip

        while (
            geoms and sum(len(a) * len(b) for a, b in (span(g.bounds, cell) for g in geoms)) > 2e6
        ):
            cell *= 2  # a bounded grid however large the shapes
        self.cell = cell
        if not geoms:
            return
        if self.tree is not None:
            keys = sorted(
                {(i, j) for g in geoms for a, b in [span(g.bounds, cell)] for i in a for j in b}
            )
            boxes = shapely.box(*np.array([[i * cell, j * cell, (i + 1) * cell, (j + 1) * cell]
                                           for i, j in keys]).T)  # fmt: skip
            box_idx, shape_idx = self.tree.query(boxes, predicate="intersects")
            pairs = sorted(zip(shape_idx.tolist(), box_idx.tolist(), strict=True))
            inside = shapely.contains(
                np.array(geoms)[[p[0] for p in pairs]], boxes[[p[1] for p in pairs]]
            )
            for (k, b), whole in zip(pairs, inside.tolist(), strict=True):
                self.grid.setdefault(keys[b], []).append((k, bool(whole)))
            return
        for k, g in enumerate(geoms):
            a, b = span(g.bounds, cell)
            keys = [(i, j) for i in a for j in b]
            boxes = shapely.box(*np.array([[i * cell, j * cell, (i + 1) * cell, (j + 1) * cell]
                                           for i, j in keys]).T)  # fmt: skip
            touch = shapely.intersects(g, boxes).tolist()
            whole = shapely.contains(g, boxes).tolist()
            for key, t, w in zip(keys, touch, whole, strict=True):
                if t:
                    self.grid.setdefault(key, []).append((k, bool(w)))

    def at(self, x: float, y: float) -> list[Any]:
        entries = self.grid.get((math.floor(x / self.cell), math.floor(y / self.cell)))
        if entries is None:
            return []
        items = self.items
        return [
            items[k][0] for k, whole in entries if whole or shapely.intersects_xy(items[k][1], x, y)
        ]


class Fleet:
    """Vehicles by plate and by terminal, and the places of the city. Immutable once built."""

    def __init__(
        self,
        vehicles: Iterable[Vehicle] = (),
        sites: Iterable[Site] = (),
        routes: Iterable[Route] = (),
        zones: Iterable[Zone] = (),
        origin: tuple[float, float] = (113.65, 34.75),
        path: str | None = None,
    ) -> None:
        self.path = path
        self.origin = origin
        self.by_plate: dict[str, Vehicle] = {v.plate: v for v in vehicles}
        self.by_terminal: dict[str, Vehicle] = {
            v.terminal: v for v in self.by_plate.values() if v.terminal
        }
        self.sites: dict[str, Site] = {s.id: s for s in sites}
        self.routes: dict[str, Route] = {r.id: r for r in routes}
        self.zones: dict[str, Zone] = {z.id: z for z in zones}
        self._sites = _Shapes([(s, s.shape) for s in self.sites.values()])
        self._zones = _Shapes([(z, z.shape) for z in self.zones.values()])
        lon0, lat0 = origin
        self._kx = 111_320.0 * math.cos(math.radians(lat0))
        self._ky = 110_574.0

    def __len__(self) -> int:
        return len(self.by_plate)

    def __repr__(self) -> str:
        return (
            f"Fleet({len(self.by_plate)} vehicles, {len(self.sites)} sites, "
            f"{len(self.routes)} routes, {len(self.zones)} zones, path={self.path!r})"
        )

    def xy(self, lat: float, lon: float) -> tuple[float, float]:
        """A position on the fleet's plane, metres east and north of its centre."""
        return (lon - self.origin[0]) * self._kx, (lat - self.origin[1]) * self._ky

    def places(self, lat: float, lon: float) -> Places:
        x, y = self.xy(lat, lon)
        sites = self._sites.at(x, y) if self._sites.items else []
        zones = self._zones.at(x, y) if self._zones.items else []
        if not sites and not zones:
            return _NOWHERE
        return Places(sites[0] if sites else None, tuple(zones))

    def on_route(self, permit: Permit, lat: float, lon: float) -> bool:
        """Inside the corridor of one of the permit's routes (True when it imposes none)."""
        if not permit.routes:
            return True
        x, y = self.xy(lat, lon)
        for rid in permit.routes:
            r = self.routes.get(rid)
            if r is not None and shapely.intersects_xy(r.corridor, x, y):
                return True
        return False


def empty_fleet() -> Fleet:
    """No vehicles, no places: the vehicle rules then judge nothing."""
    return Fleet()


# --------------------------------------------------------------------------- loading


def load_fleet(path: str | os.PathLike[str], registry: Any = None) -> Fleet:
    """Load and check a fleet file; ``ConfigError`` with the line on any mistake.

    With ``registry`` (the device registry), every vehicle's terminal must be a ``vehicle``
    device there, registered in the vehicle's owner district (its telemetry topic's district).
    """
    name, text = read_config_text(path, "fleet file")
    return parse_fleet(text, name, registry)


def parse_fleet(text: str, file: str = "<fleet>", registry: Any = None) -> Fleet:
    doc = _FleetDoc.parse(text, file)
    return doc.fleet(registry)


def _day(doc: Document, node: Node | None, path: str) -> str:
    if node is None:
        doc.fail(doc.root, f"{path}: missing (required), e.g. 2026-12-31")  # type: ignore[arg-type]
    x = doc.scalar(node)
    if isinstance(x, date):
        return x.isoformat()
    if isinstance(x, str):
        try:
            return date.fromisoformat(x).isoformat()
        except ValueError:
            pass
    doc.fail(node, f"{path}: expected a date YYYY-MM-DD, got {doc.describe(node)}")


class _FleetDoc(Document):
    def ident(self, sec: Section, key: str, what: str) -> str:
        v = sec.text(key, required=True)
        assert v is not None
        if not is_valid_segment(v):
            self.fail(
                sec.get(key) or sec.node,
                f"{sec.key_path(key)}: {v!r} is not a valid {what} id "
                "(1-64 characters from A-Z a-z 0-9 _ . : -)",
            )
        return v

    def ring(self, sec: Section, key: str, minimum: int) -> tuple[tuple[float, float], ...]:
        nodes = sec.nodes(key)
        path = sec.key_path(key)
        if not nodes:
            self.fail(sec.node, f"{path}: missing (required): a list of [lon, lat] points")
        pts: list[tuple[float, float]] = []
        for i, n in enumerate(nodes):
            p = self.plain(n) if isinstance(n, SequenceNode) else None
            ok = (
                isinstance(p, list)
                and len(p) == 2
                and all(isinstance(c, int | float) and not isinstance(c, bool) for c in p)
                and all(math.isfinite(c) for c in p)
            )
            if not ok:
                self.fail(n, f"{path}[{i}]: expected a point [lon, lat], got {self.describe(n)}")
            lon, lat = float(p[0]), float(p[1])  # type: ignore[index]
            if not (-180 <= lon <= 180 and -90 <= lat <= 90):
                self.fail(n, f"{path}[{i}]: [{lon}, {lat}] is not [lon, lat] in degrees")
            pts.append((lon, lat))
        if len(pts) < minimum:
            self.fail(
                sec.get(key) or sec.node, f"{path}: needs at least {minimum} points, got {len(pts)}"
            )
        return tuple(pts)

    def fleet(self, registry: Any) -> Fleet:
        top = self.section()
        vehicle_secs = list(top.sections("vehicles"))
        site_secs = list(top.sections("sites"))
        route_secs = list(top.sections("routes"))
        zone_secs = list(top.sections("zones"))
        top.get("version")
        top.finish()
        raw_sites = [(s, self.ring(s, "polygon", 3)) for s in site_secs]
        raw_zones = [(z, self.ring(z, "polygon", 3)) for z in zone_secs]
        raw_routes = [(r, self.ring(r, "line", 2)) for r in route_secs]
        every = [p for _, pts in raw_sites + raw_zones + raw_routes for p in pts]
        origin = (113.65, 34.75)
        if every:
            lons, lats = [p[0] for p in every], [p[1] for p in every]
            origin = ((min(lons) + max(lons)) / 2, (min(lats) + max(lats)) / 2)
        plane = Fleet(origin=origin)

        def polygon(sec: Section, pts: tuple[tuple[float, float], ...]) -> Polygon:
            g = Polygon([plane.xy(lat, lon) for lon, lat in pts])
            if not g.is_valid:
                self.fail(
                    sec.get("polygon") or sec.node,
                    f"{sec.key_path('polygon')}: not a simple polygon ({explain_validity(g)}); "
                    "list the corners in order around the edge, without crossing",
                )
            return g

        sites: dict[str, Site] = {}
        for s, pts in raw_sites:
            sid = self.ident(s, "id", "site")
            if sid in sites:
                self.fail(s.node, f"{s.key_path('id')}: site {sid!r} given twice")
            kind = s.choice("kind", "", SITE_KINDS)
            if not kind:
                self.fail(s.node, f"{s.key_path('kind')}: missing (required): loading or disposal")
            district = self.ident(s, "district", "district")
            name = s.text("name", sid) or sid
            s.finish()
            sites[sid] = Site(sid, kind, district, name, polygon(s, pts), pts)
        routes: dict[str, Route] = {}
        for r, pts in raw_routes:
            rid = self.ident(r, "id", "route")
            if rid in routes:
                self.fail(r.node, f"{r.key_path('id')}: route {rid!r} given twice")
            width = r.number("width_m", 100.0)
            r.finish()
            line = LineString([plane.xy(lat, lon) for lon, lat in pts])
            routes[rid] = Route(rid, width, line.buffer(width / 2), pts)
        zones: dict[str, Zone] = {}
        for z, pts in raw_zones:
            zid = self.ident(z, "id", "zone")
            if zid in zones:
                self.fail(z.node, f"{z.key_path('id')}: zone {zid!r} given twice")
            name = z.text("name", zid) or zid
            control = z.flag("control", False)
            limit_node = z.get("speed_limit_kmh")
            limit = None if limit_node is None else z.number("speed_limit_kmh", 0.0)
            z.finish()
            if not control and limit is None:
                self.fail(
                    z.node,
                    f"{z.path}: zone {zid!r} judges nothing; give it control: true "
                    "and/or speed_limit_kmh",
                )
            zones[zid] = Zone(zid, name, control, limit, polygon(z, pts), pts)
        vehicles: dict[str, Vehicle] = {}
        terminals: dict[str, str] = {}
        for v in vehicle_secs:
            plate = v.text("plate", required=True)
            assert plate is not None
            if not _PLATE.match(plate):
                self.fail(
                    v.get("plate") or v.node,
                    f"{v.key_path('plate')}: {plate!r} is not a plate as cameras read it "
                    "(2-16 characters, no spaces), e.g. 豫A12345",
                )
            if plate in vehicles:
                self.fail(v.node, f"{v.key_path('plate')}: plate {plate!r} given twice")
            terminal = None
            if v.get("terminal") is not None:
                terminal = self.ident(v, "terminal", "terminal")
                if terminal in terminals:
                    self.fail(
                        v.get("terminal") or v.node,
                        f"{v.key_path('terminal')}: terminal {terminal!r} is already "
                        f"{terminals[terminal]}'s; one terminal per vehicle",
                    )
                terminals[terminal] = plate
            company = v.text("company", required=True)
            owner = self.ident(v, "owner_district", "district")
            axles = v.whole("axles", 0, minimum=2, what="axle count")
            limit_kg = v.whole("gross_limit_kg", 0, minimum=1, what="weight in kg")
            p = v.sub("permit")
            v.finish()
            if axles == 0:
                self.fail(
                    v.node, f"{v.key_path('axles')}: missing (required): the axle count, 2-12"
                )
            if axles > 12:
                self.fail(
                    v.get("axles") or v.node, f"{v.key_path('axles')}: at most 12, got {axles}"
                )
            permit = None if p is None else self.permit(p, sites, routes)
            if registry is not None and terminal is not None:
                dev = registry.get(terminal)
                where = v.get("terminal") or v.node
                if dev is None or dev.kind != "vehicle":
                    self.fail(
                        where,
                        f"{v.key_path('terminal')}: {terminal!r} is not a vehicle device of the "
                        f"device registry; add the row {terminal},vehicle,{owner},<grid>,{company}",
                    )
                if dev.district != owner:
                    self.fail(
                        where,
                        f"{v.key_path('terminal')}: {terminal!r} is registered in district "
                        f"{dev.district!r} but the vehicle's owner_district is {owner!r}; "
                        "make them agree (the terminal's topic carries the owner district)",
                    )
            vehicles[plate] = Vehicle(
                plate, terminal, str(company), owner, axles, limit_kg or None, permit
            )
        return Fleet(
            vehicles.values(), sites.values(), routes.values(), zones.values(), origin, self.file
        )

    def permit(self, p: Section, sites: dict[str, Site], routes: dict[str, Route]) -> Permit:
        number = p.text("number", required=True)
        valid_from = _day(self, p.get("valid_from"), p.key_path("valid_from"))
        valid_until = _day(self, p.get("valid_until"), p.key_path("valid_until"))
        if valid_until < valid_from:
            self.fail(
                p.get("valid_until") or p.node,
                f"{p.key_path('valid_until')}: {valid_until} is before valid_from {valid_from}",
            )
        hours = None
        hn = p.get("hours")
        if hn is not None:
            if not isinstance(hn, SequenceNode) or len(hn.value) != 2:
                self.fail(hn, f'{p.key_path("hours")}: expected ["HH:MM", "HH:MM"] (start, end)')
            hours = (
                self.time_of_day(hn.value[0], p.key_path("hours") + "[0]"),
                self.time_of_day(hn.value[1], p.key_path("hours") + "[1]"),
            )
        ids: dict[str, tuple[str, ...]] = {}
        for key, known in (("routes", routes), ("sites", sites)):
            out = []
            for i, n in enumerate(p.nodes(key)):
                x = self.scalar(n)
                if not isinstance(x, str) or x not in known:
                    self.fail(
                        n,
                        f"{p.key_path(key)}[{i}]: no {key[:-1]} {self.describe(n)} in this file"
                        + did_you_mean(x, known),
                    )
                out.append(x)
            ids[key] = tuple(out)
        p.finish()
        return Permit(str(number), valid_from, valid_until, hours, ids["routes"], ids["sites"])
