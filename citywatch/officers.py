"""``citywatch officers ...`` and ``citywatch audit``: the directory, personal tokens, the record.

Tokens are issued by whoever runs citywatch's services (the token store lives
in their state folder, mode 0600); the plaintext is printed once, or written to
a file only its owner can read, for the officer to keep (docs/officers.md).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from citywatch.commands import binder
from contract.clock import iso_utc
from contract.officers import OUTCOMES
from foundation.errors import CitywatchError
from foundation.settings import Settings
from registry.credentials import write_private
from registry.officer_tokens import TokenStore
from registry.officers import load_directory


def token_store(settings: Settings) -> TokenStore:
    return TokenStore(Path(settings.paths.state_dir) / "officers")


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    directory = load_directory(args.directory or settings.paths.officers)
    active: dict[str, int] = {}
    for t in token_store(settings).list():
        if t.active:
            active[t.officer] = active.get(t.officer, 0) + 1
    print(f"{len(directory)} officers in {directory.source}")
    for o in directory.officers.values():
        print(
            f"{o.officer_id:<14} {','.join(o.roles):<22} {','.join(o.districts) or '(city-wide)':<22}"
            f" tokens {active.get(o.officer_id, 0)}  {o.name}"
        )
    return 0


def cmd_token_issue(args: argparse.Namespace, settings: Settings) -> int:
    directory = load_directory(settings.paths.officers)
    if directory.get(args.officer) is None:
        raise CitywatchError(
            f"no officer {args.officer!r} in {directory.source}; add them there first "
            "(`citywatch officers list` shows who is in)"
        )
    token, info = token_store(settings).issue(
        args.officer, ttl_days=args.days or None, label=args.label or ""
    )
    expires = "never" if info.expires_at is None else iso_utc(info.expires_at)
    if args.out:
        write_private(args.out, token + "\n")
        print(
            f"token {info.token_id} for {args.officer} written to {args.out} (mode 0600); expires {expires}"
        )
    else:
        print(token)
        print(f"# token {info.token_id} for {args.officer}, shown once; expires {expires}")
    return 0


def cmd_token_list(args: argparse.Namespace, settings: Settings) -> int:
    tokens = token_store(settings).list()
    print(f"{len(tokens)} tokens")
    for t in tokens:
        state = "active" if t.active else f"revoked {iso_utc(t.revoked_at or 0)}"
        exp = "-" if t.expires_at is None else iso_utc(t.expires_at)
        print(
            f"{t.token_id}  {t.officer:<14} issued {iso_utc(t.issued_at)}  expires {exp}  {state}  {t.label}"
        )
    return 0


def cmd_token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    store = token_store(settings)
    if args.officer:
        done = store.revoke_officer(args.officer)
        print(f"revoked {len(done)} tokens of {args.officer}: {', '.join(done) or 'none active'}")
        return 0
    if not args.token_id:
        raise CitywatchError(
            "name a token id, or --officer ID to revoke all of an officer's tokens"
        )
    info = store.revoke(args.token_id)
    print(f"token {info.token_id} of {info.officer} revoked")
    return 0


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from citywatch.cli import _parse_instant, read_if_any
    from store.read import audit_records

    since = None if not args.since else _parse_instant(args.since)
    rows = read_if_any(
        settings,
        audit_records,
        officer=args.officer,
        case_id=args.case,
        outcome=args.outcome,
        since_ms=since,
        limit=args.limit,
    )
    print(f"{len(rows)} audit records")
    for r in rows:
        print(
            f"{iso_utc(r['time'])} {r['outcome']:<8} {r['officer'] or '-':<14} {r['action']:<14}"
            f" {r['channel']:<4} {r['credential']:<16} {r['device']} {r['case_id'] or ''}"
            f" {r['client']}  {r['reason']}"
        )
    return 0


def add_arguments(
    sub: Any, settings_of: Callable[[argparse.Namespace], Settings], parser_class: Any
) -> None:
    bind = binder(settings_of)

    p = sub.add_parser("officers", help="the officer directory and officers' personal tokens")
    osub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=parser_class, required=True)
    q = osub.add_parser("list", help="officers, their roles and districts, active tokens")
    q.add_argument("--directory", help="directory file (default: paths.officers)")
    q.set_defaults(func=bind(cmd_list))
    q = osub.add_parser("token", help="issue, list and revoke personal API tokens")
    tsub = q.add_subparsers(
        dest="token_verb", metavar="VERB", parser_class=parser_class, required=True
    )
    t = tsub.add_parser("issue", help="a new token for an officer (printed once)")
    t.add_argument("officer", help="officer id from the directory")
    t.add_argument(
        "--days", type=int, default=180, help="lifetime in days (0: no expiry; default 180)"
    )
    t.add_argument("--label", help="what it is for (e.g. 'phone', 'duty desk')")
    t.add_argument("--out", help="write it to this file (mode 0600) instead of printing it")
    t.set_defaults(func=bind(cmd_token_issue))
    t = tsub.add_parser("list", help="every token: officer, expiry, revoked (never a secret)")
    t.set_defaults(func=bind(cmd_token_list))
    t = tsub.add_parser("revoke", help="revoke a token, or every token of --officer")
    t.add_argument("token_id", nargs="?")
    t.add_argument("--officer")
    t.set_defaults(func=bind(cmd_token_revoke))

    p = sub.add_parser("audit", help="the record of officers' acts, accepted and refused")
    p.add_argument("--officer")
    p.add_argument("--case", help="case id")
    p.add_argument("--outcome", choices=OUTCOMES)
    p.add_argument("--since", help="epoch ms or RFC 3339 with offset")
    p.add_argument("--limit", type=int, default=200)
    p.set_defaults(func=bind(cmd_audit))
