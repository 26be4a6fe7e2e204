"""Session-wide real services and per-test isolation.

The services are the real ones (Mosquitto, tansu speaking Kafka, InfluxDB
1.6.7), started by citywatch's own ``services.up`` when they are not already
answering, and stopped at the end only if this session started them. Each test
gets its own Kafka topic prefix and its own InfluxDB database, so tests never
see each other's data and run in any order.
"""

from __future__ import annotations

import os
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from citywatch import services
from citywatch.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    env = {k: v for k, v in os.environ.items() if k.startswith("CITYWATCH_") and k != "CITYWATCH_CONFIG"}
    settings = load_settings(ROOT / "tests" / "citywatch.test.toml", env=env)
    return settings.replace("paths", state_dir=str(ROOT / ".state"))


@pytest.fixture(scope="session")
def live_services(base_settings: Settings):
    """Bring up the real services once per session; stop only those this session started."""
    statuses = services.up(base_settings, log=lambda line: print(line))
    started = {s.name for s in statuses if s.detail == "started"}
    yield base_settings
    if started:
        services.down(base_settings, log=lambda line: print(line), only=started)


@pytest.fixture
def unique() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def settings(live_services: Settings, unique: str) -> Settings:
    """Settings for one test: real services, its own topics and its own database."""
    s = live_services.replace("kafka", topic_prefix=f"cw-{unique}")
    s = s.replace("influx", database=f"cw_{unique}")
    s = s.replace("mqtt", client_id=f"cw-{unique}", shared_group=f"g{unique}")
    yield s
    _influx_query(s, f'DROP DATABASE "{s.influx.database}"')


def _influx_query(settings: Settings, q: str) -> None:
    data = urllib.parse.urlencode({"q": q}).encode()
    try:
        urllib.request.urlopen(f"{settings.influx.url}/query", data=data, timeout=10).read()
    except OSError:
        pass
