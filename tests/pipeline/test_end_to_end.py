"""The road exists: MQTT -> bridge -> Kafka -> Faust worker -> InfluxDB, all real."""

from __future__ import annotations

from pathlib import Path

import pytest

from foundation.settings import Settings
from store.errors import InfluxQueryError
from store.influxql import query
from store.schema import CASE_EVENT
from tests.kit.mqtt import Publisher, drop_session, now_ms
from tests.kit.procs import Proc, wait_until

pytestmark = pytest.mark.services


def test_readings_published_over_mqtt_arrive_in_influxdb_through_kafka_and_faust(
    settings: Settings, registry_file: Path, unique: str, tmp_path: Path
) -> None:
    s = settings.replace("paths", registry=str(registry_file)).replace("mqtt", session_expiry_s=60)
    worker = Proc(["worker", "--session-timeout", "3"], s, tmp_path / "worker.log")
    bridge = Proc(["bridge", "--stats-every", "1"], s, tmp_path / "bridge.log")
    try:
        bridge.wait_for_log("MQTT connected")
        pub = Publisher(s.mqtt.host, s.mqtt.port, f"pub-{unique}")
        t0 = now_ms() - 60_000
        mh, ds = f"MH-{unique}-1", f"DS-{unique}-1"
        for i in range(30):
            pub.publish(
                f"city/jinshui/manhole/{mh}/telemetry",
                {"ts": t0 + i * 1000, "open": i >= 20, "tilt_deg": 2.0},
            )
            pub.publish(
                f"city/jinshui/dust/{ds}/telemetry",
                {"ts": t0 + i * 1000, "pm10": 60.0 + i, "pm25": 30},
            )
        pub.publish(f"city/jinshui/dust/{ds}/telemetry", b"\x00garbage").wait_for_publish(10)
        pub.close()

        def counts() -> tuple[int, int, int, int] | None:
            try:
                return _counts()
            except InfluxQueryError:  # the worker has not created the database yet
                return None

        def _counts() -> tuple[int, int, int, int]:
            rows = query(
                s, None, "SELECT count(pm10) FROM dust; SELECT count(tilt_deg) FROM manhole"
            )
            dust = next((r["count"] for r in rows if r["_series"] == "dust"), 0)
            manhole = next((r["count"] for r in rows if r["_series"] == "manhole"), 0)
            cases = query(s, None, f"SELECT * FROM {CASE_EVENT} WHERE device = '{mh}'")
            dead = query(s, None, "SELECT * FROM deadletter")
            return dust, manhole, len(cases), len(dead)

        wait_until(lambda: counts() == (30, 30, 1, 1), timeout=90, what="all points in InfluxDB")
        case = query(s, None, f"SELECT * FROM {CASE_EVENT} WHERE device = '{mh}'")[0]
        assert case["state"] == "open" and case["opened_at"] == t0 + 20_000
        assert case["deadline"] == t0 + 20_000 + 2 * 3_600_000  # default grace on every road class
        mean = query(s, None, f"SELECT mean(pm10) FROM dust WHERE device = '{ds}'")[0]["mean"]
        assert mean == pytest.approx(sum(60.0 + i for i in range(30)) / 30)
    finally:
        bridge.stop()
        worker.stop()
        drop_session(s.mqtt.host, s.mqtt.port, f"{s.mqtt.client_id}-1")
