"""One set of services per pytest-xdist worker, so parallel test processes never share a broker.

``make test`` runs the suite on several xdist workers (``PYTEST_XDIST_WORKER`` = ``gw0``,
``gw1``, ...). Each worker's session starts its own Mosquitto, tansu and InfluxDB through
citywatch's own ``services.up``, on the configured base ports moved up by ``STEP`` times
(N + 1), with its own state directory ``<state>/xdist/gwN`` (its broker identities
included). A test that restarts, SIGHUPs or fills "the session's broker" so touches only
its own worker's, and two workers never see each other's sessions, groups or databases.

The base ports come from the settings and the ``CITYWATCH_*`` environment as in a plain
run, so a checkout or CI with its own ports keeps them apart from anybody else's. ``STEP``
is 10: Mosquitto takes three consecutive ports (plain, TLS, certificates) and InfluxDB
two (HTTP, and its RPC on HTTP + 2); with citywatch's default ports (18883, 19092,
18086) the moved ports of one worker never meet another's.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse, urlunparse

from foundation.settings import Settings

STEP = 10
"""How far apart two workers' ports are (Mosquitto's three fit with room to spare)."""

_WORKER = re.compile(r"gw(\d+)")


def worker_id() -> str | None:
    """``gwN`` in an xdist worker, None in a plain pytest run (one process, the base ports)."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    return name if _WORKER.fullmatch(name) else None


def port_offset(worker: str) -> int:
    """``gwN`` runs its services on the base ports + STEP * (N + 1)."""
    match = _WORKER.fullmatch(worker)
    if match is None:
        raise ValueError(f"not an xdist worker id: {worker!r} (expected gw0, gw1, ...)")
    return STEP * (int(match.group(1)) + 1)


def _moved_url(url: str, offset: int, default_port: int) -> str:
    parsed = urlparse(url)
    port = (parsed.port or default_port) + offset
    netloc = parsed.netloc.rpartition("@")
    host = netloc[2].rsplit(":", 1)[0] if parsed.port else netloc[2]
    return urlunparse(parsed._replace(netloc=f"{netloc[0]}{netloc[1]}{host}:{port}"))


def _moved_bootstrap(bootstrap: str, offset: int) -> str:
    moved = []
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        moved.append(f"{host}:{int(port) + offset}")
    return ",".join(moved)


def worker_env(base: Settings, worker: str, state_root: Path) -> dict[str, str]:
    """The ``CITYWATCH_*`` variables that give worker ``gwN`` its own services and state.

    ``base`` is the session's settings as a plain run loads them; ``state_root`` the state
    directory a plain run uses (``.state``). A configured ``mqtt.auth_dir`` is kept as the
    place for identities, one subdirectory per worker, since each worker's broker has its own.
    """
    offset = port_offset(worker)
    m = base.mqtt
    state = state_root / "xdist" / worker
    auth = os.environ.get("CITYWATCH_MQTT_AUTH_DIR")
    return {
        "CITYWATCH_MQTT_URL": _moved_url(m.url, offset, m.port),
        "CITYWATCH_KAFKA_BOOTSTRAP": _moved_bootstrap(base.kafka.bootstrap, offset),
        "CITYWATCH_INFLUX_URL": _moved_url(base.influx.url, offset, base.influx.port),
        "CITYWATCH_PATHS_STATE_DIR": str(state),
        "CITYWATCH_MQTT_AUTH_DIR": str(Path(auth) / "xdist" / worker if auth else state / "mqtt"),
    }
