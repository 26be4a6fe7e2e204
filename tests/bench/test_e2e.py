"""bench/e2e.py's short mode runs the whole pipeline and prints its figures in their shape."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from foundation.settings import Settings
from tests.conftest import settings_env

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[2]
RESULT = re.compile(
    r"RESULT rate=(\d+) offered=\d+ in_influx=([\d.]+)% missing=\d+ drain_s=[\d.]+ ev_s=\d+ ev_s/baseline=[\d.]+x "
    r"p50_s=([\d.]+) p99_s=([\d.]+) probes=(\d+)/(\d+) broker_dropped=(\d+)"
)


def test_the_short_end_to_end_benchmark_prints_one_result_per_rate_and_a_plot(
    live_services: Settings, tmp_path: Path
) -> None:
    plot = tmp_path / "e2e.png"
    done = subprocess.run(
        [sys.executable, "bench/e2e.py", "--short", "--plot", str(plot)],
        env=settings_env(live_services), cwd=ROOT, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert re.search(r"baseline: bare QoS-1 subscriber [\d,]+ msg/s", out), out
    results = [m.groups() for m in RESULT.finditer(out)]
    assert [r[0] for r in results] == ["100", "200"], out
    for _rate, share, p50, p99, seen, probes, dropped in results:
        assert float(share) == 100.0, f"every reading of a small rate reaches InfluxDB: {out}"
        assert seen == probes and int(probes) > 0, "every probe's case was seen"
        assert float(p50) <= float(p99) and int(dropped) == 0
    assert "| offered msg/s (achieved) | in InfluxDB |" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
