"""``citywatch devices``: broker identities from the device registry (docs/contracts.md, "Device identity").

``provision`` gives every identity the registry implies (a device, or the
gateway its row names) a secret, keeps only the hash in the credentials store,
and hands the new plaintexts to the installer once, in a CSV per batch (mode
0600, its path printed). It rotates what ``--rotate`` names, removes the
identities of devices no longer in the registry, and brings the running
broker up to date without a restart: citywatch's own broker through the
dynamic-security plugin (a removed or rotated identity is disconnected at
once); for another Mosquitto it writes ``password_file`` and ``acl_file``
views into the auth directory, which that broker reloads on SIGHUP.

``certify`` is the alternative to a secret: a key and a certificate per
device or gateway, signed by the device CA (``registry.certificates``), for
the broker's certificate listener, where the certificate's common name is the
identity and its ACLs apply as for a secret. The key is written once for the
installer and never kept; ``revoke_certificates`` puts a certificate on the
CRL and has the running broker reload it. An identity that leaves the
registry (or is revoked, or retired) loses its certificates the same way, so
its certificate is refused at the handshake, not only stripped of its ACLs.

``speaking_for`` and ``simulated_identities`` do the same for the simulator,
which is its own installer: it keeps the plaintexts in memory and publishes
as each device.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from citywatch import services
from citywatch.commands import binder
from contract.clock import iso_utc
from foundation.errors import CitywatchError
from foundation.settings import Settings
from registry.certificates import DEFAULT_DAYS, Certificate, CertificateError, Issued
from registry.credentials import (
    SERVICE_ROLES,
    Change,
    Grant,
    acl_file,
    grants_from_registry,
    password_file,
    write_batch,
    write_private,
)
from registry.devices import Registry, load_registry

__all__ = [
    "Certified",
    "Provisioned",
    "add_arguments",
    "certify",
    "provision",
    "provision_grants",
    "retire",
    "revoke",
    "revoke_certificates",
    "simulated_identities",
    "speaking_for",
]


@dataclass
class Provisioned:
    change: Change
    batch: Path | None
    """The installer's CSV of this batch (None: nothing new to hand out, or not asked for)."""
    applied: int | None
    """Commands the running broker took; None when it could not be reached."""
    note: str
    skipped: list[str]
    """Identities the password file cannot hold (a ``:`` in the name)."""


def _write_views(settings: Settings, change: Change) -> list[str]:
    """The password and ACL files for another Mosquitto, next to the store (mode 0600)."""
    auth = services.auth_dir(settings)
    text, skipped = password_file(change.after)
    write_private(auth / "passwd", text)
    write_private(auth / "acl", acl_file(change.after))
    return skipped


def _apply(settings: Settings, change: Change, require: bool) -> tuple[int | None, str]:
    m = settings.mqtt
    try:
        n = services.apply_change(settings, change)
    except services.BrokerUnreachable as exc:
        if require:
            raise
        auth = services.auth_dir(settings)
        return None, (
            f"not applied to a running broker ({exc}); citywatch's own broker loads the store at "
            f"its next `citywatch services up`; another Mosquitto loads {auth}/passwd and {auth}/acl "
            "(password_file, acl_file) and reloads them on SIGHUP"
        )
    if n == 0:
        return 0, f"the broker at {m.host}:{m.port} needed no change"
    return n, f"the broker at {m.host}:{m.port} has them now ({n} commands, no restart)"


def provision_grants(
    settings: Settings,
    source: str,
    grants: Iterable[Grant],
    *,
    rotate: Iterable[str] | bool = (),
    remove_missing: bool = True,
    extra: Mapping[str, Iterable[Grant]] | None = None,
    require_broker: bool = False,
) -> tuple[Change, int | None, str, list[str]]:
    """Sync ``source``'s identities (see ``CredentialStore``), then the views and the broker.

    extra: other sources to add identities to in the same change (never removing
        any of theirs), e.g. ``{"bridges": [Grant("citywatch-bridge-2", "bridge")]}``.
    Rotations are applied to whichever source holds the name.
    """
    store = services.store_for(settings)
    grants = list(grants)
    rotate_all = rotate is True
    wanted_rotate = set() if isinstance(rotate, bool) else set(rotate)
    with store.change() as txn:
        own = {g.name for g in grants}
        txn.sync(source, grants, rotate=True if rotate_all else wanted_rotate & own,
                 remove_missing=remove_missing)  # fmt: skip
        done = set(own)
        for other, more in (extra or {}).items():
            more = list(more)
            names = {g.name for g in more}
            txn.sync(other, more, rotate=wanted_rotate & names, remove_missing=False)
            done |= names
        missing = wanted_rotate - done
        if missing:
            raise CitywatchError(
                f"--rotate {', '.join(sorted(missing))}: no such identity in the registry "
                "(a device behind a gateway has none: rotate its gateway)"
            )
        txn.commit()
        skipped = _write_views(settings, txn.result)
        certs = _revoke_certificates_of(settings, txn.result.removed)
        applied, note = _apply(settings, txn.result, require_broker)
    return txn.result, applied, note + certs, skipped


def provision(
    settings: Settings,
    *,
    registry_path: str | None = None,
    rotate: Iterable[str] = (),
    rotate_all: bool = False,
    bridges: Iterable[str] = (),
    relays: Iterable[str] = (),
    out: str | None = None,
) -> Provisioned:
    """What ``citywatch devices provision`` does (see the module doc)."""
    path = os.path.abspath(registry_path or settings.paths.registry)
    registry = load_registry(path)
    extra: dict[str, list[Grant]] = {}
    if bridges:
        extra["bridges"] = [Grant(b, "bridge") for b in bridges]
    if relays:
        extra["relays"] = [Grant(r, "relay") for r in relays]
    change, applied, note, skipped = provision_grants(
        settings,
        f"registry:{path}",
        grants_from_registry(registry),
        rotate=True if rotate_all else rotate,
        extra=extra,
    )
    batch = None
    if change.issued:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        batch = Path(out) if out else services.auth_dir(settings) / "batches" / f"{stamp}.csv"
        write_batch(batch, change)
    return Provisioned(change, batch, applied, note, skipped)


def revoke(settings: Settings, names: Iterable[str]) -> Provisioned:
    """Remove identities by name (a bridge or relay; a device leaves by leaving the registry)."""
    store = services.store_for(settings)
    names = list(names)
    with store.change() as txn:
        unknown = [n for n in names if n not in txn.entries]
        if unknown:
            raise CitywatchError(
                f"no such identity: {', '.join(unknown)} (`citywatch devices list`)"
            )
        txn.revoke(names)
        txn.commit()
        skipped = _write_views(settings, txn.result)
        certs = _revoke_certificates_of(settings, txn.result.removed)
        applied, note = _apply(settings, txn.result, False)
    return Provisioned(txn.result, None, applied, note + certs, skipped)


def retire(settings: Settings, source: str) -> Change:
    """Remove what ``source`` provisioned (a finished simulation or test), broker included."""
    store = services.store_for(settings)
    with store.change() as txn:
        txn.retire(source)
        txn.commit()
        if not txn.result.empty:
            _write_views(settings, txn.result)
            _revoke_certificates_of(settings, txn.result.removed)
            _apply(settings, txn.result, False)
    return txn.result


# ---------------------------------------------------------------- certificates

CERT_COLUMNS = (
    "identity",
    "role",
    "serial",
    "not_after",
    "sha256",
    "certificate",
    "key",
    "publishes",
)


@dataclass
class Certified:
    issued: list[Issued]
    out: Path
    """The installer's directory: a key and a certificate per identity, the broker's CA, a CSV."""
    manifest: Path


def _revoke_certificates_of(settings: Settings, removed: Iterable[str]) -> str:
    """Revoke the live certificates of identities that were just removed; a note, or ``""``.

    Without this a removed device's certificate would still pass the TLS
    handshake: the broker would let it connect (use_identity_as_username skips
    the password check) with no ACL left. With it, the handshake fails after
    the broker's reload. Runs before the broker's identities change, so the
    CRL is in force when the dynamic-security plugin disconnects the session.
    """
    names = set(removed)
    ca = services.device_ca(settings)
    if not names or not ca.records.exists():
        return ""
    revoked = ca.revoke(identities=names, why="identity removed")
    if not revoked:
        return ""
    try:
        reloaded = services.reload_revocations(settings)
    except services.ServiceError as exc:
        reloaded = str(exc)
    return f"; {len(revoked)} certificates of removed identities revoked ({reloaded})"


def certify(
    settings: Settings,
    identities: Iterable[str],
    *,
    registry_path: str | None = None,
    days: int = DEFAULT_DAYS,
    out: str | None = None,
) -> Certified:
    """What ``citywatch devices certify`` does: a key and certificate per device or gateway.

    Only for an identity of the registry that is provisioned (its ACL is
    what the certificate logs in with): a device that speaks for itself, or
    a gateway. The batch directory gets ``<id>.key`` (0600), ``<id>.crt``,
    ``broker-ca.crt`` (to verify the broker) and ``certificates.csv``.
    """
    names = list(dict.fromkeys(identities))
    path = os.path.abspath(registry_path or settings.paths.registry)
    registry = load_registry(path)
    speakers = {g.name: g for g in grants_from_registry(registry)}
    entries = services.store_for(settings).load()
    problems = []
    for name in names:
        device = registry.get(name)
        if name not in speakers:
            if device is not None and device.gateway:
                problems.append(
                    f"{name} speaks through gateway {device.gateway}: certify the gateway"
                )
            else:
                problems.append(
                    f"{name} is not a device or gateway of {path}: certificates are for the "
                    "registry's identities only"
                )
        elif name not in entries or entries[name].role != speakers[name].role:
            problems.append(
                f"{name} has no broker identity yet: run `citywatch devices provision "
                f"--registry {path}` first (the certificate logs in as that identity, with its ACL)"
            )
    if problems:
        raise CitywatchError("; ".join(problems))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = Path(out) if out else services.auth_dir(settings) / "certificates" / stamp
    if target.exists() and any(target.iterdir()):
        raise CitywatchError(
            f"--out {target} is not empty: each batch of keys goes into a directory of its own"
        )
    broker_ca = services.ensure_broker_ca(settings)
    try:
        issued = services.device_ca(settings).issue(names, target, days)
    except CertificateError as exc:
        raise CitywatchError(str(exc)) from None
    write_private(target / "broker-ca.crt", broker_ca.read_text(), mode=0o644)
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CERT_COLUMNS)
    for i in issued:
        c, grant = i.certificate, speakers[i.certificate.identity]
        w.writerow([c.identity, grant.role, c.serial, iso_utc(c.not_after), c.sha256,
                    i.cert_path.name, i.key_path.name, " ".join(grant.publish)])  # fmt: skip
    manifest = target / "certificates.csv"
    write_private(manifest, buf.getvalue())
    return Certified(issued, target, manifest)


def revoke_certificates(
    settings: Settings, identities: Iterable[str] = (), serials: Iterable[str] = ()
) -> tuple[list[Certificate], str]:
    """Revoke certificates (all live ones of ``identities``, and ``serials``); (revoked, note).

    The broker reloads the CRL (``services.reload_revocations``), then the
    sessions of those identities are disconnected (``services.kick``), since
    a CRL is only checked at the handshake: the device may come back with
    its secret or another certificate, never with a revoked one.
    """
    names, serials = list(dict.fromkeys(identities)), list(serials)
    if not names and not serials:
        raise CitywatchError("name an identity or give --serial: nothing to revoke")
    ca = services.device_ca(settings)
    now = time.time_ns() // 10**6
    have = {c.identity for c in ca.load() if c.live(now)}
    without = [n for n in names if n not in have]
    if without:
        raise CitywatchError(
            f"{', '.join(without)}: no certificate to revoke (none issued, or all revoked or "
            "expired: `citywatch devices list`)"
        )
    try:
        revoked = ca.revoke(identities=names, serials=serials, why="revoked by an operator")
    except CertificateError as exc:
        raise CitywatchError(str(exc)) from None
    if not revoked:
        return [], "nothing revoked: those certificates were revoked before"
    note = services.reload_revocations(settings)
    entries = services.store_for(settings).load()
    present = sorted({c.identity for c in revoked} & set(entries))
    try:
        services.kick(settings, present)
        note += f"; the sessions of {', '.join(present)} were disconnected" if present else ""
    except services.BrokerUnreachable as exc:
        note += f"; no session disconnected ({exc})"
    return revoked, note


def speaking_for(registry: Registry, secrets: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """device id -> (identity, secret) of whoever speaks for it: the device, or its gateway."""
    return {d.device_id: (d.speaker, secrets[d.speaker]) for d in registry if d.speaker in secrets}


def simulated_identities(
    settings: Settings, registry: Registry, source: str, bridge_names: Iterable[str] = ("1",)
) -> tuple[Settings, dict[str, tuple[str, str]]]:
    """Identities for a simulated city: its devices (fresh secrets) and its bridges.

    Returns the settings with ``mqtt.username``/``password`` of the first
    bridge (``<mqtt.client_id>-<name>``, the others' secrets are kept in the
    auth directory, where ``citywatch bridge`` finds them by user name) and
    the publisher's credentials. ``retire(settings, source)`` removes them.
    """
    prefix = settings.mqtt.client_id
    bridges = [Grant(f"{prefix}-{name}", "bridge") for name in bridge_names]
    change, _, _, _ = provision_grants(
        settings,
        source,
        grants_from_registry(registry) + bridges,
        rotate=True,
        require_broker=True,
    )
    first = bridges[0].name if bridges else settings.mqtt.username
    if bridges:
        settings = settings.replace("mqtt", username=first, password=change.issued[first])
    return settings, speaking_for(registry, change.issued)


# ---------------------------------------------------------------- the CLI


def add_arguments(
    sub: argparse._SubParsersAction,
    settings_of: Callable[[argparse.Namespace], Settings],
    parser_class: type,
) -> None:
    """``citywatch devices provision|revoke|list`` (the handlers below)."""

    bound = binder(settings_of)

    p = sub.add_parser("devices", help="broker identities of devices, gateways and bridges")
    dsub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=parser_class, required=True)
    q = dsub.add_parser(
        "provision", help="issue or rotate secrets from the registry; update the broker"
    )
    q.add_argument("--registry", help="device registry file (overrides settings)")
    q.add_argument("--rotate", action="append", default=[], metavar="ID",
                   help="issue a new secret for this identity (repeatable)")  # fmt: skip
    q.add_argument(
        "--rotate-all", action="store_true", help="new secrets for every identity of the registry"
    )
    q.add_argument("--bridge", action="append", default=[], metavar="NAME",
                   help="also a bridge identity (its secret is kept in the auth directory)")  # fmt: skip
    q.add_argument("--relay", action="append", default=[], metavar="NAME",
                   help="also a relay: may publish on every topic under city/ (docs/decisions/005)")  # fmt: skip
    q.add_argument("--out", help="the batch CSV (default <auth_dir>/batches/<time>.csv)")
    q.set_defaults(func=bound(cmd_provision))
    q = dsub.add_parser("revoke", help="remove identities by name (bridges, relays)")
    q.add_argument("names", nargs="+", metavar="NAME")
    q.set_defaults(func=bound(cmd_revoke))
    q = dsub.add_parser(
        "certify",
        help="a key and client certificate per device or gateway (the broker's certificate port)",
    )
    q.add_argument("ids", nargs="+", metavar="ID", help="a device or gateway id of the registry")
    q.add_argument("--registry", help="device registry file (overrides settings)")
    q.add_argument("--days", type=int, default=DEFAULT_DAYS,
                   help=f"validity in days (default {DEFAULT_DAYS})")  # fmt: skip
    q.add_argument("--out", help="an empty directory for the batch (default "
                   "<auth_dir>/certificates/<time>)")  # fmt: skip
    q.set_defaults(func=bound(cmd_certify))
    q = dsub.add_parser(
        "revoke-cert", help="revoke certificates (the broker reloads its CRL, no restart)"
    )
    q.add_argument("ids", nargs="*", metavar="ID", help="revoke every live certificate of it")
    q.add_argument("--serial", action="append", default=[], metavar="HEX",
                   help="revoke this one certificate (repeatable)")  # fmt: skip
    q.set_defaults(func=bound(cmd_revoke_cert))
    q = dsub.add_parser(
        "list", help="the identities the broker knows (never their secrets), and certificates"
    )
    q.set_defaults(func=bound(cmd_list))


def _report(result: Provisioned, out: Callable[[str], None] = print) -> None:
    out(result.change.summary())
    out(result.note)
    if result.batch is not None:
        out(
            f"secrets for the installer, shown nowhere else (mode 0600; hand over, then delete): "
            f"{result.batch}"
        )
    if result.skipped:
        out(
            f"not in the password file (a ':' cannot be in a Mosquitto user name there), served "
            f"by citywatch's own broker only: {', '.join(result.skipped[:10])}"
        )


def cmd_provision(args: argparse.Namespace, settings: Settings) -> int:
    result = provision(
        settings,
        registry_path=args.registry,
        rotate=args.rotate,
        rotate_all=args.rotate_all,
        bridges=args.bridge,
        relays=args.relay,
        out=args.out,
    )
    path = args.registry or settings.paths.registry
    mine = [
        e for e in result.change.after.values() if e.source == f"registry:{os.path.abspath(path)}"
    ]
    devices_ = sum(1 for e in mine if e.role == "device")
    print(
        f"registry {path}: {devices_} devices speak for themselves, "
        f"{len(mine) - devices_} gateways for the others"
    )
    _report(result)
    return 0


def cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    _report(revoke(settings, args.names))
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    entries = services.store_for(settings).load()
    print(f"{len(entries)} identities in {services.store_for(settings).path}")
    for name, e in sorted(entries.items(), key=lambda kv: (kv[1].role, kv[0])):
        kept = "  secret kept" if e.role in SERVICE_ROLES else ""
        print(
            f"{name:<40} {e.role:<8} issued {iso_utc(e.issued_at)}  {len(e.publish)} topics  "
            f"{e.source}{kept}"
        )
    ca = services.device_ca(settings)
    certs = ca.load() if ca.records.exists() else []
    if certs:
        now = time.time_ns() // 10**6
        live = sum(c.live(now) for c in certs)
        print(f"{len(certs)} certificates ({live} live) from the device CA in {ca.dir}")
        for c in sorted(certs, key=lambda c: (c.identity, c.issued_at)):
            state = (
                f"revoked {iso_utc(c.revoked_at)} ({c.revoked_why})"
                if c.revoked_at
                else ("live" if c.live(now) else "expired")
            )
            print(f"{c.serial:<32} {c.identity:<40} until {iso_utc(c.not_after)}  {state}")
    return 0


def cmd_certify(args: argparse.Namespace, settings: Settings) -> int:
    result = certify(settings, args.ids, registry_path=args.registry, days=args.days, out=args.out)
    host, port = settings.mqtt.host, services.cert_port(settings)
    for i in result.issued:
        c = i.certificate
        print(f"{c.identity}: certificate {c.serial}, valid until {iso_utc(c.not_after)}")
    print(
        f"keys and certificates for the installer (keys mode 0600, kept nowhere else; hand "
        f"over, then delete): {result.out}"
    )
    print(
        f"a device connects with TLS to {host}:{port} presenting <id>.crt and <id>.key, and "
        "verifies the broker with broker-ca.crt; its user name is the certificate's"
    )
    return 0


def cmd_revoke_cert(args: argparse.Namespace, settings: Settings) -> int:
    revoked, note = revoke_certificates(settings, args.ids, args.serial)
    for c in revoked:
        print(f"revoked {c.serial} ({c.identity})")
    print(note)
    return 0
