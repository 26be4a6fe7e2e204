"""Publishing like a sensor fleet does: paho, MQTT v5, QoS 1, each client as an identity.

citywatch's broker refuses anonymous clients and lets an identity do only what
its role allows (docs/contracts.md, "Device identity"). The fixtures in
tests/conftest.py provision what a test needs through citywatch's own
provisioning (``citywatch.devices``), under one source per test that is
retired when the test ends. ``SECRETS`` holds the plaintexts issued in this
test process; a bridge's secret is also kept in the session's auth directory,
where a ``citywatch bridge`` subprocess finds it by its user name.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from citywatch import devices, services
from foundation.settings import Settings
from registry.credentials import Grant, grants_from_registry
from registry.devices import Registry, load_registry

SECRETS: dict[str, str] = {}
"""identity -> plaintext, for what the fixtures issued in this process."""
SESSION: Settings | None = None
"""The session's settings (set by the ``live_services`` fixture)."""
SOURCE = "test:session"
"""The provisioning source of the running test (set per test by conftest)."""
_USED: set[str] = set()


def _session() -> Settings:
    assert SESSION is not None, "needs the live_services fixture"
    return SESSION


def provision(grants: Iterable[Grant], rotate: bool = True) -> dict[str, str]:
    """Issue these identities for the running test; returns (and remembers) their secrets."""
    change, _, _, _ = devices.provision_grants(
        _session(), SOURCE, grants, rotate=rotate, remove_missing=False, require_broker=True
    )
    _USED.add(SOURCE)
    SECRETS.update(change.issued)
    return change.issued


def provision_registry(registry: Registry | str | Path) -> dict[str, tuple[str, str]]:
    """Identities for a registry's devices (and gateways): device id -> (identity, secret)."""
    reg = registry if isinstance(registry, Registry) else load_registry(registry)
    provision(grants_from_registry(reg))
    return devices.speaking_for(reg, SECRETS)


def retire_test(source: str) -> None:
    """Remove what ``source`` provisioned (conftest calls it when a test ends)."""
    if source in _USED:
        _USED.discard(source)
        devices.retire(_session(), source)


def secret_of(identity: str) -> str:
    secret = SECRETS.get(identity) or services.store_for(_session()).secret(identity)
    if secret is None:
        raise KeyError(f"no secret issued for {identity!r} in this test session")
    return secret


def bridge(name: str) -> tuple[str, str]:
    """A bridge identity (a reader of the stream, through a shared subscription only)."""
    if name not in SECRETS:
        provision([Grant(name, "bridge")])
    return name, SECRETS[name]


def as_bridge(settings: Settings, name: str) -> Settings:
    """The settings of bridge ``name``: its own identity ``<mqtt.client_id>-<name>``."""
    user = f"{settings.mqtt.client_id}-{name}"
    return settings.replace("mqtt", username=user, password=secret_of(user))


def connect(
    host: str,
    port: int,
    identity: str,
    secret: str | None = None,
    clean_start: bool | int = mqtt.MQTT_CLEAN_START_FIRST_ONLY,
    timeout: float = 10.0,
    max_inflight: int = 100,
) -> tuple[mqtt.Client, object]:
    """A started paho client connected as ``identity``; (client, reason code of the CONNACK)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=identity, protocol=mqtt.MQTTv5)
    client.username_pw_set(identity, secret if secret is not None else secret_of(identity))
    client.max_inflight_messages_set(max_inflight)
    done = threading.Event()
    result: list[object] = []

    def on_connect(c, u, flags, rc, props=None) -> None:  # noqa: ANN001
        result.append(rc)
        done.set()

    client.on_connect = on_connect
    client.connect(host, port, clean_start=clean_start)
    client.loop_start()
    if not done.wait(timeout):
        client.loop_stop()
        raise AssertionError(f"no CONNACK for {identity} within {timeout} s")
    return client, result[0]


class Publisher:
    """Publishes as one identity: a device, a gateway, or the test's relay (``pub-<unique>``)."""

    def __init__(self, host: str, port: int, client_id: str, secret: str | None = None):
        self.client, rc = connect(host, port, client_id, secret)
        if rc.is_failure:  # type: ignore[attr-defined]
            self.client.loop_stop()
            raise AssertionError(f"the broker refused {client_id}: {rc}")

    def publish(
        self, topic: str, payload: bytes | str | dict, qos: int = 1
    ) -> mqtt.MQTTMessageInfo:
        if isinstance(payload, dict):
            payload = orjson.dumps(payload)
        while True:
            info = self.client.publish(topic, payload, qos=qos)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                return info
            time.sleep(0.01)  # MQTT_ERR_QUEUE_SIZE: wait for acks (bench/RESULTS.md)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def drop_session(host: str, port: int, client_id: str) -> None:
    """End a bridge's persistent session so it stops collecting copies after its test."""
    try:
        secret = secret_of(client_id)
    except KeyError:
        return  # never issued: no session either
    client, rc = connect(host, port, client_id, secret, clean_start=True)
    time.sleep(0.2)
    client.disconnect()
    client.loop_stop()
