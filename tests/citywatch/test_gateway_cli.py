"""``citywatch gateway hj212``, ``gateway hj212-passwords`` and ``gateway jt808`` as an operator runs them."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from foundation.settings import Settings
from ingest.hj212 import decode
from ingest.jt808 import decode as decode_jt808
from sim.hj212 import frame_for
from sim.jt808 import auth_message, location_message, register_message
from tests.conftest import settings_env
from tests.kit import mqtt as kit_mqtt
from tests.kit.cli import ROOT, run_cli
from tests.kit.mqtt import now_ms

pytestmark = pytest.mark.services


def _registry(tmp: Path, unique: str) -> Path:
    path = tmp / "registry.csv"
    path.write_text(
        "device_id,kind,district,grid,unit,gateway,mn\n"
        f"DS-{unique}-1,dust,jinshui,G1,U,gw-{unique},M{unique}1\n"
        f"DS-{unique}-2,dust,jinshui,G1,U,gw-{unique},M{unique}2\n",
        encoding="utf-8",
    )
    return path


def test_passwords_are_handed_out_once_in_a_private_csv(
    settings: Settings, tmp_path: Path, unique: str
) -> None:
    reg = _registry(tmp_path, unique)
    env = settings_env(settings.replace("hj212", passwords=str(tmp_path / "pw.json")))
    out = tmp_path / "batch.csv"
    done = run_cli("gateway", "hj212-passwords", "--registry", str(reg), "--out", str(out), env=env)
    assert done.returncode == 0, done.stderr
    assert "2 PW issued" in done.stdout and str(out) in done.stdout
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["mn"] for r in rows] == [f"M{unique}1", f"M{unique}2"]
    assert all(r["pw"] not in (tmp_path / "pw.json").read_text() for r in rows)
    again = run_cli("gateway", "hj212-passwords", "--registry", str(reg), env=env)
    assert again.returncode == 0 and "nothing new" in again.stdout


def test_the_gateway_will_not_run_as_an_identity_no_monitor_names(
    settings: Settings, tmp_path: Path, unique: str
) -> None:
    reg = _registry(tmp_path, unique)
    done = run_cli("gateway", "hj212", "--registry", str(reg), env=settings_env(settings))
    assert done.returncode != 0
    assert f"names gateway {settings.mqtt.username!r}" in done.stderr
    assert "mqtt.username" in done.stderr and "Traceback" not in done.stderr


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Stopped:
    """What the gateway process printed and returned once SIGTERM stopped it."""

    output = ""
    returncode: int | None = None


@contextlib.contextmanager
def _gateway_command(
    protocol: str, s: Settings, host: str, port: int
) -> Iterator[tuple[socket.socket, Stopped]]:
    """``citywatch gateway <protocol>`` as its own process and one TCP connection to it.

    The process is SIGTERMed when the block ends; ``Stopped`` then holds its output and code.
    """
    base = {k: v for k, v in os.environ.items() if not k.startswith("CITYWATCH_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "citywatch", "gateway", protocol],
        env=base | settings_env(s), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    stopped = Stopped()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = socket.create_connection((host, port), timeout=15)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (
                    "the gateway did not listen"
                )
                time.sleep(0.1)
        with conn:
            yield conn, stopped
    finally:
        proc.send_signal(signal.SIGTERM)
        stopped.output = proc.communicate(timeout=20)[0].decode()
        stopped.returncode = proc.returncode


def test_the_gateway_command_answers_a_monitor_and_stops_on_sigterm(
    settings: Settings, tmp_path: Path, unique: str
) -> None:
    reg = _registry(tmp_path, unique)
    kit_mqtt.provision_registry(reg)
    gw = f"gw-{unique}"
    s = settings.replace("paths", registry=str(reg)).replace(
        "hj212", passwords=str(tmp_path / "pw.json"), listen=f"127.0.0.1:{_port()}"
    )
    out = tmp_path / "batch.csv"
    assert (
        run_cli("gateway", "hj212-passwords", "--out", str(out), env=settings_env(s)).returncode
        == 0
    )
    mn, pw = next((r["mn"], r["pw"]) for r in csv.DictReader(out.open(encoding="utf-8")))
    s = s.replace("mqtt", username=gw, password=kit_mqtt.secret_of(gw))
    with _gateway_command("hj212", s, s.hj212.host, s.hj212.port) as (conn, stopped):
        conn.sendall(frame_for({"ts": now_ms(), "pm10": 75.0}, mn, pw))
        reply = conn.makefile("rb").readline()
        assert decode(reply).cn == "9014"
    output = stopped.output
    assert stopped.returncode == 0, output
    assert "readings=1" in output and pw not in output


def _terminals(tmp: Path, unique: str) -> Path:
    path = tmp / "registry.csv"
    path.write_text(
        "device_id,kind,district,grid,unit,gateway,phone\n"
        f"T-{unique}-1,vehicle,jinshui,G1,U,gw-{unique},013900000001\n",
        encoding="utf-8",
    )
    return path


def test_the_jt808_gateway_will_not_run_as_an_identity_no_terminal_names(
    settings: Settings, tmp_path: Path, unique: str
) -> None:
    reg = _terminals(tmp_path, unique)
    done = run_cli("gateway", "jt808", "--registry", str(reg), env=settings_env(settings))
    assert done.returncode != 0
    assert f"names gateway {settings.mqtt.username!r}" in done.stderr
    assert "'phone'" in done.stderr and "Traceback" not in done.stderr


def _answer(stream) -> bytes:  # noqa: ANN001
    """The bytes between the next two 0x7e flags."""
    out = bytearray()
    while stream.read(1) != b"\x7e":
        pass
    while (b := stream.read(1)) != b"\x7e":
        out += b
    return bytes(out)


def test_the_jt808_gateway_command_registers_a_terminal_and_stops_on_sigterm(
    settings: Settings, tmp_path: Path, unique: str
) -> None:
    reg = _terminals(tmp_path, unique)
    kit_mqtt.provision_registry(reg)
    gw = f"gw-{unique}"
    s = (
        settings.replace("paths", registry=str(reg))
        .replace("jt808", auth_codes=str(tmp_path / "codes.json"), listen=f"127.0.0.1:{_port()}")
        .replace("mqtt", username=gw, password=kit_mqtt.secret_of(gw))
    )
    phone = "013900000001"
    with _gateway_command("jt808", s, s.jt808.host, s.jt808.port) as (conn, stopped):
        stream = conn.makefile("rb")
        conn.sendall(register_message(phone, 1, "豫A12345"))
        registered = decode_jt808(_answer(stream))
        assert registered.msg_id == 0x8100 and registered.body[2] == 0
        code = registered.body[3:].decode("ascii")
        conn.sendall(auth_message(phone, 2, code))
        assert decode_jt808(_answer(stream)).body[4] == 0
        conn.sendall(location_message({"ts": now_ms(), "lat": 34.8, "lon": 113.7}, phone, 3))
        answered = decode_jt808(_answer(stream))
        assert answered.msg_id == 0x8001 and answered.body == bytes.fromhex("0003020000")
    output = stopped.output
    assert stopped.returncode == 0, output
    assert "readings=1" in output and code not in output
