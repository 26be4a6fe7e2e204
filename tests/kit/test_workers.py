"""tests/kit/workers.py: an xdist worker's own ports and state, from the base settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from foundation.settings import load_settings
from tests.kit import workers


def test_worker_gw2_runs_every_service_thirty_ports_up_with_its_own_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CITYWATCH_MQTT_AUTH_DIR", raising=False)
    base = load_settings(
        None,
        env={
            "CITYWATCH_MQTT_URL": "mqtt://bridge:pw@127.0.0.1:21883",
            "CITYWATCH_KAFKA_BOOTSTRAP": "127.0.0.1:21092,127.0.0.2:21093",
            "CITYWATCH_INFLUX_URL": "http://127.0.0.1:21086",
        },
    )
    env = workers.worker_env(base, "gw2", Path("/repo/.state"))
    assert env == {
        "CITYWATCH_MQTT_URL": "mqtt://bridge:pw@127.0.0.1:21913",
        "CITYWATCH_KAFKA_BOOTSTRAP": "127.0.0.1:21122,127.0.0.2:21123",
        "CITYWATCH_INFLUX_URL": "http://127.0.0.1:21116",
        "CITYWATCH_PATHS_STATE_DIR": "/repo/.state/xdist/gw2",
        "CITYWATCH_MQTT_AUTH_DIR": "/repo/.state/xdist/gw2/mqtt",
    }


def test_a_configured_auth_dir_gets_one_subdirectory_per_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CITYWATCH_MQTT_AUTH_DIR", "/srv/cw-auth")
    env = workers.worker_env(load_settings(None, env={}), "gw0", Path("/repo/.state"))
    assert env["CITYWATCH_MQTT_AUTH_DIR"] == "/srv/cw-auth/xdist/gw0"
    assert env["CITYWATCH_MQTT_URL"] == "mqtt://127.0.0.1:18893", "the default base, + 10"


def test_ports_of_two_workers_never_meet_on_the_default_base() -> None:
    base = load_settings(None, env={})
    taken: dict[int, str] = {}
    for n in range(8):
        env = workers.worker_env(base, f"gw{n}", Path("/s"))
        mq = int(env["CITYWATCH_MQTT_URL"].rsplit(":", 1)[1])
        kafka = int(env["CITYWATCH_KAFKA_BOOTSTRAP"].rsplit(":", 1)[1])
        influx = int(env["CITYWATCH_INFLUX_URL"].rsplit(":", 1)[1])
        for port in (mq, mq + 1, mq + 2, kafka, influx, influx + 2):  # influx + 2: its RPC
            assert port not in taken, f"gw{n} and {taken.get(port)} both on {port}"
            taken[port] = f"gw{n}"


def test_a_plain_run_is_no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    assert workers.worker_id() is None
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    assert workers.worker_id() == "gw3" and workers.port_offset("gw3") == 40
    with pytest.raises(ValueError, match="not an xdist worker id: 'master'"):
        workers.port_offset("master")
