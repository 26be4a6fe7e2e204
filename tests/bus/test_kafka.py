"""Every Kafka client connects as kafka.* says (bus/kafka.py, docs/decisions/006-kafka-authentication.md)."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest

from bus.kafka import client_security, faust_credentials
from foundation.errors import ConfigError
from foundation.settings import load_settings


def _kafka(**env: str):  # type: ignore[no-untyped-def]
    return load_settings(
        None, env={f"CITYWATCH_KAFKA_{k.upper()}": v for k, v in env.items()}
    ).kafka


def test_plaintext_on_loopback_adds_nothing() -> None:
    assert client_security(_kafka()) == {}
    assert faust_credentials(_kafka()) is None


def test_sasl_over_tls_gives_aiokafka_and_faust_the_same_credentials(tmp_path: Path) -> None:
    k = _kafka(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-256",
        username="worker",
        password="pw",
    )
    sec = client_security(k)
    assert sec["security_protocol"] == "SASL_SSL" and sec["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (sec["sasl_plain_username"], sec["sasl_plain_password"]) == ("worker", "pw")
    assert isinstance(sec["ssl_context"], ssl.SSLContext)
    cred = faust_credentials(k)
    assert isinstance(cred, faust.SASLCredentials) and cred.username == "worker"
    assert cred.mechanism.value == "SCRAM-SHA-256" and cred.ssl_context is not None
    assert "pw" not in repr(cred) and "pw" not in repr(k)


def test_tls_alone_gives_an_ssl_context_only() -> None:
    sec = client_security(_kafka(security_protocol="SSL"))
    assert set(sec) == {"security_protocol", "ssl_context"}
    assert isinstance(faust_credentials(_kafka(security_protocol="SSL")), faust.SSLCredentials)


def test_sasl_without_credentials_names_the_settings_to_set() -> None:
    with pytest.raises(ConfigError, match="CITYWATCH_KAFKA_USERNAME / CITYWATCH_KAFKA_PASSWORD"):
        client_security(_kafka(security_protocol="SASL_PLAINTEXT"))


def test_a_ca_file_that_cannot_be_read_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kafka.ca_file"):
        client_security(_kafka(security_protocol="SSL", ca_file=str(tmp_path / "missing.pem")))


def test_an_unknown_protocol_or_mechanism_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="SASL_SSL"):
        _kafka(security_protocol="TLS")
    with pytest.raises(ConfigError, match="SCRAM-SHA-512"):
        _kafka(security_protocol="SASL_SSL", sasl_mechanism="scram")
