"""A small known scenario, and the example reports under docs/examples/ made from it.

``python -m citywatch.reports.examples [--out docs/examples]`` replays the
scenario (``scenario_lines``) with the rules (``RULES_YAML``) and registry
(``registry_csv``) below, writes the replay's ledger entries and case events
into a scratch InfluxDB database (retention policy ``ledger``, exactly as the
worker does), produces the reports (settlement, ranking, cases, units) from InfluxDB, renders page 1 of each
PDF as a PNG (``pdftoppm``) and drops the scratch database. It needs InfluxDB
(``citywatch services up``); the tests run the same code.

The scenario (October 2026, Asia/Shanghai), hand-checked in
tests/citywatch/reports/test_scenario.py:

* MH-JS-0001 (金水区, 郑州市市政工程管理处): open 10-05 10:00, repaired by a
  reading at 15:30; deadline 12:00, so hours at 13, 14, 15 h = 30,000.
* MH-EQ-0001 (二七区, 郑州供电公司): a September case (09-28 10:00 to 14:30,
  two hours = 20,000); in October open 10-10 08:00, accident reported 09:00
  (500,000 二七区 + 1,000,000 郑州供电公司), closed by an officer 09:30 (on time).
* DS-ZY-0001 (中原区): PM10 300 at 10-12 09:00, then 100 every 10 min:
  one dust case (100,000 中原区) and one dust warning.
* MH-JS-0002 (金水区, 郑州供电公司): open 10-20 00:00, the clock books hours at
  03, 04, 05 h; a late reading proves a repair at 03:30: hours 2 and 3 are
  reversed (-20,000) at 05:10. Net 10,000.
* SL-HJ-0001 (惠济区): leakage 45 mA at 10-15 21:00, normal at 21:30.
* MH-JS-0001 again 10-25 09:00, repaired 10:00 (on time): a recurring device.
* MH-GC-0001 (管城回族区, 郑州市市政工程管理处): open 10-31 20:30, deadline
  22:30: the first hour accrues 10-31 23:30 (+08:00, i.e. 15:30Z: October),
  the second 11-01 00:30 (November); repaired 11-01 01:00.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from contract.clock import DEFAULT_TIMEZONE, city_zone

SH = city_zone(DEFAULT_TIMEZONE)

RULES_YAML = """\
version: 1
timezone: Asia/Shanghai
rules:
  offline:
    heartbeat_minutes: {dust: 100000, manhole: 100000, streetlight: 100000}
  manhole:
    late_repair_max_minutes: 120
"""
"""Default rules, with offline cases pushed out of the scenario's weeks (they would add
a case per device that stops reporting, which is right, but not what this scenario shows),
and story C's repair report, 1 h 40 min late, taken without an officer's confirmation
(docs/rules.md, "Late repair claims": the city may widen the bound)."""

U_MUNI = "郑州市市政工程管理处"
U_POWER = "郑州供电公司"
DEVICES_PER_DISTRICT = {
    "jinshui": 400,
    "erqi": 250,
    "zhongyuan": 200,
    "guancheng": 500,
    "huiji": 100,
    "shangjie": 50,
}
_CODES = {
    "jinshui": "JS",
    "erqi": "EQ",
    "zhongyuan": "ZY",
    "guancheng": "GC",
    "huiji": "HJ",
    "shangjie": "SJ",
}
ACTIVE = [
    # device_id, kind, district, grid, unit, road_class, address, component_code
    ("MH-JS-0001", "manhole", "jinshui", "JS-G07", U_MUNI, "main", "郑州市金水区花园路农业路口南50米西侧机动车道", "0102"),
    ("MH-JS-0002", "manhole", "jinshui", "JS-G09", U_POWER, "other", "郑州市金水区经三路与黄河路交叉口东侧人行道", "0105"),
    ("MH-EQ-0001", "manhole", "erqi", "EQ-G03", U_POWER, "main", "郑州市二七区大学路陇海路口北侧", "0105"),
    ("DS-ZY-0001", "dust", "zhongyuan", "ZY-G02", "河南五建建设集团有限公司", "", "郑州市中原区建设路与桐柏路交叉口西南角工地", ""),
    ("MH-GC-0001", "manhole", "guancheng", "GC-G05", U_MUNI, "main", "郑州市管城回族区紫荆山路商都路口东侧", "0103"),
    ("SL-HJ-0001", "streetlight", "huiji", "HJ-G01", "郑州市城市照明灯饰管理处", "main", "郑州市惠济区天河路江山路口", "0118"),
]  # fmt: skip


def registry_csv() -> str:
    """The scenario's registry: the active devices plus quiet streetlights up to
    ``DEVICES_PER_DISTRICT`` per district (the ranking divides by these counts)."""
    rows = [
        "device_id,kind,district,grid,unit,road_class,address,lat,lon,pm10_warning,pm10_violation,component_code"
    ]
    count: dict[str, int] = {}
    for dev_id, kind, district, grid, unit, road, address, code in ACTIVE:
        rows.append(f"{dev_id},{kind},{district},{grid},{unit},{road},{address},,,,,{code}")
        count[district] = count.get(district, 0) + 1
    for district, n in DEVICES_PER_DISTRICT.items():
        c = _CODES[district]
        for i in range(n - count.get(district, 0)):
            rows.append(f"SL-{c}-{i + 101:04d},streetlight,{district},{c}-G{i % 9 + 1:02d},郑州市城市照明灯饰管理处,other,"
                        f"郑州市{c}路灯{i + 1}号,,,,,0118")  # fmt: skip
    return "\n".join(rows) + "\n"


def t(month: int, day: int, hour: int, minute: int = 0) -> int:
    """Epoch ms of a Beijing wall-clock time in 2026."""
    return int(datetime(2026, month, day, hour, minute, tzinfo=SH).timestamp() * 1000)


def _topic(dev: str) -> str:
    d = next(a for a in ACTIVE if a[0] == dev)
    return f"city/{d[2]}/{d[1]}/{dev}/telemetry"


def _reading(dev: str, ts: int, received_at: int | None = None, **payload: Any) -> dict[str, Any]:
    return {
        "topic": _topic(dev),
        "payload": {"ts": ts, **payload},
        "received_at": ts if received_at is None else received_at,
    }


def scenario_lines() -> list[str]:
    ev: list[dict[str, Any]] = []
    # September: MH-EQ-0001, two hours
    ev += [
        _reading("MH-EQ-0001", t(9, 28, 10), open=True),
        _reading("MH-EQ-0001", t(9, 28, 14, 30), open=False),
    ]
    # A: MH-JS-0001, three hours
    ev += [
        _reading("MH-JS-0001", t(10, 5, 10), open=True),
        _reading("MH-JS-0001", t(10, 5, 15, 30), open=False),
    ]
    # B: accident on MH-EQ-0001, closed on time by an officer
    ev += [
        _reading("MH-EQ-0001", t(10, 10, 8), open=True),
        {"action": "accident", "device": "MH-EQ-0001", "at": t(10, 10, 9), "officer": "grid-03"},
        # four eyes: a second officer confirms the report (docs/officers.md)
        {"action": "accident", "device": "MH-EQ-0001", "at": t(10, 10, 9), "officer": "sup-eq-01"},
        {"action": "close", "device": "MH-EQ-0001", "at": t(10, 10, 9, 30), "officer": "grid-03"},
    ]
    # dust at DS-ZY-0001
    ev.append(_reading("DS-ZY-0001", t(10, 12, 9), pm10=300))
    for k in range(1, 13):
        ev.append(_reading("DS-ZY-0001", t(10, 12, 9) + k * 600_000, pm10=100))
    # leakage at SL-HJ-0001
    ev += [
        _reading("SL-HJ-0001", t(10, 15, 21), on=True, current_a=0.5, leakage_ma=45),
        _reading("SL-HJ-0001", t(10, 15, 21, 30), on=True, current_a=0.5, leakage_ma=2),
    ]
    # C: reversal on MH-JS-0002
    ev += [
        _reading("MH-JS-0002", t(10, 20, 0), open=True),
        {"watermark": t(10, 20, 5)},
        _reading("MH-JS-0002", t(10, 20, 3, 30), received_at=t(10, 20, 5, 10), open=False),
    ]
    # D: MH-JS-0001 again, on time
    ev += [
        _reading("MH-JS-0001", t(10, 25, 9), tilt_deg=30.0),
        _reading("MH-JS-0001", t(10, 25, 10), tilt_deg=1.0),
    ]
    # E: across the month boundary
    ev += [
        _reading("MH-GC-0001", t(10, 31, 20, 30), open=True),
        _reading("MH-GC-0001", t(11, 1, 1), open=False),
    ]
    return [orjson.dumps(e).decode() for e in ev]


def run_replay(tmp: Path) -> tuple[Any, Path, Path]:
    """Replay the scenario; returns (ReplayResult, registry path, rules path)."""
    from registry.devices import load_registry
    from streams.replay import replay
    from streams.rules import load_rules

    tmp.mkdir(parents=True, exist_ok=True)
    reg, rules = tmp / "registry.csv", tmp / "rules.yaml"
    reg.write_text(registry_csv(), encoding="utf-8")
    rules.write_text(RULES_YAML, encoding="utf-8")
    return replay(scenario_lines(), load_rules(rules), load_registry(reg)), reg, rules


def seed(settings: Any, result: Any) -> int:
    """Write a replay's ledger entries and case events into ``settings.influx.database``,
    retention policy ``LEDGER_RP``, with the pipeline's own line functions. Returns the point count."""
    from citywatch.reports.data import LEDGER_RP
    from store import points
    from store.schema import ensure_database

    ensure_database(settings)
    lines = [points.penalty_line(e) for e in result.ledger.to_json_list()]
    lines += [line for ev in result.case_events if (line := points.case_lines(ev.to_dict()))]
    write_lines(settings, settings.influx.database, lines, LEDGER_RP)
    return len(lines)


def write_lines(settings: Any, database: str, lines: list[str], rp: str, batch: int = 5000) -> None:
    """POST /write?precision=ms&rp=... in batches as the embedded admin (synchronous; for
    seeding and benches; store.identity)."""
    from store.influxql import authorization, target

    url, _, credential = target(settings, database, None, "admin")
    q = urllib.parse.urlencode({"db": database, "precision": "ms", "rp": rp})
    for i in range(0, len(lines), batch):
        body = "\n".join(lines[i : i + batch]).encode()
        req = urllib.request.Request(f"{url}/write?{q}", data=body, method="POST")
        if credential:
            req.add_header("Authorization", authorization(credential))
        with urllib.request.urlopen(req, timeout=60) as resp:
            resp.read()


def png_pages(
    pdf: Path, out_prefix: Path, resolution: int = 60, first_only: bool = False
) -> list[Path]:
    """``pdftoppm -png`` (Debian poppler-utils); returns the PNG files in page order."""
    exe = shutil.which("pdftoppm")
    if exe is None:
        raise RuntimeError("pdftoppm not found: apt-get install poppler-utils")
    args = [exe, "-png", "-r", str(resolution)]
    if first_only:
        args += ["-f", "1", "-l", "1", "-singlefile"]
    subprocess.run([*args, str(pdf), str(out_prefix)], check=True, capture_output=True)
    if first_only:
        return [out_prefix.with_name(out_prefix.name + ".png")]
    return sorted(out_prefix.parent.glob(out_prefix.name + "-*.png"))


def generate(settings: Any, out: Path, now_ms: int | None = None) -> list[Path]:
    """Seed ``settings``' database with the scenario and write the October reports into ``out``."""
    import tempfile

    from citywatch.reports.cli import (
        produce_cases,
        produce_ranking,
        produce_settlement,
        produce_units,
    )
    from citywatch.reports.data import parse_month
    from registry.devices import load_registry

    with tempfile.TemporaryDirectory() as td:
        result, reg_path, _ = run_replay(Path(td))
        registry = load_registry(reg_path)
    seed(settings, result)
    now = now_ms if now_ms is not None else t(11, 2, 9)
    month = parse_month("2026-10", now_ms=now)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    res = produce_settlement(settings, month, out, registry)
    files += res["files"]
    files += produce_ranking(settings, month, out, registry)["files"]
    files += produce_cases(settings, month, out)["files"]
    files += produce_units(settings, month, out, registry)["files"]
    for pdf in [f for f in files if f.suffix == ".pdf"]:
        if pdf.name.endswith("-summary.pdf"):
            continue
        files += png_pages(pdf, pdf.with_suffix(""), resolution=60, first_only=True)
    return files


def main(argv: list[str] | None = None) -> int:
    from foundation.settings import load_settings

    ap = argparse.ArgumentParser(
        prog="python -m citywatch.reports.examples", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--out", default="docs/examples")
    ap.add_argument("--config", default=None)
    ap.add_argument(
        "--all",
        action="store_true",
        help="keep every payer's statement (default: only 郑州供电公司's, "
        "which has the accident and the reversal)",
    )
    args = ap.parse_args(argv)
    import uuid

    settings = load_settings(args.config)
    settings = settings.replace("influx", database=f"cw_examples_{uuid.uuid4().hex[:8]}")
    from store.schema import drop_database

    try:
        files = generate(settings, Path(args.out))
    finally:
        drop_database(settings)
    keep = f"property_unit-{U_POWER}"
    for f in files:
        if (
            not args.all
            and f.name.startswith("settlement-")
            and "_" in f.name
            and keep not in f.name
        ):
            f.unlink()
            continue
        print(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
