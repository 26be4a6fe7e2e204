"""The device registry (docs/contracts.md, "Registry"): device -> kind, district, grid, unit, location, limits.

A city keeps it as CSV (UTF-8, a BOM is accepted, e.g. saved from Excel as
"CSV UTF-8") with a header row::

    device_id,kind,district,grid,unit,road_class,address,lat,lon,pm10_warning,pm10_violation,component_code

``device_id, kind, district, grid, unit`` must be in the header and filled in
on every row; the other columns may be left out of the header or left blank.
An optional ``gateway`` column names the gateway (a site's DTU) that publishes for the device;
the device then has no broker identity of its own and the gateway speaks
for it (docs/contracts.md, "Device identity"). A gateway id is not a device
id: one that is also a device id of the registry is refused.
An optional ``mn`` column holds the HJ 212 MN of a dust monitor that reports
in HJ 212-2017 through citywatch's HJ 212 gateway, which its ``gateway`` column
must name (docs/gateways.md); MNs are unique. An optional ``phone`` column holds the
JT/T 808 terminal phone number (终端手机号, the SIM's number the terminal puts in every
message header) of a vehicle terminal that reports through citywatch's JT/T 808 gateway,
which its ``gateway`` column must name; 1-20 digits, unique without leading zeros.
Columns may come in any order. Blank lines and lines whose first cell starts
with ``#`` are skipped. A ``.yaml``/``.yml`` file holds the same columns as a
list of mappings (or a mapping with a ``devices:`` list)::

    devices:
      - {device_id: MH-0001, kind: manhole, district: jinshui, grid: JS-07, unit: 郑州市市政工程管理处,
         road_class: main, component_code: "0102"}

The first bad row stops the load with ``ConfigError(file, line, reason, column)``;
the reason says what is allowed and how to fix it. No field may hold a control
character (NUL, the rest of C0 including tab and line breaks, DEL, C1).

``RegistryWatcher`` reloads the file when it changes, for a running bridge.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from contract.cases import ROAD_CLASSES
from contract.components import component_problem
from contract.kinds import KINDS
from contract.topics import is_valid_segment
from foundation.cityfile import Document, did_you_mean
from foundation.errors import ConfigError
from registry.fleet import Fleet, empty_fleet, load_fleet

__all__ = [
    "ALL_COLUMNS",
    "COLUMNS",
    "IDENTITY_COLUMNS",
    "REQUIRED_COLUMNS",
    "Device",
    "Registry",
    "RegistryWatcher",
    "load_registry",
]

log = logging.getLogger("citywatch.ingest.registry")

COLUMNS = (
    "device_id", "kind", "district", "grid", "unit", "road_class", "address",
    "lat", "lon", "pm10_warning", "pm10_violation", "component_code",
)  # fmt: skip
"""Every column of a device's data, in the order docs/contracts.md, "Registry" lists them."""
IDENTITY_COLUMNS = ("gateway", "mn", "phone")
"""``gateway``: who publishes for the device; ``mn``: the HJ 212 MN (设备唯一标识) of a dust
monitor that speaks HJ 212-2017 to citywatch's HJ 212 gateway, which its ``gateway`` names
(docs/gateways.md); ``phone``: the JT/T 808 terminal phone number of a vehicle terminal behind
citywatch's JT/T 808 gateway."""
PHONE_PATTERN = re.compile(r"[0-9]{1,20}")
"""A JT/T 808 terminal phone number: BCD[6] (12 digits) in 2013, BCD[10] (20) in 2019."""
MN_PATTERN = re.compile(r"[A-Za-z0-9]{1,24}")
"""What an HJ 212 MN may be (HJ 212-2017: up to 24 characters; letters and digits here)."""
ROLE_COLUMNS = ("role", "cabinet", "circuit")
"""Optional: ``role`` (a dust monitor that is a reference station, 国控站, judges no site:
docs/rules.md "dust"), ``cabinet`` and ``circuit`` (the control cabinet, 控制箱, and
circuit a lamp hangs on: docs/rules.md "streetlight")."""
DEVICE_ROLES = ("", "reference")
"""Columns about who speaks for the device on the broker (docs/contracts.md, "Device identity"):
optional, after the data columns when a city uses them."""
ALL_COLUMNS = COLUMNS + IDENTITY_COLUMNS + ROLE_COLUMNS
REQUIRED_COLUMNS = ("device_id", "kind", "district", "grid", "unit")
"""Columns that must be in the header and non-blank on every row."""


@dataclass(frozen=True, slots=True)
class Device:
    device_id: str
    kind: str
    """``dust``, ``manhole`` or ``streetlight``."""
    district: str
    """District id as used in MQTT topics; the payer of district-government entries."""
    grid: str
    """Grid cell id (the grid officer gets dust warnings)."""
    unit: str
    """Responsible / property-rights unit (payer of property-unit entries)."""
    road_class: str | None
    """``main``/``secondary``/``other`` (selects a manhole's grace period); None if blank."""
    address: str
    lat: float | None
    lon: float | None
    pm10_warning: float | None
    """Per-site dust warning level override, µg/m³; None = the rules file's default."""
    pm10_violation: float | None
    """Per-site dust violation level override, µg/m³; None = the rules file's default."""
    component_code: str | None
    """数字城管 component code (CJ/T 214): 4-digit minor category or the 16-digit id."""
    gateway: str | None = None
    """The gateway that publishes for this device (its broker identity), None: the device itself."""
    role: str = ""
    """"reference": a reference air-quality station (国控站) whose PM10 is the district's
    ambient; it judges no site and is never judged itself."""
    cabinet: str | None = None
    """A lamp's control cabinet (控制箱)."""
    circuit: str | None = None
    """A lamp's circuit (回路) in its cabinet: lamps of one circuit go dark together."""
    mn: str | None = None
    """The HJ 212 MN of a dust monitor that reports through the HJ 212 gateway (docs/gateways.md)."""
    phone: str | None = None
    """The JT/T 808 terminal phone number of a vehicle terminal behind the JT/T 808 gateway."""

    @property
    def speaker(self) -> str:
        """The broker identity that may publish this device's telemetry (docs/contracts.md, "Device identity")."""
        return self.gateway or self.device_id


class Registry:
    """Devices by id. Immutable once built; swap whole registries to change it."""

    __slots__ = ("_devices", "path", "fleet")

    def __init__(
        self, devices: Iterable[Device] = (), path: str | None = None, fleet: Fleet | None = None
    ):
        self.fleet: Fleet = fleet if fleet is not None else empty_fleet()
        """The vehicles, sites, routes and zones (registry.fleet) the vehicle rules judge by."""
        self._devices: dict[str, Device] = {}
        for d in devices:
            if d.device_id in self._devices:
                raise ValueError(f"duplicate device id {d.device_id!r}")
            self._devices[d.device_id] = d
        self.path = path

    def get(self, device_id: str) -> Device | None:
        return self._devices.get(device_id)

    def __len__(self) -> int:
        return len(self._devices)

    def __iter__(self) -> Iterator[Device]:
        return iter(self._devices.values())

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._devices

    def __repr__(self) -> str:
        return f"Registry({len(self)} devices, path={self.path!r})"


# --------------------------------------------------------------------------- loading


def load_registry(
    path: str | os.PathLike[str], fleet: str | os.PathLike[str] | None = None
) -> Registry:
    """Load a CSV (any extension but ``.yaml``/``.yml``) or YAML registry.

    ``fleet``: the fleet file (registry.fleet; ``paths.fleet``), checked against the
    devices (a vehicle's terminal is a ``vehicle`` device of its owner district); None or
    empty: no vehicles. Raises ``ConfigError`` on the first bad row, or when a file cannot
    be read.
    """
    registry = _load_devices(path)
    if fleet:
        registry.fleet = load_fleet(fleet, registry)
    return registry


def _load_devices(path: str | os.PathLike[str]) -> Registry:
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(
            name, None, f"cannot read the device registry: {exc.strerror or exc}"
        ) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            name, line,
            f"not UTF-8 (byte {data[exc.start]:#04x}); save the file as UTF-8 "
            '(in Excel: "CSV UTF-8"; GBK/GB2312 files must be converted)',
        ) from None  # fmt: skip
    if name.lower().endswith((".yaml", ".yml")):
        rows = _yaml_rows(name, text)
    else:
        rows = _csv_rows(name, text)
    return _build(name, rows)


# A row as the parsers hand it over: (line, {column: (value, column_number, line_of_value)}).
# YAML values of one device sit on different lines; CSV values share the row's line.
_Row = tuple[int, dict[str, tuple[str, int, int]]]


def _csv_rows(name: str, text: str) -> Iterator[_Row]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    last_line = 0
    try:
        for cells in reader:
            line = last_line + 1  # first physical line of this record
            last_line = reader.line_num
            if not cells or all(not c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
                continue
            if header is None:
                header = [c.strip() for c in cells]
                _check_header(name, line, header)
                continue
            if len(cells) != len(header):
                col = min(len(cells), len(header)) + 1
                raise ConfigError(
                    name, line,
                    f"row has {len(cells)} cells but the header has {len(header)} columns; "
                    "quote values that contain commas and check for missing or extra commas",
                    column=col,
                )  # fmt: skip
            yield (
                line,
                {
                    h: (c.strip(), i + 1, line)
                    for i, (h, c) in enumerate(zip(header, cells, strict=True))
                },
            )
    except csv.Error as exc:
        raise ConfigError(name, reader.line_num or 1, f"malformed CSV: {exc}") from None
    if header is None:
        raise ConfigError(name, 1, "empty registry: expected a header row: " + ",".join(COLUMNS))


def _check_header(name: str, line: int, header: list[str]) -> None:
    seen: set[str] = set()
    for i, h in enumerate(header):
        if h not in ALL_COLUMNS:
            raise ConfigError(
                name, line,
                f"unknown column {h!r}{did_you_mean(h, ALL_COLUMNS)} (columns: {','.join(ALL_COLUMNS)})",
                column=i + 1,
            )  # fmt: skip
        if h in seen:
            raise ConfigError(name, line, f"column {h!r} appears twice", column=i + 1)
        seen.add(h)
    missing = [c for c in REQUIRED_COLUMNS if c not in seen]
    if missing:
        raise ConfigError(
            name, line,
            f"header lacks required column(s) {', '.join(map(repr, missing))}; "
            f"the header must include {','.join(REQUIRED_COLUMNS)}",
            column=1,
        )  # fmt: skip


def _yaml_rows(name: str, text: str) -> Iterator[_Row]:
    """The devices of a YAML registry, read through the one config reader (foundation.cityfile)."""
    doc = Document.parse(text, name)
    root = doc.root
    if root is None:
        raise ConfigError(name, 1, "empty registry: expected a list of devices")
    seq: Node = root
    if isinstance(root, MappingNode):
        top = doc.section(root)
        devices = top.get("devices")
        for key in top.keys():
            if key != "devices":
                doc.fail(
                    top.key_node(key),
                    f"unexpected top-level key {key!r}; the registry is a 'devices:' list",
                )
        if devices is None:
            raise ConfigError(name, 1, "expected a 'devices:' list")
        seq = devices
    if not isinstance(seq, SequenceNode):
        doc.fail(seq, "expected a list of devices (each a mapping of column: value)")
    for item in seq.value:
        line = item.start_mark.line + 1
        if not isinstance(item, MappingNode):
            doc.fail(item, "each device must be a mapping of column: value")
        row: dict[str, tuple[str, int, int]] = {}
        for k, v in item.value:
            key = k.value if isinstance(k, ScalarNode) else "?"
            if key not in ALL_COLUMNS:
                doc.fail(k, f"unknown column {key!r}{did_you_mean(key, ALL_COLUMNS)}")
            if key in row:
                doc.fail(k, f"column {key!r} appears twice")
            if not isinstance(v, ScalarNode):
                doc.fail(v, f"column {key!r}: expected a single value, not a list or mapping")
            # The scalar's source text, not YAML's interpretation: component_code 0102
            # stays "0102" (YAML 1.1 would read it as octal 66), and CSV and YAML share
            # one validator.
            value = "" if v.tag == "tag:yaml.org,2002:null" else v.value
            row[key] = (value.strip(), v.start_mark.column + 1, v.start_mark.line + 1)
        missing = [c for c in REQUIRED_COLUMNS if c not in row]
        if missing:
            doc.fail(item, f"device lacks required column(s) {', '.join(map(repr, missing))}")
        yield line, row


def _control_char(value: str) -> str | None:
    """Why ``value`` is refused for holding a control character, None when it holds none.

    NUL, every other C0 character (tab and line breaks too), DEL and the C1
    range are refused in every field: unit names and addresses end up in report
    file names, CSV cells, PDFs, MQTT topics and generated configuration, where an
    invisible character splits a line, ends a C string or makes two payers that
    look the same differ. They get into a registry by copying from another
    program or a broken export, never on purpose.
    """
    for i, ch in enumerate(value, 1):
        code = ord(ch)
        if code < 0x20 or 0x7F <= code <= 0x9F:
            label = {0: "NUL", 9: "tab", 10: "line feed", 13: "carriage return", 0x7F: "DEL"}.get(
                code, "control character"
            )
            return (
                f"contains {label} U+{code:04X} at character {i} ({value[:40]!r}); control "
                "characters are not allowed in the registry: delete it, or retype the value "
                "(one line, no tabs; in Excel, =CLEAN() removes most of them)"
            )
    return None


def _build(name: str, rows: Iterable[_Row]) -> Registry:
    devices: dict[str, Device] = {}
    first_line: dict[str, int] = {}
    gateway_line: dict[str, int] = {}
    mn_line: dict[str, int] = {}
    phone_line: dict[str, int] = {}
    for line, row in rows:

        def fail(col: str, why: str, _row: dict[str, Any] = row, _line: int = line) -> ConfigError:
            """ConfigError at the cell of ``col`` (or the row's start when the column is absent)."""
            _, colno, at = _row.get(col, ("", None, _line))
            return ConfigError(name, at, f"column {col!r}: {why}", column=colno)

        def get(col: str, _row: dict[str, Any] = row) -> str:
            return str(_row.get(col, ("",))[0])

        for col in sorted(row, key=lambda c: (row[c][2], row[c][1] or 0)):
            bad = _control_char(str(row[col][0]))
            if bad is not None:
                raise fail(col, bad)

        for col in REQUIRED_COLUMNS:
            if not get(col):
                raise fail(col, "is blank; every device needs " + ", ".join(REQUIRED_COLUMNS))

        device_id = get("device_id")
        if not is_valid_segment(device_id):
            raise fail(
                "device_id",
                f"{device_id!r} cannot appear in an MQTT topic; use 1-64 characters "
                "from A-Z a-z 0-9 _ . : -",
            )
        if device_id in devices:
            raise fail(
                "device_id",
                f"duplicate device id {device_id!r} (first defined on line "
                f"{first_line[device_id]}); each device may appear once",
            )
        kind = get("kind")
        if kind not in KINDS:
            raise fail(
                "kind",
                f"unknown kind {kind!r}; use one of {', '.join(KINDS)}{did_you_mean(kind.lower(), KINDS)}",
            )
        district = get("district")
        if not is_valid_segment(district):
            raise fail(
                "district",
                f"{district!r} cannot appear in an MQTT topic; use the district id as in "
                "topics, e.g. 'jinshui' (1-64 characters from A-Z a-z 0-9 _ . : -)",
            )

        road_class = get("road_class") or None
        if road_class is not None and road_class not in ROAD_CLASSES:
            raise fail(
                "road_class",
                f"{road_class!r} is not one of {', '.join(ROAD_CLASSES)} (or leave it blank)",
            )

        def number(col: str) -> float | None:
            text = get(col)
            if not text:
                return None
            try:
                value = float(text)
            except ValueError:
                raise fail(
                    col, f"{text!r} is not a number (use a dot as decimal separator)"
                ) from None
            if not math.isfinite(value):
                raise fail(col, f"{text!r} is not a finite number")
            return value

        lat, lon = number("lat"), number("lon")
        if (lat is None) != (lon is None):
            blank = "lon" if lon is None else "lat"
            raise fail(blank, "is blank but its partner is set; give both lat and lon, or neither")
        if lat is not None and not -90 <= lat <= 90:
            swapped = lon is not None and -90 <= lon <= 90 and -180 <= lat <= 180
            raise fail(
                "lat",
                f"{lat:g} is out of range -90..90"
                + (
                    "; lat and lon look swapped (Zhengzhou is lat 34.7, lon 113.6)"
                    if swapped
                    else ""
                ),
            )
        if lon is not None and not -180 <= lon <= 180:
            raise fail("lon", f"{lon:g} is out of range -180..180")

        warn, viol = number("pm10_warning"), number("pm10_violation")
        for col, v in (("pm10_warning", warn), ("pm10_violation", viol)):
            if v is None:
                continue
            if kind != "dust":
                raise fail(col, f"is set on a {kind} device; PM10 levels apply to dust sites only")
            if v <= 0:
                raise fail(col, f"{v:g} must be > 0 (µg/m³), or blank for the rules file's default")
        if warn is not None and viol is not None and warn > viol:
            raise fail(
                "pm10_warning",
                f"{warn:g} is above pm10_violation {viol:g}; the warning level must not exceed "
                "the violation level",
            )

        code = get("component_code") or None
        if code is not None and code.isascii() and code.isdigit() and len(code) in (4, 16):
            problem = component_problem(code)
            if problem is not None:
                raise fail("component_code", f"{code!r}: {problem}")
        elif code is not None:
            hint = ""
            if code.isascii() and code.isdigit() and len(code) in (3, 15):
                hint = (
                    f" (a leading zero was probably lost: use '0{code}' and format the "
                    "column as text in Excel)"
                )
            raise fail(
                "component_code",
                f"{code!r} must be 4 digits (CJ/T 214 minor category, e.g. 0102) or the "
                f"16-digit component id{hint}",
            )

        gateway = get("gateway") or None
        if gateway is not None and not is_valid_segment(gateway):
            raise fail(
                "gateway",
                f"{gateway!r} is not a usable gateway id; use 1-64 characters from "
                "A-Z a-z 0-9 _ . : - (or leave it blank: the device publishes for itself)",
            )
        if gateway is not None and gateway == device_id:
            raise fail("gateway", "names the device itself; leave it blank instead")

        role = get("role")
        if role not in DEVICE_ROLES:
            raise fail("role", f"{role!r} is not a device role; use 'reference' or leave it blank")
        if role == "reference" and kind != "dust":
            raise fail("role", "only a dust monitor can be a reference station")
        cabinet, circuit = get("cabinet") or None, get("circuit") or None
        for col, value in (("cabinet", cabinet), ("circuit", circuit)):
            if value is not None and not is_valid_segment(value):
                raise fail(col, f"{value!r} is not a usable id; use 1-64 characters from "
                                "A-Z a-z 0-9 _ . : -")  # fmt: skip
            if value is not None and kind != "streetlight":
                raise fail(col, f"only a streetlight hangs on a {col}; leave it blank")
        if circuit is not None and cabinet is None:
            raise fail("circuit", "a circuit belongs to a cabinet: fill in the cabinet too")
        mn = get("mn") or None
        if mn is not None:
            if not MN_PATTERN.fullmatch(mn):
                raise fail("mn", f"{mn!r} is not an HJ 212 MN; use 1-24 letters or digits")
            if kind != "dust":
                raise fail("mn", "only a dust monitor speaks HJ 212; leave it blank")
            if gateway is None:
                raise fail(
                    "mn",
                    "an HJ 212 monitor reaches the broker through the HJ 212 gateway: put the "
                    "gateway's identity (hj212.identity) in the 'gateway' column",
                )
            if mn in mn_line:
                raise fail(
                    "mn", f"MN {mn} is also the MN of line {mn_line[mn]}; one MN, one monitor"
                )
            mn_line[mn] = line
        phone = get("phone") or None
        if phone is not None:
            if not PHONE_PATTERN.fullmatch(phone):
                raise fail(
                    "phone",
                    f"{phone!r} is not a JT/T 808 terminal phone number; use 1-20 digits "
                    "(format the column as text in Excel so leading zeros stay)",
                )
            if kind != "vehicle":
                raise fail("phone", "only a vehicle terminal speaks JT/T 808; leave it blank")
            if gateway is None:
                raise fail(
                    "phone",
                    "a JT/T 808 terminal reaches the broker through the JT/T 808 gateway: put "
                    "the gateway's identity in the 'gateway' column",
                )
            key = phone.lstrip("0") or "0"  # 2013's 12 digits and 2019's 20 name one terminal
            if key in phone_line:
                raise fail(
                    "phone",
                    f"phone {phone} is also the phone of line {phone_line[key]}; one number, "
                    "one terminal",
                )
            phone_line[key] = line
        devices[device_id] = Device(
            device_id=device_id,
            kind=kind,
            district=district,
            grid=get("grid"),
            unit=get("unit"),
            road_class=road_class,
            address=get("address"),
            lat=lat,
            lon=lon,
            pm10_warning=warn,
            pm10_violation=viol,
            component_code=code,
            gateway=gateway,
            role=role,
            cabinet=cabinet,
            circuit=circuit,
            mn=mn,
            phone=phone,
        )
        first_line[device_id] = line
        if gateway is not None:
            gateway_line.setdefault(gateway, line)
    for device_id, line in first_line.items():
        if device_id in gateway_line:
            raise ConfigError(
                name, gateway_line[device_id],
                f"column 'gateway': {device_id!r} is also a device id (line {line}); a gateway "
                "has an id of its own, because each id is one identity on the broker",
            )  # fmt: skip
    return Registry(devices.values(), path=name)


# --------------------------------------------------------------------------- hot reload


class RegistryWatcher:
    """Serves the current registry and reloads the file when it changes.

    path: the registry file; it is loaded now and a bad file raises ConfigError
        (a bridge must not start on a broken registry).
    check_interval_s: ``current()`` looks at the file's mtime/size/inode at most
        this often.
    on_error: called with the ConfigError of a bad edit (once per version of
        the file); the last good registry stays in service. Without it the
        error is logged at warning level. Exceptions from it are logged, never raised.

    ``current()`` never raises and costs a clock read between checks. A
    reload happens on the calling thread (one thread at a time; others keep
    the old registry meanwhile). A file that changes while it is being read
    (an editor writing in place) is re-read at the next check, not served
    half-written. Also usable directly as ``parse_message``'s registry
    (``get``, ``path``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        check_interval_s: float = 2.0,
        on_error: Callable[[ConfigError], None] | None = None,
        fleet: str | os.PathLike[str] | None = None,
    ):
        if not check_interval_s >= 0:
            raise ValueError(f"Invalid 'check_interval_s' {check_interval_s!r}; expected >= 0")
        self.path = os.fspath(path)
        self.fleet_path = os.fspath(fleet) if fleet else None
        """The fleet file, reloaded with the registry (a change of either reloads both)."""
        self.check_interval_s = check_interval_s
        self.on_error = on_error
        self.last_error: ConfigError | None = None
        """The error of the current bad version of the file, None when the file is good."""
        self.reloads = 0
        """Successful reloads since start (not counting the first load)."""
        self._lock = threading.Lock()
        sig = self._signature()
        self._registry = load_registry(self.path, self.fleet_path)
        self._sig = sig
        self._failed_sig: tuple[int, int, int] | None = None
        self._next_check = time.monotonic() + check_interval_s

    def current(self) -> Registry:
        if time.monotonic() < self._next_check:
            return self._registry
        if self._lock.acquire(blocking=False):
            try:
                self._check()
            except Exception:  # never into the message path
                log.exception("registry check failed; keeping the last good registry")
            finally:
                self._next_check = time.monotonic() + self.check_interval_s
                self._lock.release()
        return self._registry

    def get(self, device_id: str) -> Device | None:
        return self.current().get(device_id)

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
            sig = (st.st_mtime_ns, st.st_size, st.st_ino)
            if self.fleet_path:
                fs = os.stat(self.fleet_path)
                sig = (sig[0] ^ fs.st_mtime_ns, sig[1] ^ (fs.st_size << 32), sig[2] ^ fs.st_ino)
        except OSError:
            return None
        return sig

    def _check(self) -> None:
        sig = self._signature()
        if sig == self._sig or (sig is not None and sig == self._failed_sig):
            return
        if sig is None:
            # Mid atomic-save (rename) or deleted: keep serving; report once.
            err = ConfigError(
                self.path, None, "registry file is missing; keeping the last good registry"
            )
            if self._failed_sig != (0, 0, 0):
                self._failed_sig = (0, 0, 0)
                self._report(err)
            return
        try:
            registry = load_registry(self.path, self.fleet_path)
        except ConfigError as err:
            if self._signature() != sig:
                return  # still being written; look again next time
            self._failed_sig = sig
            self._report(err)
            return
        if self._signature() != sig:
            return  # changed while we read it; look again next time
        self._registry = registry
        self._sig = sig
        self._failed_sig = None
        self.last_error = None
        self.reloads += 1
        log.info("device registry reloaded from %s: %d devices", self.path, len(registry))

    def _report(self, err: ConfigError) -> None:
        self.last_error = err
        if self.on_error is None:
            log.warning("device registry not reloaded: %s", err)
            return
        try:
            self.on_error(err)
        except Exception:
            log.exception("on_error callback failed for: %s", err)
