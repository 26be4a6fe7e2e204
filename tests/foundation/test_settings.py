"""Settings refuse mistakes in one line, naming file, line, key and what is allowed (foundation/settings.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from foundation.errors import ConfigError
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
