"""`services` starts, reports and stops only its own (citywatch/services.py).

Its MQTT broker is secured (docs/contracts.md, "Device identity"): anonymous clients are
refused, the health check authenticates, a TLS listener with citywatch's own CA runs on the
next port up, and a broker on the port that accepts anonymous clients is never taken for its own.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

from citywatch import services
from foundation.settings import load_settings
from registry.credentials import HEALTH, CredentialStore
from store.users import accepts_anonymous
from tests.kit.cli import run_cli as _cli
from tests.kit.ports import free_port, free_ports

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def _foreign_broker(tmp_path: Path, port: int, *conf: str) -> subprocess.Popen:
    path = tmp_path / f"foreign-{port}.conf"
    root = ["user root"] if os.geteuid() == 0 else []  # it reads files in pytest's private tmp
    path.write_text("\n".join([*root, f"listener {port} 127.0.0.1", *conf, ""]))
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(50):
        if services.mqtt_connack("127.0.0.1", port) is not None:
            break
        time.sleep(0.1)
    return proc


def test_services_up_starts_private_services_and_down_stops_only_those(tmp_path: Path) -> None:
    """Own ports and state dir: mosquitto, tansu and influxd started for real, reported, stopped."""
    mq, kafka, influx = free_ports(3), free_port(), free_port()
    env = {
        "CITYWATCH_MQTT_URL": f"mqtt://127.0.0.1:{mq}",
        "CITYWATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka}",
        "CITYWATCH_INFLUX_URL": f"http://127.0.0.1:{influx}",
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
            rows, (f"127.0.0.1:{mq}", f"127.0.0.1:{kafka}", f"127.0.0.1:{influx}"), strict=True
        ):
            assert address in row and " up " in row and "started by citywatch (pid" in row
        health = CredentialStore(tmp_path / "state" / "mqtt").secret(HEALTH)
        assert health is not None
        assert services.mqtt_healthy("127.0.0.1", mq, HEALTH, health)
        assert services.mqtt_connack("127.0.0.1", mq) == 5, "anonymous: not authorised"
        assert services.mqtt_connack("127.0.0.1", mq, HEALTH, "a guess") == 5
        # the TLS listener on the next port, with the CA citywatch made for it
        ca = tmp_path / "state" / "mqtt" / "tls" / "ca.crt"
        tls = ssl.create_default_context(cafile=str(ca))
        assert services.mqtt_healthy("127.0.0.1", mq + 1, HEALTH, health, ssl_context=tls)
        assert services.mqtt_connack("127.0.0.1", mq + 1) is None, "no TLS, no MQTT there"
        # the certificate listener on the port after: a client certificate of the device CA
        # or no handshake (tests/citywatch/test_certificates.py has the devices that have one)
        assert services.mqtt_connack("127.0.0.1", mq + 2, HEALTH, health, ssl_context=tls) is None
        conf = (tmp_path / "state" / "mosquitto" / "mosquitto.conf").read_text()
        assert "allow_anonymous false" in conf and "max_packet_size 4608" in conf
        assert conf.count("use_username_as_clientid true") == 3
        assert (
            f"listener {mq + 2} 127.0.0.1\nuse_username_as_clientid true\nrequire_certificate true\nuse_identity_as_username true\n"
            in conf
        )
        device_ca = tmp_path / "state" / "mqtt" / "device-ca"
        assert (device_ca / "ca.key").stat().st_mode & 0o777 == 0o600
        assert f"crlfile {tmp_path / 'state' / 'mosquitto' / 'tls' / 'device-ca.crl'}" in conf
        assert services.kafka_healthy("127.0.0.1", kafka)
        assert services.influx_healthy("127.0.0.1", influx)
        # InfluxDB with authentication on: nothing without a secret, the secrets owner-only
        assert not accepts_anonymous(f"http://127.0.0.1:{influx}")
        assert (
            tmp_path / "state" / "influx-auth" / "citywatch-writer"
        ).stat().st_mode & 0o777 == 0o600
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
    assert not services.kafka_healthy("127.0.0.1", kafka)
    assert not services.influx_healthy("127.0.0.1", influx)
    assert services.mqtt_connack("127.0.0.1", mq) is None
    assert settings.mqtt.port == mq


def test_down_leaves_services_it_did_not_start_running(tmp_path: Path) -> None:
    """A broker somebody else started answers on the configured port: `down` leaves it running."""
    mq = free_port()
    foreign = _foreign_broker(tmp_path, mq, "allow_anonymous true")
    env = {
        "CITYWATCH_MQTT_URL": f"mqtt://127.0.0.1:{mq}",
        "CITYWATCH_PATHS_STATE_DIR": str(tmp_path / "state"),
    }
    try:
        status = _cli("services", "status", env=env)
        assert (
            f"127.0.0.1:{mq}" in status.stdout
            and "not started by citywatch" in status.stdout.splitlines()[0]
        )
        done = _cli("services", "down", env=env)
        assert done.returncode == 0 and "nothing to stop" in done.stdout
        assert foreign.poll() is None and services.mqtt_healthy("127.0.0.1", mq)
    finally:
        foreign.terminate()
        foreign.wait(10)


def test_up_refuses_an_anonymous_broker_on_its_port(tmp_path: Path) -> None:
    """Anything could publish as any device there: `up` names the port and the fix, starts nothing."""
    mq, kafka = free_port(), free_port()
    foreign = _foreign_broker(tmp_path, mq, "allow_anonymous true")
    env = {
        "CITYWATCH_MQTT_URL": f"mqtt://127.0.0.1:{mq}",
        "CITYWATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka}",
        "CITYWATCH_PATHS_STATE_DIR": str(tmp_path / "state"),
    }
    try:
        done = _cli("services", "up", env=env)
        assert done.returncode == 2, done.stdout + done.stderr
        line = done.stderr.strip()
        assert line.startswith(f"citywatch: an MQTT broker on 127.0.0.1:{mq} accepts anonymous")
        assert "stop it, or point citywatch at a free port (CITYWATCH_MQTT_URL=" in line
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
        assert not services.kafka_healthy("127.0.0.1", kafka), "nothing after the refusal"
        assert foreign.poll() is None, "somebody else's broker is left alone"
    finally:
        foreign.terminate()
        foreign.wait(10)


def test_up_refuses_a_secured_broker_that_is_not_its_own(tmp_path: Path) -> None:
    """A broker that refuses anonymous clients but does not know citywatch's health identity."""
    mq = free_port()
    passwd = tmp_path / "passwd"
    passwd.write_text("someone:$7$101$abcdefghijklmnop$" + "A" * 86 + "==\n")
    foreign = _foreign_broker(tmp_path, mq, "allow_anonymous false", f"password_file {passwd}")
    env = {
        "CITYWATCH_MQTT_URL": f"mqtt://127.0.0.1:{mq}",
        "CITYWATCH_PATHS_STATE_DIR": str(tmp_path / "state"),
    }
    try:
        assert services.mqtt_connack("127.0.0.1", mq) == 5
        done = _cli("services", "up", env=env)
        assert done.returncode == 2
        assert f"an MQTT broker on 127.0.0.1:{mq} refuses anonymous clients but also" in done.stderr
        status = _cli("services", "status", env=env)
        assert status.returncode == 1 and " DOWN " in status.stdout.splitlines()[0]
    finally:
        foreign.terminate()
        foreign.wait(10)


def test_a_state_dir_with_a_line_break_never_reaches_mosquitto_conf(tmp_path: Path) -> None:
    """A newline in a path would add a line of its own to mosquitto.conf (e.g. an open listener)."""
    from citywatch.services import ServiceError, _conf_path

    evil = tmp_path / "state\nlistener 1884\nallow_anonymous true"
    try:
        _conf_path("paths.state_dir", evil)
    except ServiceError as exc:
        assert "contains a line break or control character" in str(exc)
    else:
        raise AssertionError("a path with a newline was accepted")
    done = _cli("services", "up", env={"CITYWATCH_PATHS_STATE_DIR": str(evil)})
    assert done.returncode == 2 and "line break or control character" in done.stderr
    assert not (tmp_path / "state").exists()


def test_a_port_taken_by_something_else_is_refused_clearly(tmp_path: Path) -> None:
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        mq, kafka = free_ports(3), free_port()
        env = {
            "CITYWATCH_MQTT_URL": f"mqtt://127.0.0.1:{mq}",
            "CITYWATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka}",
            "CITYWATCH_INFLUX_URL": f"http://127.0.0.1:{port}",
            "CITYWATCH_PATHS_STATE_DIR": str(tmp_path),
        }
        done = _cli("services", "up", env=env)
    assert done.returncode == 2
    assert f"port 127.0.0.1:{port} is taken by something that is not influxdb" in done.stderr
    assert "stopped kafka" in done.stdout, (
        "all or nothing: the broker this call started is stopped again"
    )
    assert not services.kafka_healthy("127.0.0.1", kafka)
    assert "stopped mosquitto" in done.stdout
    assert services.mqtt_connack("127.0.0.1", mq) is None


def test_up_refuses_an_influxdb_that_runs_queries_without_authentication(tmp_path: Path) -> None:
    """Anything on the machine could write or drop the ledger there: refused, left alone."""
    mq, kafka = free_ports(3), free_port()
    from tests.kit.influxd import PrivateInfluxd

    (tmp_path / "influx").mkdir()
    foreign = PrivateInfluxd(tmp_path / "influx", auth=False)
    foreign.start()
    env = {
        "CITYWATCH_MQTT_URL": f"mqtt://127.0.0.1:{mq}",
        "CITYWATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka}",
        "CITYWATCH_INFLUX_URL": foreign.url,
        "CITYWATCH_PATHS_STATE_DIR": str(tmp_path / "state"),
    }
    try:
        done = _cli("services", "up", env=env)
        assert done.returncode == 2, done.stdout + done.stderr
        line = done.stderr.strip()
        assert line.startswith(
            f"citywatch: an InfluxDB on 127.0.0.1:{foreign.port} runs queries without authentication"
        )
        assert "set influx.username and influx.password to use that server as it is" in line
        assert len(line.splitlines()) == 1 and "Traceback" not in done.stderr
        assert services.mqtt_connack("127.0.0.1", mq) is None, "what up started is stopped again"
        assert foreign.proc is not None and foreign.proc.poll() is None
    finally:
        foreign.kill()


def test_up_restarts_its_own_earlier_broker_that_has_no_certificate_listener(
    tmp_path: Path,
) -> None:
    """A broker an earlier citywatch started (its pid file) without the device certificate port."""
    mq, kafka, influx = free_ports(3), free_port(), free_port()
    env = {
        "CITYWATCH_MQTT_URL": f"mqtt://127.0.0.1:{mq}",
        "CITYWATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka}",
        "CITYWATCH_INFLUX_URL": f"http://127.0.0.1:{influx}",
        "CITYWATCH_PATHS_STATE_DIR": str(tmp_path / "state"),
    }
    settings = load_settings(env=env)
    services.up(settings, log=print, only={"mosquitto"})
    services.down(settings, log=print, only={"mosquitto"})
    data = tmp_path / "state" / "mosquitto"
    conf = (data / "mosquitto.conf").read_text()
    old = data / "earlier.conf"
    old.write_text(conf[: conf.index(f"listener {mq + 2}")])
    earlier = subprocess.Popen(
        [MOSQUITTO, "-c", str(old)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    (data / "pid.json").write_text(f'{{"pid": {earlier.pid}, "binary": "{MOSQUITTO}"}}')
    lines: list[str] = []
    try:
        for _ in range(50):
            if services.mqtt_connack("127.0.0.1", mq) is not None:
                break
            time.sleep(0.1)
        assert services.mqtt_connack("127.0.0.1", mq + 2) is None
        services.up(settings, log=lines.append, only={"mosquitto"})
        assert any(
            f"without the certificate listener (127.0.0.1:{mq + 2}); restarting" in x for x in lines
        )
        assert earlier.wait(10) is not None
        tls = ssl.create_default_context(cafile=str(services.ca_file(settings)))
        with socket.create_connection(("127.0.0.1", mq + 2), timeout=2):
            pass  # the certificate listener is there now
        assert services.mqtt_connack("127.0.0.1", mq + 2, ssl_context=tls) is None, "no certificate"
    finally:
        services.down(settings, log=print, only={"mosquitto"})
        if earlier.poll() is None:
            earlier.kill()


# ---------------------------------------------------------------- the broker's persistence


class _Session:
    """An MQTT v5 client with a persistent session (clean_start false, a Session Expiry
    Interval), as the bridge connects; what it receives is collected in ``got``."""

    def __init__(self, port: int, name: str, secret: str, expiry_s: int = 300) -> None:
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.got: list[bytes] = []
        self.arrived = threading.Event()
        self.session_present: bool | None = None
        connected, self.subscribed = threading.Event(), threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
        client.username_pw_set(name, secret)

        def on_connect(c, u, flags, rc, props=None) -> None:  # noqa: ANN001
            self.session_present = bool(flags.session_present)
            connected.set()

        def on_message(c, u, msg) -> None:  # noqa: ANN001
            self.got.append(bytes(msg.payload))
            self.arrived.set()

        client.on_connect = on_connect
        client.on_message = on_message
        client.on_subscribe = lambda *a: self.subscribed.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = expiry_s
        client.connect("127.0.0.1", port, clean_start=False, properties=props)
        client.loop_start()
        assert connected.wait(10), f"no CONNACK for {name}"
        self.client = client

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _send(port: int, name: str, secret: str, payload: bytes, sessions: list[_Session]) -> None:
    """One QoS-1 message, PUBACKed by the broker before this returns."""
    pub = _Session(port, name, secret, expiry_s=0)
    sessions.append(pub)
    info = pub.client.publish("city/jinshui/manhole/MH-1/telemetry", payload, qos=1)
    info.wait_for_publish(10)
    assert info.is_published()
    pub.close()


def test_a_persistent_session_and_its_queued_message_survive_a_restart_of_the_broker() -> None:
    """`services down`/`up` of Mosquitto keeps a bridge's session, its subscription and the
    QoS-1 messages published while it was away, before and after the restart (issue 14).

    Started as root, Mosquitto drops to the ``mosquitto`` user, which must own its data
    directory to save ``mosquitto.db``; pytest's tmp directories are private to root (the
    broker would stay root there), so the state lives in a directory the broker's user can
    reach, as ``.state`` in a checkout is. An earlier citywatch's data directory that root
    owns is given to the broker again by the next ``up``.
    """
    import pwd
    import tempfile

    from citywatch import devices
    from registry.credentials import Grant

    root = Path(tempfile.mkdtemp(prefix="cw-persist-"))
    root.chmod(0o755)
    port = free_ports(3)
    env = {
        "CITYWATCH_MQTT_URL": f"mqtt://127.0.0.1:{port}",
        "CITYWATCH_PATHS_STATE_DIR": str(root / "state"),
        "CITYWATCH_MQTT_SHARED_GROUP": "gpersist",
        # never started here (only={"mosquitto"}); named so nothing points at another's
        "CITYWATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
        "CITYWATCH_INFLUX_URL": f"http://127.0.0.1:{port}",
    }
    settings = load_settings(env=env)
    data = root / "state" / "mosquitto"
    as_root = os.geteuid() == 0
    broker_uid = pwd.getpwnam("mosquitto").pw_uid if as_root else os.geteuid()
    reader, sender = "br-persist", "pub-persist"
    sessions: list[_Session] = []
    try:
        services.up(settings, log=print, only={"mosquitto"})
        conf = (data / "mosquitto.conf").read_text().splitlines()
        assert "persistence true" in conf and f"persistence_location {data}/" in conf
        assert ("user mosquitto" in conf) == as_root, "as root it drops to the broker's user"
        assert data.stat().st_uid == broker_uid
        change, *_ = devices.provision_grants(
            settings, "test", [Grant(reader, "bridge"), Grant(sender, "relay")],
            require_broker=True,
        )  # fmt: skip
        secrets = change.issued
        away = _Session(port, reader, secrets[reader])
        sessions.append(away)
        assert away.session_present is False
        away.client.subscribe("$share/gpersist/city/#", qos=1)
        assert away.subscribed.wait(10)
        away.close()
        _send(port, sender, secrets[sender], b"while away", sessions)

        services.down(settings, log=print, only={"mosquitto"})
        saved = data / "mosquitto.db"
        assert saved.exists() and saved.stat().st_uid == broker_uid, "the broker saved its state"
        if as_root:  # an earlier citywatch left the data directory to root
            for path in (data, saved):
                os.chown(path, 0, 0)
        lines: list[str] = []
        services.up(settings, log=lines.append, only={"mosquitto"})
        assert data.stat().st_uid == broker_uid, "given to the broker's user again"
        # Mosquitto saves no shared subscription: `up` gave the session its own back
        assert any(
            "gave 1 restored bridge session(s) their shared subscription (group gpersist): "
            "br-persist; 1 publishing identities were held" in x
            for x in lines
        ), lines
        assert not (data / services.HELD_FILE).exists()
        _send(port, sender, secrets[sender], b"after the restart", sessions)

        back = _Session(port, reader, secrets[reader])
        sessions.append(back)
        assert back.session_present is True, "the session survived the restart"
        wait = time.monotonic() + 10
        while len(back.got) < 2 and time.monotonic() < wait:
            time.sleep(0.05)
        assert back.got == [b"while away", b"after the restart"], "queued messages were lost"
        back.close()
        before = saved.stat().st_mtime_ns
        services.down(settings, log=print, only={"mosquitto"})
        assert saved.stat().st_mtime_ns > before, "saved again at the second stop"
        log = (data / "service.log").read_text(errors="replace")
        assert "Error saving" not in log and "Saving in-memory database" in log
    finally:
        for session in sessions:
            session.client.loop_stop()
        services.down(settings, log=print, only={"mosquitto"})
        shutil.rmtree(root, ignore_errors=True)


def test_a_start_that_died_holding_the_devices_is_shown_and_finished_by_the_next_up() -> None:
    """`up` killed between the broker's start and the release leaves devices refused:
    `services status` says so, and the next `up` (which reuses the broker) lets them in."""
    import json
    import tempfile

    from citywatch import devices
    from registry.credentials import Grant

    root = Path(tempfile.mkdtemp(prefix="cw-held-"))
    root.chmod(0o755)
    port = free_ports(3)
    env = {
        "CITYWATCH_MQTT_URL": f"mqtt://127.0.0.1:{port}",
        "CITYWATCH_PATHS_STATE_DIR": str(root / "state"),
        "CITYWATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
        "CITYWATCH_INFLUX_URL": f"http://127.0.0.1:{port}",
    }
    settings = load_settings(env=env)
    try:
        services.up(settings, log=print, only={"mosquitto"})
        change, *_ = devices.provision_grants(
            settings, "test", [Grant("pub-held", "relay")], require_broker=True
        )
        secret = change.issued["pub-held"]
        assert services.mqtt_connack("127.0.0.1", port, "pub-held", secret) == 0
        # what a start leaves when it dies before the release
        services.send_commands(settings, [{"command": "disableClient", "username": "pub-held"}])
        marker = root / "state" / "mosquitto" / services.HELD_FILE
        marker.write_text(json.dumps({"held": ["pub-held"], "bridges": []}))
        assert services.mqtt_connack("127.0.0.1", port, "pub-held", secret) == 5
        row = _cli("services", "status", env=env).stdout.splitlines()[0]
        assert "[publishers held since a start that did not finish: run `citywatch" in row
        lines: list[str] = []
        services.up(settings, log=lines.append, only={"mosquitto"})
        assert any("1 publishing identities were held" in x for x in lines), lines
        assert services.mqtt_connack("127.0.0.1", port, "pub-held", secret) == 0
        assert not marker.exists()
        assert "held" not in _cli("services", "status", env=env).stdout.splitlines()[0]
    finally:
        services.down(settings, log=print, only={"mosquitto"})
        shutil.rmtree(root, ignore_errors=True)
