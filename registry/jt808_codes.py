"""The JT/T 808 authentication codes (鉴权码) of the vehicle terminals, kept hashed.

A JT/T 808 terminal registers once (0x0100); the platform answers 0x8100 with an
authentication code, which the terminal stores and sends in 0x0102 at the start
of every connection (docs/gateways.md). citywatch's JT/T 808 gateway is that
platform: it issues a fresh code at each successful registration and keeps only
its ``$7$`` PBKDF2 hash (``registry.credentials.hash_secret``, as the broker's
secrets and the HJ 212 PW store) in ``<paths.state_dir>/jt808/auth_codes.json``
unless ``jt808.auth_codes`` names another file, mode 0600, keyed by the phone
number without leading zeros (``ingest.jt808.phone_key``). The plaintext exists
once, on the wire to the terminal that registered.

A code is 16 letters or digits (about 95 bits): unlike HJ 212's six-character PW,
nothing limits its length but the body, and a terminal never shows it to a
person. Deleting a phone's entry (``revoke``) makes its terminal register again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import json
import os
import secrets
import string
import time
from collections.abc import Iterable

from foundation.errors import CitywatchError
from registry.credentials import hash_secret, verify_secret, write_private

__all__ = ["CODE_LENGTH", "AuthCodes", "new_code"]

CODE_LENGTH = 16
_ALPHABET = string.ascii_letters + string.digits


def new_code() -> str:
    """A fresh authentication code: 16 random letters or digits."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(CODE_LENGTH))


def _key(phone: str) -> str:
    return phone.lstrip("0") or "0"


class AuthCodes:
    """Phone -> hash of its code, in one JSON file (mode 0600), re-read when it changes.

    ``issue`` writes through under a lock (another gateway process, or an
    operator's ``revoke``, may change the file; the gateway calls it off its
    event loop, in a thread); ``check`` verifies against the
    hash once per (phone, code) and then compares the remembered code in
    constant time, as ``registry.hj212_passwords.PasswordWatcher`` does.
    """

    def __init__(self, path: str | os.PathLike[str], check_interval_s: float = 2.0):
        self.path = os.fspath(path)
        self.interval = check_interval_s
        self._stamp: tuple[int, int, int] | None = None
        self._next = 0.0
        self._hashes: dict[str, str] = {}
        self._known: dict[str, str] = {}
        self._reload(force=True)

    def _load(self) -> dict[str, str]:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise CitywatchError(
                f"{self.path}: cannot read the JT/T 808 authentication codes: {exc}"
            ) from None
        entries = data.get("codes", {}) if isinstance(data, dict) else {}
        return {str(p): str(e["hash"]) for p, e in entries.items() if isinstance(e, dict)}

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _reload(self, force: bool = False) -> None:
        stamp = self._stat()
        if force or stamp != self._stamp:
            with contextlib.suppress(CitywatchError):  # a torn file: keep the previous one
                hashes = self._load()
                # a check on the loop's thread may run between these lines: a code it
                # remembers from the old hashes is dropped by the second clear
                self._known = {}
                self._hashes = hashes
                self._known = {}
                self._stamp = stamp

    def issue(self, phones: Iterable[str]) -> dict[str, str]:
        """A new code for each phone (replacing any earlier one); returns phone -> plaintext."""
        issued = {p: new_code() for p in phones}
        self._change(
            lambda hashes: hashes.update({_key(p): hash_secret(c) for p, c in issued.items()})
        )
        return issued

    def revoke(self, phones: Iterable[str]) -> None:
        """Forget the codes of these phones: their terminals must register again."""
        gone = {_key(p) for p in phones}
        self._change(lambda hashes: [hashes.pop(k, None) for k in gone])

    def _change(self, edit: object) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                hashes = self._load()
                edit(hashes)  # type: ignore[operator]
                now = time.time_ns() // 10**6
                data = {
                    "version": 1,
                    "note": "JT/T 808 authentication code hashes only (docs/gateways.md); written by citywatch",
                    "codes": {p: {"hash": h, "saved_at": now} for p, h in sorted(hashes.items())},
                }
                write_private(self.path, json.dumps(data, indent=1) + "\n")
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        self._reload(force=True)

    def check(self, phone: str, code: str) -> bool:
        """True when ``code`` is the one issued to ``phone`` (and not revoked since)."""
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval
            self._reload()
        key = _key(phone)
        known = self._known.get(key)
        if known is not None:
            return hmac.compare_digest(known.encode(), code.encode())
        encoded = self._hashes.get(key)
        if encoded is None or not verify_secret(code, encoded):
            return False
        self._known[key] = code
        return True
