"""Identities, hashes and the broker's views of them (registry/credentials.py).

The password and ACL files are checked on a real Mosquitto started with them
(the view for a broker that is not citywatch's own): the hashes authenticate,
a SIGHUP reload takes a removal and a rotation, and its acl_file's one gap is
shown, the reason citywatch's own broker uses the dynamic-security plugin
(docs/decisions/005-device-identity.md).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from citywatch.services import mqtt_connack
from contract.topics import BROKER_COUNTERS
from foundation.errors import ConfigError
from registry.credentials import (
    CredentialError,
    CredentialStore,
    Grant,
    acl_file,
    dynsec_commands,
    dynsec_config,
    grants_from_registry,
    hash_secret,
    new_secret,
    password_file,
    read_batch,
    verify_secret,
    write_batch,
)
from registry.devices import COLUMNS, load_registry
from tests.kit.ports import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
HEADER = ",".join(COLUMNS) + ",gateway"


def _registry(tmp_path: Path, *rows: str, name: str = "registry.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


ROWS = (
    "MH-1,manhole,jinshui,G1,郑州市市政工程管理处,main,,,,,,0102,",
    "DS-1,dust,erqi,G2,郑州一建,,,,,,,,GW-SITE-1",
    "DS-2,dust,erqi,G2,郑州一建,,,,,,,,GW-SITE-1",
)


# ---------------------------------------------------------------- hashes


def test_a_hash_is_mosquittos_own_format_and_verifies_only_its_secret() -> None:
    secret = new_secret()
    assert len(secret) == 24 and secret != new_secret()
    encoded = hash_secret(secret)
    empty, seven, iterations, salt, digest = encoded.split("$")
    assert (empty, seven, iterations) == ("", "7", "101")
    assert len(base64.b64decode(salt)) == 12 and len(base64.b64decode(digest)) == 64
    assert verify_secret(secret, encoded) and not verify_secret(secret + "x", encoded)
    assert hash_secret(secret) != encoded, "a fresh salt every time"


def test_mosquitto_passwd_hashes_verify_here(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    subprocess.run([MOSQUITTO_PASSWD, "-c", "-b", str(path), "alice", "s3cret"], check=True)
    encoded = path.read_text().strip().split(":", 1)[1]
    assert encoded.startswith("$7$") and verify_secret("s3cret", encoded)
    assert not verify_secret("s3cre", encoded)


# ---------------------------------------------------------------- grants and the store


def test_a_gateway_speaks_for_the_devices_that_name_it(tmp_path: Path) -> None:
    registry = load_registry(_registry(tmp_path, *ROWS))
    assert registry.get("DS-1").gateway == "GW-SITE-1" and registry.get("MH-1").speaker == "MH-1"
    grants = {g.name: g for g in grants_from_registry(registry)}
    assert set(grants) == {"MH-1", "GW-SITE-1"}, "a device behind a gateway has no identity"
    assert grants["MH-1"] == Grant("MH-1", "device", ("city/jinshui/manhole/MH-1/telemetry",))
    assert grants["GW-SITE-1"].role == "gateway"
    assert grants["GW-SITE-1"].publish == (
        "city/erqi/dust/DS-1/telemetry",
        "city/erqi/dust/DS-2/telemetry",
        "city/gateway/GW-SITE-1/deadletter",  # what it could not turn into a reading
    )


def test_a_gateways_role_is_built_one_acl_per_command_so_no_command_outgrows_the_broker() -> None:
    from registry.credentials import Change, Entry, dynsec_commands

    topics = [f"city/erqi/dust/DS-{i:05d}/telemetry" for i in range(2000)]
    after = {"GW": Entry("gateway", hash_secret("s"), "t", topics)}
    cmds = dynsec_commands(Change(issued={"GW": "s"}, after=after))
    assert max(len(json.dumps(c)) for c in cmds) < 4608 - 512
    assert sum(c["command"] == "addRoleACL" for c in cmds) == 2000


@pytest.mark.parametrize(
    "row, needle",
    [
        ("DS-1,dust,erqi,G2,U,,,,,,,,MH-1", "'MH-1' is also a device id (line 2)"),
        ("DS-1,dust,erqi,G2,U,,,,,,,,DS-1", "names the device itself"),
        ("DS-1,dust,erqi,G2,U,,,,,,,,GW/1", "is not a usable gateway id"),
    ],
)
def test_a_bad_gateway_is_refused_at_its_cell(tmp_path: Path, row: str, needle: str) -> None:
    path = _registry(tmp_path, ROWS[0], row)
    with pytest.raises(ConfigError) as err:
        load_registry(path)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_sync_issues_keeps_rotates_and_removes(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "auth")
    a, b, c = (Grant(n, "device", (f"city/d/manhole/{n}/telemetry",)) for n in "ABC")
    with store.change() as txn:
        first = txn.sync("registry:x", [a, b])
    assert set(first.issued) == {"A", "B"} and not first.rotated
    hash_a = store.load()["A"].hash
    assert verify_secret(first.issued["A"], hash_a)
    with store.change() as txn:
        second = txn.sync("registry:x", [a, c], rotate=["A"])
    assert set(second.issued) == {"A", "C"} and second.rotated == {"A"} and second.removed == {"B"}
    entries = store.load()
    assert set(entries) == {"A", "C"} and entries["A"].hash != hash_a
    # another source taking a device over keeps its secret (an installed device goes on working)
    with store.change() as txn:
        third = txn.sync("registry:y", [c])
    assert not third.issued and store.load()["C"].source == "registry:y"
    with store.change() as txn, pytest.raises(CredentialError, match="already a device identity"):
        txn.sync("bridges", [Grant("A", "bridge")])
    with store.change() as txn, pytest.raises(CredentialError, match="cannot rotate Z"):
        txn.sync("registry:x", [a], rotate=["Z"])


def test_the_store_holds_hashes_only_and_nobody_else_reads_it(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "auth")
    with store.change() as txn:
        change = txn.sync("s", [Grant("MH-1", "device", ("t",)), Grant("cw-bridge", "bridge")])
    text = Path(store.path).read_text()
    for secret in change.issued.values():
        assert secret not in text
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.dir).st_mode) == 0o700
    # only an identity citywatch runs itself keeps its plaintext, for itself
    assert store.secret("cw-bridge") == change.issued["cw-bridge"]
    assert store.secret("MH-1") is None
    kept = Path(store.secrets_dir) / "cw-bridge"
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600
    batch = tmp_path / "batch.csv"
    assert write_batch(batch, change) == 2
    assert stat.S_IMODE(os.stat(batch).st_mode) == 0o600
    assert read_batch(batch) == change.issued


def test_the_dynamic_security_view_refuses_all_that_is_not_granted(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "auth")
    with store.change() as txn:
        change = txn.sync(
            "s",
            [
                Grant("MH-1", "device", ("city/jinshui/manhole/MH-1/telemetry",)),
                Grant("cw-bridge", "bridge"),
                Grant("cw-health", "health"),
            ],
        )
    config = dynsec_config(store.load())
    assert config["defaultACLAccess"] == {
        "publishClientSend": False,
        "publishClientReceive": False,
        "subscribe": False,
        "unsubscribe": True,
    }
    clients = {c["username"]: c for c in config["clients"]}
    roles = {r["rolename"]: r["acls"] for r in config["roles"]}
    assert clients["cw-health"]["roles"] == []
    assert roles["cw:MH-1"] == [
        {
            "acltype": "publishClientSend",
            "topic": "city/jinshui/manhole/MH-1/telemetry",
            "allow": True,
        }
    ]
    assert {(a["acltype"], a["topic"]) for a in roles["cw:cw-bridge"]} == {
        ("subscribePattern", "$share/+/city/#"),
        ("publishClientReceive", "city/#"),
        # the broker's drop counters and nothing else of $SYS (docs/contracts.md, "Broker counters")
        *((k, t) for t in BROKER_COUNTERS for k in ("subscribeLiteral", "publishClientReceive")),
    }
    salted = base64.b64decode(clients["MH-1"]["salt"])
    assert verify_secret(
        change.issued["MH-1"],
        f"$7$101${base64.b64encode(salted).decode()}${clients['MH-1']['password']}",
    )
    # a change as commands: removed first, then created; a rotation is a new password
    with store.change() as txn:
        again = txn.sync("s", [Grant("cw-bridge", "bridge"), Grant("cw-health", "health")],
                         rotate=["cw-bridge"])  # fmt: skip
    commands = dynsec_commands(again)
    assert [c["command"] for c in commands] == ["deleteClient", "deleteRole", "setClientPassword"]
    assert commands[2]["password"] == again.issued["cw-bridge"]


# ---------------------------------------------------------------- a Mosquitto with the files


class _Broker:
    """A real Mosquitto with citywatch's password and ACL files (no plugin), reloaded by SIGHUP."""

    def __init__(self, tmp_path: Path, port: int, store: CredentialStore):
        self.port, self.dir = port, tmp_path
        self.skipped = self.write(store)
        conf = tmp_path / "mosquitto.conf"
        root = ["user root"] if os.geteuid() == 0 else []  # files in pytest's private tmp
        conf.write_text(
            "\n".join(
                [
                    *root,
                    "per_listener_settings false",
                    "allow_anonymous false",
                    f"password_file {tmp_path / 'passwd'}",
                    f"acl_file {tmp_path / 'acl'}",
                    f"listener {port} 127.0.0.1",
                    "use_username_as_clientid true",
                    "",
                ]
            )
        )
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        for _ in range(50):
            if mqtt_connack("127.0.0.1", port) is not None:
                return
            time.sleep(0.1)
        raise AssertionError("mosquitto did not start")

    def write(self, store: CredentialStore) -> list[str]:
        text, skipped = password_file(store.load())
        (self.dir / "passwd").write_text(text)
        (self.dir / "acl").write_text(acl_file(store.load()))
        return skipped

    def reload(self) -> None:
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class _Client:
    def __init__(self, port: int, user: str, secret: str):
        self.got: list[str] = []
        self.suback: list[str] = []
        self.rc: list[object] = []
        self.events = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv5)
        c.username_pw_set(user, secret)
        c.on_connect = lambda c, u, f, rc, p=None: (self.rc.append(rc), self.events.set())
        c.on_message = lambda c, u, m: self.got.append(m.payload.decode())
        c.on_subscribe = lambda c, u, mid, rcs, p=None: self.suback.extend(str(r) for r in rcs)
        c.connect("127.0.0.1", port)
        c.loop_start()
        assert self.events.wait(5)
        self.client = c

    @property
    def accepted(self) -> bool:
        return not self.rc[0].is_failure  # type: ignore[attr-defined]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_another_mosquitto_takes_the_password_and_acl_files_and_reloads_them(
    tmp_path: Path,
) -> None:
    store = CredentialStore(tmp_path / "auth")
    topic = "city/jinshui/manhole/{}/telemetry"
    with store.change() as txn:
        issued = txn.sync(
            "s",
            [
                Grant("MH-1", "device", (topic.format("MH-1"),)),
                Grant("MH-2", "device", (topic.format("MH-2"),)),
                Grant("MH:3", "device", (topic.format("MH:3"),)),
                Grant("cw-bridge", "bridge"),
            ],
        ).issued
    port = free_port()  # never a fixed one: another test process may hold it
    broker = _Broker(tmp_path, port, store)
    try:
        assert broker.skipped == ["MH:3"], "a ':' cannot be in the file's user names"
        assert mqtt_connack("127.0.0.1", port) == 5, "anonymous refused"
        assert mqtt_connack("127.0.0.1", port, "MH-1", issued["MH-1"]) == 0
        assert mqtt_connack("127.0.0.1", port, "MH-1", issued["MH-2"]) == 5
        reader = _Client(port, "cw-bridge", issued["cw-bridge"])
        reader.client.subscribe("$share/g/city/#", qos=1)
        deadline = time.monotonic() + 5  # subscribed before anything is published
        while not reader.suback and time.monotonic() < deadline:
            time.sleep(0.02)
        assert reader.suback, "the bridge's subscription was not acknowledged"
        device = _Client(port, "MH-1", issued["MH-1"])
        device.client.publish(topic.format("MH-2"), "as MH-2", qos=1).wait_for_publish(5)
        device.client.publish(topic.format("MH-1"), "as itself", qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 5
        while "as itself" not in reader.got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reader.got == ["as itself"], "another device's topic is not delivered"
        # the acl_file's gap: a device may join the bridges' shared subscription (Mosquitto's
        # acl_file never refuses a SUBSCRIBE) and takes a share of the stream away, dropped
        device.client.subscribe("$share/g/city/#", qos=1)
        time.sleep(0.3)
        assert device.suback == ["Granted QoS 1"]
        for i in range(10):
            device.client.publish(topic.format("MH-1"), str(i), qos=1).wait_for_publish(5)
        time.sleep(0.5)
        assert 0 < len(reader.got) - 1 < 10 and device.got == []
        device.close()
        # removal and rotation reach it on SIGHUP, without a restart
        with store.change() as txn:
            rotated = txn.sync("s", [Grant("MH-1", "device", (topic.format("MH-1"),)),
                                     Grant("cw-bridge", "bridge")], rotate=["MH-1"]).issued  # fmt: skip
        broker.write(store)
        pid = broker.proc.pid
        broker.reload()
        assert mqtt_connack("127.0.0.1", port, "MH-2", issued["MH-2"]) == 5, "removed: locked out"
        assert mqtt_connack("127.0.0.1", port, "MH-1", issued["MH-1"]) == 5, "the old secret"
        assert mqtt_connack("127.0.0.1", port, "MH-1", rotated["MH-1"]) == 0
        assert broker.proc.pid == pid and broker.proc.poll() is None
        reader.close()
    finally:
        broker.stop()


def test_views_leave_the_admin_out_of_another_broker(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "auth")
    with store.change() as txn:
        txn.sync("s", [Grant("citywatch-admin", "admin"), Grant("r", "relay")])
    text, _ = password_file(store.load())
    assert text.startswith("r:$7$") and "citywatch-admin" not in text
    acl = acl_file(store.load())
    assert "user r\ntopic write city/#\n" in acl and "citywatch-admin" not in acl
    assert json.dumps(dynsec_config(store.load())).count("$CONTROL/dynamic-security/#") == 3
