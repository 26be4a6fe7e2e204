"""Session-wide real services and per-test isolation.

The services are the real ones (citywatch's own secured Mosquitto, tansu
speaking Kafka, InfluxDB 1.6.7), started by citywatch's own ``services.up``
when they are not already answering, and stopped at the end only if this
session started them. Each test gets its own Kafka topic prefix and its own
InfluxDB database, so tests never see each other's data and run in any order.
Under pytest-xdist (``make test``) each worker is a session of its own with its
own services, ports and state directory (tests/kit/workers.py).

Each test also gets its own broker identities (docs/contracts.md, "Device
identity"), provisioned through ``citywatch.devices`` and removed when it
ends: ``settings`` carries bridge ``<client_id>-1``'s (``tests.kit.mqtt.as_bridge``
gives the others: ``-k``, ``-a``, ``-b``) and a relay ``pub-<unique>`` for
publishing on any topic under ``city/``; ``registry_file`` gives its devices
theirs (``tests.kit.mqtt.Publisher(host, port, device_id)`` publishes as one).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import pytest

from citywatch import services
from citywatch.run import settings_env  # noqa: F401 - tests import it from here
from foundation.settings import Settings, load_settings
from registry.credentials import Grant
from store.errors import InfluxError
from store.schema import drop_database
from tests.kit import mqtt as kit_mqtt
from tests.kit import workers

ROOT = Path(__file__).resolve().parent.parent


def _citywatch_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if k.startswith("CITYWATCH_") and k != "CITYWATCH_CONFIG"
    }


def _load(env: dict[str, str]) -> Settings:
    settings = load_settings(ROOT / "tests" / "citywatch.test.toml", env=env)
    state = env.get("CITYWATCH_PATHS_STATE_DIR", str(ROOT / ".state"))
    settings = settings.replace("paths", state_dir=state)
    if "CITYWATCH_MQTT_AUTH_DIR" not in env:
        settings = settings.replace("mqtt", auth_dir=str(Path(state) / "mqtt"))
    return settings


LONG_FILES_FIRST = (
    "tests/pipeline/test_recovery.py",
    "tests/pipeline/test_archive_restart.py",
    "tests/pipeline/test_officer_actions.py",
    "tests/citywatch/test_run.py",
    "tests/ingest/test_validate_fuzz.py",
    "tests/sim/test_simulator.py",
    "tests/pipeline/",
)
"""The files that take minutes on a loaded machine (``--durations``), longest first."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """On xdist workers, the long files first: ``--dist loadfile`` hands files out in this
    order, so the long ones start at once and the short ones fill in around them instead of
    one long file starting last and running alone. Only the order changes (tests run in any)."""
    if workers.worker_id() is None:
        return

    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return next((i for i, p in enumerate(LONG_FILES_FIRST) if path.startswith(p)), 99)

    items.sort(key=rank)


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    """The session's settings; in an xdist worker, that worker's own ports and state
    (tests/kit/workers.py), also put in the environment for whatever reads it there."""
    env = _citywatch_env()
    env.pop("CITYWATCH_PATHS_STATE_DIR", None)  # the suite's state is the checkout's .state
    worker = workers.worker_id()
    if worker is None:
        return _load(env)
    moved = workers.worker_env(_load(env), worker, ROOT / ".state")
    os.environ.update(moved)
    return _load(env | moved)


@pytest.fixture(scope="session")
def live_services(base_settings: Settings):
    """Bring up the real services once per session; stop only those this session started."""
    statuses = services.up(base_settings, log=lambda line: print(line))
    started = {s.name for s in statuses if s.detail == "started"}
    kit_mqtt.SESSION = base_settings
    yield base_settings
    if started:
        services.down(base_settings, log=lambda line: print(line), only=started)


@pytest.fixture(autouse=True)
def _broker_identities():
    """One provisioning source per test; what the test provisioned is removed when it ends."""
    source = kit_mqtt.SOURCE = f"test:{uuid.uuid4().hex[:12]}"
    yield
    kit_mqtt.retire_test(source)


@pytest.fixture
def unique() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def settings(live_services: Settings, unique: str) -> Settings:
    """Settings for one test: real services, its own topics and its own database."""
    s = live_services.replace("kafka", topic_prefix=f"cw-{unique}")
    s = s.replace("influx", database=f"cw_{unique}")
    s = s.replace("mqtt", client_id=f"cw-{unique}", shared_group=f"g{unique}")
    bridges = [Grant(f"cw-{unique}-{name}", "bridge") for name in ("1", "k", "a", "b")]
    issued = kit_mqtt.provision([*bridges, Grant(f"pub-{unique}", "relay")])
    s = s.replace("mqtt", username=f"cw-{unique}-1", password=issued[f"cw-{unique}-1"])
    yield s
    with contextlib.suppress(InfluxError):
        drop_database(s)


@pytest.fixture
def registry_file(live_services: Settings, tmp_path: Path, unique: str) -> Path:
    """A registry with this test's own devices (ids carry the test's unique tag), provisioned."""
    rows = [
        "device_id,kind,district,grid,unit,road_class,address,lat,lon,pm10_warning,pm10_violation,component_code",
        f"MH-{unique}-1,manhole,jinshui,JS-G07,郑州市市政工程管理处,main,花园路农业路口南50米,34.7985,113.6712,,,0102",
        f"MH-{unique}-2,manhole,erqi,EQ-G03,郑州供电公司,other,大学路陇海路口北侧,34.7315,113.6411,,,0105",
        f"DS-{unique}-1,dust,jinshui,JS-G12,河南五建建设集团有限公司,,东风路文化路口北100米工地,34.8093,113.6552,,,",
        f"SL-{unique}-1,streetlight,zhongyuan,ZY-G05,郑州市城市照明灯饰管理处,main,中原路桐柏路口,34.7489,113.6108,,,0118",
    ]
    path = tmp_path / "registry.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    kit_mqtt.provision_registry(path)
    return path
