"""The HJ 212 access passwords (PW, 访问密码) of the registry's HJ 212 monitors, kept hashed.

An HJ 212 monitor proves who it is with its MN and PW in every frame
(docs/gateways.md). The gateway compares the PW against the hash kept here
(``<paths.state_dir>/hj212/passwords.json`` unless ``hj212.passwords`` names
another file, mode 0600), in the same ``$7$`` PBKDF2 format as the broker's
secrets (``registry.credentials.hash_secret``); the plaintext goes to the
installer once (``citywatch gateway hj212-passwords`` prints a CSV of the new
ones, mode 0600) and is typed into the monitor's configuration.

HJ 212-2017 gives PW six characters (``C6``), and many monitors take no more:
issued passwords are six letters or digits (62^6, about 2^35.7). That is weak
against an offline guess, which is why only hashes are kept; online, the
gateway closes a connection after ``hj212.max_bad_frames`` bad frames in a row
(a wrong PW is one), so guessing costs a TCP connection per few tries and
fills the dead letters with ``hj212_bad_pw``, which an operator sees.
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
from dataclasses import dataclass

from foundation.errors import CitywatchError
from registry.credentials import hash_secret, verify_secret, write_private
from registry.devices import Registry

__all__ = ["PW_LENGTH", "PasswordStore", "PasswordWatcher", "new_pw"]

PW_LENGTH = 6
_ALPHABET = string.ascii_letters + string.digits


def new_pw() -> str:
    """A fresh PW: six random letters or digits (what HJ 212-2017's ``PW`` field holds)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(PW_LENGTH))


@dataclass
class Issued:
    device_id: str
    mn: str
    pw: str


class PasswordStore:
    """MN -> hash of its PW, in one JSON file (mode 0600), changed under a lock."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)

    def load(self) -> dict[str, str]:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise CitywatchError(f"{self.path}: cannot read the HJ 212 passwords: {exc}") from None
        entries = data.get("passwords", {}) if isinstance(data, dict) else {}
        return {str(mn): str(e["hash"]) for mn, e in entries.items() if isinstance(e, dict)}

    def issue(
        self, registry: Registry, *, rotate: Iterable[str] = (), rotate_all: bool = False
    ) -> list[Issued]:
        """Give every HJ 212 monitor of ``registry`` a PW it lacks (or a new one: ``rotate``).

        rotate: device ids or MNs whose PW is replaced. Hashes of MNs no longer in
        the registry are removed. Returns the new plaintexts (the only copy).
        """
        monitors = {d.mn: d for d in registry if d.mn}
        by_id = {d.device_id: d.mn for d in monitors.values()}
        wanted = set()
        for name in rotate:
            mn = by_id.get(name, name)
            if mn not in monitors:
                raise CitywatchError(
                    f"--rotate {name}: no HJ 212 monitor of {registry.path} has that device id or MN "
                    "(a monitor needs an 'mn' column)"
                )
            wanted.add(mn)
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                hashes = self.load()
                issued = []
                for mn, d in sorted(monitors.items()):
                    if mn not in hashes or rotate_all or mn in wanted:
                        pw = new_pw()
                        hashes[mn] = hash_secret(pw)
                        issued.append(Issued(d.device_id, mn, pw))
                for mn in set(hashes) - set(monitors):
                    del hashes[mn]
                self._save(hashes)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return issued

    def _save(self, hashes: dict[str, str]) -> None:
        now = time.time_ns() // 10**6
        data = {
            "version": 1,
            "note": "HJ 212 PW hashes only (docs/gateways.md); written by citywatch",
            "passwords": {mn: {"hash": h, "saved_at": now} for mn, h in sorted(hashes.items())},
        }
        write_private(self.path, json.dumps(data, indent=1) + "\n")


class PasswordWatcher:
    """The store as the gateway reads it: reloaded when the file changes, checks cached.

    ``check(mn, pw)`` verifies against the hash once per (MN, PW) and then
    compares the remembered plaintext in constant time, so a monitor's
    thousandth frame costs no PBKDF2 (about 80 µs each).
    """

    def __init__(self, path: str | os.PathLike[str], check_interval_s: float = 2.0):
        self.store = PasswordStore(path)
        self.interval = check_interval_s
        self._stamp: tuple[int, int, int] | None = None
        self._next = 0.0
        self._hashes: dict[str, str] = {}
        self._known: dict[str, str] = {}
        self._reload()

    def _reload(self) -> None:
        try:
            st = os.stat(self.store.path)
            stamp: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            with contextlib.suppress(CitywatchError):  # a torn file: keep the previous one
                self._hashes = self.store.load()
                self._known = {}
                self._stamp = stamp

    def check(self, mn: str, pw: str) -> bool:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval
            self._reload()
        known = self._known.get(mn)
        if known is not None:
            return hmac.compare_digest(known.encode(), pw.encode())
        encoded = self._hashes.get(mn)
        if encoded is None or not verify_secret(pw, encoded):
            return False
        self._known[mn] = pw
        return True
