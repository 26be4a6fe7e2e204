"""The fault harness, short version (``bench/chaos.py --short``; ``make chaos`` runs the full one).

The whole pipeline as ``citywatch run`` starts it, a seeded city day, and at
random moments: the worker SIGKILLed twice, the bridge once with QoS-1
messages in flight, the alerts service once, InfluxDB stopped for 10 s,
Mosquitto restarted and the Kafka-protocol broker restarted (``services
down``/``up``: its journal comes back from the archive, decision 010). The harness replays the journal the pipeline really saw
and compares (docs/architecture.md, "Restarts and outages").
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from foundation.settings import Settings

pytestmark = [pytest.mark.services, pytest.mark.serial]  # restarts the session's services
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_faults_lose_no_reading_double_no_entry_and_deliver_every_alert(
    live_services: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "chaos.json"
    proc = subprocess.run(
        [sys.executable, "bench/chaos.py", "--short", "--seeds", "1", "--json", str(out)],
        cwd=ROOT, env=os.environ | {"PYTHONUNBUFFERED": "1"}, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=850,
    )  # fmt: skip
    assert out.exists(), proc.stdout[-4000:] + proc.stderr[-4000:]
    (o,) = orjson.loads(out.read_bytes())
    summary = proc.stdout[-3000:]
    assert o["ledger_expected"] > 0 and o["readings"] > 1000, summary
    assert len(o["faults"]) == 7, "every planned fault was injected"
    assert o["lost"] == 0, summary
    assert o["lag_at_end"] == 0, "the worker committed the whole journal after its restarts"
    assert (o["ledger_missing"], o["ledger_extra"], o["ledger_differing"]) == (0, 0, 0), summary
    assert o["yuan_live"] == o["yuan_expected"], summary
    assert o["influx_penalty_diff"] == 0 and o["influx_case_events_missing"] == 0, summary
    assert o["telemetry_missing"] == 0, summary
    assert o["pushes_missing"] == 0 and o["cases_never_pushed"] == 0, summary
    assert proc.returncode == 0, summary
