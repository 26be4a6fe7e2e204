"""The device CA (registry/certificates.py): what it issues, what it remembers, its CRL.

Checked with the ``openssl`` command itself (``verify -crl_check``), the same
library Mosquitto verifies client certificates with; the broker's side is
tests/citywatch/test_certificates.py.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

import registry.certificates as certificates
from registry.certificates import CertificateError, DeviceCA


def _verify(ca: DeviceCA, cert: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca.cert), "-crl_check", "-CRLfile", str(ca.crl),
         "-purpose", "sslclient", str(cert)],
        capture_output=True,
        text=True,
    )  # fmt: skip


def _crl_serials(ca: DeviceCA) -> set[str]:
    text = subprocess.run(
        ["openssl", "crl", "-in", str(ca.crl), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {
        line.split(":", 1)[1].strip()
        for line in text.splitlines()
        if line.strip().startswith("Serial Number:")
    }


def test_a_certificate_names_its_identity_and_is_good_for_a_tls_client_only(tmp_path: Path) -> None:
    ca = DeviceCA(tmp_path / "ca")
    issued = ca.issue(["MH-1"], tmp_path / "out", days=10)[0]
    assert _verify(ca, issued.cert_path).returncode == 0
    text = subprocess.run(
        ["openssl", "x509", "-in", str(issued.cert_path), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Subject: CN = MH-1\n" in text and "TLS Web Client Authentication" in text
    assert "CA:FALSE" in text and "prime256v1" in text
    server = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca.cert), "-purpose", "sslserver",
         str(issued.cert_path)],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert server.returncode != 0, "a device certificate cannot pose as a broker"
    assert stat.S_IMODE(os.stat(issued.key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(ca.key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(ca.dir).st_mode) == 0o700
    assert issued.key_path.read_text() not in ca.records.read_text()
    days = (issued.certificate.not_after - issued.certificate.issued_at) / 86_400_000
    assert 9.99 < days < 10.01


def test_a_name_that_would_change_the_certificates_subject_is_refused(tmp_path: Path) -> None:
    """``-subj /CN=<name>``: a ``/`` or ``=`` in the name would add fields, e.g. a second CN."""
    ca = DeviceCA(tmp_path / "ca")
    with pytest.raises(CertificateError, match="cannot be a certificate's identity"):
        ca.issue(["MH-1/CN=citywatch-admin"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_revoked_certificate_is_on_the_crl_until_it_expires(tmp_path: Path) -> None:
    ca = DeviceCA(tmp_path / "ca")
    a, b = ca.issue(["MH-1", "MH-2"], tmp_path / "out")
    assert _crl_serials(ca) == set()
    assert [c.serial for c in ca.revoke(identities=["MH-1"], why="lost")] == [a.certificate.serial]
    assert _crl_serials(ca) == {a.certificate.serial}
    refused = _verify(ca, a.cert_path)
    assert refused.returncode != 0 and "certificate revoked" in refused.stderr
    assert _verify(ca, b.cert_path).returncode == 0
    assert ca.revoke(identities=["MH-1"]) == [], "nothing live is left to revoke"
    # a month later MH-1's certificate has expired: refused for its date, so off the list
    data = json.loads(ca.records.read_text())
    for c in data["certificates"]:
        if c["serial"] == a.certificate.serial:
            c["not_after"] = time.time_ns() // 10**6 - 1000
    ca.records.write_text(json.dumps(data))
    ca.write_crl()
    assert _crl_serials(ca) == set()


def test_a_serial_is_taken_as_openssl_or_a_person_writes_it(tmp_path: Path) -> None:
    ca = DeviceCA(tmp_path / "ca")
    certs = [i.certificate for i in ca.issue(["A", "B", "C"], tmp_path / "out")]
    a, b, c = (x.serial for x in certs)
    colons = ":".join(b[i : i + 2] for i in range(0, len(b), 2))
    revoked = ca.revoke(serials=[a.lower(), colons, "0x" + c.lstrip("0")])
    assert sorted(x.serial for x in revoked) == sorted([a, b, c])
    with pytest.raises(CertificateError, match="no certificate with serial 0BAD was issued"):
        ca.revoke(serials=["0BAD"])
    with pytest.raises(CertificateError, match="is not a certificate serial"):
        ca.revoke(serials=["MH-1"])


def test_issuing_is_all_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = DeviceCA(tmp_path / "ca")
    ca.ensure()
    real = certificates.openssl
    signed: list[str] = []

    def failing_second_signature(*args: object, **kw: object) -> str:
        if args[:2] == ("x509", "-req"):
            signed.append("x")
            if len(signed) == 2:
                raise CertificateError("openssl x509 failed: the disk is full")
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(certificates, "openssl", failing_second_signature)
    with pytest.raises(CertificateError, match="disk is full"):
        ca.issue(["A", "B"], tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == [], "no key or certificate left behind"
    assert ca.load() == [], "nothing recorded"


def test_a_certificate_cannot_outlive_the_ca(tmp_path: Path) -> None:
    ca = DeviceCA(tmp_path / "ca")
    with pytest.raises(CertificateError, match=r"give --days 364[0-9] or less"):
        ca.issue(["A"], tmp_path / "out", days=certificates.CA_DAYS + 1)
    with pytest.raises(CertificateError, match="valid for a day at least"):
        ca.issue(["A"], tmp_path / "out", days=0)


def test_an_existing_key_is_never_overwritten(tmp_path: Path) -> None:
    ca = DeviceCA(tmp_path / "ca")
    first = ca.issue(["A"], tmp_path / "out")[0]
    key = first.key_path.read_text()
    with pytest.raises(CertificateError, match="a key is never overwritten"):
        ca.issue(["A"], tmp_path / "out")
    assert first.key_path.read_text() == key and len(ca.load()) == 1
