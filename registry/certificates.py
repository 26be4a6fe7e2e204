"""Device certificates: a CA the project creates for a city, a certificate per identity, its CRL.

The alternative to a secret (docs/contracts.md, "Device identity"; why:
docs/decisions/005-device-identity.md). citywatch's broker has a listener
that requires a client certificate signed by the *device CA* and takes the
certificate's common name as the user name (Mosquitto's
``require_certificate`` and ``use_identity_as_username``); that identity's
dynamic-security ACLs then apply exactly as for a client that logs in with
the secret. So a certificate is only ever issued for an identity the
credentials store already has, from a registry, as a ``device`` or a
``gateway`` (``citywatch.devices.certify``): a certificate with another CN
would carry that identity's powers, or none.

Everything lives in one directory (``<mqtt.auth_dir>/device-ca``, mode 0700):

===================  =====  ==========================================================
``ca.key``           0600   the CA's private key: signs certificates and the CRL, never leaves
``ca.crt``           0644   the CA's certificate: the broker's ``cafile`` on that listener
``certificates.json`` 0600  every certificate issued: serial, identity, validity, SHA-256
                            fingerprint, and when and why it was revoked
``crl.pem``          0644   the certificate revocation list (the broker's ``crlfile``)
===================  =====  ==========================================================

A device's private key is made here, written once for the installer (mode
0600 from the first byte) and never kept: losing it means a new
certificate, not a copy.

The CRL lists the revoked certificates that have not expired (an expired one
is refused for its date anyway). Mosquitto checks the CRL of the CA on every
handshake and refuses every certificate when the CRL itself has expired, so
it is re-signed at every change and every broker start, valid for
``CRL_DAYS``. Everything is made with the ``openssl`` command, like the
broker's server certificate: no Python dependency for X.509.
"""

from __future__ import annotations

import calendar
import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from foundation.errors import CitywatchError
from registry.credentials import IDENTITY_NAME, write_private

__all__ = [
    "CA_DAYS",
    "CRL_DAYS",
    "Certificate",
    "CertificateError",
    "DeviceCA",
    "Issued",
    "openssl",
]

CA_DAYS = 3650
"""The device CA's life. Every certificate it signed stops working with it, so a city
replaces it (and every device certificate) within ten years."""
CRL_DAYS = 3650
"""The CRL's nextUpdate. The broker is its only reader and gets each new one from
citywatch directly, so freshness comes from re-signing at every change; a short
nextUpdate would only make every certificate fail on a broker left running past it."""
DEFAULT_DAYS = 730
"""A device certificate's default life: two years, one maintenance round of a city's
sensors, after which the installer brings a new one (``--days`` for longer)."""
_EXTENSIONS = (
    "basicConstraints=critical,CA:FALSE\n"
    "keyUsage=critical,digitalSignature\n"
    "extendedKeyUsage=clientAuth\n"
    "subjectKeyIdentifier=hash\n"
    "authorityKeyIdentifier=keyid\n"
)


class CertificateError(CitywatchError):
    """A certificate request that cannot be carried out (the message says why and what to do)."""


def openssl(*args: str | os.PathLike[str], cwd: str | os.PathLike[str] | None = None) -> str:
    """Run the ``openssl`` command; its standard output, or ``CertificateError`` with its complaint."""
    binary = shutil.which("openssl")
    if not binary:
        raise CertificateError(
            "openssl is not installed; certificates (the broker's TLS listener, device "
            "certificates) need it: apt-get install -y openssl"
        )
    done = subprocess.run(
        [binary, *(os.fspath(a) for a in args)], capture_output=True, text=True, cwd=cwd
    )
    if done.returncode != 0:
        raise CertificateError(f"openssl {args[0]} failed: {done.stderr.strip()[-400:]}")
    return done.stdout


@dataclass
class Certificate:
    """One issued certificate as the CA remembers it (never the key)."""

    serial: str
    """Upper-case hexadecimal, as ``openssl x509 -serial`` prints it."""
    identity: str
    """The common name: the broker identity it logs in as."""
    issued_at: int
    """Epoch ms."""
    not_after: int
    """Epoch ms of the end of its validity."""
    sha256: str
    """Fingerprint of the DER certificate, colon-separated hex."""
    revoked_at: int = 0
    """Epoch ms of its revocation; 0 while it is not revoked."""
    revoked_why: str = ""

    def live(self, now_ms: int) -> bool:
        """Valid as far as the CA is concerned: not revoked and not expired."""
        return not self.revoked_at and self.not_after > now_ms


@dataclass
class Issued:
    """A certificate just made, and where its files are for the installer."""

    certificate: Certificate
    cert_path: Path
    key_path: Path


@dataclass
class _State:
    crl_number: int = 0
    certificates: list[Certificate] = field(default_factory=list)


def _now_ms() -> int:
    return time.time_ns() // 10**6


def _openssl_time(text: str) -> int:
    """Epoch ms of a date as ``openssl x509 -enddate`` prints it (``Mar  2 02:04:14 2027 GMT``)."""
    return calendar.timegm(time.strptime(" ".join(text.split()), "%b %d %H:%M:%S %Y %Z")) * 1000


def _index_time(ms: int) -> str:
    """A date in OpenSSL's ``index.txt``: UTCTime before 2050, GeneralizedTime from then on."""
    t = time.gmtime(ms // 1000)
    return time.strftime("%y%m%d%H%M%SZ" if t.tm_year < 2050 else "%Y%m%d%H%M%SZ", t)


def _even_hex(n: int) -> str:
    """Hex with an even number of digits: what OpenSSL's serial and crlnumber files take."""
    digits = f"{n:X}"
    return digits if len(digits) % 2 == 0 else "0" + digits


def _serial_key(serial: str) -> int:
    """A serial as typed (``01AB``, ``1ab``, ``0x1AB``, ``01:AB``) as a number."""
    text = serial.strip().replace(":", "")
    if text[:2].lower() == "0x":
        text = text[2:]
    if not re.fullmatch(r"[0-9A-Fa-f]{1,64}", text):
        raise CertificateError(
            f"{serial!r} is not a certificate serial: give it in hexadecimal, as "
            "`citywatch devices list` shows it"
        )
    return int(text, 16)


class DeviceCA:
    """The device CA in ``directory`` (see the module doc): issues, remembers, revokes."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.dir = Path(directory)
        self.key = self.dir / "ca.key"
        self.cert = self.dir / "ca.crt"
        self.crl = self.dir / "crl.pem"
        self.records = self.dir / "certificates.json"

    # ------------------------------------------------------------ the CA itself

    @property
    def exists(self) -> bool:
        return self.key.exists() and self.cert.exists()

    def ensure(self, name: str = "citywatch device CA") -> bool:
        """Make the CA (an EC P-256 key, ``CA_DAYS``) when there is none; True when it made one."""
        with self._locked():
            if self.exists:
                return False
            openssl(
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", self.key, "-out", self.cert, "-days", str(CA_DAYS),
                "-subj", f"/CN={name}",
                "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            )  # fmt: skip
            os.chmod(self.key, 0o600)
            os.chmod(self.cert, 0o644)
            self._write_crl(self._load())
            return True

    def not_after(self) -> int:
        """Epoch ms when the CA (and with it every certificate it signed) stops being valid."""
        out = openssl("x509", "-in", self.cert, "-noout", "-enddate")
        return _openssl_time(out.strip().split("=", 1)[1])

    # ------------------------------------------------------------ records

    def load(self) -> list[Certificate]:
        """Every certificate issued, oldest first."""
        return self._load().certificates

    def _load(self) -> _State:
        try:
            data = json.loads(self.records.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return _State()
        except (OSError, ValueError) as exc:
            raise CertificateError(
                f"{self.records}: cannot read the device CA's records: {exc}"
            ) from None
        return _State(
            int(data.get("crl_number", 0)),
            [Certificate(**c) for c in data.get("certificates", [])],
        )

    def _save(self, state: _State) -> None:
        data = {
            "version": 1,
            "note": "certificates the device CA issued (never a key); written by citywatch",
            "crl_number": state.crl_number,
            "certificates": [asdict(c) for c in state.certificates],
        }
        write_private(self.records, json.dumps(data, indent=1) + "\n")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        with open(self.dir / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # ------------------------------------------------------------ issuing

    def issue(
        self, identities: Sequence[str], out_dir: str | os.PathLike[str], days: int = DEFAULT_DAYS
    ) -> list[Issued]:
        """A new key and certificate (CN = the identity) per identity, written into ``out_dir``.

        ``<identity>.key`` (mode 0600) and ``<identity>.crt`` (0644). All or
        nothing: when one fails, the files already written are deleted and
        nothing is recorded. The caller checks that each identity is one a
        certificate may be issued for.
        """
        out = Path(out_dir)
        names = list(dict.fromkeys(identities))
        for name in names:
            if not IDENTITY_NAME.fullmatch(name):
                raise CertificateError(
                    f"{name!r} cannot be a certificate's identity: use 1-64 characters from "
                    "A-Z a-z 0-9 _ . : -"
                )
            for suffix in (".key", ".crt"):
                if (out / f"{name}{suffix}").exists():
                    raise CertificateError(
                        f"{out / (name + suffix)} exists (an earlier batch?); a key is never "
                        "overwritten: choose another --out directory"
                    )
        self.ensure()
        if days < 1:
            raise CertificateError(f"--days {days}: a certificate must be valid for a day at least")
        ca_left = (self.not_after() - _now_ms()) // 86_400_000
        if days > ca_left:
            raise CertificateError(
                f"--days {days}: the device CA ({self.cert}) is valid for {ca_left} more days, and "
                "a certificate cannot outlive the CA that signed it: give --days "
                f"{ca_left} or less"
            )
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        written: list[Path] = []
        with self._locked():
            state = self._load()
            taken = {_serial_key(c.serial) for c in state.certificates}
            issued: list[Issued] = []
            try:
                with tempfile.TemporaryDirectory(dir=self.dir) as tmp:
                    ext = Path(tmp) / "device.ext"
                    ext.write_text(_EXTENSIONS)
                    for name in names:
                        issued.append(
                            self._issue_one(name, out, days, Path(tmp), ext, taken, written)
                        )
                state.certificates.extend(i.certificate for i in issued)
                self._save(state)
            except BaseException:
                for path in written:
                    with contextlib.suppress(OSError):
                        path.unlink()
                raise
        return issued

    def _issue_one(
        self,
        name: str,
        out: Path,
        days: int,
        tmp: Path,
        ext: Path,
        taken: set[int],
        written: list[Path],
    ) -> Issued:
        key, crt, csr = out / f"{name}.key", out / f"{name}.crt", tmp / f"{name}.csr"
        pem = openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256")
        written.append(key)
        write_private(key, pem)  # 0600 from the first byte; the only copy of the key
        openssl("req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", csr)
        serial = 0
        while serial == 0 or serial in taken:
            serial = int.from_bytes(secrets.token_bytes(15), "big") >> 1  # 119 bits, positive
        taken.add(serial)
        issued_at = _now_ms()
        written.append(crt)
        openssl(
            "x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
            "-set_serial", f"0x{_even_hex(serial)}", "-days", str(days), "-extfile", ext,
            "-out", crt,
        )  # fmt: skip
        os.chmod(crt, 0o644)
        info = dict(
            line.split("=", 1)
            for line in openssl(
                "x509", "-in", crt, "-noout", "-serial", "-enddate", "-fingerprint", "-sha256"
            ).splitlines()
            if "=" in line
        )
        cert = Certificate(
            serial=info["serial"].strip().upper(),
            identity=name,
            issued_at=issued_at,
            not_after=_openssl_time(info["notAfter"]),
            sha256=info["sha256 Fingerprint"].strip(),
        )
        return Issued(cert, crt, key)

    # ------------------------------------------------------------ revoking

    def revoke(
        self,
        *,
        identities: Iterable[str] = (),
        serials: Iterable[str] = (),
        why: str = "revoked",
    ) -> list[Certificate]:
        """Revoke the live certificates of ``identities`` and the certificates ``serials`` name.

        Returns what was revoked now (already revoked or expired ones are not
        revoked again); the CRL is re-signed when anything was. A serial the CA
        never issued is refused, naming it.
        """
        names = set(identities)
        wanted = {_serial_key(s): s for s in serials}
        if not (names or wanted) or not self.records.exists():
            if wanted:
                raise CertificateError(
                    f"no certificate with serial {', '.join(wanted.values())} was issued by the "
                    f"device CA in {self.dir} (`citywatch devices list` shows them)"
                )
            return []
        now = _now_ms()
        with self._locked():
            state = self._load()
            known = {_serial_key(c.serial) for c in state.certificates}
            unknown = [text for key, text in wanted.items() if key not in known]
            if unknown:
                raise CertificateError(
                    f"no certificate with serial {', '.join(unknown)} was issued by the device CA "
                    f"in {self.dir} (`citywatch devices list` shows them)"
                )
            revoked = []
            for c in state.certificates:
                if c.revoked_at or not (c.identity in names or _serial_key(c.serial) in wanted):
                    continue
                if c.not_after <= now and _serial_key(c.serial) not in wanted:
                    continue
                c.revoked_at, c.revoked_why = now, why
                revoked.append(c)
            if revoked:
                self._save(state)
                self._write_crl(state)
        return revoked

    def write_crl(self) -> Path:
        """Re-sign the CRL from the records (``CRL_DAYS`` ahead); its path."""
        with self._locked():
            self._write_crl(self._load())
        return self.crl

    def _write_crl(self, state: _State) -> None:
        now = _now_ms()
        revoked = [c for c in state.certificates if c.revoked_at and c.not_after > now]
        with tempfile.TemporaryDirectory(dir=self.dir) as tmp:
            base = Path(tmp)
            (base / "index.txt").write_text(
                "".join(
                    f"R\t{_index_time(c.not_after)}\t{_index_time(c.revoked_at)}\t"
                    f"{_even_hex(_serial_key(c.serial))}\tunknown\t/CN={c.identity}\n"
                    for c in revoked
                )
            )
            (base / "crlnumber").write_text(_even_hex(state.crl_number + 1) + "\n")
            # relative paths: OpenSSL's configuration syntax would expand a `$` in a directory name
            (base / "ca.cnf").write_text(
                "[ ca ]\ndefault_ca = devices\n[ devices ]\n"
                "database = index.txt\ncrlnumber = crlnumber\ndefault_md = sha256\n"
            )
            crl = base / "crl.pem"
            openssl(
                "ca", "-gencrl", "-config", "ca.cnf", "-keyfile", self.key.resolve(),
                "-cert", self.cert.resolve(), "-crldays", str(CRL_DAYS), "-out", "crl.pem",
                cwd=base,
            )  # fmt: skip
            write_private(self.crl, crl.read_text(), mode=0o644)
        state.crl_number += 1
        self._save(state)
