"""Settings refuse mistakes in one line, naming file, line, key and what is allowed (foundation/settings.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from foundation.errors import ConfigError
from foundation.logs import redact
from foundation.settings import load_settings
from tests.kit.cli import run_cli as _cli


@pytest.mark.parametrize(
    ("toml", "line", "words"),
    [
        (
            '[kafka]\ntopic_prefx = "x"\n',
            2,
            ["unknown key kafka.topic_prefx", "did you mean 'topic_prefix'"],
        ),
        (
            '[mqtt]\nurl = "http://broker:1883"\n',
            2,
            ["mqtt.url", "'http://broker:1883'", "mqtt://host:port"],
        ),
        ('[log]\nlevel = "LOUD"\n', 2, ["log.level", "'LOUD'", "DEBUG, INFO"]),
        ('[kafka]\npartitions = "two"\n', 2, ["kafka.partitions", "expected an integer"]),
        ('[influxdb]\nurl = "x"\n', 1, ["unknown section [influxdb]", "did you mean 'influx'"]),
        ("[kafka\n", 1, ["not valid TOML"]),
    ],
)
def test_a_bad_settings_file_names_file_line_key_and_what_is_allowed(
    tmp_path: Path, toml: str, line: int, words: list[str]
) -> None:
    path = tmp_path / "citywatch.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert err.value.line == line
    for w in words:
        assert w in str(err.value)
    done = _cli("--config", str(path), "services", "status")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith(f"citywatch: {path}:{line}")
        and "Traceback" not in done.stderr
    )


def test_a_bad_environment_override_is_one_line() -> None:
    done = _cli("config", env={"CITYWATCH_KAFKA_BOOTSTRAP": "localhost"})
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "citywatch: environment CITYWATCH_KAFKA_BOOTSTRAP: kafka.bootstrap: bad value 'localhost'; "
        "allowed: comma-separated host:port pairs, e.g. 127.0.0.1:19092"
    )


def test_an_unknown_environment_variable_is_refused_with_a_suggestion() -> None:
    done = _cli("config", env={"CITYWATCH_INFLUX_DATABSE": "x"})
    assert done.returncode == 2 and "did you mean 'CITYWATCH_INFLUX_DATABASE'" in done.stderr


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[kafka]\ntopic_prefix = "from-file"\n')
    assert load_settings(path, env={}).kafka.topic_prefix == "from-file"
    assert (
        load_settings(path, env={"CITYWATCH_KAFKA_TOPIC_PREFIX": "from-env"}).kafka.topic_prefix
        == "from-env"
    )


@pytest.mark.parametrize(
    ("command", "what"), [("rules", "rules file"), ("registry", "device registry")]
)
def test_a_config_file_that_is_not_utf8_is_one_line(
    tmp_path: Path, command: str, what: str
) -> None:
    bad = tmp_path / "gbk.yaml"
    bad.write_bytes("规则".encode("gbk"))
    done = _cli(command, "check", str(bad))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert str(bad) in done.stderr and "UTF-8" in done.stderr


# ---------------------------------------------------------------------- secrets (issue 13)

ACK_SECRET = "Jq3vYx0wWb8p5m2KcT7hLdR4sNfE9aUiZoGyXkV1"  # as secrets.token_urlsafe(30) makes them


def test_the_ack_secret_is_a_setting_taken_from_the_environment() -> None:
    s = load_settings(None, env={"CITYWATCH_ALERTS_ACK_SECRET": ACK_SECRET})
    assert s.alerts.ack_secret == ACK_SECRET
    assert ACK_SECRET not in repr(s)
    assert redact(f"signing with {ACK_SECRET}") == "signing with ***"  # masked in every log line
    done = _cli("config", env={"CITYWATCH_ALERTS_ACK_SECRET": ACK_SECRET})  # was "unknown setting"
    assert done.returncode == 0, done.stderr
    assert "CITYWATCH_ALERTS_ACK_SECRET" in done.stdout and ACK_SECRET not in done.stdout


def test_the_ack_settings_are_read_from_the_file_too(tmp_path: Path) -> None:
    path = tmp_path / "citywatch.toml"
    path.write_text(
        f'[alerts]\nack_secret = "{ACK_SECRET}"\nbase_url = "https://cw.example.gov.cn"\n'
    )
    s = load_settings(path, env={})
    assert (s.alerts.ack_secret, s.alerts.base_url) == (ACK_SECRET, "https://cw.example.gov.cn")
    assert load_settings(None, env={}).alerts.ack_secret == ""  # empty: a random key per start


@pytest.mark.parametrize("name", ["ack_secret", "ack_token"])
@pytest.mark.parametrize("value", ["x", "a" * 31, "密钥" * 5])  # 30 bytes in 10 characters
def test_a_secret_shorter_than_32_bytes_is_refused_with_how_to_make_one(
    tmp_path: Path, name: str, value: str
) -> None:
    var = f"CITYWATCH_ALERTS_{name.upper()}"
    with pytest.raises(ConfigError) as err:
        load_settings(None, env={var: value})
    message = str(err.value)
    assert message.startswith(
        f"environment {var}: alerts.{name}: bad value (a secret, not shown): "
    )
    assert f"{len(value.encode())} bytes; a secret needs at least 32" in message
    assert "make one with python -c 'import secrets; print(secrets.token_urlsafe(32))'" in message
    assert repr(value) not in message and (len(value) < 8 or value not in message)
    path = tmp_path / "citywatch.toml"
    path.write_text(f'[log]\nlevel = "INFO"\n[alerts]\n{name} = "{value}"\n')
    with pytest.raises(
        ConfigError, match=rf"alerts\.{name}: bad value \(a secret, not shown\)"
    ) as err:
        load_settings(path, env={})
    assert err.value.line == 4


def test_a_secret_of_32_bytes_is_accepted() -> None:
    for value in ("a" * 32, "密钥" * 6):  # 36 bytes in 12 characters
        assert (
            load_settings(None, env={"CITYWATCH_ALERTS_ACK_SECRET": value}).alerts.ack_secret
            == value
        )


def test_every_secret_setting_is_masked_in_log_lines_however_the_settings_were_made() -> None:
    s = load_settings(None, env={"CITYWATCH_KAFKA_PASSWORD": "sasl-pw-from-env-1"})
    s = s.replace("influx", password="influx-pw-replaced-2", token="influx-token-replaced-3")
    s = s.replace("mqtt", password="mqtt-pw-replaced-4")
    line = "sasl-pw-from-env-1 influx-pw-replaced-2 influx-token-replaced-3 mqtt-pw-replaced-4"
    assert redact(line) == "*** *** *** ***"


def test_the_base_url_setting_must_be_a_url() -> None:
    with pytest.raises(
        ConfigError, match=r"alerts.base_url: bad value 'cw.example'; allowed: a URL like https://"
    ):
        load_settings(None, env={"CITYWATCH_ALERTS_BASE_URL": "cw.example"})


def test_a_bad_url_is_quoted_without_its_password() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, env={"CITYWATCH_MQTT_URL": "mqtt://bridge:pa55word-9x@broker:18s83"})
    assert "'mqtt://bridge:***@broker:18s83'" in str(err.value) and "pa55word-9x" not in str(
        err.value
    )


def test_credentials_in_the_influx_url_are_refused_with_where_they_go() -> None:
    """The InfluxDB clients ignore ``user:password@``: the server would seem not to answer."""
    with pytest.raises(ConfigError) as err:
        load_settings(None, env={"CITYWATCH_INFLUX_URL": "http://cw:pa55word-9x@influx:8086"})
    text = str(err.value)
    assert "influx.url: bad value 'http://cw:***@influx:8086'" in text and "pa55word-9x" not in text
    assert "set influx.username and CITYWATCH_INFLUX_PASSWORD" in text


def test_the_hj212_gateway_settings_name_the_key_and_what_is_allowed() -> None:
    done = _cli("config", env={"CITYWATCH_HJ212_PM_UNIT": "ppm"})
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "citywatch: environment CITYWATCH_HJ212_PM_UNIT: hj212.pm_unit: bad value 'ppm'; "
        "allowed: one of mg/m3, ug/m3"
    )
    done = _cli("config", env={"CITYWATCH_HJ212_LISTEN": "7212"})
    assert done.returncode == 2 and "hj212.listen" in done.stderr and "host:port" in done.stderr
