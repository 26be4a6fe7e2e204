"""Secrets stay secret (issue 13): the alerts service with a known secret in every secret setting.

Every setting that holds a secret (MQTT, Kafka SASL and InfluxDB passwords, the
InfluxDB token, the ack link key and bearer token) and every secret of the
routing file (a WeCom robot key, a DingTalk token and signing secret, a webhook
key, an SMTP password) is set to a value the test knows; the pushes go through
stand-ins that make the channels quote their URLs (a WeCom redirect, a gateway
page quoting the DingTalk URL). None of the values may appear in a log line
(``caplog`` in-process; the stderr of ``python -m alerts.service``), a delivery
detail or a ``<prefix>.alerts`` record. Also here: the ack settings reach the
links, and secrets too short to be safe are refused at start.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest

from alerts.channels.webhook import verify
from alerts.http import signature
from alerts.service import AlertsService
from bus.kafka import ensure_topics, make_producer
from contract.topics import KafkaTopics
from foundation.errors import ConfigError
from foundation.logs import install_redaction
from foundation.settings import Settings, load_settings
from tests.alerts.standins import HOOK_SECRET, T0, HttpStandIn, async_wait_for, case_event, wait_for
from tests.conftest import settings_env
from tests.kit.kafka import read_topic

ROOT = Path(__file__).resolve().parents[2]

MQTT_PASSWORD = "mqtt-password-7Hq2Lx9Vb4"
KAFKA_PASSWORD = "kafka-sasl-password-Qm3Zt8Wc1"
INFLUX_PASSWORD = "influx-password-Rk5Ns0Yd6"
INFLUX_TOKEN = "influx-token-Jb1Xe7Gu3Pw"
ACK_SECRET = "ack-secret-Fz4Tq9Lm2Vc8Hn5Kd0Wr6Ys3Bj7"
WECOM_KEY = "693a91f6-7b2c-4e1d-9a3f-wecom-robot-key"
DT_TOKEN = "dingtalk-access-token-Ua5Ko3Ji9"
DT_SECRET = "SEC-dingtalk-signing-secret-Wy1Hb6Gf2"
HOOK_URL_TOKEN = "hook-url-token-Lc7Dm4Pq0"
SMTP_PASSWORD = "smtp-password-Xn2Vr8Tk5"
SECRETS = {
    "mqtt.password": MQTT_PASSWORD,
    "kafka.password": KAFKA_PASSWORD,
    "influx.password": INFLUX_PASSWORD,
    "influx.token": INFLUX_TOKEN,
    "alerts.ack_secret": ACK_SECRET,
    "wecom key": WECOM_KEY,
    "dingtalk access_token": DT_TOKEN,
    "dingtalk secret": DT_SECRET,
    "webhook secret": HOOK_SECRET,
    "webhook URL token": HOOK_URL_TOKEN,
    "smtp password": SMTP_PASSWORD,
}
BASE_URL = "https://cw.example.gov.cn"


def leaked(text: str) -> list[str]:
    """The names of the secrets found in ``text``."""
    return [name for name, value in SECRETS.items() if value in text]


@pytest.fixture
def redacting() -> Iterator[None]:
    """Redaction as ``setup_logging`` installs it in every citywatch process; removed afterwards."""
    undo = install_redaction()
    yield
    undo()


@pytest.fixture
def robots() -> Iterator[tuple[HttpStandIn, HttpStandIn]]:
    """WeCom redirects (and the page it leads to quotes the URL); DingTalk answers with error
    pages quoting the URL: a 502 (retried), then a 403 (given up)."""
    wecom = HttpStandIn(script=["redirect"])
    ding = HttpStandIn(script=[("echo", 502), ("echo", 403)])
    yield wecom, ding
    wecom.close()
    ding.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_secrets(settings: Settings) -> Settings:
    """``settings`` with every secret setting set to a known value (and the MQTT URL carrying its
    password, as an operator may write it)."""
    m = settings.mqtt
    s = settings.replace(
        "mqtt", password=MQTT_PASSWORD, url=f"mqtt://{m.username}:{MQTT_PASSWORD}@{m.host}:{m.port}"
    )
    s = s.replace("kafka", password=KAFKA_PASSWORD)  # unused on PLAINTEXT, still a secret setting
    s = s.replace("influx", password=INFLUX_PASSWORD, token=INFLUX_TOKEN)
    return s.replace("alerts", ack_secret=ACK_SECRET, base_url=BASE_URL)


def routes_env(wecom: HttpStandIn, ding: HttpStandIn, hook: HttpStandIn) -> dict[str, str]:
    """The routing file's secrets, as an operator passes them: environment variables."""
    return {
        "CW_T_WECOM_URL": f"{wecom.url}?key={WECOM_KEY}",
        "CW_T_DT_URL": f"{ding.url}?access_token={DT_TOKEN}",
        "CW_T_DT_SECRET": DT_SECRET,
        "CW_T_HOOK_URL": f"{hook.url}?token={HOOK_URL_TOKEN}",
        "CW_T_HOOK_SECRET": HOOK_SECRET,
        "CW_T_SMTP_PASSWORD": SMTP_PASSWORD,
    }


def routes_file(tmp_path: Path, ack: str = "") -> Path:
    p = tmp_path / "routes.yaml"
    p.write_text(
        f"""
receivers:
  - name: everyone
    officer: JS-GRID-01
    wecom: {{url: "${{CW_T_WECOM_URL}}", per_minute: 100, timeout: 1s}}
    dingtalk: {{url: "${{CW_T_DT_URL}}", secret: "${{CW_T_DT_SECRET}}", per_minute: 100, timeout: 1s}}
    webhook: {{url: "${{CW_T_HOOK_URL}}", secret: "${{CW_T_HOOK_SECRET}}", timeout: 1s}}
    email: {{host: 127.0.0.1, port: {closed_port()}, from: cw@example.gov.cn, to: [duty@example.gov.cn],
             username: citywatch, password: "${{CW_T_SMTP_PASSWORD}}", timeout: 1s}}
    console: {{}}
route: {{receiver: everyone, group_by: [case_id], group_wait: 0s, group_interval: 0s, repeat_interval: 0s}}
ack: {{base_url: "http://placeholder.invalid", link_ttl: 1h{ack}}}
delivery: {{retry_initial: 50ms, retry_max: 100ms}}
""",
        encoding="utf-8",
    )
    return p


def check_pushes(
    wecom: HttpStandIn, ding: HttpStandIn, hook: HttpStandIn, records: list[dict]
) -> str:
    """The far ends got the secrets (so the test means something), the ack links are signed with
    the ack secret setting, and the records say what happened. Returns an ack link's ``sig``."""
    assert wecom.seen[0].query["key"] == WECOM_KEY and [s.path for s in wecom.seen] == ["/send"]
    assert [s.query["access_token"] for s in ding.seen] == [DT_TOKEN, DT_TOKEN] and ding.seen[
        0
    ].query["sign"]
    (push,) = hook.delivered
    assert push.query["token"] == HOOK_URL_TOKEN and not hook.refused
    verify(HOOK_SECRET, push.headers["X-Citywatch-Signature"], push.body)
    link = push.json()["cases"][0]["ack_url"]
    assert link.startswith(f"{BASE_URL}/ack?")  # alerts.base_url won over the routing file
    params = dict(parse_qsl(urlsplit(link).query))
    assert params["sig"] == signature(ACK_SECRET, params)  # signed with alerts.ack_secret
    by_channel = {r["channel"]: r for r in records}
    assert by_channel["wecom"]["status"] == "give_up"
    assert by_channel["wecom"]["detail"].startswith("HTTP 302: redirected to another path")
    dt = by_channel["dingtalk"]
    assert (dt["status"], dt["attempts"]) == ("give_up", 2)
    assert dt["detail"].startswith("HTTP 403: refused: /send?access_token=***&timestamp=")
    assert dt["detail"].endswith("&sign=***")
    assert by_channel["webhook"]["status"] == by_channel["console"]["status"] == "delivered"
    return params["sig"]


def test_no_secret_of_any_setting_reaches_a_log_line_a_detail_or_an_alerts_record(
    settings: Settings, tmp_path: Path, hook: HttpStandIn, robots: tuple[HttpStandIn, HttpStandIn],
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, redacting: None,
) -> None:  # fmt: skip
    wecom, ding = robots
    for var, value in routes_env(wecom, ding, hook).items():
        monkeypatch.setenv(var, value)
    caplog.set_level(logging.DEBUG)
    s = with_secrets(settings)

    async def go() -> tuple[AlertsService, list[dict]]:
        svc = AlertsService(s, routes_file(tmp_path), tmp_path / "state", http_port=-1)
        try:
            logging.getLogger("citywatch.test").info("running with %r and %s", s, s.mqtt.url)
            svc.accept([("cases", case_event(1, detail={"acknowledged_at": T0 + 1}))])
            await async_wait_for(
                lambda: {r["channel"] for r in svc.records} >= {"wecom", "dingtalk", "webhook", "console"}
                and any(r["channel_type"] == "email" and r["attempts"] >= 1 for r in svc.store.rows()),
                10, "every channel tried", tick=svc.tick,
            )  # fmt: skip
            return svc, svc.store.rows()
        finally:
            await svc.close()

    svc, rows = asyncio.run(go())
    sig = check_pushes(wecom, ding, hook, svc.records)
    email = next(r for r in rows if r["channel_type"] == "email")
    assert email["state"] == "pending" and "ConnectionRefusedError" in email["detail"]
    text = caplog.text
    assert "PUSH" in text and "&sig=***" in text and sig not in text  # the console push's ack links
    assert (
        "HTTP 502: refused: /send?access_token=***&timestamp=" in text
    )  # DingTalk's retry, logged
    assert f"mqtt://{s.mqtt.username}:***@" in text
    assert leaked(text) == [], text
    assert leaked(orjson.dumps(svc.records).decode()) == []
    assert leaked(orjson.dumps(rows).decode()) == []


async def produce(settings: Settings, records: list[dict]) -> None:
    k = settings.kafka
    await ensure_topics(k.bootstrap, k.topic_prefix, k.partitions)
    producer = make_producer(k.bootstrap, linger_ms=0)
    await producer.start()
    try:
        for rec in records:
            await producer.send_and_wait(
                KafkaTopics(k.topic_prefix).cases, orjson.dumps(rec), key=rec["case_id"].encode()
            )
    finally:
        await producer.stop()


def test_the_alerts_process_logs_and_records_no_secret(
    settings: Settings, tmp_path: Path, hook: HttpStandIn, robots: tuple[HttpStandIn, HttpStandIn]
) -> None:
    """The same as an operator runs it: every secret from the environment, ``python -m alerts.service``."""
    wecom, ding = robots
    s = with_secrets(settings)
    env = settings_env(s) | routes_env(wecom, ding, hook)
    assert env["CITYWATCH_ALERTS_ACK_SECRET"] == ACK_SECRET  # settings_env passes every section
    log = tmp_path / "alerts.log"
    asyncio.run(produce(s, [case_event(1, detail={"acknowledged_at": T0 + 1})]))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "alerts.service", "--routes", str(routes_file(tmp_path)),
             "--state-dir", str(tmp_path / "state"), "--listen", "127.0.0.1:0"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        wait_for(lambda: hook.delivered and len(ding.seen) >= 2 and wecom.seen, 30, "pushes")
        topic = KafkaTopics(s.kafka.topic_prefix).alerts

        def records() -> list[dict]:
            got = asyncio.run(read_topic(s.kafka.bootstrap, topic, 4, 2))
            return (
                got
                if {r["channel"] for r in got} >= {"wecom", "dingtalk", "webhook", "console"}
                else []
            )

        recs = wait_for(records, 30, "an alerts record per channel")
        time.sleep(0.5)  # a few more e-mail retries into the log
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    text = log.read_text(errors="replace")
    sig = check_pushes(wecom, ding, hook, recs)
    assert "PUSH" in text and "&sig=***" in text and sig not in text, text[-3000:]
    assert "ConnectionRefusedError" in text  # the e-mail channel's retries, logged
    assert leaked(text) == [], text[-3000:]
    assert leaked(orjson.dumps(recs).decode()) == []


# ---------------------------------------------------------------------- the ack settings, at start


@pytest.fixture
def plain_settings() -> Settings:
    """Settings without services (the service is only built here, never run)."""
    return load_settings(ROOT / "tests" / "citywatch.test.toml", env={})


def quiet_routes(tmp_path: Path, ack: str = "", webhook: str = "") -> Path:
    p = tmp_path / "routes.yaml"
    p.write_text(
        "receivers:\n"
        "  - name: r\n"
        "    console: {}\n"
        f"{webhook}"
        "route: {receiver: r}\n"
        f"ack: {{base_url: 'http://cw.example', link_ttl: 1h{ack}}}\n",
        encoding="utf-8",
    )
    return p


def build(settings: Settings, routes: Path, tmp_path: Path) -> AlertsService:
    svc = AlertsService(settings, routes, tmp_path / "state", http_port=-1)
    svc.store.close()
    return svc


def test_the_ack_secret_setting_wins_over_the_routing_file(
    plain_settings: Settings, tmp_path: Path
) -> None:
    s = plain_settings.replace("alerts", ack_secret=ACK_SECRET)
    svc = build(
        s, quiet_routes(tmp_path, ack=", secret: another-secret-in-the-file-0123456789"), tmp_path
    )
    assert svc.config.ack.secret == ACK_SECRET


def test_an_empty_ack_secret_is_a_random_key_per_start_with_a_warning(
    plain_settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="citywatch.alerts")
    routes = quiet_routes(tmp_path, ack=", secret: ''")
    first, second = build(plain_settings, routes, tmp_path), build(plain_settings, routes, tmp_path)
    assert (
        first.config.ack.secret != second.config.ack.secret and len(first.config.ack.secret) == 64
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        len(warnings) == 2
        and "every link pushed so far stops working when the service restarts" in warnings[0]
    )
    assert (
        "set CITYWATCH_ALERTS_ACK_SECRET (make one with python -c 'import secrets;" in warnings[0]
    )
    caplog.clear()
    build(plain_settings, quiet_routes(tmp_path, ack=f", secret: {ACK_SECRET}"), tmp_path)
    assert not [
        r for r in caplog.records if r.levelno == logging.WARNING
    ]  # a key given: no warning


def test_an_ack_secret_shorter_than_32_bytes_in_the_routing_file_is_refused(
    plain_settings: Settings, tmp_path: Path
) -> None:
    routes = quiet_routes(tmp_path, ack=", secret: one-char-is-too-few")
    with pytest.raises(ConfigError) as err:
        build(plain_settings, routes, tmp_path)
    message = str(err.value)
    assert message.startswith(f"{routes}: ack.secret: 19 bytes; an HMAC key needs at least 32: make one with "
                              "python -c 'import secrets; print(secrets.token_urlsafe(32))'")  # fmt: skip
    assert "CITYWATCH_ALERTS_ACK_SECRET" in message and "one-char-is-too-few" not in message


def test_shared_bearer_tokens_are_refused_with_the_way_to_personal_ones(
    plain_settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"ack\.tokens: shared bearer tokens are gone") as err:
        build(plain_settings, quiet_routes(tmp_path, ack=f", secret: {ACK_SECRET}, tokens: [{ACK_SECRET}]"),
              tmp_path)  # fmt: skip
    assert (
        "citywatch officers token issue" in err.value.message
        and ACK_SECRET not in err.value.message
    )
    with pytest.raises(
        ConfigError, match="CITYWATCH_ALERTS_ACK_TOKEN: a shared bearer token no longer"
    ):
        build(
            plain_settings.replace("alerts", ack_token=ACK_SECRET), quiet_routes(tmp_path), tmp_path
        )


def test_a_webhook_secret_shorter_than_32_bytes_is_refused_at_its_line(
    plain_settings: Settings, tmp_path: Path
) -> None:
    routes = quiet_routes(
        tmp_path, webhook='    webhook: {url: "http://127.0.0.1:1/h", secret: too-short}\n'
    )
    with pytest.raises(ConfigError) as err:
        build(plain_settings, routes, tmp_path)
    assert (err.value.file, err.value.line) == (str(routes), 4)
    assert err.value.message.startswith(
        "receivers[0] (r): webhook.secret: 9 bytes; an HMAC key needs at least 32"
    )
    assert "too-short" not in err.value.message
