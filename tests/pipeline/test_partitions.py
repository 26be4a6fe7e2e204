"""Two partitions, two workers, the same answer as replay (issue 20, docs/contracts.md "Kafka").

The journal is keyed by district, so a district's dust sites meet in one
detector and background mode (the default) judges each site against its
neighbours wherever the partitions are. A storm day over a district of six
sites, one site dirtier than the storm, a clean district's real exceedance
and a stolen cover, on the real broker with two partitions and two workers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from foundation.settings import Settings
from registry.devices import load_registry
from store.identity import as_role
from streams import journal
from streams.replay import replay
from streams.rules import load_rules
from tests.kit.ledger import book_with_two_workers, two_on_two_partitions

pytestmark = pytest.mark.services
H, M = 3_600_000, 60_000
T0 = 1_790_000_400_000 // H * H  # a weekday in 2026, whole hour
DISTRICTS = ("jinshui", "erqi", "zhongyuan", "guancheng", "huiji", "gaoxin", "zhengdong")


def _two_districts_on_two_partitions() -> tuple[str, str]:
    return two_on_two_partitions(DISTRICTS)


def _registry(tmp_path: Path, u: str, stormy: str, clean: str) -> Path:
    head = "device_id,kind,district,grid,unit,road_class,address,lat,lon,pm10_warning,pm10_violation,component_code"
    rows = [head]
    for i in range(6):
        rows.append(f"DS-{u}-S{i},dust,{stormy},G1,Builder S{i},,site {i},34.8,113.6,,,")
    for i in range(3):
        rows.append(f"DS-{u}-C{i},dust,{clean},G2,Builder C{i},,site C{i},34.7,113.7,,,")
    rows.append(f"MH-{u}-1,manhole,{clean},G2,郑州市市政工程管理处,main,路口,34.7,113.7,,,0102")
    path = tmp_path / "registry.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _day(u: str, stormy: str, clean: str) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []

    def read(dev: str, district: str, ts: int, **payload: Any) -> None:
        kind = "dust" if dev.startswith("DS") else "manhole"
        lines.append({"topic": f"city/{district}/{kind}/{dev}/telemetry", "payload": {"ts": ts, **payload},
                      "received_at": ts})  # fmt: skip

    read(f"MH-{u}-1", clean, T0, open=True)  # stolen with its sensor: silence from here
    for k in range(0, 3 * 60, 2):
        ts = T0 + k * M
        for i in range(6):  # the storm: every site ~450, S3 at ~700 (ambient + 250)
            read(f"DS-{u}-S{i}", stormy, ts, pm10=(700.0 if i == 3 else 450.0) + (k % 3))
        for i in range(3):  # a clean day, C1 working dirty at ~320
            read(f"DS-{u}-C{i}", clean, ts, pm10=(320.0 if i == 1 else 60.0) + (k % 3))
        if k % 30 == 0:
            lines.append({"watermark": ts})
    lines.append({"watermark": T0 + 6 * H})
    return lines


def test_two_workers_on_two_partitions_book_the_replay_ledger_with_background_dust(
    settings: Settings, unique: str, tmp_path: Path
) -> None:
    stormy, clean = _two_districts_on_two_partitions()
    reg_path = _registry(tmp_path, unique, stormy, clean)
    s = (
        as_role(settings, "admin")
        .replace("paths", registry=str(reg_path))
        .replace("kafka", partitions=2)
    )
    lines = _day(unique, stormy, clean)
    result = replay(lines, load_rules(s.paths.rules), load_registry(reg_path))
    expected = result.ledger.to_json_list()
    fined = {(e["device"], e["rule"]) for e in expected if e["rule"] == "dust"}
    assert fined == {(f"DS-{unique}-S3", "dust"), (f"DS-{unique}-C1", "dust")}, (
        "the storm fines nobody else"
    )
    assert any(e["rule"] == "manhole" for e in expected)
    asyncio.run(
        journal.load(
            lines, load_registry(reg_path), s.kafka.bootstrap, s.kafka.topic_prefix, partitions=2
        )
    )
    book_with_two_workers(s, tmp_path, result)
