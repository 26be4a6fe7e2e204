"""Settings refuse mistakes in one line; `services` starts, reports and stops only its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from citywatch import services
from foundation.errors import ConfigError
from foundation.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent


def _cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CITYWATCH_")}
    return subprocess.run(
        [sys.executable, "-m", "citywatch", *args],
        env=base | (env or {}),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("toml", "line", "words"),
    [
        (
            '[kafka]\ntopic_prefx = "x"\n',
            2,
            ["unknown key kafka.topic_prefx", "did you mean 'topic_prefix'"],
        ),
        (
            '[mqtt]\nurl = "http://broker:1883"\n',
            2,
            ["mqtt.url", "'http://broker:1883'", "mqtt://host:port"],
        ),
        ('[log]\nlevel = "LOUD"\n', 2, ["log.level", "'LOUD'", "DEBUG, INFO"]),
        ('[kafka]\npartitions = "two"\n', 2, ["kafka.partitions", "expected an integer"]),
        ('[influxdb]\nurl = "x"\n', 1, ["unknown section [influxdb]", "did you mean 'influx'"]),
        ("[kafka\n", 1, ["not valid TOML"]),
    ],
)
def test_a_bad_settings_file_names_file_line_key_and_what_is_allowed(
    tmp_path: Path, toml: str, line: int, words: list[str]
) -> None:
    path = tmp_path / "citywatch.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert err.value.line == line
    for w in words:
        assert w in str(err.value)
    done = _cli("--config", str(path), "services", "status")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith(f"citywatch: {path}:{line}")
        and "Traceback" not in done.stderr
    )


def test_a_bad_environment_override_is_one_line() -> None:
    done = _cli("config", env={"CITYWATCH_KAFKA_BOOTSTRAP": "localhost"})
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "citywatch: environment CITYWATCH_KAFKA_BOOTSTRAP: kafka.bootstrap: bad value 'localhost'; "
        "allowed: comma-separated host:port pairs, e.g. 127.0.0.1:19092"
    )


def test_an_unknown_environment_variable_is_refused_with_a_suggestion() -> None:
    done = _cli("config", env={"CITYWATCH_INFLUX_DATABSE": "x"})
    assert done.returncode == 2 and "did you mean 'CITYWATCH_INFLUX_DATABASE'" in done.stderr


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[kafka]\ntopic_prefix = "from-file"\n')
    assert load_settings(path, env={}).kafka.topic_prefix == "from-file"
    assert (
        load_settings(path, env={"CITYWATCH_KAFKA_TOPIC_PREFIX": "from-env"}).kafka.topic_prefix
        == "from-env"
    )


@pytest.mark.parametrize(
    "args", [["frobnicate"], ["services", "restart"], ["case", "ack", "MH-1"], ["replay"]]
)
def test_cli_misuse_prints_a_message_not_a_traceback(args: list[str]) -> None:
    done = _cli(*args)
    assert done.returncode == 2
    assert "citywatch: error:" in done.stderr and "Traceback" not in done.stderr


def test_missing_replay_file_is_one_line() -> None:
    done = _cli("replay", "/nonexistent/day.jsonl")
    assert (
        done.returncode == 2
        and done.stderr.strip() == "citywatch: /nonexistent/day.jsonl: no such replay file"
    )


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


@pytest.mark.parametrize(
    ("command", "what"), [("rules", "rules file"), ("registry", "device registry")]
)
def test_a_config_file_that_is_not_utf8_is_one_line(
    tmp_path: Path, command: str, what: str
) -> None:
    bad = tmp_path / "gbk.yaml"
    bad.write_bytes("规则".encode("gbk"))
    done = _cli(command, "check", str(bad))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert str(bad) in done.stderr and "UTF-8" in done.stderr
