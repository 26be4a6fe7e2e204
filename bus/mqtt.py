"""The MQTT broker as citywatch's clients see it when it does not answer.

paho raises the socket's ``OSError`` from ``connect()`` (or retries silently
with ``connect_async``); ``broker_down`` turns it into the one line every
command prints for an outage (``foundation.errors.ServiceDown``), and ``probe``
lets a process that needs the broker find out before it starts.
"""

from __future__ import annotations

import socket

from foundation.errors import ServiceDown
from foundation.settings import MqttSettings

__all__ = ["MQTT_SETTING", "PROBE_TIMEOUT_S", "broker_down", "probe"]

MQTT_SETTING = "mqtt.url / CITYWATCH_MQTT_URL"
PROBE_TIMEOUT_S = 5.0
"""Seconds ``probe`` waits for the TCP handshake (paho's own connect timeout is the same)."""


def broker_down(host: str, port: int, cause: object = "") -> ServiceDown:
    """The outage of the broker at ``host:port`` (an address only: ``mqtt.url`` may carry
    credentials, which never go into the line)."""
    return ServiceDown("the MQTT broker", f"{host}:{port}", MQTT_SETTING, cause)


def probe(m: MqttSettings, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Return if something accepts connections at the broker's address; ``ServiceDown`` if not.

    A TCP handshake, not an MQTT session: whether the broker lets this identity in
    (and over TLS with which CA) is for the real connection to say, with the
    broker's reason; this only tells an outage from everything else, quickly.
    """
    try:
        with socket.create_connection((m.host, m.port), timeout=timeout):
            pass
    except OSError as exc:
        raise broker_down(m.host, m.port, exc) from None
