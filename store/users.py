"""The embedded InfluxDB's users: created once, kept in step with their secrets.

``citywatch services up`` calls ``ensure_users`` each time it starts or reuses
its own InfluxDB (docs/contracts.md, "InfluxDB identities"; the roles:
``store.identity``). InfluxDB 1.x with ``auth-enabled`` lets exactly one
statement through without credentials while it has no user: the creation of
the first admin. citywatch makes that admin itself, then the writer and the
reader, and sets the default database up with ``store.schema``, which grants
them WRITE and READ on it.
"""

from __future__ import annotations

import re
import secrets
import urllib.error
import urllib.parse
import urllib.request

from foundation.errors import CitywatchError
from foundation.settings import Settings
from registry.credentials import write_private
from store.errors import InfluxError, InfluxQueryError
from store.identity import ROLES, Role, as_role, auth_dir, embedded_secret
from store.influxql import basic, ident, query
from store.schema import ensure_database

__all__ = ["InfluxIdentityError", "accepts_anonymous", "ensure_users"]

_SECRET = re.compile(r"[A-Za-z0-9_-]{32,128}")


class InfluxIdentityError(CitywatchError):
    """The InfluxDB on the configured address is not citywatch's own, or cannot be made so."""


def _secret(settings: Settings, role: Role) -> str:
    """The kept secret of ``role``, made (and kept, mode 0600) when there is none."""
    kept = embedded_secret(settings, role)
    if kept is not None:
        if not _SECRET.fullmatch(kept):
            raise InfluxIdentityError(
                f"{auth_dir(settings) / ROLES[role]} does not hold a citywatch secret "
                "(32+ letters, digits, '-' or '_'); delete it and run `citywatch services up` again"
            )
        return kept
    made = secrets.token_urlsafe(32)
    write_private(auth_dir(settings) / ROLES[role], made + "\n")
    return made


def accepts_anonymous(url: str, timeout: float = 5.0) -> bool:
    """True when InfluxDB at ``url`` runs a query without credentials (authentication off)."""
    data = urllib.parse.urlencode({"q": "SHOW DATABASES"}).encode()
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/query", data=data, timeout=timeout) as r:
            return b'"error"' not in r.read()
    except (urllib.error.URLError, OSError):
        return False


def ensure_users(settings: Settings) -> None:
    """Admin, writer and reader exist with the kept secrets; the default database is set up.

    Raises ``InfluxIdentityError`` when the server refuses the kept admin
    secret: it was set up by another citywatch state folder or by hand.
    """
    url = settings.influx.url
    pw = {role: _secret(settings, role) for role in ROLES}
    admin = basic(ROLES["admin"], pw["admin"])
    try:
        users = {r["user"] for r in query(url, None, "SHOW USERS", token=admin)}
    except InfluxQueryError as exc:
        if "create admin user first" not in str(exc):
            if "authorization failed" in str(exc) or "HTTP 401" in str(exc):
                raise InfluxIdentityError(
                    f"InfluxDB at {url} refuses {ROLES['admin']}'s secret kept in "
                    f"{auth_dir(settings)}: it was set up by another citywatch state folder or "
                    "by hand; stop it, point influx.url at citywatch's own, or set "
                    "influx.username and influx.password to a user of that server"
                ) from None
            raise
        query(
            url,
            None,
            f"CREATE USER {ident(ROLES['admin'])} WITH PASSWORD '{pw['admin']}' WITH ALL PRIVILEGES",
        )
        users = {ROLES["admin"]}
    for role in ("writer", "reader"):
        name = ident(ROLES[role])
        if ROLES[role] in users:
            query(url, None, f"SET PASSWORD FOR {name} = '{pw[role]}'", token=admin)
        else:
            query(url, None, f"CREATE USER {name} WITH PASSWORD '{pw[role]}'", token=admin)
    try:
        ensure_database(as_role(settings, "admin"))
    except InfluxError as exc:
        raise InfluxIdentityError(f"InfluxDB at {url}: {exc}") from None
