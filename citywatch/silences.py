"""``citywatch silence add | list | expire``: mute pushes for a while (docs/alerts.md, "Silences and inhibition").

As Alertmanager's ``amtool silence``::

    citywatch silence add district=jinshui cabinet=KX-JS-03 --duration 4h --comment "箱变检修 cabinet repair"
    citywatch silence list [--expired]
    citywatch silence expire 3f2a9c1d

Adding and expiring are officers' acts: made with the officer's own token
(``--token-file``, ``$CITYWATCH_OFFICER_TOKEN_FILE``, ``$CITYWATCH_OFFICER_TOKEN``;
docs/officers.md), decided by the policy's ``silences`` rule (roles, districts,
the longest silence) and audited on ``<prefix>.audit`` as ``silence_add`` /
``silence_expire``, accepted or refused, with the silence in the record. An
accepted one is written on ``<prefix>.silences``, which the running alerts
service follows: no restart. A malformed silence (a bad matcher, no comment,
an end before its start) is a mistake at the keyboard: one line, nothing
recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from citywatch.commands import binder
from foundation.cityfile import format_duration_ms, parse_duration_ms
from foundation.errors import CitywatchError
from foundation.settings import Settings

DEFAULT_DURATION = "1h"
"""As amtool's: a silence given no end lasts an hour."""


def _request(action: str, comment: str | None) -> Any:
    from alerts.gate import ActRequest

    return ActRequest(
        action=action, device="", channel="cli", note=comment,
        client=f"cli@{socket.gethostname()}", user_agent=f"citywatch-cli pid {os.getpid()}",
    )  # fmt: skip


def _district_of(settings: Settings) -> Callable[[str], str | None]:
    """A device's district from the registry (what confines a ``device=`` silence)."""
    from registry.devices import load_registry

    registry = load_registry(settings.paths.registry)

    def district(device: str) -> str | None:
        dev = registry.get(device)
        return dev.district if dev is not None else None

    return district


def _now() -> int:
    import time

    return time.time_ns() // 1_000_000


def _end(args: argparse.Namespace, start: int) -> int:
    from citywatch.cli import _parse_instant

    if args.until and args.duration:
        raise CitywatchError("give --until or --duration, not both")
    if args.until:
        return _parse_instant(args.until)
    text = args.duration or DEFAULT_DURATION
    ms = parse_duration_ms(text)
    if ms is None or ms <= 0:
        raise CitywatchError(
            f"--duration {text!r}: expected a duration with its unit, e.g. 30m, 4h, 2d"
        )
    return start + ms


def cmd_add(args: argparse.Namespace, settings: Settings) -> int:
    from alerts.acks import gate_for
    from alerts.silence import new_silence, publish, scope
    from citywatch.cli import _officer_token, _parse_instant, _preflight

    token = _officer_token(args)
    now = _now()
    start = max(now, _parse_instant(args.start)) if args.start else now
    silence = new_silence(args.matchers, created_by="", comment=args.comment, now_ms=now,
                          ends_at=_end(args, start), starts_at=start)  # fmt: skip
    _preflight(settings, "kafka")  # without Kafka nothing is recorded, not even a refusal
    extra: dict[str, Any] = {"silence": silence.to_dict()}

    async def perform(officer: Any) -> str:
        made = replace(silence, created_by=officer.officer_id)
        extra["silence"] = made.to_dict()  # the audit record carries the silence as published
        await publish(settings, made)
        return f"{made.describe()} added by {officer.officer_id}"

    outcome = asyncio.run(gate_for(settings).push_act(
        token, _request("silence_add", silence.comment), scope(silence, _district_of(settings)),
        perform, duration_ms=silence.ends_at - silence.starts_at, extra=extra,
    ))  # fmt: skip
    if not outcome.accepted:
        raise CitywatchError(f"refused: {outcome.message}")
    print(outcome.message)
    print(extra["silence"]["id"])  # alone on the last line, as amtool prints it: for scripts
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from alerts.silence import read_all
    from contract.clock import local as local_time

    now = _now()
    shown = asyncio.run(read_all(settings)).listing(now, expired=args.expired)
    print(
        f"{len(shown)} silences"
        + ("" if args.expired else " (active and pending; --expired for all)")
    )
    for s in shown:
        ended = f", expired by {s.expired_by}" if s.expired_by else ""
        print(
            f"{s.id}  {s.state(now):<8} {local_time(s.starts_at)} -> {local_time(s.ends_at)}"
            f" ({format_duration_ms(max(0, s.ends_at - s.starts_at))})  by {s.created_by}{ended}\n"
            f"    {s.matchers_text}\n    {s.comment}"
        )
    return 0


def cmd_expire(args: argparse.Namespace, settings: Settings) -> int:
    from alerts.acks import gate_for
    from alerts.silence import expire, publish, read_all, scope
    from citywatch.cli import _officer_token, _preflight
    from contract.clock import local as local_time

    token = _officer_token(args)
    _preflight(settings, "kafka")
    silence = asyncio.run(read_all(settings)).find(args.silence_id)
    extra: dict[str, Any] = {"silence": silence.to_dict()}

    async def perform(officer: Any) -> str:
        ended = expire(silence, officer.officer_id, _now())
        if ended is None:
            return f"silence {silence.id} had already ended ({local_time(silence.ends_at)}); nothing changed"
        extra["silence"] = ended.to_dict()
        await publish(settings, ended)
        return f"silence {silence.id} expired by {officer.officer_id}: {silence.matchers_text}"

    outcome = asyncio.run(gate_for(settings).push_act(
        token, _request("silence_expire", None), scope(silence, _district_of(settings)), perform,
        extra=extra,
    ))  # fmt: skip
    if not outcome.accepted:
        raise CitywatchError(f"refused: {outcome.message}")
    print(outcome.message)
    return 0


def add_arguments(
    sub: Any, settings_of: Callable[[argparse.Namespace], Settings], parser_class: Any
) -> None:
    bind = binder(settings_of)

    p = sub.add_parser(
        "silence", help="mute pushes of matching cases for a while (the cases go on)"
    )
    ssub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=parser_class, required=True)
    q = ssub.add_parser("add", help="a new silence, as your officer token's officer")
    q.add_argument("matchers", nargs="+", metavar="MATCHER",
                   help='label=value, label!=value, label=~regex, label!~regex; labels: kind rule severity '
                        "district grid unit device case_id cabinet circuit")  # fmt: skip
    q.add_argument("--duration", help=f"how long (e.g. 30m, 4h, 2d; default {DEFAULT_DURATION})")
    q.add_argument(
        "--until", help="when it ends (epoch ms or RFC 3339 with offset), instead of --duration"
    )
    q.add_argument("--from", dest="start", help="when it starts (default now)")
    q.add_argument("--comment", required=True, help="why: shown to everyone in `silence list`")
    q.add_argument("--token-file", help="your officer token (else $CITYWATCH_OFFICER_TOKEN)")
    q.set_defaults(func=bind(cmd_add))
    q = ssub.add_parser("list", help="active and pending silences (from the silences topic)")
    q.add_argument("--expired", action="store_true", help="ended ones too")
    q.set_defaults(func=bind(cmd_list))
    q = ssub.add_parser("expire", help="end a silence now")
    q.add_argument("silence_id", help="its id, or the first 8 or more characters of it")
    q.add_argument("--token-file", help="your officer token (else $CITYWATCH_OFFICER_TOKEN)")
    q.set_defaults(func=bind(cmd_expire))
