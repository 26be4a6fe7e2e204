"""bench/e2e.py's short mode runs the whole pipeline and prints its figures in their shape.

Not a timing test: the figures of a short run on a shared machine mean nothing. What must hold is
that every reading reached InfluxDB, every probe made a case and a push, every process's memory
was sampled, both baselines were measured, and the report, JSON and plot carry all of it.
"""

from __future__ import annotations

import json
import os
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
    r"p50_s=([\d.]+) p99_s=([\d.]+) probes=(\d+)/(\d+) push_p50_s=([\d.]+) push_p99_s=([\d.]+) "
    r"pushed=(\d+)/(\d+) broker_dropped=(\d+) rss_mib=(\S+) cores=(\S+) load=[\d.]+"
)
PROCESSES = {"bridge", "worker", "alerts", "mosquitto", "tansu", "influxd"}


@pytest.fixture(scope="module")
def short_run(
    live_services: Settings, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, dict, Path]:
    tmp = tmp_path_factory.mktemp("e2e")
    plot, figures = tmp / "e2e.png", tmp / "e2e.json"
    done = subprocess.run(
        [sys.executable, "bench/e2e.py", "--short", "--plot", str(plot), "--json", str(figures)],
        env=settings_env(live_services), cwd=ROOT, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout, json.loads(figures.read_text()), plot


def test_every_reading_of_a_short_run_reaches_influxdb_and_every_probe_is_cased_and_pushed(
    short_run: tuple[str, dict, Path],
) -> None:
    out, _, _ = short_run
    results = [m.groups() for m in RESULT.finditer(out)]
    assert [r[0] for r in results] == ["100", "200"], out
    for (
        _rate,
        share,
        p50,
        p99,
        cased,
        probes,
        push50,
        push99,
        pushed,
        probes2,
        dropped,
        _,
        _,
    ) in results:
        assert float(share) == 100.0, f"every reading of a small rate reaches InfluxDB: {out}"
        assert cased == probes == pushed == probes2 and int(probes) > 0, (
            "every probe cased and pushed"
        )
        assert float(p50) <= float(p99) and float(push50) <= float(push99) and int(dropped) == 0
        # the push follows the case event it announces (both on this host's clock)
        assert float(push50) >= float(p50)


def test_the_report_has_peak_rss_of_every_process_and_both_baselines_with_their_ratios(
    short_run: tuple[str, dict, Path],
) -> None:
    out, figures, plot = short_run
    for m in RESULT.finditer(out):
        assert {part.split(":")[0] for part in m.group(12).split(",")} == PROCESSES, out
        cores = {k: float(v) for k, v in (part.split(":") for part in m.group(13).split(","))}
        assert cores.keys() == PROCESSES | {"others"}, out  # where the machine's time went
        assert cores["worker"] > 0 and 0 < sum(cores.values()) <= (os.cpu_count() or 1) + 0.2
    assert re.search(r"baseline: bare QoS-1 subscriber [\d,]+ msg/s", out), out
    assert re.search(r"baseline: Faust no-op agent [\d,]+ ev/s", out), out
    assert re.search(r"no-op / bare [\d.]+x", out), out
    assert "| / bare subscriber | / no-op agent |" in out and "publish→push p50 s" in out
    assert len(re.findall(r"^done when: ", out, re.M)) == 4, out
    assert re.search(r"^  rate 100 \+\d+ s: [\d,]+ readings in InfluxDB", out, re.M), (
        "progress lines"
    )
    assert figures["bare_subscriber_msg_s"] > 0 and figures["noop_agent_ev_s"] > 0
    assert [r["rate"] for r in figures["rates"]] == [100, 200]
    assert all(r["got"] == r["sent"] and set(r["rss_mib"]) == PROCESSES for r in figures["rates"])
    assert {c["what"] for c in figures["criteria"]} and figures["load_start"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
