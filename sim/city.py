"""The simulated city: Zhengzhou's districts and a fleet of devices in them.

``build_city(seed, n_dust, n_manhole, n_streetlight)`` places dust monitors on
construction sites, manhole covers along roads and streetlights, each with the
registry columns of docs/contracts.md ("Registry"), and
``City.write_registry(path)`` writes the matching registry CSV (so the bridge
and the streams know every simulated device). The same arguments always give the same city, byte for byte.

Device ids are ``{DS|MH|SL}-{district code}-{nnnn}``, numbered per district
and kind from 1 (``DS-JS-0001`` is the first dust monitor in Jinshui). When
a kind has at least one device per district, every district gets at least
one, so a scenario file can name ``DS-JS-0001`` or ``MH-ZY-0001`` and find it
in any city of a reasonable size. ``id_tag`` (e.g. a test's unique tag) goes
between the prefix and the district code: ``MH-t1a2b-JS-0001``.

Component codes are the CJ/T 214 minor categories of "public facilities":
0101 上水井盖, 0102 污水井盖, 0103 雨水井盖, 0104 雨水箅子, 0105 电力井盖,
0107 通讯井盖, 0111 燃气井盖, 0118 路灯. Each cover's property-rights unit
follows from its category (the water company owns water covers, the power
company power covers, ...).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from registry.devices import COLUMNS, Device, Registry

__all__ = [
    "DEFAULT_RATIO",
    "DISTRICTS",
    "City",
    "District",
    "SimDevice",
    "build_city",
    "split_devices",
]


@dataclass(frozen=True, slots=True)
class District:
    id: str
    """Id as used in MQTT topics and the registry (``jinshui``)."""
    code: str
    """Two-letter code used in device ids and grid ids (``JS``)."""
    name: str
    """Chinese name (``金水区``)."""
    lat: float
    lon: float
    """Approximate centre."""
    infra_weight: float
    """Share of covers and lamps (dense old town > outskirts)."""
    build_weight: float
    """Share of construction sites (new districts build most)."""
    roads: tuple[tuple[str, str], ...]
    """(road name, road class) pairs, for addresses and manhole road classes."""


DISTRICTS: tuple[District, ...] = (
    District("jinshui", "JS", "金水区", 34.800, 113.660, 1.5, 1.0,
             (("花园路", "main"), ("农业路", "main"), ("金水路", "main"), ("东风路", "secondary"),
              ("经三路", "secondary"), ("文化路", "secondary"), ("纬五路", "other"),
              ("黄河路", "secondary"))),
    District("erqi", "EQ", "二七区", 34.725, 113.640, 1.0, 0.7,
             (("大学路", "main"), ("陇海路", "main"), ("航海中路", "main"), ("京广路", "main"),
              ("嵩山路", "secondary"), ("长江路", "secondary"), ("兴华街", "other"))),
    District("zhongyuan", "ZY", "中原区", 34.748, 113.600, 1.0, 0.8,
             (("中原路", "main"), ("建设路", "main"), ("桐柏路", "secondary"),
              ("秦岭路", "secondary"), ("棉纺路", "secondary"), ("工人路", "other"))),
    District("guancheng", "GC", "管城回族区", 34.750, 113.680, 0.9, 0.7,
             (("紫荆山路", "main"), ("城东路", "main"), ("商都路", "secondary"),
              ("东大街", "secondary"), ("管城街", "other"), ("南顺城街", "other"))),
    District("huiji", "HJ", "惠济区", 34.867, 113.617, 0.6, 0.8,
             (("天河路", "main"), ("江山路", "main"), ("开元路", "secondary"),
              ("长兴路", "secondary"), ("清华园路", "other"))),
    District("shangjie", "SJ", "上街区", 34.802, 113.290, 0.3, 0.3,
             (("中心路", "main"), ("济源路", "secondary"), ("登封路", "secondary"),
              ("淮阳路", "other"))),
    District("zhengdong", "ZD", "郑东新区", 34.770, 113.730, 1.3, 1.6,
             (("金水东路", "main"), ("商务内环路", "main"), ("农业东路", "main"),
              ("龙湖中环路", "secondary"), ("众意路", "secondary"), ("平安大道", "main"),
              ("商务东三街", "other"))),
    District("jingkai", "JK", "经开区", 34.720, 113.740, 0.8, 1.2,
             (("航海东路", "main"), ("经北一路", "secondary"), ("第八大街", "secondary"),
              ("经南三路", "secondary"), ("第三大街", "other"))),
    District("gaoxin", "GX", "高新区", 34.810, 113.560, 0.9, 1.1,
             (("科学大道", "main"), ("西三环", "main"), ("长椿路", "secondary"),
              ("莲花街", "secondary"), ("翠竹街", "other"))),
    District("hangkong", "HK", "航空港区", 34.530, 113.850, 1.0, 1.6,
             (("迎宾大道", "main"), ("新港大道", "main"), ("四港联动大道", "main"),
              ("郑港四路", "secondary"), ("雁鸣路", "other"))),
)  # fmt: skip
_BY_ID = {d.id: d for d in DISTRICTS}

# (component code, name, property-rights unit, weight among covers)
_COVER_TYPES = (
    ("0101", "上水井盖", "郑州自来水投资控股有限公司", 0.15),
    ("0102", "污水井盖", "郑州市市政工程管理处", 0.25),
    ("0103", "雨水井盖", "郑州市市政工程管理处", 0.20),
    ("0104", "雨水箅子", "郑州市市政工程管理处", 0.08),
    ("0105", "电力井盖", "郑州供电公司", 0.14),
    ("0107", "通讯井盖", "中国联通郑州分公司", 0.08),
    ("0111", "燃气井盖", "郑州华润燃气股份有限公司", 0.10),
)
_LAMP_UNIT = "郑州市城市照明灯饰管理处"
_LAMP_CODE = "0118"
_BUILDERS = (
    "中建七局第二建筑有限公司", "河南五建建设集团有限公司", "郑州一建集团有限公司",
    "中国建筑第七工程局有限公司", "中铁七局集团郑州工程有限公司", "河南国基建设集团有限公司",
    "中建三局集团有限公司", "河南省第二建设集团有限公司", "郑州市第一建筑工程集团有限公司",
    "河南天工建设集团有限公司",
)  # fmt: skip
_SITE_KINDS = ("住宅项目", "地铁站点", "道路改造", "商业综合体", "学校项目", "安置房项目")
_SPOTS = ("东北角", "西北角", "东南角", "西南角", "北侧", "南侧", "东侧", "西侧")

DEFAULT_RATIO = (0.15, 0.55, 0.30)
"""Share of dust monitors, manhole covers and streetlights in ``split_devices``."""


@dataclass(frozen=True, slots=True)
class SimDevice:
    """One simulated device: its registry row plus what its signals need."""

    device_id: str
    kind: str
    district: str
    grid: str
    unit: str
    road_class: str
    """``main``/``secondary``/``other`` for covers and lamps; empty for dust sites."""
    address: str
    lat: float
    lon: float
    component_code: str
    """CJ/T 214 minor category; empty for dust sites."""
    base: float
    """Kind-specific level: a site's own PM10 contribution (µg/m³), a lamp's
    rated current (A), a cover's dry water level (cm)."""
    battery0: float
    """Battery at the start, % (covers; 0 for mains-powered kinds)."""
    phase: float
    """Report phase in [0, 1): when in its period the device reports."""
    gateway: str = ""
    """The HJ 212 gateway a dust monitor reports through (``City.with_hj212``); empty: MQTT."""
    mn: str = ""
    """Its HJ 212 MN (empty: not an HJ 212 monitor)."""
    phone: str = ""
    """A truck terminal's JT/T 808 phone number (``City.with_jt808``; empty: it speaks MQTT)."""

    @property
    def cabinet(self) -> str:
        """A lamp's control cabinet (控制箱): twelve lamps of a district to a cabinet."""
        if self.kind != "streetlight":
            return ""
        n = int(self.device_id.rsplit("-", 1)[1])
        return f"KX-{self.device_id.split('-')[1]}-{(n - 1) // LAMPS_PER_CABINET + 1:02d}"

    @property
    def circuit(self) -> str:
        """A lamp's circuit in its cabinet: two circuits of six lamps each."""
        if self.kind != "streetlight":
            return ""
        n = int(self.device_id.rsplit("-", 1)[1])
        return f"L{(n - 1) % LAMPS_PER_CABINET // LAMPS_PER_CIRCUIT + 1}"

    def registry_row(self) -> list[str]:
        """The row in ``REGISTRY_HEADER`` order."""
        return [
            self.device_id, self.kind, self.district, self.grid, self.unit, self.road_class,
            self.address, f"{self.lat:.5f}", f"{self.lon:.5f}", "", "", self.component_code,
            self.cabinet, self.circuit, self.gateway, self.mn, self.phone,
        ]  # fmt: skip

    def to_device(self) -> Device:
        """The ``registry.devices.Device`` the written registry holds for it."""
        return Device(
            self.device_id, self.kind, self.district, self.grid, self.unit,
            self.road_class or None, self.address, round(self.lat, 5), round(self.lon, 5),
            None, None, self.component_code or None,
            cabinet=self.cabinet or None, circuit=self.circuit or None,
            gateway=self.gateway or None, mn=self.mn or None, phone=self.phone or None,
        )  # fmt: skip


LAMPS_PER_CABINET = 12
LAMPS_PER_CIRCUIT = 6
REGISTRY_HEADER = (*COLUMNS, "cabinet", "circuit", "gateway", "mn", "phone")
"""The written registry's columns: docs/contracts.md's, the lamps' cabinet and circuit, the
HJ 212 monitors' gateway and MN, and the JT/T 808 terminals' phone."""


@dataclass(frozen=True)
class City:
    """A simulated fleet. ``devices`` are ordered by kind, then district, then number."""

    seed: int
    devices: tuple[SimDevice, ...]
    fleet_yaml: str = ""
    """The fleet file of its trucks (sim/trucks.py), empty for a city without them."""
    by_id: dict[str, SimDevice] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", {d.device_id: d for d in self.devices})
        if len(self.by_id) != len(self.devices):
            raise ValueError("duplicate device ids in the city")

    def __len__(self) -> int:
        return len(self.devices)

    def __iter__(self) -> Iterator[SimDevice]:
        return iter(self.devices)

    def of_kind(self, kind: str) -> list[SimDevice]:
        return [d for d in self.devices if d.kind == kind]

    def counts(self) -> dict[str, int]:
        out = {"dust": 0, "manhole": 0, "streetlight": 0}
        for d in self.devices:
            out[d.kind] = out.get(d.kind, 0) + 1
        return out

    def with_hj212(self, share: float, gateway: str) -> City:
        """The same city with ``share`` of its dust sites as HJ 212 monitors behind ``gateway``.

        Spread evenly over the dust sites in their order (every fifth for 0.2), so
        the same city and share always give the same monitors. Their MN is
        ``4101`` + the device id without dashes (letters and digits, at most 24).
        """
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"Invalid HJ 212 share {share!r}; expected 0 to 1")
        out, k = [], 0
        for d in self.devices:
            if d.kind == "dust":
                if int((k + 1) * share) > int(k * share):
                    mn = ("4101" + d.device_id.replace("-", ""))[:24]
                    d = dataclasses.replace(d, gateway=gateway, mn=mn)
                k += 1
            out.append(d)
        return dataclasses.replace(self, devices=tuple(out))  # the fleet stays

    def hj212_monitors(self) -> list[SimDevice]:
        return [d for d in self.devices if d.mn]

    def with_jt808(self, share: float, gateway: str) -> City:
        """The same city with ``share`` of its truck terminals speaking JT/T 808 to ``gateway``.

        Spread evenly over the ``vehicle`` devices in their order, as ``with_hj212``
        spreads the monitors; the phone number is ``0139`` + eight digits of the
        truck's place in that order (a 2013 BCD[6] number).
        """
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"Invalid JT/T 808 share {share!r}; expected 0 to 1")
        out, k = [], 0
        for d in self.devices:
            if d.kind == "vehicle":
                if int((k + 1) * share) > int(k * share):
                    d = dataclasses.replace(d, gateway=gateway, phone=f"0139{k + 1:08d}")
                k += 1
            out.append(d)
        return dataclasses.replace(self, devices=tuple(out))

    def jt808_terminals(self) -> list[SimDevice]:
        return [d for d in self.devices if d.phone]

    def slice(self, index: int, count: int) -> City:
        """Every ``count``-th device starting at ``index`` (one publisher process's share)."""
        if not 0 <= index < count:
            raise ValueError(f"Invalid slice {index} of {count}; expected 0 <= index < count")
        return City(self.seed, self.devices[index::count], self.fleet_yaml)

    def registry_csv(self) -> str:
        """The registry file's text (the header of docs/contracts.md, one row per device)."""
        buf = io.StringIO(newline="")
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(REGISTRY_HEADER)
        for d in self.devices:
            w.writerow(d.registry_row())
        return buf.getvalue()

    def write_registry(self, path: str | os.PathLike[str]) -> None:
        """Write the registry CSV (UTF-8) atomically: a bridge watching it never sees half."""
        name = os.fspath(path)
        tmp = f"{name}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(self.registry_csv())
        os.replace(tmp, name)

    def registry(self) -> Registry:
        """The same registry in memory (equal to loading the written file), with its fleet."""
        reg = Registry((d.to_device() for d in self.devices), path=None)
        if self.fleet_yaml:
            from registry.fleet import parse_fleet

            reg.fleet = parse_fleet(self.fleet_yaml, "<simulated fleet>", reg)
        return reg

    def write_fleet(self, path: str | os.PathLike[str]) -> None:
        """Write the fleet file (docs/contracts.md, "Fleet") atomically, as the registry."""
        name = os.fspath(path)
        tmp = f"{name}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(self.fleet_yaml)
        os.replace(tmp, name)


def split_devices(
    total: int, ratio: tuple[float, float, float] = DEFAULT_RATIO
) -> tuple[int, int, int]:
    """``total`` devices as (dust, manhole, streetlight) by ``ratio`` (largest remainder)."""
    if type(total) is not int or total < 0:
        raise ValueError(f"Invalid device count {total!r}; expected a whole number >= 0")
    return tuple(_apportion(total, list(ratio)))  # type: ignore[return-value]


def _apportion(n: int, weights: list[float]) -> list[int]:
    """Split ``n`` by ``weights``: largest remainder; ties by order. Deterministic."""
    if n == 0:
        return [0] * len(weights)
    total = sum(weights)
    exact = [n * w / total for w in weights]
    out = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[: n - sum(out)]:
        out[i] += 1
    return out


def _per_district(n: int, weights: list[float]) -> list[int]:
    """Like ``_apportion``, but every district gets one first when there are enough."""
    k = len(weights)
    if n >= k:
        return [1 + c for c in _apportion(n - k, weights)]
    return _apportion(n, weights)


def build_city(
    seed: int,
    n_dust: int,
    n_manhole: int,
    n_streetlight: int,
    id_tag: str = "",
    fleet: bool = False,
) -> City:
    """A deterministic fleet of the given sizes spread over the ten districts.

    seed: same seed and sizes give the same city.
    n_dust, n_manhole, n_streetlight: devices of each kind (>= 0).
    id_tag: optional text inserted in every device id (``MH-<tag>-JS-0001``),
        so a test's devices never collide with another's; 1-20 characters from
        ``A-Z a-z 0-9``.
    fleet: also the six muck trucks, the weigh station and the two plate cameras of
        sim/trucks.py, with their fleet file (``City.fleet_yaml``).
    """
    for name, n in (("n_dust", n_dust), ("n_manhole", n_manhole), ("n_streetlight", n_streetlight)):
        if type(n) is not int or n < 0:
            raise ValueError(f"Invalid {name} {n!r}; expected a whole number >= 0")
    if id_tag and not (id_tag.isascii() and id_tag.isalnum() and len(id_tag) <= 20):
        raise ValueError(f"Invalid id_tag {id_tag!r}; use 1-20 characters from A-Z a-z 0-9")
    rng = random.Random(f"citywatch-city:{seed}")
    tag = f"{id_tag}-" if id_tag else ""
    devices: list[SimDevice] = []
    plan = (
        ("dust", "DS", n_dust, [d.build_weight for d in DISTRICTS]),
        ("manhole", "MH", n_manhole, [d.infra_weight for d in DISTRICTS]),
        ("streetlight", "SL", n_streetlight, [d.infra_weight for d in DISTRICTS]),
    )
    for kind, prefix, n, weights in plan:
        for dist, count in zip(DISTRICTS, _per_district(n, weights), strict=True):
            for i in range(1, count + 1):
                did = f"{prefix}-{tag}{dist.code}-{i:04d}"
                devices.append(_device(rng, kind, did, dist))
    if not fleet:
        return City(seed, tuple(devices))
    from sim.trucks import FLEET_YAML, fleet_sim_devices, hash_phase

    for row in fleet_sim_devices():
        devices.append(SimDevice(
            row["device_id"], row["kind"], row["district"], row["grid"], row["unit"], "",
            row["address"], row["lat"], row["lon"], "", base=0.0, battery0=0.0,
            phase=hash_phase(row["device_id"]) % 1000 / 1000,
        ))  # fmt: skip
    return City(seed, tuple(devices), FLEET_YAML)


def _device(rng: random.Random, kind: str, did: str, dist: District) -> SimDevice:
    lat = dist.lat + rng.uniform(-0.03, 0.03)
    lon = dist.lon + rng.uniform(-0.035, 0.035)
    grid = f"{dist.code}-G{rng.randint(1, 30):02d}"
    road, road_class = rng.choice(dist.roads)
    cross = rng.choice([r for r, _ in dist.roads if r != road])
    spot = rng.choice(_SPOTS)
    phase = rng.random()
    where = f"郑州市{dist.name}{road}与{cross}交叉口"
    if kind == "dust":
        return SimDevice(
            did, kind, dist.id, grid, rng.choice(_BUILDERS), "",
            f"{where}{spot}{rng.choice(_SITE_KINDS)}工地", lat, lon, "",
            base=rng.uniform(15.0, 45.0), battery0=0.0, phase=phase,
        )  # fmt: skip
    if kind == "manhole":
        code, name, unit, _ = rng.choices(_COVER_TYPES, weights=[t[3] for t in _COVER_TYPES])[0]
        # most sensors are fairly new; a few are near the end of their battery
        battery = rng.uniform(8.0, 25.0) if rng.random() < 0.05 else rng.uniform(40.0, 100.0)
        return SimDevice(
            did, kind, dist.id, grid, unit, road_class,
            f"{where}{spot}{rng.randint(1, 20) * 10}米{name}", lat, lon, code,
            base=rng.uniform(5.0, 40.0), battery0=battery, phase=phase,
        )  # fmt: skip
    return SimDevice(
        did, kind, dist.id, grid, _LAMP_UNIT, road_class,
        f"{where}{spot}{rng.randint(1, 40)}号灯杆", lat, lon, _LAMP_CODE,
        base=rng.uniform(0.5, 1.2), battery0=0.0, phase=phase,
    )  # fmt: skip
