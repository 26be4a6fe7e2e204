"""Officers' personal API tokens: issued once, kept as hashes, revoked by id (docs/officers.md).

A token reads ``cwo_<token id>_<secret>``: the id (8 hex) names the record and
appears in the audit trail; the secret (256 random bits) is shown once, to the
officer, and only its SHA-256 is kept (a random 256-bit secret needs no slow
hash: there is nothing to guess). The store is ``<state_dir>/officers/tokens.json``,
mode 0600, changed under an exclusive lock so two commands never lose each
other's changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundation.errors import CitywatchError
from registry.credentials import write_private

__all__ = ["TokenError", "TokenInfo", "TokenStore"]

_TOKEN = re.compile(r"cwo_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")


class TokenError(CitywatchError):
    """A token that is malformed, unknown, revoked or expired."""


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    officer: str
    issued_at: int
    expires_at: int | None
    revoked_at: int | None
    label: str = ""

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class TokenStore:
    """The hashes of every officer token; ``verify`` answers whose a token is."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.path = self.root / "tokens.json"

    # ------------------------------------------------------------------ storage

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise CitywatchError(
                f"{self.path} cannot be read ({exc}); restore it from a backup or remove it and "
                "issue every officer a new token"
            ) from None
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, dict):
            raise CitywatchError(f"{self.path} is not a citywatch token store")
        return tokens

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, dict[str, Any]]]:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            tokens = self._load()
            yield tokens
            write_private(self.path, json.dumps({"tokens": tokens}, indent=1, sort_keys=True))

    # ------------------------------------------------------------------ verbs

    def issue(
        self,
        officer: str,
        *,
        ttl_days: int | None = 180,
        label: str = "",
        now_ms: int | None = None,
    ) -> tuple[str, TokenInfo]:
        """A new token for ``officer``: (the plaintext, shown once; its record)."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        with self._locked() as tokens:
            token_id = secrets.token_hex(4)
            while token_id in tokens:
                token_id = secrets.token_hex(4)
            secret = secrets.token_urlsafe(32)
            rec = {
                "officer": officer,
                "sha256": hashlib.sha256(secret.encode()).hexdigest(),
                "issued_at": now,
                "expires_at": None if ttl_days is None else now + ttl_days * 86_400_000,
                "revoked_at": None,
                "label": label,
            }
            tokens[token_id] = rec
        return f"cwo_{token_id}_{secret}", self._info(token_id, rec)

    def revoke(self, token_id: str, now_ms: int | None = None) -> TokenInfo:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        with self._locked() as tokens:
            rec = tokens.get(token_id)
            if rec is None:
                raise TokenError(
                    f"no token {token_id!r}; `citywatch officers token list` shows them"
                )
            if rec["revoked_at"] is None:
                rec["revoked_at"] = now
        return self._info(token_id, rec)

    def revoke_officer(self, officer: str, now_ms: int | None = None) -> list[str]:
        """Revoke every token of ``officer`` (they left, or a phone was lost)."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        done = []
        with self._locked() as tokens:
            for tid, rec in tokens.items():
                if rec["officer"] == officer and rec["revoked_at"] is None:
                    rec["revoked_at"] = now
                    done.append(tid)
        return done

    def list(self) -> list[TokenInfo]:
        return [self._info(tid, rec) for tid, rec in sorted(self._load().items())]

    def verify(self, token: str, now_ms: int | None = None) -> TokenInfo:
        """The record of a valid token; ``TokenError`` saying why otherwise (never the secret)."""
        m = _TOKEN.fullmatch(token.strip()) if isinstance(token, str) else None
        if m is None:
            raise TokenError("not a citywatch officer token (cwo_<id>_<secret>)")
        token_id, secret = m.groups()
        rec = self._load().get(token_id)
        digest = hashlib.sha256(secret.encode()).hexdigest()
        if rec is None or not hmac.compare_digest(digest, str(rec.get("sha256", ""))):
            raise TokenError(f"token {token_id} is not valid")
        now = int(time.time() * 1000) if now_ms is None else now_ms
        if rec.get("revoked_at") is not None:
            raise TokenError(f"token {token_id} was revoked")
        if rec.get("expires_at") is not None and now >= int(rec["expires_at"]):
            raise TokenError(f"token {token_id} has expired; ask for a new one")
        return self._info(token_id, rec)

    @staticmethod
    def _info(token_id: str, rec: dict[str, Any]) -> TokenInfo:
        return TokenInfo(
            token_id=token_id,
            officer=str(rec["officer"]),
            issued_at=int(rec["issued_at"]),
            expires_at=rec.get("expires_at"),
            revoked_at=rec.get("revoked_at"),
            label=str(rec.get("label") or ""),
        )
