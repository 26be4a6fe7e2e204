"""One configuration surface: a TOML file plus ``CITYWATCH_*`` environment overrides.

Every key is declared once in ``SCHEMA`` with its type, default and what is
allowed, so a typo or a bad value is refused at start with one line naming the
key, the bad value and what would be accepted (``ConfigError``), never half-way
through a night shift. Environment variables are ``CITYWATCH_<SECTION>_<KEY>``
(e.g. ``CITYWATCH_KAFKA_TOPIC_PREFIX``); they win over the file, which wins
over the defaults.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from foundation.cityfile import did_you_mean
from foundation.errors import ConfigError
from foundation.logs import redact, register_secret

ENV_PREFIX = "CITYWATCH_"
NOT_SETTINGS = ("CITYWATCH_CONFIG", "CITYWATCH_OFFICER_TOKEN", "CITYWATCH_OFFICER_TOKEN_FILE")
"""Variables of the environment that are not settings: the settings file, and the
acting officer's own credential (docs/officers.md), which is a person's, not the deployment's."""
DEFAULT_FILE = "citywatch.toml"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
KAFKA_SECURITY = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _url(schemes: tuple[str, ...], credentials: str = "") -> Callable[[str], str | None]:
    """A URL of one of ``schemes``; with ``credentials`` (where they go instead), one
    without ``user:password@``: a client that ignores them would fail as if the
    server did not answer."""

    def check(value: str) -> str | None:
        parsed = urlparse(value)
        if parsed.scheme not in schemes or not parsed.hostname:
            return f"a URL like {schemes[0]}://host:port"
        try:
            parsed.port  # noqa: B018 - raises on a non-numeric port
        except ValueError:
            return f"a URL like {schemes[0]}://host:port with a numeric port"
        if credentials and "@" in parsed.netloc:
            return f"a URL like {schemes[0]}://host:port without user:password@ ({credentials})"
        return None

    return check


def _bootstrap(value: str) -> str | None:
    for part in value.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit():
            return "comma-separated host:port pairs, e.g. 127.0.0.1:19092"
    return None


def _topic_prefix(value: str) -> str | None:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", value):
        return "letters, digits, '.', '_' or '-' (a Kafka topic name part)"
    return None


def _one_of(options: tuple[str, ...]) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in options else "one of " + ", ".join(options)

    return check


PM_UNITS = ("mg/m3", "ug/m3")


def _listen(value: str) -> str | None:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        return "host:port, e.g. 0.0.0.0:7212 (port 0: a free one, said in the gateway's log)"
    return None


def _positive(value: float) -> str | None:
    return None if value > 0 else "a number greater than 0"


MIN_SECRET_BYTES = 32
"""The least length of a secret citywatch chooses (an HMAC key, a bearer token): 256 bits, the
size of the HMAC-SHA256 digest; shorter keys can be guessed or searched offline from one link."""
MAKE_SECRET = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def _chosen_secret(value: str) -> str | None:
    """A secret we choose: empty (not set) or at least ``MIN_SECRET_BYTES`` bytes."""
    n = len(value.encode())
    if 0 < n < MIN_SECRET_BYTES:
        return f"{n} bytes; a secret needs at least {MIN_SECRET_BYTES}; make one with {MAKE_SECRET}"
    return None


def _optional_url(schemes: tuple[str, ...]) -> Callable[[str], str | None]:
    check = _url(schemes)
    return lambda value: None if value == "" else check(value)


def _identifier(value: str) -> str | None:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value):
        return "letters, digits, '_', '.' or '-' (at most 64)"
    return None


@dataclass(frozen=True)
class Key:
    type: type
    default: Any
    check: Callable[[Any], str | None] | None = None
    help: str = ""
    secret: bool = False
    """Never echoed in an error; masked in every log line (foundation/logs.py)."""


SCHEMA: dict[str, dict[str, Key]] = {
    "mqtt": {
        "url": Key(
            str,
            "mqtt://127.0.0.1:18883",
            _url(("mqtt", "mqtts")),
            "broker address; mqtts:// turns on TLS (citywatch's own broker: TLS on the next port)",
        ),
        "username": Key(
            str,
            "citywatch-bridge-1",
            None,
            "this process's broker identity (on citywatch's broker also its client id)",
        ),
        "password": Key(
            str,
            "",
            None,
            "its secret; empty: password_file, else <auth_dir>/secrets/<username>",
            secret=True,
        ),
        "password_file": Key(str, "", None, "file whose first line is the secret"),
        "ca_file": Key(str, "", None, "CA bundle for mqtts:// (empty: system CAs)"),
        "auth_dir": Key(
            str,
            "",
            None,
            "identities of citywatch's broker: hashes, CA, kept secrets (empty: <state_dir>/mqtt)",
        ),
        "shared_group": Key(
            str, "citywatch", _identifier, "MQTT v5 shared-subscription group of the bridges"
        ),
        "client_id": Key(
            str,
            "citywatch-bridge",
            _identifier,
            "client id prefix; the persistent session is keyed by it",
        ),
        "session_expiry_s": Key(
            int,
            86_400,
            _positive,
            "how long the broker keeps the bridge's session while it is down",
        ),
        "max_queued_messages": Key(
            int,
            1_000_000,
            _positive,
            "citywatch's own broker: QoS-1 messages it queues per client before it drops "
            "(the bridges' outage window times the city's rate: docs/operations.md)",
        ),
        "sys_interval_s": Key(
            int,
            10,
            _positive,
            "citywatch's own broker: seconds between its $SYS counters (the bridges read drops there)",
        ),
    },
    "kafka": {
        "bootstrap": Key(str, "127.0.0.1:19092", _bootstrap, "bootstrap servers"),
        "topic_prefix": Key(
            str, "citywatch", _topic_prefix, "prefix of every topic: <prefix>.telemetry, ..."
        ),
        "partitions": Key(int, 1, _positive, "partitions of the telemetry topic"),
        "security_protocol": Key(
            str, "PLAINTEXT", _one_of(KAFKA_SECURITY), "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
        ),
        "sasl_mechanism": Key(
            str, "SCRAM-SHA-512", _one_of(KAFKA_SASL), "SASL mechanism (with SASL_*)"
        ),
        "username": Key(str, "", None, "SASL user name (with SASL_*)"),
        "password": Key(str, "", None, "SASL password (with SASL_*)", secret=True),
        "ca_file": Key(str, "", None, "CA bundle for SSL / SASL_SSL (empty: system CAs)"),
    },
    "influx": {
        "url": Key(
            str,
            "http://127.0.0.1:18086",
            _url(
                ("http", "https"), credentials="set influx.username and CITYWATCH_INFLUX_PASSWORD"
            ),
            "InfluxDB HTTP address",
        ),
        "database": Key(
            str, "citywatch", _identifier, "database (1.x) or bucket mapping (v2/v3 compatibility)"
        ),
        "username": Key(str, "", None, "1.x user (empty: no authentication)"),
        "password": Key(str, "", None, "1.x password", secret=True),
        "token": Key(str, "", None, "API token: set with org to use the v2 API", secret=True),
        "org": Key(str, "", None, "organisation for the v2 API"),
    },
    "paths": {
        "registry": Key(str, "config/registry.example.csv", None, "device registry (CSV or YAML)"),
        "fleet": Key(
            str,
            "",
            None,
            "vehicles, permits, sites, routes and zones (docs/contracts.md, Fleet), checked "
            "against the registry; empty (the default): no vehicles",
        ),
        "rules": Key(str, "config/rules.yaml", None, "rules file"),
        "officers": Key(
            str, "config/officers.example.yaml", None, "officer directory (docs/officers.md)"
        ),
        "policy": Key(
            str,
            "config/policy.yaml",
            None,
            "who may do what (docs/officers.md); empty: the default",
        ),
        "state_dir": Key(
            str, ".state", None, "where embedded services keep data, logs and pid files"
        ),
    },
    "log": {
        "level": Key(str, "INFO", _one_of(LOG_LEVELS), "log level"),
    },
    # The alerts service (docs/alerts.md#acknowledging). The routing file may say the same with
    # ${CITYWATCH_ALERTS_...}; a value set here wins over the routing file's.
    "alerts": {
        "ack_secret": Key(
            str,
            "",
            _chosen_secret,
            f"HMAC key of the ack links, at least {MIN_SECRET_BYTES} bytes; "
            "empty: a random key per start (links die with a restart)",
            secret=True,
        ),
        "ack_token": Key(
            str,
            "",
            _chosen_secret,
            f"a bearer token integrations may post acks with, at least {MIN_SECRET_BYTES} bytes",
            secret=True,
        ),
        "base_url": Key(
            str,
            "",
            _optional_url(("https", "http")),
            "how officers' phones reach the ack endpoint (empty: the routing file's ack.base_url)",
        ),
    },
    # The HJ 212-2017 gateway (docs/gateways.md). Its broker identity is mqtt.username.
    "hj212": {
        "listen": Key(
            str,
            "127.0.0.1:17212",
            _listen,
            "host:port the gateway accepts monitors on (0.0.0.0:<port> to take them from the network)",
        ),
        "pm_unit": Key(
            str,
            "mg/m3",
            _one_of(PM_UNITS),
            "the unit the monitors report a34001/a34002/a34004 in (HJ 212 dust monitors: mg/m3); "
            "converted to the contract's µg/m³",
        ),
        "passwords": Key(
            str, "", None, "the file of PW hashes; empty: <paths.state_dir>/hj212/passwords.json"
        ),
        "max_bad_frames": Key(
            int, 10, _positive, "bad frames in a row after which a connection is closed"
        ),
        "idle_timeout_s": Key(
            int, 900, _positive, "a connection silent this long is closed (monitors reconnect)"
        ),
        "max_pending": Key(
            int,
            2000,
            _positive,
            "publishes awaiting the broker's PUBACK before the gateway stops reading its sockets",
        ),
    },
    # The JT/T 808 gateway (docs/gateways.md). Its broker identity is mqtt.username.
    "jt808": {
        "listen": Key(
            str,
            "127.0.0.1:17808",
            _listen,
            "host:port the gateway accepts terminals on (0.0.0.0:<port> to take them from the network)",
        ),
        "auth_codes": Key(
            str,
            "",
            None,
            "the file of authentication code hashes; empty: <paths.state_dir>/jt808/auth_codes.json",
        ),
        "max_bad_frames": Key(
            int, 10, _positive, "bad messages in a row after which a connection is closed"
        ),
        "idle_timeout_s": Key(
            int,
            600,
            _positive,
            "a connection silent this long is closed (terminals heartbeat, and reconnect)",
        ),
        "max_pending": Key(
            int,
            2000,
            _positive,
            "publishes awaiting the broker's PUBACK before the gateway stops reading its sockets",
        ),
    },
}


@dataclass(frozen=True)
class MqttSettings:
    url: str
    username: str
    password: str = field(repr=False)
    ca_file: str
    shared_group: str
    client_id: str
    session_expiry_s: int
    password_file: str = ""
    auth_dir: str = ""
    max_queued_messages: int = 1_000_000
    sys_interval_s: int = 10

    @property
    def host(self) -> str:
        return urlparse(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parsed = urlparse(self.url)
        return parsed.port or (8883 if parsed.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlparse(self.url).scheme == "mqtts"


_MQTT_USER = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _resolve_mqtt(values: dict[str, dict[str, Any]]) -> None:
    """``auth_dir`` defaults to ``<state_dir>/mqtt``; an empty password is read from
    ``password_file``, else from the secret citywatch keeps there for ``username``
    (docs/contracts.md, "Device identity")."""
    m = values["mqtt"]
    if not m["auth_dir"]:
        m["auth_dir"] = os.path.join(values["paths"]["state_dir"], "mqtt")
    if m["password"]:
        return
    path = m["password_file"]
    if not path:
        if not _MQTT_USER.fullmatch(m["username"]):
            return
        path = os.path.join(m["auth_dir"], "secrets", m["username"])
    try:
        with open(path, encoding="utf-8") as f:
            m["password"] = f.readline().strip()
    except OSError as exc:
        if m["password_file"]:
            raise ConfigError(
                path, None, f"mqtt.password_file cannot be read: {exc.strerror or exc}"
            ) from None


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap: str
    topic_prefix: str
    partitions: int
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: str = ""

    @property
    def first_host_port(self) -> tuple[str, int]:
        host, _, port = self.bootstrap.split(",")[0].strip().rpartition(":")
        return host, int(port)


@dataclass(frozen=True)
class InfluxSettings:
    url: str
    database: str
    token: str = field(default="", repr=False)
    org: str = ""
    username: str = ""
    password: str = field(default="", repr=False)

    @property
    def host(self) -> str:
        return urlparse(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlparse(self.url).port or 8086


@dataclass(frozen=True)
class PathSettings:
    registry: str
    rules: str
    state_dir: str
    officers: str = "config/officers.example.yaml"
    policy: str = "config/policy.yaml"
    fleet: str = ""


@dataclass(frozen=True)
class LogSettings:
    level: str


@dataclass(frozen=True)
class AlertsSettings:
    ack_secret: str = field(default="", repr=False)
    ack_token: str = field(default="", repr=False)
    base_url: str = ""


@dataclass(frozen=True)
class Hj212Settings:
    listen: str = "127.0.0.1:17212"
    pm_unit: str = "mg/m3"
    passwords: str = ""
    max_bad_frames: int = 10
    idle_timeout_s: int = 900
    max_pending: int = 2000

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def pm_factor(self) -> float:
        """What turns the monitors' particle concentrations into µg/m³."""
        return 1000.0 if self.pm_unit == "mg/m3" else 1.0


@dataclass(frozen=True)
class Jt808Settings:
    listen: str = "127.0.0.1:17808"
    auth_codes: str = ""
    max_bad_frames: int = 10
    idle_timeout_s: int = 600
    max_pending: int = 2000

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


@dataclass(frozen=True)
class Settings:
    mqtt: MqttSettings
    kafka: KafkaSettings
    influx: InfluxSettings
    paths: PathSettings
    log: LogSettings
    alerts: AlertsSettings = field(default_factory=AlertsSettings)
    hj212: Hj212Settings = field(default_factory=Hj212Settings)
    jt808: Jt808Settings = field(default_factory=Jt808Settings)
    source: str = field(default="<defaults>")

    def __post_init__(self) -> None:
        # Every secret this process holds is masked in its log lines, however the settings were
        # made (loaded, or changed with ``replace`` as the tests do).
        for section, keys in SCHEMA.items():
            for name, key in keys.items():
                if key.secret:
                    register_secret(getattr(getattr(self, section), name))

    def replace(self, section: str, **values: Any) -> Settings:
        """A copy with some keys of one section changed (tests give each run its own topics and database)."""
        from dataclasses import replace

        return replace(self, **{section: replace(getattr(self, section), **values)})


_SECTION_TYPES = {
    "mqtt": MqttSettings,
    "kafka": KafkaSettings,
    "influx": InfluxSettings,
    "paths": PathSettings,
    "log": LogSettings,
    "alerts": AlertsSettings,
    "hj212": Hj212Settings,
    "jt808": Jt808Settings,
}


def _line_of(text: str, section: str | None, key: str) -> int | None:
    """Line of ``key`` inside ``[section]`` (tomllib keeps no positions, so we look)."""
    current: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        header = re.fullmatch(r"\[\s*([^\]]+?)\s*\]", stripped)
        if header:
            current = header.group(1)
            if section is not None and key == "" and current == section:
                return number
            continue
        if current == section and re.match(rf"{re.escape(key)}\s*=", stripped):
            return number
    return None


def _coerce(section: str, name: str, key: Key, value: Any, origin: str) -> Any:
    expected = key.type
    if expected is int and isinstance(value, str) and origin.startswith("env"):
        try:
            value = int(value)
        except ValueError:
            pass
    if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{section}.{name}: expected an integer, got {value!r}")
    if expected is str and not isinstance(value, str):
        raise ValueError(f"{section}.{name}: expected a string, got {value!r}")
    if expected is str and _CONTROL.search(value):
        # Settings end up in generated configuration files (mosquitto.conf, influxdb.conf):
        # a newline there would add a line of the caller's choosing.
        raise ValueError(
            f"{section}.{name}: bad value: it contains a line break or control character; remove it"
        )
    if key.check is not None:
        allowed = key.check(value)
        if allowed and key.secret:
            raise ValueError(f"{section}.{name}: bad value (a secret, not shown): {allowed}")
        if allowed:  # redacted: a URL that fails its check may still carry a password
            raise ValueError(
                f"{section}.{name}: bad value {redact(repr(value))}; allowed: {allowed}"
            )
    return value


def load_settings(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Read settings: defaults, then the TOML file (if any), then ``CITYWATCH_*`` variables.

    ``path`` None means ``$CITYWATCH_CONFIG`` or ``./citywatch.toml`` when it
    exists; an explicitly named file that does not exist is an error.
    """
    env = os.environ if env is None else env
    explicit = path is not None or bool(env.get("CITYWATCH_CONFIG"))
    file = Path(path or env.get("CITYWATCH_CONFIG") or DEFAULT_FILE)
    values: dict[str, dict[str, Any]] = {
        s: {k: key.default for k, key in keys.items()} for s, keys in SCHEMA.items()
    }
    source = "<defaults>"

    if file.exists():
        source = str(file)
        text = file.read_text(encoding="utf-8")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            match = re.search(r"line (\d+), column (\d+)", str(exc))
            line = int(match.group(1)) if match else None
            col = int(match.group(2)) if match else None
            raise ConfigError(str(file), line, f"not valid TOML: {exc}", column=col) from None
        for section, table in data.items():
            if section not in SCHEMA:
                raise ConfigError(
                    str(file),
                    _line_of(text, section, ""),
                    f"unknown section [{section}]{did_you_mean(section, list(SCHEMA))}; allowed: {', '.join(SCHEMA)}",
                )
            if not isinstance(table, dict):
                raise ConfigError(str(file), None, f"'{section}' must be a [table]")
            for name, value in table.items():
                if name not in SCHEMA[section]:
                    raise ConfigError(
                        str(file),
                        _line_of(text, section, name),
                        f"unknown key {section}.{name}{did_you_mean(name, list(SCHEMA[section]))}; "
                        f"allowed: {', '.join(SCHEMA[section])}",
                    )
                try:
                    values[section][name] = _coerce(
                        section, name, SCHEMA[section][name], value, "file"
                    )
                except ValueError as exc:
                    raise ConfigError(str(file), _line_of(text, section, name), str(exc)) from None
    elif explicit:
        raise ConfigError(
            str(file), None, "settings file not found; create it or unset CITYWATCH_CONFIG"
        )

    known = {
        f"{ENV_PREFIX}{s.upper()}_{k.upper()}": (s, k) for s, keys in SCHEMA.items() for k in keys
    }
    for var, raw in env.items():
        if not var.startswith(ENV_PREFIX) or var in NOT_SETTINGS:
            continue
        if var not in known:
            raise ConfigError(
                f"environment {var}",
                None,
                f"unknown setting{did_you_mean(var, list(known))}; allowed: {', '.join(sorted(known))}",
            )
        section, name = known[var]
        try:
            values[section][name] = _coerce(section, name, SCHEMA[section][name], raw, "env")
        except ValueError as exc:
            raise ConfigError(f"environment {var}", None, str(exc)) from None

    _resolve_mqtt(values)
    return Settings(
        **{s: _SECTION_TYPES[s](**values[s]) for s in SCHEMA},  # type: ignore[arg-type]
        source=source,
    )


def describe() -> str:
    """The settings reference (``citywatch config``), generated from SCHEMA so it never drifts."""
    lines = []
    for section, keys in SCHEMA.items():
        lines.append(f"[{section}]")
        for name, key in keys.items():
            env = f"{ENV_PREFIX}{section.upper()}_{name.upper()}"
            lines.append(f"{name} = {key.default!r:<32} # {key.help}  (env {env})")
        lines.append("")
    return "\n".join(lines)
