"""An outage is one line naming the service, its address without credentials, and the fix
(foundation/errors.py ``ServiceDown``)."""

from __future__ import annotations

import urllib.error

import pytest

from foundation.errors import CitywatchError, ServiceDown, describe_cause, public_address


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("http://cw:pa55word-9x@influx.example:8086", "http://influx.example:8086"),
        ("mqtts://bridge:s3cret@[::1]:8883", "mqtts://[::1]:8883"),
        ("https://influx.example", "https://influx.example"),
        ("user:s3cret@k1:9092, k2:9092", "k1:9092,k2:9092"),
        ("127.0.0.1:19092", "127.0.0.1:19092"),
        ("http://u:s3cret@host:99999", "http://host:99999"),  # a port urllib refuses
    ],
)
def test_an_address_is_shown_without_its_credentials(given: str, shown: str) -> None:
    assert public_address(given) == shown


def test_the_cause_is_the_operating_systems_words_on_one_line() -> None:
    refused = urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
    assert describe_cause(refused) == "Connection refused"
    wrapped = "HTTPConnectionPool(host='h', port=1): Max retries exceeded (Caused by NewConnectionError('<x>: Failed to establish a new connection: [Errno 111] Connection refused'))"
    assert describe_cause(RuntimeError(wrapped)) == "Connection refused"
    assert describe_cause(TimeoutError("timed out")) == "no answer before the timeout"
    assert describe_cause("first\nsecond") == "first second"
    assert len(describe_cause("x" * 1000)) == 160


def test_the_cause_is_redacted() -> None:
    assert describe_cause("cannot reach mqtt://bridge:pa55word-9x@broker") == (
        "cannot reach mqtt://bridge:***@broker"
    )


def test_a_service_down_is_a_citywatch_error_naming_the_service_address_and_fix() -> None:
    down = ServiceDown(
        "InfluxDB",
        "http://cw:pa55word-9x@127.0.0.1:1",
        "influx.url",
        ConnectionRefusedError(111, "Connection refused"),
    )
    assert isinstance(down, CitywatchError)
    assert str(down) == (
        "InfluxDB at http://127.0.0.1:1 does not answer (Connection refused); "
        "start it with `citywatch services up` (or check influx.url)"
    )
    grafana = ServiceDown("Grafana", "http://g:3000", "--url", fix="check --url")
    assert str(grafana) == "Grafana at http://g:3000 does not answer; check --url"
