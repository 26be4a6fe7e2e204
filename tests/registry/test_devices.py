"""The device registry: good files load; each bad row names file, line, column and reason."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from foundation.errors import ConfigError
from ingest.validate import parse_message
from registry.devices import COLUMNS, Device, Registry, RegistryWatcher, load_registry

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "registry.example.csv"
HEADER = ",".join(COLUMNS)
GOOD_ROWS = [
    "MH-0001,manhole,jinshui,JS-G07,郑州市市政工程管理处,main,郑州市金水区花园路与农业路交叉口,34.7985,113.6712,,,0102",
    "DS-0001,dust,erqi,EQ-G03,郑州一建集团有限公司,,郑州市二七区航海中路工地,34.7237,113.6386,120,180,",
    'SL-0001,streetlight,zhengdong,ZD-G22,郑州市城市照明灯饰管理处,,"郑州市郑东新区龙湖中环路,如意湖东岸",,,,,4101710118000031',
]


def write(tmp_path: Path, text: str, name: str = "registry.csv", encoding: str = "utf-8") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding=encoding, newline="")
    return p


def csv_text(*rows: str, header: str = HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


# ----------------------------------------------------------------------------- good files


def test_example_registry_loads() -> None:
    reg = load_registry(EXAMPLE)
    kinds = {d.kind for d in reg}
    districts = {d.district for d in reg}
    assert kinds == {"dust", "manhole", "streetlight", "vehicle", "weighstation", "platecam"}
    assert {"jinshui", "erqi", "zhongyuan", "guancheng", "huiji", "zhengdong"} <= districts
    assert reg.path == str(EXAMPLE)
    for d in reg:
        assert d.lat is not None and 34.5 < d.lat < 35.0
        assert d.lon is not None and 113.4 < d.lon < 114.0


def test_good_csv_loads_every_column(tmp_path: Path) -> None:
    reg = load_registry(write(tmp_path, csv_text(*GOOD_ROWS)))
    assert len(reg) == 3
    assert [d.device_id for d in reg] == ["MH-0001", "DS-0001", "SL-0001"]
    assert reg.get("MH-0001") == Device(
        device_id="MH-0001", kind="manhole", district="jinshui", grid="JS-G07",
        unit="郑州市市政工程管理处", road_class="main", address="郑州市金水区花园路与农业路交叉口",
        lat=34.7985, lon=113.6712, pm10_warning=None, pm10_violation=None, component_code="0102",
    )  # fmt: skip
    dust = reg.get("DS-0001")
    assert dust is not None and (dust.pm10_warning, dust.pm10_violation) == (120.0, 180.0)
    assert dust.road_class is None and dust.component_code is None
    light = reg.get("SL-0001")
    assert light is not None and light.address == "郑州市郑东新区龙湖中环路,如意湖东岸"
    assert light.lat is None and light.component_code == "4101710118000031"
    assert reg.get("nope") is None and "MH-0001" in reg


def test_bom_crlf_comments_blank_lines_and_column_order(tmp_path: Path) -> None:
    text = (
        "\ufeffkind,device_id,district,grid,unit\r\n"
        "# 金水区井盖\r\n"
        "\r\n"
        "manhole,MH-0001,jinshui,JS-G07,郑州供电公司\r\n"
    )
    reg = load_registry(write(tmp_path, text))
    d = reg.get("MH-0001")
    assert d is not None and d.kind == "manhole" and d.unit == "郑州供电公司"
    assert d.lat is None and d.address == "" and d.road_class is None


def test_yaml_variant(tmp_path: Path) -> None:
    text = """\
devices:
  - device_id: MH-0001
    kind: manhole
    district: jinshui
    grid: JS-G07
    unit: 郑州市市政工程管理处
    road_class: main
    lat: 34.7985
    lon: 113.6712
    component_code: 0102      # unquoted: kept as written, not read as octal
  - {device_id: DS-0001, kind: dust, district: erqi, grid: EQ-G03, unit: 郑州一建集团有限公司,
     pm10_warning: 120, pm10_violation: ~}
"""
    reg = load_registry(write(tmp_path, text, "registry.yaml"))
    mh = reg.get("MH-0001")
    assert mh is not None and mh.component_code == "0102" and mh.lat == 34.7985
    ds = reg.get("DS-0001")
    assert ds is not None and ds.pm10_warning == 120.0 and ds.pm10_violation is None
    # a bare list works too
    bare = (
        "- {device_id: X1, kind: streetlight, district: huiji, grid: HJ-G02, unit: 郑州供电公司}\n"
    )
    assert len(load_registry(write(tmp_path, bare, "r.yml"))) == 1


# ----------------------------------------------------------------------------- bad rows

# (id, bad row, column name, reason fragment); the row is the 3rd data row -> line 4
BAD_ROWS = [
    ("duplicate device id", "MH-0001,manhole,jinshui,G,U,,,,,,,", "device_id", "first defined on line 2"),
    ("device id unusable in a topic", "MH 0009,manhole,jinshui,G,U,,,,,,,", "device_id", "MQTT topic"),
    ("unknown kind", "X-1,manhol,jinshui,G,U,,,,,,,", "kind", "did you mean 'manhole'"),
    ("blank district", "X-1,manhole,,G,U,,,,,,,", "district", "is blank"),
    ("blank unit", "X-1,manhole,jinshui,G,,,,,,,,", "unit", "is blank"),
    ("district unusable in a topic", "X-1,manhole,金水区,G,U,,,,,,,", "district", "'jinshui'"),
    ("road_class not allowed", "X-1,manhole,jinshui,G,U,highway,,,,,,", "road_class", "main, secondary, other"),
    ("bad number", "X-1,manhole,jinshui,G,U,,,34,7985,,,", "lon", "out of range"),
    ("lat not a number", "X-1,manhole,jinshui,G,U,,,北纬34.8,113.6,,,", "lat", "not a number"),
    ("lat out of range (swapped)", "X-1,manhole,jinshui,G,U,,,113.67,34.80,,,", "lat", "swapped"),
    ("lon out of range", "X-1,manhole,jinshui,G,U,,,34.8,213.6,,,", "lon", "-180..180"),
    ("lat without lon", "X-1,manhole,jinshui,G,U,,,34.8,,,,", "lon", "both lat and lon"),
    ("lat nan", "X-1,manhole,jinshui,G,U,,,nan,113.6,,,", "lat", "finite"),
    ("pm10_warning > pm10_violation", "X-1,dust,jinshui,G,U,,,,,200,150,", "pm10_warning", "must not exceed"),
    ("pm10 override on a manhole", "X-1,manhole,jinshui,G,U,,,,,,150,", "pm10_violation", "dust sites only"),
    ("pm10 override not positive", "X-1,dust,jinshui,G,U,,,,,0,,", "pm10_warning", "> 0"),
    ("component_code 3 digits (Excel ate the zero)", "X-1,manhole,jinshui,G,U,,,,,,,102", "component_code", "'0102'"),
    ("component_code letters", "X-1,manhole,jinshui,G,U,,,,,,,01A2", "component_code", "16-digit"),
    ("component_code of no CJ/T 214 category", "X-1,manhole,jinshui,G,U,,,,,,,0902", "component_code", "'09' are no CJ/T 214 major category"),
    ("component id of no category", "X-1,manhole,jinshui,G,U,,,,,,,4101059902000217", "component_code", "digits 7-8"),
    ("too many cells", "X-1,manhole,jinshui,G,U,,,,,,,0102,extra", 13, "13 cells"),
    ("too few cells", "X-1,manhole,jinshui,G,U", 6, "5 cells"),
]  # fmt: skip


@pytest.mark.parametrize(
    "row,column,reason", [b[1:] for b in BAD_ROWS], ids=[b[0] for b in BAD_ROWS]
)
def test_bad_row_names_file_line_column_and_reason(
    tmp_path: Path, row: str, column: str | int, reason: str
) -> None:
    path = write(tmp_path, csv_text(GOOD_ROWS[0], GOOD_ROWS[1], row, GOOD_ROWS[2]))
    with pytest.raises(ConfigError) as info:
        load_registry(path)
    err = info.value
    assert err.file == str(path)
    assert err.line == 4
    assert reason in err.message, err.message
    if isinstance(column, str):
        assert err.column == COLUMNS.index(column) + 1
        assert err.message.startswith(f"column {column!r}: ")
    else:
        assert err.column == column
    assert str(err).startswith(f"{path}:4:")


def test_line_counts_multiline_quoted_fields(tmp_path: Path) -> None:
    # a skipped comment record spanning two physical lines still counts both
    text = csv_text(
        '#note,"郑州市金水区\n花园路"',
        "MH-0002,manhole,jinshui,G,U,,,,,,,12345",
    )
    with pytest.raises(ConfigError) as info:
        load_registry(write(tmp_path, text))
    assert info.value.line == 4 and info.value.column == 12


# (id, cell text with the control character, column, label in the message)
CONTROL_CHARS = [
    ("NUL in the unit", "郑州供电\x00公司", "unit", "NUL U+0000"),
    ("BEL in the address", "花园路\x07", "address", "control character U+0007"),
    ("tab inside the address", "花园路\t12号", "address", "tab U+0009"),
    ("line feed inside a quoted address", "郑州市金水区\n花园路", "address", "line feed U+000A"),
    ("carriage return inside the grid", "JS\rG07", "grid", "carriage return U+000D"),
    ("escape (C0) in the unit", "\x1b[31m红色单位", "unit", "control character U+001B"),
    ("DEL in the grid", "JS-G07\x7f", "grid", "DEL U+007F"),
    ("C1 CSI in the unit", "单位\x9b2J", "unit", "control character U+009B"),
    ("C1 NEL in the address", "花园路\x85东", "address", "control character U+0085"),
]  # fmt: skip


@pytest.mark.parametrize(
    "cell,column,label", [c[1:] for c in CONTROL_CHARS], ids=[c[0] for c in CONTROL_CHARS]
)
def test_control_character_in_a_registry_field_is_refused_at_its_cell(
    tmp_path: Path, cell: str, column: str, label: str
) -> None:
    values = {"device_id": "X-1", "kind": "manhole", "district": "jinshui", "grid": "JS-G07",
              "unit": "郑州市市政工程管理处", "address": "花园路"}  # fmt: skip
    values[column] = cell
    row = ",".join('"' + values.get(c, "") + '"' for c in COLUMNS)
    path = write(tmp_path, csv_text(GOOD_ROWS[0], GOOD_ROWS[1], row))
    with pytest.raises(ConfigError) as info:
        load_registry(path)
    err = info.value
    assert (err.file, err.line, err.column) == (str(path), 4, COLUMNS.index(column) + 1)
    assert err.message.startswith(f"column {column!r}: contains {label} at character ")
    assert "control characters are not allowed" in err.message and "delete it" in err.message


def test_control_character_in_a_yaml_registry_is_refused_at_its_value(tmp_path: Path) -> None:
    # YAML refuses raw control characters itself; escapes in double quotes still make them
    text = """\
devices:
  - device_id: MH-0001
    kind: manhole
    district: jinshui
    grid: JS-G07
    unit: "郑州市市政\\0工程管理处"
"""
    path = write(tmp_path, text, "registry.yaml")
    with pytest.raises(ConfigError) as info:
        load_registry(path)
    assert (info.value.line, info.value.column) == (6, 11)
    assert info.value.message.startswith("column 'unit': contains NUL U+0000 at character 6")


def test_first_control_character_reported_is_the_first_in_the_row(tmp_path: Path) -> None:
    row = "X-1,manhole,jinshui,G\x01,U\x00,,,,,,,"
    with pytest.raises(ConfigError) as info:
        load_registry(write(tmp_path, csv_text(row)))
    assert info.value.column == COLUMNS.index("grid") + 1 and "U+0001" in info.value.message


def test_printable_unicode_is_not_a_control_character(tmp_path: Path) -> None:
    row = "X-1,manhole,jinshui,G,郑州·供电（东区）—№1 ＝＋,,花园路 12 号　东侧,,,,,"
    reg = load_registry(write(tmp_path, csv_text(row)))
    dev = reg.get("X-1")
    assert (
        dev is not None
        and dev.unit == "郑州·供电（东区）—№1 ＝＋"
        and dev.address == "花园路 12 号　东侧"
    )


@pytest.mark.parametrize(
    "header,column,reason",
    [
        ("device_id,kind,district,grid", None, "'unit'"),
        ("device_id,kind,district,grid,unit,pm10_violaton", 6, "did you mean 'pm10_violation'"),
        ("device_id,kind,district,grid,unit,kind", 6, "appears twice"),
    ],
)
def test_bad_header(tmp_path: Path, header: str, column: int | None, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_registry(write(tmp_path, header + "\n"))
    assert info.value.line == 1 and reason in info.value.message
    if column is not None:
        assert info.value.column == column


def test_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path, csv_text(GOOD_ROWS[0]), encoding="gbk")
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        load_registry(path)
    assert info.value.line == 2


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_registry(tmp_path / "nope.csv")
    with pytest.raises(ConfigError, match="header row"):
        load_registry(write(tmp_path, ""))


def test_yaml_errors_point_at_the_value(tmp_path: Path) -> None:
    text = """\
devices:
  - device_id: MH-0001
    kind: manhole
    district: jinshui
    grid: JS-G07
    unit: 郑州市市政工程管理处
    lat: 34.8
    lon: 1113.6
"""
    with pytest.raises(ConfigError) as info:
        load_registry(write(tmp_path, text, "registry.yaml"))
    assert (info.value.line, info.value.column) == (8, 10)
    assert "'lon'" in info.value.message
    with pytest.raises(ConfigError, match="did you mean 'district'") as info:
        load_registry(write(tmp_path, "- {device_id: A, kind: dust, distrct: x}\n", "r.yaml"))
    assert info.value.line == 1
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_registry(write(tmp_path, "devices: [\n", "r.yaml"))


# ----------------------------------------------------------------------------- watcher


def _bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_watcher_picks_up_an_edit_and_keeps_last_good_on_a_bad_edit(tmp_path: Path) -> None:
    path = write(tmp_path, csv_text(GOOD_ROWS[0]))
    errors: list[ConfigError] = []
    w = RegistryWatcher(path, check_interval_s=0, on_error=errors.append)
    assert len(w.current()) == 1

    write(tmp_path, csv_text(GOOD_ROWS[0], GOOD_ROWS[1]))
    _bump_mtime(path)
    reg = w.current()
    assert len(reg) == 2 and reg.get("DS-0001") is not None and w.reloads == 1

    write(tmp_path, csv_text(GOOD_ROWS[0], GOOD_ROWS[1], "X-1,manhole,jinshui,G,U,,,,,,,12"))
    _bump_mtime(path)
    assert w.current() is reg  # last good registry still served
    assert w.current() is reg
    assert len(errors) == 1  # reported once per bad version, not on every check
    assert errors[0].line == 4 and errors[0].column == 12 and w.last_error is errors[0]

    write(tmp_path, csv_text(*GOOD_ROWS))
    _bump_mtime(path)
    assert len(w.current()) == 3 and w.last_error is None and len(errors) == 1


def test_watcher_survives_a_deleted_file_and_a_raising_callback(tmp_path: Path) -> None:
    path = write(tmp_path, csv_text(GOOD_ROWS[0]))

    def explode(err: ConfigError) -> None:
        raise RuntimeError("callback bug")

    w = RegistryWatcher(path, check_interval_s=0, on_error=explode)
    reg = w.current()
    path.unlink()
    assert w.current() is reg
    assert w.last_error is not None and "missing" in w.last_error.message
    write(tmp_path, csv_text(GOOD_ROWS[0], GOOD_ROWS[1]))
    assert len(w.current()) == 2


def test_watcher_checks_at_most_every_interval(tmp_path: Path) -> None:
    path = write(tmp_path, csv_text(GOOD_ROWS[0]))
    w = RegistryWatcher(path, check_interval_s=3600)
    write(tmp_path, csv_text(GOOD_ROWS[0], GOOD_ROWS[1]))
    _bump_mtime(path)
    assert len(w.current()) == 1  # not yet looked at
    w._next_check = 0.0  # the hour has passed
    assert len(w.current()) == 2


def test_watcher_bad_file_at_start_raises(tmp_path: Path) -> None:
    path = write(tmp_path, csv_text("X-1,car,jinshui,G,U,,,,,,,"))
    with pytest.raises(ConfigError):
        RegistryWatcher(path)


def test_no_message_is_dropped_while_reloading(tmp_path: Path) -> None:
    """Messages keep validating against a registry, old or new, while the file is rewritten."""
    path = write(tmp_path, csv_text(*GOOD_ROWS))
    w = RegistryWatcher(path, check_interval_s=0, on_error=lambda e: None)
    payload = b'{"ts": 1763800000000, "open": false}'
    stop = threading.Event()
    results: list[str] = []

    def consume() -> None:
        while not stop.is_set():
            r = parse_message("city/jinshui/manhole/MH-0001/telemetry", payload, 1763800000000, w)
            results.append(getattr(r, "code", "ok"))

    threads = [threading.Thread(target=consume) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(30):
            bad = i % 3 == 0
            rows = [*GOOD_ROWS, "X-1,car,jinshui,G,U,,,,,,,"] if bad else GOOD_ROWS
            tmp = tmp_path / "tmp.csv"
            tmp.write_text(csv_text(*rows), encoding="utf-8")
            os.replace(tmp, path)  # atomic save, as editors do
            time.sleep(0.002)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert results and set(results) == {"ok"}


def test_registry_rejects_duplicate_devices_when_built_in_code() -> None:
    d = Device("A", "dust", "jinshui", "G", "U", None, "", None, None, None, None, None)
    with pytest.raises(ValueError, match="duplicate"):
        Registry([d, d])


# ----------------------------------------------------------------------------- HJ 212 monitors

MN_HEADER = HEADER + ",gateway,mn"
MN_ROW = "DS-0009,dust,jinshui,JS-G07,U,,addr,34.8,113.6,,,,gw-hj212-1,410105A0001"


def test_an_hj212_monitor_has_its_mn_and_the_gateway_that_serves_it(tmp_path: Path) -> None:
    reg = load_registry(write(tmp_path, MN_HEADER + "\n" + MN_ROW + "\n"))
    d = reg.get("DS-0009")
    assert d is not None and (d.mn, d.gateway) == ("410105A0001", "gw-hj212-1")


@pytest.mark.parametrize(
    "row, needle",
    [
        (MN_ROW.replace("410105A0001", "4101-05"), "is not an HJ 212 MN"),
        (MN_ROW.replace("410105A0001", "X" * 25), "is not an HJ 212 MN"),
        (
            MN_ROW.replace(",dust,", ",manhole,").replace(",,addr", ",main,addr"),
            "only a dust monitor speaks HJ 212",
        ),
        (MN_ROW.replace("gw-hj212-1", ""), "through the HJ 212 gateway"),
    ],
)
def test_a_bad_mn_is_refused_at_its_cell(tmp_path: Path, row: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_registry(write(tmp_path, MN_HEADER + "\n" + row + "\n"))
    assert needle in str(err.value) and "column 'mn'" in str(err.value)


def test_one_mn_is_one_monitor(tmp_path: Path) -> None:
    twin = MN_ROW.replace("DS-0009", "DS-0010")
    with pytest.raises(ConfigError) as err:
        load_registry(write(tmp_path, MN_HEADER + "\n" + MN_ROW + "\n" + twin + "\n"))
    assert "also the MN of line 2" in str(err.value)


# ----------------------------------------------------------------------------- JT/T 808 terminals

PHONE_HEADER = HEADER + ",gateway,phone"
PHONE_ROW = "T-0009,vehicle,jinshui,JS-FLEET,U,,addr,34.8,113.6,,,,gw-jt808-1,013912345678"


def test_a_jt808_terminal_has_its_phone_and_the_gateway_that_serves_it(tmp_path: Path) -> None:
    reg = load_registry(write(tmp_path, PHONE_HEADER + "\n" + PHONE_ROW + "\n"))
    d = reg.get("T-0009")
    assert d is not None and (d.phone, d.gateway) == ("013912345678", "gw-jt808-1")


@pytest.mark.parametrize(
    "row, needle",
    [
        (PHONE_ROW.replace("013912345678", "0139-1234"), "is not a JT/T 808 terminal phone"),
        (PHONE_ROW.replace("013912345678", "1" * 21), "is not a JT/T 808 terminal phone"),
        (PHONE_ROW.replace(",vehicle,", ",dust,"), "only a vehicle terminal speaks JT/T 808"),
        (PHONE_ROW.replace("gw-jt808-1", ""), "through the JT/T 808 gateway"),
    ],
)
def test_a_bad_phone_is_refused_at_its_cell(tmp_path: Path, row: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_registry(write(tmp_path, PHONE_HEADER + "\n" + row + "\n"))
    assert needle in str(err.value) and "column 'phone'" in str(err.value)


def test_one_phone_is_one_terminal_with_or_without_leading_zeros(tmp_path: Path) -> None:
    twin = PHONE_ROW.replace("T-0009", "T-0010").replace("013912345678", "00000000013912345678")
    with pytest.raises(ConfigError) as err:
        load_registry(write(tmp_path, PHONE_HEADER + "\n" + PHONE_ROW + "\n" + twin + "\n"))
    assert "also the phone of line 2" in str(err.value)
