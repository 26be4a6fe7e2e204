"""Who citywatch is to InfluxDB: an admin, the worker's writer and the readers' reader.

citywatch's embedded InfluxDB runs with authentication on
(docs/contracts.md, "InfluxDB identities"): ``citywatch services up`` creates
three users and keeps their secrets, one file each, mode 0600, in
``<state_dir>/influx-auth/``:

=====================  ===================================================
``citywatch-admin``    all privileges: databases, retention policies, CQs,
                       grants (``store.schema``, ``services up``)
``citywatch-writer``   WRITE on each citywatch database: the worker's sinks
``citywatch-reader``   READ on each citywatch database: reports, ``case``,
                       ``audit``, Grafana's data source
=====================  ===================================================

InfluxDB 1.x has no wildcard grant, so ``store.schema.ensure_database`` grants
the writer and the reader on every database it sets up. A reader cannot write
or drop; a writer cannot read, drop a measurement or a database (InfluxDB
1.x lets WRITE run ``DELETE``: the ledger's defence is the journal it is
derived from, docs/decisions/001).

When ``influx.username`` or ``influx.token`` is set the operator has chosen
one identity for the process and it is used as is, whatever the role; when
neither is set and no secrets are kept, InfluxDB is taken to run without
authentication (a developer's own server).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from foundation.settings import Settings

__all__ = ["ROLES", "Role", "as_role", "auth_dir", "credentials", "embedded_secret", "user_of"]

Role = Literal["admin", "writer", "reader"]

ROLES: dict[str, str] = {
    "admin": "citywatch-admin",
    "writer": "citywatch-writer",
    "reader": "citywatch-reader",
}
"""role -> InfluxDB user name of the embedded identities."""


def auth_dir(settings: Settings) -> Path:
    """Where ``services up`` keeps the embedded identities' secrets."""
    return Path(settings.paths.state_dir) / "influx-auth"


def user_of(role: Role) -> str:
    return ROLES[role]


def embedded_secret(settings: Settings, role: Role) -> str | None:
    """The kept secret of ``role``'s embedded user, or None when there is none."""
    try:
        text = (auth_dir(settings) / ROLES[role]).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None


def as_role(settings: Settings, role: Role) -> Settings:
    """``settings`` with the InfluxDB identity of ``role``.

    Unchanged when the operator set ``influx.username`` or ``influx.token``
    (their one identity) or when no embedded secret is kept (no authentication).
    """
    influx = settings.influx
    if influx.username or influx.token:
        return settings
    secret = embedded_secret(settings, role)
    if secret is None:
        return settings
    return settings.replace("influx", username=ROLES[role], password=secret)


def credentials(settings: Settings, role: Role) -> dict[str, str]:
    """``role``'s identity as ``store.writer.InfluxWriter`` keyword arguments."""
    influx = as_role(settings, role).influx
    return {
        "token": influx.token,
        "org": influx.org,
        "username": influx.username,
        "password": influx.password,
    }
