"""`services` starts, reports and stops only its own (citywatch/services.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from citywatch import services
from foundation.settings import load_settings
from tests.kit.cli import run_cli as _cli


def test_services_up_starts_private_services_and_down_stops_only_those(tmp_path: Path) -> None:
    """Own ports and state dir: mosquitto, tansu and influxd started for real, reported, stopped."""
    env = {
        "CITYWATCH_MQTT_URL": "mqtt://127.0.0.1:18831",
        "CITYWATCH_KAFKA_BOOTSTRAP": "127.0.0.1:19392",
        "CITYWATCH_INFLUX_URL": "http://127.0.0.1:18386",
        "CITYWATCH_PATHS_STATE_DIR": str(tmp_path / "state"),
    }
    settings = load_settings(env=env)
    try:
        up = _cli("services", "up", env=env)
        assert up.returncode == 0, up.stderr
        status = _cli("services", "status", env=env)
        assert status.returncode == 0
        rows = status.stdout.strip().splitlines()
        assert [r.split()[0] for r in rows] == ["mosquitto", "kafka", "influxdb"]
        for row, address in zip(
            rows, ("127.0.0.1:18831", "127.0.0.1:19392", "127.0.0.1:18386"), strict=True
        ):
            assert address in row and " up " in row and "started by citywatch (pid" in row
        assert services.mqtt_healthy("127.0.0.1", 18831)
        assert services.kafka_healthy("127.0.0.1", 19392)
        assert services.influx_healthy("127.0.0.1", 18386)
        # a second `up` reuses what answers
        again = _cli("services", "up", env=env)
        assert again.stdout.count("reused") == 3
    finally:
        down = _cli("services", "down", env=env)
    assert down.returncode == 0
    assert sorted(line.split()[1] for line in down.stdout.splitlines()) == [
        "influxdb",
        "kafka",
        "mosquitto",
    ]
    assert not services.kafka_healthy("127.0.0.1", 19392)
    assert not services.influx_healthy("127.0.0.1", 18386)
    assert not services.mqtt_healthy("127.0.0.1", 18831)
    assert settings.mqtt.port == 18831


def test_down_leaves_services_it_did_not_start_running(tmp_path: Path) -> None:
    """A broker somebody else started answers on the configured port: `up` reuses it, `down` leaves it."""
    import shutil
    import time

    conf = tmp_path / "foreign.conf"
    conf.write_text("listener 18832 127.0.0.1\nallow_anonymous true\n")
    foreign = subprocess.Popen(
        [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        "CITYWATCH_MQTT_URL": "mqtt://127.0.0.1:18832",
        "CITYWATCH_PATHS_STATE_DIR": str(tmp_path / "state"),
    }
    try:
        for _ in range(50):
            if services.mqtt_healthy("127.0.0.1", 18832):
                break
            time.sleep(0.1)
        status = _cli("services", "status", env=env)
        assert (
            "127.0.0.1:18832" in status.stdout
            and "not started by citywatch" in status.stdout.splitlines()[0]
        )
        done = _cli("services", "down", env=env)
        assert done.returncode == 0 and "nothing to stop" in done.stdout
        assert foreign.poll() is None and services.mqtt_healthy("127.0.0.1", 18832)
    finally:
        foreign.terminate()
        foreign.wait(10)


def test_a_port_taken_by_something_else_is_refused_clearly(tmp_path: Path) -> None:
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = {
            "CITYWATCH_KAFKA_BOOTSTRAP": "127.0.0.1:19492",
            "CITYWATCH_INFLUX_URL": f"http://127.0.0.1:{port}",
            "CITYWATCH_PATHS_STATE_DIR": str(tmp_path),
        }
        done = _cli("services", "up", env=env)
    assert done.returncode == 2
    assert f"port 127.0.0.1:{port} is taken by something that is not influxdb" in done.stderr
    assert "stopped kafka" in done.stdout, (
        "all or nothing: the broker this call started is stopped again"
    )
    assert not services.kafka_healthy("127.0.0.1", 19492)
