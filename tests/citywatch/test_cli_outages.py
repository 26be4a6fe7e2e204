"""Every command answers an outage of a service it needs with one line (issue 13).

Each command runs as the operator runs it (a ``citywatch`` subprocess) with the
service it needs on a closed port: it must print exactly one line on stderr
naming the service and its address and saying how to start it, exit non-zero,
show no traceback, leak none of the secrets in its settings, and give up within
``BOUND_S``. The rows marked ``services`` keep the other service real, so the
command gets past it to the one that is down.

Not here: ``services up|down|status`` and ``run``, which start the services
themselves (``tests/citywatch/test_services.py``), and the commands that need no
service (``test_commands_that_need_no_service_work_during_an_outage``).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from alerts.acks import STAGE_LOOKUP_TIMEOUT_S
from citywatch.run import settings_env
from contract.topics import KafkaTopics
from foundation.settings import Settings
from registry.officer_tokens import TokenStore
from tests.kit.cli import run_cli
from tests.kit.influxd import free_port
from tests.kit.kafka import read_topic_sync

BOUND_S = 20.0
"""A refused connection is told in about a second; the rest is a slow machine's Python start."""
HUNG_BOUND_S = 25.0
"""A Kafka broker that accepts connections and never answers: the admin client's 10 s, twice
at most (the bootstrap, then the request), plus the start."""

SERVICE = {"mqtt": "the MQTT broker", "kafka": "Kafka", "influx": "InfluxDB"}
SETTING = {
    "mqtt": "mqtt.url / CITYWATCH_MQTT_URL",
    "kafka": "kafka.bootstrap / CITYWATCH_KAFKA_BOOTSTRAP",
    "influx": "influx.url / CITYWATCH_INFLUX_URL",
}
SECRETS = {
    "CITYWATCH_MQTT_PASSWORD": "mqtt-pw-Vb7Lq02nz",
    "CITYWATCH_KAFKA_PASSWORD": "kafka-pw-W1xR9uYe4",
    "CITYWATCH_INFLUX_PASSWORD": "influx-pw-Qm3Tz8Kd",
    "CITYWATCH_ALERTS_ACK_SECRET": "ack-secret-" + "A1b2C3d4" * 4,
}
URL_SECRET = "url-pw-Hy6Nc2Jp"
"""A password in the broker's URL, as an operator might write it."""
OFFICER = "JS-DUTY-01"
DEVICE = "DS-JS-001"
"""An officer of config/officers.example.yaml and a device of their district in the example registry."""


@dataclass(frozen=True)
class Row:
    args: tuple[str, ...]
    needs: str
    """The service whose outage the command must name."""

    def __str__(self) -> str:
        return " ".join(a for a in self.args if not a.startswith("{"))


ROWS = [
    Row(("case", "list"), "influx"),
    Row(("case", "list", "--all", "--district", "jinshui", "--kind", "manhole"), "influx"),
    Row(("case", "show", "manhole:MH-JS-0001:1"), "influx"),
    Row(("audit",), "influx"),
    Row(("audit", "--officer", OFFICER, "--outcome", "refused"), "influx"),
    Row(("report", "settlement", "--month", "2026-01", "--out", "{out}"), "influx"),
    Row(("report", "ranking", "--month", "2026-01", "--out", "{out}"), "influx"),
    Row(("report", "cases", "--week", "2026-W02", "--out", "{out}"), "influx"),
    Row(("report", "units", "--week", "2026-W02", "--out", "{out}"), "influx"),
    *(
        Row(("case", verb, DEVICE, "--note", "on site"), "kafka")
        for verb in ("ack", "close", "accident", "note", "confirm_repair", "reject_repair")
    ),
    Row(("silence", "add", "district=jinshui", "--duration", "1h", "--comment", "检修"), "kafka"),
    Row(("silence", "list", "--expired"), "kafka"),
    Row(("silence", "expire", "3f2a9c1d"), "kafka"),
    Row(("journal", "load", "{journal}"), "kafka"),
    Row(("alerts", "--state-dir", "{out}"), "kafka"),
    Row(("simulate", "--devices", "10", "--registry-out", "{out}/sim.csv"), "mqtt"),
]


@dataclass
class Outage:
    env: dict[str, str]
    ports: dict[str, int]
    tmp: Path

    def args(self, row: Row) -> list[str]:
        journal = self.tmp / "day.jsonl"
        journal.write_text('{"watermark": 1767225600000}\n', encoding="utf-8")
        return [a.format(out=self.tmp, journal=journal) for a in row.args]

    def address(self, service: str) -> str:
        port = self.ports[service]
        return f"http://127.0.0.1:{port}" if service == "influx" else f"127.0.0.1:{port}"


def _closed_ports() -> dict[str, int]:
    ports: dict[str, int] = {}
    while len(set(ports.values())) < 3:
        ports = {name: free_port() for name in SERVICE}
    return ports


def _officer_token(state_dir: Path) -> str:
    """A personal token of ``OFFICER``, kept where the CLI's gate looks (docs/officers.md)."""
    token, _ = TokenStore(state_dir / "officers").issue(OFFICER, ttl_days=1)
    return token


@pytest.fixture
def outage(tmp_path: Path) -> Outage:
    """Every service on a closed port; secrets in every setting that holds one."""
    ports = _closed_ports()
    state = tmp_path / "state"
    env = {
        "CITYWATCH_MQTT_URL": f"mqtt://bridge:{URL_SECRET}@127.0.0.1:{ports['mqtt']}",
        "CITYWATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{ports['kafka']}",
        "CITYWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "CITYWATCH_KAFKA_USERNAME": "citywatch",
        "CITYWATCH_INFLUX_URL": f"http://127.0.0.1:{ports['influx']}",
        "CITYWATCH_INFLUX_USERNAME": "citywatch",
        "CITYWATCH_PATHS_STATE_DIR": str(state),
        **SECRETS,
    }
    env["CITYWATCH_OFFICER_TOKEN"] = _officer_token(state)
    return Outage(env, ports, tmp_path)


def _assert_one_outage_line(done, service: str, address: str, elapsed: float, bound: float) -> None:
    lines = done.stderr.splitlines()
    assert done.returncode != 0, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert len(lines) == 1, done.stderr
    expected = f"citywatch: {SERVICE[service]} at {address} does not answer ("
    assert lines[0].startswith(expected), lines[0]
    assert lines[0].endswith(
        f"; start it with `citywatch services up` (or check {SETTING[service]})"
    ), lines[0]
    assert elapsed < bound, f"{elapsed:.1f} s"


def _assert_no_secret(done, env: dict[str, str]) -> None:
    for value in [URL_SECRET, env.get("CITYWATCH_OFFICER_TOKEN", ""), *SECRETS.values()]:
        if value:
            assert value not in done.stdout + done.stderr, f"{value} leaked"


def _run(args: list[str], env: dict[str, str]) -> tuple[object, float]:
    start = time.monotonic()
    done = run_cli(*args, env=env)
    return done, time.monotonic() - start


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_a_command_names_the_service_it_needs_in_one_line_when_it_does_not_answer(
    row: Row, outage: Outage
) -> None:
    done, elapsed = _run(outage.args(row), outage.env)
    _assert_one_outage_line(done, row.needs, outage.address(row.needs), elapsed, BOUND_S)
    _assert_no_secret(done, outage.env)


# ------------------------------------------------------------------ the other services real


LIVE_ROWS = [
    Row(("bridge",), "mqtt"),
]


@pytest.mark.services
@pytest.mark.parametrize("row", LIVE_ROWS, ids=str)
def test_a_command_past_its_first_service_names_the_next_one_that_does_not_answer(
    row: Row, settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    if row.needs == "mqtt":
        settings = settings.replace("mqtt", url=f"mqtt://127.0.0.1:{port}")
        address = f"127.0.0.1:{port}"
    else:
        settings = settings.replace("influx", url=f"http://127.0.0.1:{port}")
        address = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in settings_env(settings).items() if k.startswith("CITYWATCH_")}
    outage = Outage(env, {}, tmp_path)
    done, elapsed = _run(outage.args(row), env)
    _assert_one_outage_line(done, row.needs, address, elapsed, BOUND_S)


# ------------------------------------------------------------------ a hung service, Grafana


@pytest.fixture
def hung_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers: a stopped process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


@pytest.mark.serial  # times itself: 20 s of client timeouts in a 25 s bound
def test_a_kafka_that_accepts_and_never_answers_is_an_outage_within_seconds(
    outage: Outage, hung_port: int
) -> None:
    with socket.create_connection(("127.0.0.1", hung_port), timeout=2):
        pass  # it does take connections: what follows is a hang, not a refusal
    env = outage.env | {"CITYWATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{hung_port}"}
    done, elapsed = _run(["case", "ack", DEVICE], env)
    _assert_one_outage_line(done, "kafka", f"127.0.0.1:{hung_port}", elapsed, HUNG_BOUND_S)


@pytest.mark.services
def test_a_stage_act_goes_to_the_workflow_with_one_warning_when_influxdb_accepts_and_never_answers(
    settings: Settings, tmp_path: Path, hung_port: int
) -> None:
    """The CLI gate's view of the stage is InfluxDB's (docs/handover.md, "Whose stage counts"):
    not read within ``STAGE_LOOKUP_TIMEOUT_S``, the act is recorded and the workflow judges it."""
    state = tmp_path / "state"
    supervisor = "JS-SUP-01"  # jinshui's district supervisor: may dispatch DEVICE's case
    env = {k: v for k, v in settings_env(settings).items() if k.startswith("CITYWATCH_")} | {
        "CITYWATCH_INFLUX_URL": f"http://127.0.0.1:{hung_port}",
        "CITYWATCH_PATHS_STATE_DIR": str(state),
        "CITYWATCH_OFFICER_TOKEN": TokenStore(state / "officers").issue(supervisor, ttl_days=1)[0],
    }
    done = run_cli("case", "dispatch", DEVICE, "--note", "派遣", env=env)
    assert done.returncode == 0 and f"dispatch on {DEVICE} by {supervisor}" in done.stdout, (
        done.stdout + done.stderr
    )
    [warning] = done.stderr.splitlines()
    assert warning.startswith(
        f"the stage of {DEVICE}'s case is not known: InfluxDB at http://127.0.0.1:{hung_port} "
        "does not answer ("
    ), warning
    assert (
        f"waited up to {STAGE_LOOKUP_TIMEOUT_S:g} s); the act goes to the worker's workflow"
        in warning
    )
    acks = read_topic_sync(
        settings.kafka.bootstrap, KafkaTopics(settings.kafka.topic_prefix).acks, 1
    )
    assert [(a["action"], a["device"], a["officer"]) for a in acks] == [
        ("dispatch", DEVICE, supervisor)
    ]


def test_grafana_not_answering_is_one_line_without_the_password_of_its_url(
    outage: Outage,
) -> None:
    port = free_port()
    done, elapsed = _run(
        ["grafana", "push", "--url", f"http://admin:{URL_SECRET}@127.0.0.1:{port}",
         "--token", "glsa_" + "x" * 32],
        outage.env,
    )  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f"citywatch: Grafana at http://127.0.0.1:{port} does not answer (Connection refused); "
        "check --url (citywatch does not run Grafana: docs/grafana.md)"
    ]
    assert elapsed < BOUND_S
    _assert_no_secret(done, outage.env)


# ------------------------------------------------------------------ what needs no service


OFFLINE = [
    ("config",),
    ("registry", "check", "config/registry.example.csv"),
    ("rules", "check", "config/rules.yaml"),
    ("replay", "{journal}"),
    ("officers", "list"),
    ("officers", "token", "list"),
    ("devices", "list"),
    ("grafana", "generate", "--out", "{out}/grafana"),
]


@pytest.mark.parametrize("args", OFFLINE, ids=" ".join)
def test_commands_that_need_no_service_work_during_an_outage(
    args: tuple[str, ...], outage: Outage
) -> None:
    done, _ = _run(outage.args(Row(args, "")), outage.env)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    _assert_no_secret(done, outage.env)


def test_provisioning_during_a_broker_outage_keeps_the_identities_and_says_the_broker_missed_them(
    outage: Outage,
) -> None:
    """The store is the truth and citywatch's broker loads it at its next start (docs/contracts.md)."""
    done, _ = _run(["devices", "provision", "--out", str(outage.tmp / "batch.csv")], outage.env)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "not applied to a running broker" in done.stdout
    assert (outage.tmp / "batch.csv").exists()
    _assert_no_secret(done, outage.env)


# ------------------------------------------------------------------ the components that wait (issue 14)


WAITING_ROWS = [
    Row(("worker", "--simulation"), "kafka"),
]
"""The bridge waits for Kafka too, once its MQTT broker answers: tests/pipeline/test_dependencies.py."""


@pytest.mark.parametrize("row", WAITING_ROWS, ids=str)
def test_a_component_that_waits_for_its_service_says_so_in_one_line_and_keeps_running(
    row: Row, outage: Outage
) -> None:
    import subprocess
    import sys

    errors = outage.tmp / f"{row.args[0]}.stderr"
    with errors.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "citywatch", *outage.args(row)], env=outage.env,
            stdout=subprocess.PIPE, stderr=stderr, text=True,
        )  # fmt: skip
    try:
        # the start-up's own time is the machine's (a loaded CI box took more than 8 s): wait
        # for the line, then see it stays one line and the process stays up a while longer
        deadline = time.monotonic() + 60
        while "waiting for it" not in errors.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, "a worker waits for Kafka instead of exiting"
            time.sleep(0.2)
        time.sleep(5)
        assert proc.poll() is None, "a worker waits for Kafka instead of exiting"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    err = errors.read_text()
    waiting = [ln for ln in err.splitlines() if "waiting for it" in ln]
    assert len(waiting) == 1, err
    assert f"Kafka at {outage.address('kafka')} does not answer" in waiting[0]
    assert "Traceback" not in err + out
    _assert_no_secret(type("Done", (), {"stdout": out, "stderr": err})(), outage.env)
