"""foundation/logs.py: no secret in a log line, whoever logs it, whichever handler writes it.

In-process through ``caplog`` (the records are redacted when made, so pytest's
handler sees what stderr would), in a process of its own through its stderr,
and on the real bridge, whose MQTT URL with a password was logged in clear.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from foundation.logs import (
    MIN_SECRET_CHARS,
    install_redaction,
    redact,
    redact_record,
    register_secret,
)
from foundation.settings import Settings
from tests.kit.procs import Proc

ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("citywatch.test.logs")


@pytest.fixture
def redacting() -> Iterator[None]:
    """Redaction as ``setup_logging`` installs it in every citywatch process; removed afterwards."""
    undo = install_redaction()
    yield
    undo()


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        (
            "MQTT connected to mqtt://citywatch-bridge-1:pa55-word@127.0.0.1:18883 (new session)",
            "MQTT connected to mqtt://citywatch-bridge-1:***@127.0.0.1:18883 (new session)",
        ),
        ("mqtts://u:p@ss:w/rd@broker:8883/x", "mqtts://u:***@broker:8883/x"),  # '@' in the password
        ("'http://admin:hunter2@influx:8086'", "'http://admin:***@influx:8086'"),
        (
            "POST https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-7xxx failed",
            "POST https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=*** failed",
        ),
        (
            "https://oapi.dingtalk.com/robot/send?access_token=abc123&timestamp=1763800000000&sign=q%2Bz%3D",
            "https://oapi.dingtalk.com/robot/send?access_token=***&timestamp=1763800000000&sign=***",
        ),
        (
            "https://cw.example/ack?action=ack&case=c&exp=1763886400&officer=o&sig=9f86d081884c7d65",
            "https://cw.example/ack?action=ack&case=c&exp=1763886400&officer=o&sig=***",
        ),
        ("GET /x?token=t0k3n&password=pw", "GET /x?token=***&password=***"),
        ("{'Authorization': 'Bearer abc'}", "{'Authorization': 'Bearer ***'}"),
        ("Bearer 0123456789abcdefXYZ", "Bearer ***"),
        # what must stay readable
        ("http://127.0.0.1:18086/query?db=citywatch", "http://127.0.0.1:18086/query?db=citywatch"),
        ("invalid bearer token", "invalid bearer token"),
        ("Idempotency-Key=abc message_key=def", "Idempotency-Key=abc message_key=def"),
        (
            "mail to duty@example.gov.cn via smtp://mail:25",
            "mail to duty@example.gov.cn via smtp://mail:25",
        ),
    ],
)
def test_credentials_in_a_line_are_masked_and_the_rest_stays(line: str, shown: str) -> None:
    assert redact(line) == shown


def test_a_password_in_a_url_is_masked_in_a_log_line(
    redacting: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    url = "mqtt://citywatch-bridge-1:Kq8-not-a-word@127.0.0.1:18883"
    log.info("MQTT connected to %s (%s session)", url, "new")  # as ingest/bridge.py logs it
    (record,) = caplog.records
    assert (
        record.getMessage()
        == "MQTT connected to mqtt://citywatch-bridge-1:***@127.0.0.1:18883 (new session)"
    )
    assert "Kq8-not-a-word" not in caplog.text


def test_a_registered_secret_is_masked_wherever_it_appears(
    redacting: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "s3cr3t/with+odd=chars-and-length"
    register_secret(secret)
    log.warning("password is %s", secret)
    log.warning(f"quoted in a URL: https://x.example/?q={quote(secret, safe='')}")
    try:
        raise RuntimeError(f"the library put it in its error: {secret!r}")
    except RuntimeError:
        log.exception("failed")
    log.info("where from", stack_info=True, extra={"note": "a stack is redacted too"})
    assert secret not in caplog.text and quote(secret, safe="") not in caplog.text
    assert (
        "password is ***" in caplog.text
        and "RuntimeError: the library put it in its error: '***'" in caplog.text
    )


def test_a_registered_robot_url_is_masked_whole_and_its_key_alone(
    redacting: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    url = "https://robot.example.cn/hook/send?type=markdown&auth=Zx81qPmm20kLs9dQ"
    register_secret(url)
    log.info("posting to %s", url)
    log.info("the far end says: unknown auth Zx81qPmm20kLs9dQ")  # the key alone, in no param form
    assert "Zx81qPmm20kLs9dQ" not in caplog.text and "robot.example.cn" not in caplog.text
    assert "posting to ***" in caplog.text
    assert redact("type markdown") == "type markdown"  # an ordinary query value is not a secret


def test_short_registered_values_are_not_masked_by_value() -> None:
    short = "x" * (MIN_SECRET_CHARS - 1)
    register_secret(short)
    assert redact(f"{short} is left: masking it would blank ordinary words").startswith(short)
    assert redact(f"password={short}") == "password=***"  # the patterns still catch it


def test_a_bad_format_string_still_reaches_the_handler_unchanged() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%d items", ("many",), None)
    assert redact_record(record) is record and (record.msg, record.args) == ("%d items", ("many",))


def test_install_redaction_is_idempotent_and_undone(redacting: None) -> None:
    factory = logging.getLogRecordFactory()
    undo = install_redaction()  # a second set-up (the CLI, then a library calling setup_logging)
    assert logging.getLogRecordFactory() is factory
    undo()
    assert logging.getLogRecordFactory() is factory


SECRETS = {
    "CITYWATCH_MQTT_PASSWORD": "mqtt-pw-Zk39slqPw0",
    "CITYWATCH_KAFKA_PASSWORD": "sasl-pw-Ha83mdPq1x",
    "CITYWATCH_INFLUX_PASSWORD": "influx-pw-Lq02nzVb7",
    "CITYWATCH_INFLUX_TOKEN": "influx-token-Pn55zqA0wQmT",
    "CITYWATCH_ALERTS_ACK_SECRET": "ack-secret-" + "A1b2C3d4" * 4,
    "CITYWATCH_ALERTS_ACK_TOKEN": "ack-token-" + "Z9y8X7w6" * 4,
}


def test_a_process_logs_none_of_its_settings_secrets_on_stderr(tmp_path: Path) -> None:
    """Every secret setting set, then logged the careless ways: none of them on stderr."""
    program = textwrap.dedent(
        """
        import logging, threading
        from foundation.logs import setup_logging
        from foundation.settings import load_settings

        s = load_settings(None)
        setup_logging("DEBUG")
        log = logging.getLogger("citywatch.careless")
        log.info("settings: %r", s)
        log.info("mqtt %s as %s/%s", s.mqtt.url, s.mqtt.username, s.mqtt.password)
        logging.getLogger("aiokafka").error("SASL authentication failed for %s", s.kafka.password)
        log.warning(f"influx {s.influx.username}:{s.influx.password} token {s.influx.token}")
        log.debug("ack key %s, token %s", s.alerts.ack_secret, s.alerts.ack_token)
        try:
            raise ConnectionError(f"could not reach {s.mqtt.url}")
        except ConnectionError:
            log.exception("mqtt")
        t = threading.Thread(target=lambda: 1 / 0 if s.kafka.password else None, name=s.influx.token)
        t.start(); t.join()
        raise RuntimeError(f"giving up with {s.alerts.ack_token}")
        """
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **SECRETS,
           "CITYWATCH_MQTT_URL": f"mqtt://bridge:{SECRETS['CITYWATCH_MQTT_PASSWORD']}@127.0.0.1:18883",
           "CITYWATCH_INFLUX_USERNAME": "citywatch"}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    err = done.stderr
    assert done.returncode == 1 and "RuntimeError: giving up with ***" in err, (
        err
    )  # the uncaught one, redacted
    assert "mqtt mqtt://bridge:***@127.0.0.1:18883 as citywatch-bridge-1/***" in err, err
    assert "ZeroDivisionError" in err and "Exception in thread ***" in err, err
    assert "SASL authentication failed for ***" in err and "influx citywatch:*** token ***" in err
    for name, value in SECRETS.items():
        assert value not in err, f"{name} leaked:\n{err}"


def test_the_bridge_logs_its_mqtt_url_without_the_password(
    settings: Settings, tmp_path: Path
) -> None:
    """The leak of issue 13: a bridge given ``mqtt://user:password@host`` logged it in clear."""
    m = settings.mqtt
    s = settings.replace("mqtt", url=f"mqtt://{m.username}:{m.password}@{m.host}:{m.port}")
    bridge = Proc(["bridge", "--stats-every", "1"], s, tmp_path / "bridge.log")
    try:
        bridge.wait_for_log("MQTT connected to")
    finally:
        bridge.stop()
    text = bridge.text()
    assert f"MQTT connected to mqtt://{m.username}:***@{m.host}:{m.port}" in text, text[-2000:]
    assert m.password not in text
