"""The simulated city's muck trucks: a fleet file, its devices, and every message of their trips.

Six trucks of three companies carry spoil at night from three construction sites inside the
Fourth Ring (北三环 in Jinshui, 龙湖 in Zhengdong, 大学路 in Erqi) east along their approved
routes to the disposal field in Zhongmou (中牟消纳场), through a junction on 郑开大道 where a
weigh-in-motion station weighs every truck, past plate cameras inside the ring. Each truck
parks inside its loading site; a trip leaves the site at the truck's speed, tips for two
minutes inside the disposal field and drives back. A truck reports every ``REPORT_S``
seconds (JT/T 808 terminals report every 30 s moving, here also parked); the station and
the cameras report one message per truck that passes them.

Routine trips (one per permitted truck, 03:00 onwards, 10 min apart, each night of the run) book
nothing. The truck scenarios (sim/scenarios.py) make one trip of one truck go wrong:

=================  ==============================================================
kind               the trip at ``at``
=================  ==============================================================
truck_speeding     at ``speed_kmh`` (70) the whole way (40 km/h inside the ring)
truck_dumping      stops at ``fraction`` (0.4) of the way out and tips by the road
truck_cover_open   drives out loaded with its cover open
truck_overload     carries ``gross_kg`` (33,000) across the weigh station
truck_unlicensed   a trip (by a truck without a permit) inside the control zone
=================  ==============================================================

Everything is a function of the scenarios and this module's data, not of which devices a
publisher process holds, so a city cut in slices sends the same messages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from contract.clock import HOUR_MS, MINUTE_MS

__all__ = ["FLEET_YAML", "REPORT_S", "SimTruck", "TRUCKS", "fleet_messages", "fleet_sim_devices"]

REPORT_S = 30
"""Seconds between a terminal's reports."""

_L = {  # loading sites: (district, name, centre lon, lat)
    "L-JS-01": ("jinshui", "金水区北三环出土工地", 113.7020, 34.8015),
    "L-ZD-01": ("zhengdong", "郑东新区龙湖出土工地", 113.7620, 34.7715),
    "L-EQ-01": ("erqi", "二七区大学路出土工地", 113.6220, 34.7015),
}
_D = ("D-ZM-01", "zhongmou", "中牟县建筑垃圾消纳场", 113.9050, 34.7950)
_J = (113.8200, 34.7950)  # the junction on 郑开大道, outside the ring
WIM = ("WIM-ZD-01", "zhengdong", 113.8600, 34.7950)
CAMS = (
    ("CAM-JS-01", "jinshui", 113.7600, 34.8000),
    ("CAM-EQ-01", "erqi", 113.7000, 34.7200),
)
_ROUTES = {  # route id -> the polyline, loading site to the disposal field
    "R-JS": [_L["L-JS-01"][2:], CAMS[0][2:], _J, WIM[2:], _D[3:]],
    "R-ZD": [_L["L-ZD-01"][2:], (113.8000, 34.7850), _J, WIM[2:], _D[3:]],
    "R-EQ": [_L["L-EQ-01"][2:], CAMS[1][2:], (113.8000, 34.7800), _J, WIM[2:], _D[3:]],
}


@dataclass(frozen=True, slots=True)
class SimTruck:
    terminal: str
    plate: str
    company: str
    owner: str
    axles: int
    site: str
    route: str
    permit: bool
    speed_kmh: float = 35.0


TRUCKS = (
    SimTruck("T-JS-01", "豫A10001", "郑州顺达渣土运输有限公司", "jinshui", 3, "L-JS-01", "R-JS", True),
    SimTruck("T-JS-02", "豫A10002", "郑州顺达渣土运输有限公司", "jinshui", 3, "L-JS-01", "R-JS", True),
    SimTruck("T-ZD-01", "豫A20001", "郑州东区渣土运输有限公司", "zhengdong", 3, "L-ZD-01", "R-ZD", True),
    SimTruck("T-ZD-02", "豫A20002", "郑州东区渣土运输有限公司", "zhengdong", 4, "L-JS-01", "R-JS", True),
    SimTruck("T-EQ-01", "豫A30001", "郑州宏远土方工程有限公司", "erqi", 3, "L-EQ-01", "R-EQ", True),
    SimTruck("T-EQ-02", "豫A30002", "郑州宏远土方工程有限公司", "erqi", 4, "L-EQ-01", "R-EQ", False),
)  # fmt: skip
"""T-ZD-02 is owned in Zhengdong but loads in Jinshui: an overload books both districts."""
_BY_TERMINAL = {t.terminal: t for t in TRUCKS}
_LEGAL_KG = {3: 25_000, 4: 31_000}


def _square(lon: float, lat: float, half: float) -> str:
    return (f"[[{lon - half:.4f}, {lat - half:.4f}], [{lon + half:.4f}, {lat - half:.4f}], "
            f"[{lon + half:.4f}, {lat + half:.4f}], [{lon - half:.4f}, {lat + half:.4f}]]")  # fmt: skip


def _fleet_yaml() -> str:
    out = [
        '# The simulated city\'s fleet (sim/trucks.py): docs/contracts.md, "Fleet".',
        "vehicles:",
    ]
    for t in TRUCKS:
        out.append(f"  - {{plate: {t.plate}, terminal: {t.terminal}, company: {t.company}, "
                   f"owner_district: {t.owner}, axles: {t.axles}"
                   + (f", permit: {{number: ZZ-ZT-{t.terminal}, valid_from: 2020-01-01, "
                      f"valid_until: 2099-12-31, hours: [\"22:00\", \"06:00\"], routes: [{t.route}], "
                      f"sites: [{t.site}, {_D[0]}]}}}}" if t.permit else "}"))  # fmt: skip
    out.append("sites:")
    for sid, (district, name, lon, lat) in _L.items():
        out.append(f"  - {{id: {sid}, kind: loading, district: {district}, name: {name}, "
                   f"polygon: {_square(lon, lat, 0.002)}}}")  # fmt: skip
    out.append(f"  - {{id: {_D[0]}, kind: disposal, district: {_D[1]}, name: {_D[2]}, "
               f"polygon: {_square(_D[3], _D[4], 0.005)}}}")  # fmt: skip
    out.append("routes:")
    for rid, line in _ROUTES.items():
        pts = ", ".join(f"[{lon:.4f}, {lat:.4f}]" for lon, lat in line)
        out.append(f"  - {{id: {rid}, width_m: 150, line: [{pts}]}}")
    out.append("zones:")
    out.append("  - {id: ring4, name: 四环以内, control: true, speed_limit_kmh: 40,")
    out.append("     polygon: [[113.5500, 34.6700], [113.8000, 34.6700], [113.8000, 34.8600], "
               "[113.5500, 34.8600]]}")  # fmt: skip
    return "\n".join(out) + "\n"


FLEET_YAML = _fleet_yaml()
"""The fleet file the simulated city writes beside its registry (``City.write_fleet``)."""


def fleet_sim_devices() -> list[dict[str, Any]]:
    """The registry rows of the fleet's devices: terminals, the weigh station, the cameras."""
    rows = []
    for t in TRUCKS:
        _, name, lon, lat = _L[t.site]
        rows.append({"device_id": t.terminal, "kind": "vehicle", "district": t.owner,
                     "grid": f"{t.owner[:2].upper()}-FLEET", "unit": t.company,
                     "address": f"{t.plate} 车载终端 (JT/T 808)，停放于{name}", "lat": lat, "lon": lon})  # fmt: skip
    rows.append({"device_id": WIM[0], "kind": "weighstation", "district": WIM[1], "grid": "ZD-G30",
                 "unit": "郑州市治超办", "address": "郑州市郑东新区郑开大道动态称重检测点",
                 "lat": WIM[3], "lon": WIM[2]})  # fmt: skip
    for cid, district, lon, lat in CAMS:
        rows.append({"device_id": cid, "kind": "platecam", "district": district,
                     "grid": f"{district[:2].upper()}-G01", "unit": "郑州市公安局交通警察支队",
                     "address": f"郑州市{district}卡口 {cid}", "lat": lat, "lon": lon})  # fmt: skip
    return rows


# --------------------------------------------------------------------------- trips

_KX = 111_320.0 * math.cos(math.radians(34.77))
_KY = 110_574.0


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    return math.hypot((b[0] - a[0]) * _KX, (b[1] - a[1]) * _KY)


@dataclass(frozen=True, slots=True)
class _Trip:
    start: int
    speed_kmh: float = 35.0
    dump_at: float | None = None
    """Fraction of the way out where the truck stops and tips by the road."""
    cover_open: bool = False
    gross_kg: int | None = None


_DWELL_MS = 6 * MINUTE_MS
"""Stops (at the disposal field, by the road) last this long; the body is up in the middle 2 min."""


def _trips(scenarios: list[Any], start_ms: int, end_ms: int) -> dict[str, list[_Trip]]:
    trips: dict[str, list[_Trip]] = {t.terminal: [] for t in TRUCKS}
    for s in scenarios:
        if not s.kind.startswith("truck_"):
            continue
        p = s.params
        trip = _Trip(
            start_ms + s.at_ms,
            speed_kmh=p.get("speed_kmh", 35.0) if s.kind == "truck_speeding" else 35.0,
            dump_at=p.get("fraction", 0.4) if s.kind == "truck_dumping" else None,
            cover_open=s.kind == "truck_cover_open",
            gross_kg=int(p["gross_kg"]) if s.kind == "truck_overload" else None,
        )
        for d in s.devices:
            trips[d].append(trip)
    # routine: one trip a night per permitted truck, from 03:00 local (UTC+8), 10 min apart
    night = start_ms - (start_ms + 8 * HOUR_MS) % (24 * HOUR_MS) + 3 * HOUR_MS
    if night < start_ms:
        night += 24 * HOUR_MS
    first_night = night
    for k, t in enumerate(x for x in TRUCKS if x.permit):
        night = first_night
        while night < end_ms:
            at = night + k * 10 * MINUTE_MS
            if start_ms <= at < end_ms:
                trips[t.terminal].append(_Trip(at))
            night += 24 * HOUR_MS
    for v in trips.values():
        v.sort(key=lambda x: x.start)
    return trips


def fleet_messages(
    scenarios: list[Any], start_ms: int, end_ms: int
) -> dict[str, list[tuple[int, dict[str, Any]]]]:
    """Device id -> its messages ``(due, payload)`` in time order, for the whole run."""
    out: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    passes: list[tuple[str, int, dict[str, Any]]] = []  # (device, due, payload) of station/cameras
    step = REPORT_S * 1000
    for terminal, trips in _trips(scenarios, start_ms, end_ms).items():
        truck = _BY_TERMINAL[terminal]
        path = _ROUTES[truck.route]
        legs = [_metres(a, b) for a, b in zip(path, path[1:], strict=False)]
        length = sum(legs)
        msgs: list[tuple[int, dict[str, Any]]] = []
        spans = [_plan(tr, length) for tr in trips]
        t = start_ms + (hash_phase(terminal) % step)
        for tr, (t_out, t_dwell, t_back, t_end) in zip(trips, spans, strict=True):
            _passes(truck, tr, path, legs, (t_out, t_dwell, t_back, t_end), passes)
        k = 0
        while t < end_ms:
            while k < len(spans) and spans[k][3] <= t:
                k += 1
            if k < len(spans) and trips[k].start <= t:
                msgs.append((t, _on_trip(truck, trips[k], spans[k], path, legs, t)))
            else:
                lon, lat = path[0]
                msgs.append((t, _point(t, lon, lat, 0.0, 0.0, acc=False, cover=True, lifted=False)))
            t += step
        out[terminal] = msgs
    for device, due, payload in sorted(passes, key=lambda x: (x[1], x[0])):
        out.setdefault(device, []).append((due, payload))
    return out


def hash_phase(text: str) -> int:
    """A stable spread of report phases (Python's str hash is salted per process)."""
    return sum((i + 1) * ord(c) for i, c in enumerate(text)) * 7919


def _plan(tr: _Trip, length: float) -> tuple[int, int, int, int]:
    """(leaves, reaches the field, leaves the field, back in the site) of a trip."""
    ms_per_m = 3600.0 / tr.speed_kmh  # ms per metre at speed_kmh: 3.6e6 ms/h / (v * 1000 m/h)
    out = int(length * ms_per_m) + (_DWELL_MS if tr.dump_at is not None else 0)
    back = int(length * 3600.0 / 35.0)
    t_out = tr.start
    t_dwell = t_out + out
    t_back = t_dwell + _DWELL_MS
    return t_out, t_dwell, t_back, t_back + back


def _at(path: list[tuple[float, float]], legs: list[float], d: float) -> tuple[float, float, float]:
    """(lon, lat, heading) at ``d`` metres along ``path``."""
    for (a, b), leg in zip(zip(path, path[1:], strict=False), legs, strict=True):
        if d <= leg or b is path[-1]:
            f = 0.0 if leg == 0 else min(1.0, max(0.0, d / leg))
            dx, dy = (b[0] - a[0]) * _KX, (b[1] - a[1]) * _KY
            heading = (math.degrees(math.atan2(dx, dy)) + 360) % 360
            return a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, heading
        d -= leg
    return path[-1][0], path[-1][1], 0.0


def _point(t: int, lon: float, lat: float, speed: float, heading: float, *, acc: bool, cover: bool,
           lifted: bool, load: int | None = None) -> dict[str, Any]:  # fmt: skip
    p: dict[str, Any] = {
        "ts": t, "lat": round(lat, 6), "lon": round(lon, 6), "speed_kmh": round(speed, 1),
        "heading_deg": round(heading), "acc_on": acc, "located": True, "cover_closed": cover,
        "body_lifted": lifted, "alarm": 0, "status": 3 if acc else 2,
    }  # fmt: skip
    if load is not None:
        p["load_kg"] = load
    return p


def _on_trip(truck: SimTruck, tr: _Trip, span: tuple[int, int, int, int],
             path: list[tuple[float, float]], legs: list[float], t: int) -> dict[str, Any]:  # fmt: skip
    t_out, t_dwell, t_back, t_end = span
    length = sum(legs)
    if t < t_dwell:  # out, loaded
        elapsed = t - t_out
        d = elapsed * tr.speed_kmh / 3600.0
        if tr.dump_at is not None:
            stop = tr.dump_at * length
            stop_t = t_out + int(stop * 3600.0 / tr.speed_kmh)
            if stop_t <= t < stop_t + _DWELL_MS:
                lon, lat, hd = _at(path, legs, stop)
                up = stop_t + 2 * MINUTE_MS <= t < stop_t + 4 * MINUTE_MS
                return _point(t, lon, lat, 0.0, hd, acc=True, cover=True, lifted=up)
            if t >= stop_t + _DWELL_MS:
                d = (t - _DWELL_MS - t_out) * tr.speed_kmh / 3600.0
        lon, lat, hd = _at(path, legs, d)
        return _point(
            t, lon, lat, tr.speed_kmh, hd, acc=True, cover=not tr.cover_open, lifted=False
        )
    if t < t_back:  # at the field, tipping in the middle two minutes
        lon, lat = path[-1]
        up = t_dwell + 2 * MINUTE_MS <= t < t_dwell + 4 * MINUTE_MS
        return _point(t, lon, lat, 0.0, 0.0, acc=True, cover=not tr.cover_open, lifted=up)
    d = length - (t - t_back) * 35.0 / 3600.0  # back, empty
    lon, lat, hd = _at(path, legs, max(0.0, d))
    return _point(
        t, lon, lat, 35.0, (hd + 180) % 360, acc=True, cover=not tr.cover_open, lifted=False
    )


def _passes(truck: SimTruck, tr: _Trip, path: list[tuple[float, float]], legs: list[float],
            span: tuple[int, int, int, int], out: list[tuple[str, int, dict[str, Any]]]) -> None:  # fmt: skip
    """The weighings and sightings of one trip: where the path passes the station or a camera."""
    t_out, t_dwell, t_back, _ = span
    legal = _LEGAL_KG[truck.axles]
    along = 0.0
    for i, pt in enumerate(path):
        if i:
            along += legs[i - 1]
        if pt == WIM[2:]:
            there = t_out + int(along * 3600.0 / tr.speed_kmh)
            if tr.dump_at is not None and along > tr.dump_at * sum(legs):
                there += _DWELL_MS
            back = t_back + int((sum(legs) - along) * 3600.0 / 35.0)
            loaded = tr.gross_kg if tr.gross_kg is not None else int(legal * 0.9)
            if tr.dump_at is not None and along > tr.dump_at * sum(legs):
                loaded = 14_000  # tipped by the road: empty at the station
            out.append((WIM[0], there, {"ts": there, "plate": truck.plate, "axles": truck.axles,
                                        "gross_kg": loaded, "speed_kmh": tr.speed_kmh, "lane": 1}))  # fmt: skip
            out.append((WIM[0], back, {"ts": back, "plate": truck.plate, "axles": truck.axles,
                                       "gross_kg": 14_000, "speed_kmh": 35.0, "lane": 2}))  # fmt: skip
        for cid, _district, lon, lat in CAMS:
            if pt == (lon, lat):
                there = t_out + int(along * 3600.0 / tr.speed_kmh)
                back = t_back + int((sum(legs) - along) * 3600.0 / 35.0)
                for when in (there, back):
                    out.append((cid, when, {"ts": when, "plate": truck.plate, "confidence": 0.97}))
