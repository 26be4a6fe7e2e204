"""Broker identities from the registry: secrets, their hashes, and what each identity may do.

docs/contracts.md, "Device identity" is the contract; docs/decisions/005-device-identity.md
says why it is built this way. Every client of citywatch's broker is an *identity*,
a user name with a secret, and on citywatch's broker the user name is also the
client id, so nobody can take another's session. What an identity may do
follows from its role:

==========  ====================================================================
role        may
==========  ====================================================================
device      publish on ``city/<district>/<kind>/<id>/telemetry`` of its registry row
gateway     publish on the topics of the devices whose ``gateway`` column names it
bridge      read the stream, only through a shared subscription ``$share/<group>/city/#``;
            and the broker's drop counters (``contract.topics.BROKER_COUNTERS``)
relay       publish on any topic under ``city/`` (a harness: decision 005)
health      connect (the services' health check), nothing else
admin       manage the broker's identities (the dynamic-security plugin's ``$CONTROL`` topic)
==========  ====================================================================

Nobody else reads, and nobody subscribes to anything but what the table says.

Only a hash of a secret is kept (``CredentialStore``, ``credentials.json``,
mode 0600), in Mosquitto's own format ``$7$<iterations>$<base64 salt>$<base64
PBKDF2-SHA512>``: the lines ``mosquitto_passwd`` writes, and the
``salt``/``password``/``iterations`` fields of the dynamic-security plugin.
The plaintext goes to the installer once (``write_batch``, a CSV per batch,
mode 0600). Only the identities citywatch itself runs on this machine (the
``SERVICE_ROLES``) keep their plaintext, in ``<auth dir>/secrets/<name>``
(mode 0600), because they have to present it.

The same store writes three views: ``dynsec_config`` (the plugin's JSON file,
what citywatch's own broker starts from), ``dynsec_commands`` (a change
applied to the running broker) and ``password_file``/``acl_file`` (for any
other Mosquitto: ``password_file``/``acl_file`` in its configuration, reloaded
on SIGHUP; see decision 005 for what its ``acl_file`` cannot refuse).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import fcntl
import hashlib
import hmac
import io
import json
import os
import re
import secrets as _secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from contract.topics import BROKER_COUNTERS, gateway_deadletter_topic, telemetry_topic
from foundation.errors import CitywatchError
from registry.devices import Registry

__all__ = [
    "ADMIN",
    "HEALTH",
    "IDENTITY_NAME",
    "ROLES",
    "SERVICE_ROLES",
    "Change",
    "CredentialError",
    "CredentialStore",
    "Entry",
    "Grant",
    "acl_file",
    "dynsec_commands",
    "dynsec_config",
    "grants_from_registry",
    "hash_secret",
    "new_secret",
    "password_file",
    "read_batch",
    "verify_secret",
    "write_batch",
    "write_private",
]

ROLES = ("device", "gateway", "bridge", "relay", "health", "admin")
SERVICE_ROLES = ("bridge", "health", "admin")
"""Identities citywatch runs itself: their plaintext is kept in ``<auth dir>/secrets``."""
ADMIN = "citywatch-admin"
"""Manages the running broker's identities (``$CONTROL/dynamic-security/v1``)."""
HEALTH = "citywatch-health"
"""Connects for the services' health check and may do nothing else."""
ITERATIONS = 101
"""mosquitto_passwd's default. The secrets are 144 random bits, so the count
guards nothing a dictionary could find; a low one keeps a thousand devices
reconnecting after a broker restart cheap."""
SALT_BYTES = 12
"""mosquitto_passwd's salt length."""
IDENTITY_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
"""What a broker identity's name may be (it is a user name, a client id and, for a
certificate, a common name)."""
_NAME = IDENTITY_NAME
STREAM = "city/#"
SHARED_STREAM = "$share/+/city/#"
CONTROL = "$CONTROL/dynamic-security/#"
BATCH_COLUMNS = ("identity", "role", "secret", "publishes")


class CredentialError(CitywatchError):
    """A provisioning request that cannot be carried out (the message says why and what to do)."""


# ---------------------------------------------------------------- secrets and hashes


def new_secret() -> str:
    """A fresh secret: 144 random bits, 24 URL-safe characters (fits any device's config field)."""
    return _secrets.token_urlsafe(18)


def hash_secret(secret: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """Mosquitto's ``$7$`` hash: PBKDF2-HMAC-SHA512 over the secret, base64 salt and digest."""
    salt = _secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def _split_hash(encoded: str) -> tuple[int, str, str]:
    """(iterations, base64 salt, base64 digest) of a ``$7$`` hash."""
    parts = encoded.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != "7" or not parts[2].isdigit():
        raise ValueError(f"not a Mosquitto $7$ hash: {encoded[:12]!r}...")
    return int(parts[2]), parts[3], parts[4]


def verify_secret(secret: str, encoded: str) -> bool:
    """True when ``secret`` is the one ``encoded`` was made from."""
    iterations, salt, digest = _split_hash(encoded)
    mine = hashlib.pbkdf2_hmac("sha512", secret.encode(), base64.b64decode(salt), iterations)
    return hmac.compare_digest(mine, base64.b64decode(digest))


# ---------------------------------------------------------------- what identities may do


@dataclass(frozen=True)
class Grant:
    """One identity as the registry (or the services) want it: its role and what it publishes."""

    name: str
    role: str
    publish: tuple[str, ...] = ()
    """Topics it may publish on (devices and gateways)."""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; one of {', '.join(ROLES)}")
        if not _NAME.fullmatch(self.name):
            raise CredentialError(
                f"{self.name!r} cannot be a broker identity: use 1-64 characters from "
                "A-Z a-z 0-9 _ . : -"
            )


def grants_from_registry(registry: Registry) -> list[Grant]:
    """Who speaks for the registry's devices: each device itself, or the gateway its row names."""
    topics: dict[str, list[str]] = {}
    for d in registry:
        topics.setdefault(d.speaker, []).append(telemetry_topic(d.district, d.kind, d.device_id))
    for name, ts in topics.items():
        if name not in registry:  # a gateway also reports the frames it could not take
            ts.append(gateway_deadletter_topic(name))
    return [
        Grant(name, "device" if name in registry else "gateway", tuple(sorted(ts)))
        for name, ts in topics.items()
    ]


@dataclass
class Entry:
    """An identity in the store: never its secret, only the hash."""

    role: str
    hash: str
    source: str
    """Who provisioned it: ``registry:<path>``, ``services``, ``run:<tag>``, ``test:<id>``; a
    registry's provisioning removes the identities of its own source it no longer lists."""
    publish: list[str] = field(default_factory=list)
    issued_at: int = 0
    """Epoch ms of the secret's issue (its last rotation)."""

    def grant(self, name: str) -> Grant:
        return Grant(name, self.role, tuple(self.publish))


@dataclass
class Change:
    """What one provisioning did; ``issued`` holds the only copy of the new plaintexts."""

    issued: dict[str, str] = field(default_factory=dict)
    """name -> plaintext, for new and rotated identities."""
    rotated: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    regranted: set[str] = field(default_factory=set)
    """Identities whose topics changed (a device moved district, a gateway gained a device)."""
    before: dict[str, Entry] = field(default_factory=dict)
    after: dict[str, Entry] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.issued or self.removed or self.regranted)

    def summary(self) -> str:
        new = len(self.issued) - len(self.rotated)
        return (
            f"{new} new, {len(self.rotated)} rotated, {len(self.removed)} removed, "
            f"{len(self.regranted)} with changed topics"
        )


# ---------------------------------------------------------------- the store


def write_private(path: str | os.PathLike[str], text: str, mode: int = 0o600) -> None:
    """Write ``text`` atomically with ``mode`` from the first byte (never world-readable, not even briefly)."""
    name = os.fspath(path)
    os.makedirs(os.path.dirname(name) or ".", mode=0o700, exist_ok=True)
    tmp = f"{name}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class CredentialStore:
    """The hashes of every identity, in ``<auth dir>/credentials.json`` (mode 0600).

    All changes go through ``change()``, under an exclusive lock on
    ``<auth dir>/.lock``, so two provisioning runs never lose each other's
    identities. Plaintexts of ``SERVICE_ROLES`` are written to
    ``<auth dir>/secrets/<name>``; every other plaintext only leaves in the
    returned ``Change``.
    """

    def __init__(self, auth_dir: str | os.PathLike[str]):
        self.dir = os.fspath(auth_dir)
        self.path = os.path.join(self.dir, "credentials.json")
        self.secrets_dir = os.path.join(self.dir, "secrets")

    # reading

    def load(self) -> dict[str, Entry]:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise CredentialError(
                f"{self.path}: cannot read the credentials store: {exc}"
            ) from None
        return {name: Entry(**e) for name, e in data.get("identities", {}).items()}

    def secret(self, name: str) -> str | None:
        """The kept plaintext of a service identity, None when there is none."""
        if not _NAME.fullmatch(name):
            return None
        try:
            with open(os.path.join(self.secrets_dir, name), encoding="utf-8") as f:
                return f.readline().strip() or None
        except OSError:
            return None

    # changing

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        os.chmod(self.dir, 0o700)
        with open(os.path.join(self.dir, ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def change(self) -> Iterator[_Txn]:
        """``with store.change() as txn: txn.sync(...)``: applied and saved when the block ends.

        The lock is held for the whole block, so a caller can also bring the
        running broker up to date inside it (``citywatch.devices``) before the
        next provisioning starts.
        """
        with self._locked():
            txn = _Txn(self, self.load())
            yield txn
            txn.commit()

    def _save(self, entries: Mapping[str, Entry]) -> None:
        data = {
            "version": 1,
            "note": "hashes only (docs/contracts.md, 'Device identity'); written by citywatch",
            "identities": {
                name: {
                    "role": e.role,
                    "hash": e.hash,
                    "source": e.source,
                    "publish": list(e.publish),
                    "issued_at": e.issued_at,
                }
                for name, e in sorted(entries.items())
            },
        }
        write_private(self.path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


class _Txn:
    """One locked change of the store (see ``CredentialStore.change``)."""

    def __init__(self, store: CredentialStore, entries: dict[str, Entry]):
        self.store = store
        self.result = Change(before={k: _copy(v) for k, v in entries.items()})
        self.entries = entries
        self._committed = False

    def sync(
        self,
        source: str,
        grants: Iterable[Grant],
        *,
        rotate: Iterable[str] | bool = (),
        remove_missing: bool = True,
    ) -> Change:
        """Make ``source``'s identities exactly ``grants``.

        New identities get a secret; existing ones keep theirs unless named in
        ``rotate`` (``True``: all of them); identities of this source not in
        ``grants`` are removed (with ``remove_missing``). An identity another
        source provisioned moves to this one with its secret (an installed
        device keeps working), unless its role differs: then it is refused.
        """
        wanted = {g.name: g for g in grants}
        rotate_all = rotate is True
        rotate_set = set() if isinstance(rotate, bool) else set(rotate)
        unknown = rotate_set - set(wanted)
        if unknown:
            raise CredentialError(
                f"cannot rotate {', '.join(sorted(unknown))}: not an identity of {source} "
                "(a device behind a gateway has none; rotate its gateway)"
            )
        for name, grant in wanted.items():
            have = self.entries.get(name)
            if have is not None and have.role != grant.role:
                raise CredentialError(
                    f"{name!r} is already a {have.role} identity (from {have.source}); "
                    f"it cannot also be a {grant.role}: give one of them another id"
                )
            if have is None or rotate_all or name in rotate_set:
                self._issue(name, grant, source, rotated=have is not None)
                continue
            if sorted(have.publish) != sorted(grant.publish):
                self.result.regranted.add(name)
            have.publish = sorted(grant.publish)
            have.source = source
        if remove_missing:
            gone = [n for n, e in self.entries.items() if e.source == source and n not in wanted]
            self.revoke(gone)
        return self.result

    def ensure(self, source: str, grants: Iterable[Grant]) -> Change:
        """Add what is missing (or has lost its kept secret); never remove or rotate anything else."""
        for grant in grants:
            have = self.entries.get(grant.name)
            lost = grant.role in SERVICE_ROLES and self.store.secret(grant.name) is None
            if have is None or lost:
                self._issue(grant.name, grant, source, rotated=have is not None)
        return self.result

    def revoke(self, names: Iterable[str]) -> Change:
        for name in names:
            if self.entries.pop(name, None) is not None:
                self.result.removed.add(name)
                self.result.issued.pop(name, None)
                self.result.rotated.discard(name)
                self.result.regranted.discard(name)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.store.secrets_dir, name))
        return self.result

    def retire(self, source: str) -> Change:
        """Remove every identity ``source`` provisioned (a finished test or simulation)."""
        return self.revoke([n for n, e in self.entries.items() if e.source == source])

    def _issue(self, name: str, grant: Grant, source: str, rotated: bool) -> None:
        secret = new_secret()
        self.entries[name] = Entry(
            grant.role, hash_secret(secret), source, sorted(grant.publish), time.time_ns() // 10**6
        )
        self.result.issued[name] = secret
        self.result.removed.discard(name)
        if rotated:
            self.result.rotated.add(name)

    def commit(self) -> None:
        if self._committed:
            return
        self._committed = True
        for name, secret in self.result.issued.items():
            if self.entries[name].role in SERVICE_ROLES:
                write_private(os.path.join(self.store.secrets_dir, name), secret + "\n")
        self.store._save(self.entries)
        self.result.after = {k: _copy(v) for k, v in self.entries.items()}


def _copy(e: Entry) -> Entry:
    return Entry(e.role, e.hash, e.source, list(e.publish), e.issued_at)


# ---------------------------------------------------------------- the installer's batch


def write_batch(path: str | os.PathLike[str], change: Change) -> int:
    """The plaintexts of one provisioning as CSV (mode 0600): identity, role, secret, topics."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(BATCH_COLUMNS)
    n = 0
    for name, secret in sorted(change.issued.items()):
        e = change.after[name]
        w.writerow([name, e.role, secret, " ".join(e.publish)])
        n += 1
    write_private(path, buf.getvalue())
    return n


def read_batch(path: str | os.PathLike[str]) -> dict[str, str]:
    """identity -> secret from a batch CSV (what an installer, or a test, configures)."""
    with open(path, encoding="utf-8", newline="") as f:
        return {row["identity"]: row["secret"] for row in csv.DictReader(f)}


# ---------------------------------------------------------------- Mosquitto's views


def _acls(name: str, e: Entry) -> list[dict[str, Any]]:
    """The dynamic-security ACLs of one identity (what the table in the module doc says)."""

    def acl(kind: str, topic: str) -> dict[str, Any]:
        return {"acltype": kind, "topic": topic, "allow": True}

    if e.role in ("device", "gateway"):
        return [acl("publishClientSend", t) for t in e.publish]
    if e.role == "relay":
        return [acl("publishClientSend", STREAM)]
    if e.role == "bridge":
        counters = [
            acl(k, t) for t in BROKER_COUNTERS for k in ("subscribeLiteral", "publishClientReceive")
        ]
        return [
            acl("subscribePattern", SHARED_STREAM),
            acl("publishClientReceive", STREAM),
            *counters,
        ]
    if e.role == "admin":
        return [
            acl(k, CONTROL)
            for k in ("publishClientSend", "publishClientReceive", "subscribePattern")
        ]
    return []


def _role_name(name: str) -> str:
    return f"cw:{name}"


def dynsec_config(entries: Mapping[str, Entry]) -> dict[str, Any]:
    """The dynamic-security plugin's configuration: every identity with its hash and one role.

    Anything not granted is refused: publishing, receiving and subscribing
    (``defaultACLAccess``); unsubscribing is harmless and allowed.
    """
    clients, roles = [], []
    for name, e in sorted(entries.items()):
        iterations, salt, digest = _split_hash(e.hash)
        client: dict[str, Any] = {
            "username": name,
            "textname": f"{e.role} ({e.source})",
            "password": digest,
            "salt": salt,
            "iterations": iterations,
            "roles": [],
        }
        acls = _acls(name, e)
        if acls:
            roles.append({"rolename": _role_name(name), "acls": acls})
            client["roles"] = [{"rolename": _role_name(name)}]
        clients.append(client)
    return {
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
        "clients": clients,
        "groups": [],
        "roles": roles,
    }


def dynsec_commands(change: Change) -> list[dict[str, Any]]:
    """The plugin commands that take the running broker from ``change.before`` to ``change.after``.

    A removed identity is deleted (the broker disconnects it at once); a
    rotated one gets its new secret (the broker disconnects the old session);
    new ones are created with their role. Every command is safe to repeat: a
    "not found" answer to a delete is not an error (``citywatch.devices``).
    """
    before, after, cmds = change.before, change.after, []
    for name in sorted(change.removed):
        cmds.append({"command": "deleteClient", "username": name})
        cmds.append({"command": "deleteRole", "rolename": _role_name(name)})
    for name in sorted(change.issued):
        e = after[name]
        if name in change.rotated and name in before:
            cmds.append(
                {"command": "setClientPassword", "username": name, "password": change.issued[name]}
            )
            if before[name].publish != e.publish:
                cmds.extend(_regrant(name, before[name], e))
            continue
        cmds.append({"command": "deleteClient", "username": name})
        cmds.append({"command": "deleteRole", "rolename": _role_name(name)})
        acls = _acls(name, e)
        client: dict[str, Any] = {
            "command": "createClient",
            "username": name,
            "password": change.issued[name],
            "textname": f"{e.role} ({e.source})",
        }
        if acls:
            # one command per ACL: a gateway's thousands of topics in one createRole exceeded
            # the broker's max_packet_size (4608 bytes) and the broker dropped the connection
            cmds.append({"command": "createRole", "rolename": _role_name(name)})
            cmds.extend({"command": "addRoleACL", "rolename": _role_name(name), **a} for a in acls)
            client["roles"] = [{"rolename": _role_name(name)}]
        cmds.append(client)
    for name in sorted(change.regranted - set(change.issued)):
        cmds.extend(_regrant(name, before[name], after[name]))
    return cmds


def _regrant(name: str, old: Entry, new: Entry) -> list[dict[str, Any]]:
    rolename = _role_name(name)
    cmds: list[dict[str, Any]] = []
    for t in sorted(set(old.publish) - set(new.publish)):
        cmds.append(
            {
                "command": "removeRoleACL",
                "rolename": rolename,
                "acltype": "publishClientSend",
                "topic": t,
            }
        )
    for t in sorted(set(new.publish) - set(old.publish)):
        cmds.append({"command": "addRoleACL", "rolename": rolename, "acltype": "publishClientSend",
                     "topic": t, "allow": True})  # fmt: skip
    return cmds


def password_file(entries: Mapping[str, Entry]) -> tuple[str, list[str]]:
    """(mosquitto_passwd-compatible text, identities it cannot hold).

    Mosquitto's password file splits a line at ``:``, so a user name with one
    cannot be written there (device ids may contain ``:``); such identities
    are served by citywatch's own broker only. The admin identity is left
    out: it means nothing to a broker without the dynamic-security plugin.
    """
    lines, skipped = [], []
    for name, e in sorted(entries.items()):
        if e.role == "admin":
            continue
        if ":" in name:
            skipped.append(name)
            continue
        lines.append(f"{name}:{e.hash}")
    return "".join(line + "\n" for line in lines), skipped


def acl_file(entries: Mapping[str, Entry]) -> str:
    """The ACL file for Mosquitto's ``acl_file``: a ``user`` block per identity, nothing for anonymous."""
    out = [
        "# Broker identities of citywatch (docs/contracts.md, 'Device identity'); generated by\n",
        "# `citywatch devices provision`, do not edit. Mosquitto's acl_file cannot refuse a\n",
        "# subscription: see docs/decisions/005-device-identity.md before relying on it alone.\n",
    ]
    for name, e in sorted(entries.items()):
        if e.role == "admin" or ":" in name:
            continue
        out.append(f"\nuser {name}\n")
        if e.role in ("device", "gateway"):
            out.extend(f"topic write {t}\n" for t in e.publish)
        elif e.role == "relay":
            out.append(f"topic write {STREAM}\n")
        elif e.role == "bridge":
            out.append(f"topic read {STREAM}\n")
            out.extend(f"topic read {t}\n" for t in BROKER_COUNTERS)
    return "".join(out)
