"""Device certificates on citywatch's real Mosquitto (docs/contracts.md, "Device identity").

A private broker, started by citywatch's own ``services.up`` with its own
ports (38951 plain, 38952 TLS, 38953 certificates) and state directory, so
its CA, its CRL and the SIGHUPs of these tests touch nobody else's broker.
A device with a certificate of the device CA logs in on the certificate
port as the certificate's common name, with that identity's ACLs; no
certificate, another CA's certificate, or a revoked one is refused, the
last after a reload of the running broker, without a restart.
"""

from __future__ import annotations

import os
import ssl
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from citywatch import devices, services
from foundation.settings import Settings, load_settings
from registry.certificates import DeviceCA
from registry.credentials import read_batch
from registry.devices import COLUMNS
from tests.kit.cli import run_cli
from tests.kit.ports import free_ports

pytestmark = pytest.mark.services
HEADER = ",".join(COLUMNS) + ",gateway"


@dataclass
class Broker:
    settings: Settings
    env: dict[str, str]

    @property
    def pid(self) -> int | None:
        return next((s.pid for s in services.status(self.settings) if s.name == "mosquitto"), None)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    state = tmp_path_factory.mktemp("x509") / "state"
    port = free_ports(3)  # plain, TLS, certificates: free, so parallel runs never meet
    env = {
        "CITYWATCH_MQTT_URL": f"mqtt://127.0.0.1:{port}",
        "CITYWATCH_PATHS_STATE_DIR": str(state),
        # never started here (only={"mosquitto"}); named so nothing points at another's
        "CITYWATCH_KAFKA_BOOTSTRAP": "127.0.0.1:39092",
        "CITYWATCH_INFLUX_URL": "http://127.0.0.1:38086",
    }
    settings = load_settings(env=env)
    services.up(settings, log=print, only={"mosquitto"})
    try:
        yield Broker(settings, env)
    finally:
        services.down(settings, log=print, only={"mosquitto"})


class Fleet:
    """This test's registry on the private broker, and `citywatch devices` on it."""

    def __init__(self, broker: Broker, tmp_path: Path, unique: str):
        self.tmp, self.unique, self.settings = tmp_path, unique, broker.settings
        self.a, self.b, self.s1, self.gw = (
            f"MH-{unique}-A",
            f"MH-{unique}-B",
            f"DS-{unique}-1",
            f"GW-{unique}",
        )
        self.registry = tmp_path / "registry.csv"
        self.write(self.a, self.b, self.s1)
        self.env = broker.env | {"CITYWATCH_PATHS_REGISTRY": str(self.registry)}
        self.secrets: dict[str, str] = {}
        self.reader_name = f"rd-{unique}"

    def write(self, *keep: str) -> None:
        rows = {
            self.a: f"{self.a},manhole,jinshui,JS-G07,郑州市市政工程管理处,main,,,,,,0102,",
            self.b: f"{self.b},manhole,jinshui,JS-G07,郑州市市政工程管理处,main,,,,,,0102,",
            self.s1: f"{self.s1},dust,erqi,EQ-G03,郑州一建,,,,,,,,{self.gw}",
        }
        text = "\n".join([HEADER, *(rows[k] for k in keep)]) + "\n"
        self.registry.write_text(text, encoding="utf-8")

    def cli(self, *args: str, ok: bool = True) -> str:
        done = run_cli(*args, env=self.env)
        if ok:
            assert done.returncode == 0, done.stdout + done.stderr
            return done.stdout
        assert done.returncode == 2, done.stdout + done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
        return done.stderr

    def provision(self) -> str:
        batch = self.tmp / f"batch-{time.time_ns()}.csv"
        out = self.cli("devices", "provision", "--bridge", self.reader_name, "--out", str(batch))
        if batch.exists():
            self.secrets.update(read_batch(batch))
        return out

    def certify(self, *ids: str) -> Path:
        out = self.tmp / f"certs-{time.time_ns()}"
        text = self.cli("devices", "certify", *ids, "--out", str(out))
        assert f"127.0.0.1:{self.settings.mqtt.port + 2}" in text, text
        return out

    def reader(self) -> Client:
        """A bridge identity (a secret, plain port) reading the stream through a shared group."""
        secret = services.store_for(self.settings).secret(self.reader_name)
        reader = Client(self.settings, user=self.reader_name, secret=secret, tag=self.unique)
        assert reader.subscribe(f"$share/rd{self.unique}/city/#") == "Granted QoS 1"
        return reader


@pytest.fixture
def fleet(broker: Broker, tmp_path: Path, unique: str) -> Iterator[Fleet]:
    f = Fleet(broker, tmp_path, unique)
    yield f
    devices.retire(broker.settings, f"registry:{f.registry}")
    devices.retire(broker.settings, "bridges")


def _tls(cafile: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def _device_tls(batch: Path, identity: str) -> ssl.SSLContext:
    """What the installer configures: the broker's CA, the device's certificate and key."""
    return _tls(batch / "broker-ca.crt", batch / f"{identity}.crt", batch / f"{identity}.key")


def _topic(device: str, district: str = "jinshui", kind: str = "manhole") -> str:
    return f"city/{district}/{kind}/{device}/telemetry"


class Client:
    """A paho client, by certificate (certificate port) or by secret (plain port)."""

    def __init__(
        self,
        s: Settings,
        *,
        tls: ssl.SSLContext | None = None,
        user: str | None = None,
        secret: str | None = None,
        tag: str = "",
    ):
        self.rc: list[object] = []
        self.got: list[tuple[str, bytes]] = []
        self.suback: list[str] = []
        self.disconnects: list[str] = []
        self.connected, self.subscribed = threading.Event(), threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5,
                        reconnect_on_failure=False)  # fmt: skip
        if user is not None:
            c.username_pw_set(user, secret)
        if tls is not None:
            c.tls_set_context(tls)
        c.on_connect = lambda c, u, f, rc, p=None: (self.rc.append(rc), self.connected.set())
        c.on_message = lambda c, u, m: (
            self.got.append((m.topic, m.payload)) if tag in m.topic else None
        )
        c.on_subscribe = lambda c, u, mid, rcs, p=None: (
            self.suback.extend(str(r) for r in rcs),
            self.subscribed.set(),
        )
        c.on_disconnect = lambda c, u, f, rc, p=None: self.disconnects.append(str(rc))
        c.connect(s.mqtt.host, services.cert_port(s) if tls is not None else s.mqtt.port)
        c.loop_start()
        assert self.connected.wait(10), "no CONNACK"
        assert not self.rc[-1].is_failure, f"refused: {self.rc[-1]}"  # type: ignore[attr-defined]
        self.client = c

    def subscribe(self, topic: str) -> str:
        self.subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self.subscribed.wait(5)
        return self.suback[-1]

    def publish(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def wait_for(self, n: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.02)

    def wait_disconnected(self, timeout: float = 5) -> bool:
        deadline = time.monotonic() + timeout
        while not self.disconnects and time.monotonic() < deadline:
            time.sleep(0.05)
        return bool(self.disconnects)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _connack(s: Settings, tls: ssl.SSLContext, user: str | None = None) -> int | None:
    """The CONNACK code on the certificate port; None: the TLS handshake refused the client."""
    return services.mqtt_connack(s.mqtt.host, services.cert_port(s), user, "x", tls)


def test_a_device_with_its_certificate_publishes_on_its_own_topic_only(fleet: Fleet) -> None:
    fleet.provision()
    batch = fleet.certify(fleet.a, fleet.gw)
    assert stat.S_IMODE(os.stat(batch / f"{fleet.a}.key").st_mode) == 0o600
    reader = fleet.reader()
    device = Client(fleet.settings, tls=_device_tls(batch, fleet.a))
    dtu = Client(fleet.settings, tls=_device_tls(batch, fleet.gw))
    try:
        device.publish(_topic(fleet.b), "a on b")
        device.publish(f"city/jinshui/{fleet.a}/telemetry", "a outside the scheme")
        device.publish(_topic(fleet.a), "a on a")
        dtu.publish(_topic(fleet.a), "gateway on a")
        dtu.publish(_topic(fleet.s1, "erqi", "dust"), "gateway for s1")
        reader.wait_for(2)
        time.sleep(0.3)  # what else would have come, has (one connection keeps its order)
        assert sorted(p for _, p in reader.got) == [b"a on a", b"gateway for s1"], (
            "the certificate's CN is the identity: its ACL, nothing more"
        )
        assert device.subscribe("city/#") == "Not authorized"
        assert device.subscribe(f"$share/rd{fleet.unique}/city/#") == "Not authorized"
    finally:
        for c in (device, dtu, reader):
            c.close()


def test_the_device_ca_never_keeps_a_devices_private_key(fleet: Fleet) -> None:
    fleet.provision()
    batch = fleet.certify(fleet.a)
    key = (batch / f"{fleet.a}.key").read_text()
    body = "".join(key.strip().splitlines()[1:-1])
    assert len(body) > 100
    state = Path(fleet.settings.paths.state_dir)
    kept = [
        p for p in state.rglob("*") if p.is_file() and body[:64] in p.read_text(errors="ignore")
    ]
    assert kept == [], f"a copy of the device's key: {kept}"
    manifest = (batch / "certificates.csv").read_text()
    assert fleet.a in manifest and _topic(fleet.a) in manifest


def test_the_certificate_port_refuses_a_client_without_a_certificate(fleet: Fleet) -> None:
    fleet.provision()
    s = fleet.settings
    a = fleet.a
    broker_ca = services.ca_file(s)
    assert _connack(s, _tls(broker_ca)) is None, "no certificate: no handshake"
    assert _connack(s, _tls(broker_ca), a) is None, "a user name and password do not stand in"
    assert services.mqtt_connack(s.mqtt.host, services.cert_port(s), a, fleet.secrets[a]) is None
    assert services.mqtt_connack(s.mqtt.host, s.mqtt.port, a, fleet.secrets[a]) == 0, (
        "the secret still works where secrets are taken"
    )


def test_a_certificate_from_another_ca_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    """Another city's citywatch made it, with the same CN: its CA is not this broker's."""
    fleet.provision()
    other = DeviceCA(tmp_path / "other-city" / "device-ca")
    forged = other.issue([fleet.a], tmp_path / "forged")[0]
    tls = _tls(services.ca_file(fleet.settings), forged.cert_path, forged.key_path)
    assert _connack(fleet.settings, tls) is None
    ours = fleet.certify(fleet.a)
    assert _connack(fleet.settings, _device_tls(ours, fleet.a)) == 0


def test_a_revoked_device_certificate_is_refused_after_reload(fleet: Fleet) -> None:
    fleet.provision()
    batch = fleet.certify(fleet.a, fleet.b)
    s = fleet.settings
    pid = Broker(s, fleet.env).pid
    assert pid is not None
    reader = fleet.reader()
    device = Client(s, tls=_device_tls(batch, fleet.a))
    try:
        out = fleet.cli("devices", "revoke-cert", fleet.a)
        assert "reloaded the CRL (SIGHUP, no restart)" in out, out
        assert f"the sessions of {fleet.a} were disconnected" in out, out
        assert device.wait_disconnected(), "a session opened before the revocation is put out"
        assert _connack(s, _device_tls(batch, fleet.a)) is None, "the revoked certificate"
        assert _connack(s, _device_tls(batch, fleet.b)) == 0, "another device's certificate"
        b = Client(s, tls=_device_tls(batch, fleet.b))
        b.publish(_topic(fleet.b), "b after the reload")
        b.close()
        reader.wait_for(1)
        assert reader.got == [(_topic(fleet.b), b"b after the reload")], (
            "ACLs apply after the reload"
        )
        assert (
            services.mqtt_connack(s.mqtt.host, s.mqtt.port, fleet.a, fleet.secrets[fleet.a]) == 0
        ), "revoking a certificate is not removing the identity"
        listing = fleet.cli("devices", "list")
        assert "revoked" in next(
            line for line in listing.splitlines() if fleet.a in line and "until" in line
        )
        again = fleet.cli("devices", "revoke-cert", fleet.a, ok=False)
        assert f"{fleet.a}: no certificate to revoke" in again
        assert Broker(s, fleet.env).pid == pid, "no restart"
    finally:
        device.close()
        reader.close()


def test_one_certificate_is_revoked_by_its_serial(fleet: Fleet) -> None:
    fleet.provision()
    first, second = fleet.certify(fleet.a), fleet.certify(fleet.a)
    serial = (first / "certificates.csv").read_text().splitlines()[1].split(",")[2]
    out = fleet.cli("devices", "revoke-cert", "--serial", serial.lower())
    assert f"revoked {serial} ({fleet.a})" in out
    assert _connack(fleet.settings, _device_tls(first, fleet.a)) is None
    assert _connack(fleet.settings, _device_tls(second, fleet.a)) == 0, "its newer certificate"
    unknown = fleet.cli("devices", "revoke-cert", "--serial", "ABCDEF", ok=False)
    assert "no certificate with serial ABCDEF was issued by the device CA" in unknown


def test_a_device_removed_from_the_registry_is_refused_with_its_certificate(fleet: Fleet) -> None:
    fleet.provision()
    batch = fleet.certify(fleet.a)
    s = fleet.settings
    pid = Broker(s, fleet.env).pid
    device = Client(s, tls=_device_tls(batch, fleet.a))
    fleet.write(fleet.b, fleet.s1)
    out = fleet.provision()
    assert (
        "0 new, 0 rotated, 1 removed" in out
        and "1 certificates of removed identities revoked" in out
    ), out
    assert device.wait_disconnected(), "the broker put the removed identity out at once"
    device.close()
    assert _connack(s, _device_tls(batch, fleet.a)) is None, "refused at the handshake"
    assert Broker(s, fleet.env).pid == pid, "no restart"


def test_a_certificate_whose_identity_the_broker_no_longer_knows_can_do_nothing(
    fleet: Fleet,
) -> None:
    """Mosquitto skips the password check for a certificate client (use_identity_as_username), so it
    connects; the dynamic-security plugin finds no client of that name and refuses everything. That
    is why removing an identity also revokes its certificates (the test above)."""
    fleet.provision()
    batch = fleet.certify(fleet.a)
    services.send_commands(fleet.settings, [{"command": "deleteClient", "username": fleet.a}])
    reader = fleet.reader()
    device = Client(fleet.settings, tls=_device_tls(batch, fleet.a))
    try:
        assert device.subscribe(_topic(fleet.a)) == "Not authorized"
        device.publish(_topic(fleet.a), "a without a client")
        time.sleep(0.5)
        assert reader.got == [], "no ACL, no publish"
    finally:
        device.close()
        reader.close()


def test_certify_issues_only_for_a_provisioned_device_or_gateway(fleet: Fleet) -> None:
    unprovisioned = fleet.cli("devices", "certify", fleet.a, ok=False)
    assert (
        f"{fleet.a} has no broker identity yet: run `citywatch devices provision" in unprovisioned
    )
    fleet.provision()
    behind = fleet.cli("devices", "certify", fleet.s1, ok=False)
    assert f"{fleet.s1} speaks through gateway {fleet.gw}: certify the gateway" in behind
    bridge = fleet.cli("devices", "certify", fleet.reader_name, ok=False)
    assert "certificates are for the registry's identities only" in bridge
    out = fleet.tmp / "used"
    out.mkdir()
    (out / "something").write_text("x")
    used = fleet.cli("devices", "certify", fleet.a, "--out", str(out), ok=False)
    assert "is not empty: each batch of keys goes into a directory of its own" in used
    long = fleet.cli("devices", "certify", fleet.a, "--days", "5000", ok=False)
    assert "a certificate cannot outlive the CA that signed it" in long
    assert not services.device_ca(fleet.settings).load() or all(
        c.identity != fleet.a for c in services.device_ca(fleet.settings).load()
    ), "nothing issued by a refused request"
