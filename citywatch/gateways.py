"""``citywatch gateway``: protocol gateways for devices that do not speak citywatch's MQTT (docs/gateways.md).

``gateway hj212`` runs the HJ 212-2017 gateway (``ingest.gateways.hj212``) as
the broker identity ``mqtt.username``: a gateway id that the registry's
``gateway`` column names for its HJ 212 monitors, provisioned with
``citywatch devices provision`` like any gateway (its secret in
``mqtt.password`` or ``mqtt.password_file``).

``gateway jt808`` runs the JT/T 808 gateway (``ingest.gateways.jt808``) for the
vehicle terminals whose ``phone`` and ``gateway`` columns name it, the same way;
it issues the terminals' authentication codes itself, at their registration.

``gateway hj212-passwords`` issues the monitors' HJ 212 access passwords (PW)
and rotates them; only hashes are kept (``registry.hj212_passwords``), the new
plaintexts go to the installer once, in a CSV (mode 0600).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import time
from collections.abc import Callable
from pathlib import Path

from citywatch.commands import binder
from foundation.settings import Settings
from registry.credentials import write_private
from registry.devices import load_registry
from registry.hj212_passwords import Issued, PasswordStore

__all__ = ["add_arguments", "issue_passwords", "write_password_batch"]


def _passwords_path(settings: Settings) -> str:
    from ingest.gateways.hj212 import passwords_path

    return passwords_path(settings)


def issue_passwords(
    settings: Settings,
    *,
    registry_path: str | None = None,
    rotate: list[str] | None = None,
    rotate_all: bool = False,
) -> list[Issued]:
    """What ``citywatch gateway hj212-passwords`` does (see the module doc)."""
    registry = load_registry(os.path.abspath(registry_path or settings.paths.registry))
    return PasswordStore(_passwords_path(settings)).issue(
        registry, rotate=rotate or (), rotate_all=rotate_all
    )


def write_password_batch(path: str | os.PathLike[str], issued: list[Issued]) -> None:
    """The installer's CSV (mode 0600): device_id, mn, pw."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("device_id", "mn", "pw"))
    for i in issued:
        w.writerow((i.device_id, i.mn, i.pw))
    write_private(path, buf.getvalue())


def cmd_hj212(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio
    import signal

    from foundation.logs import setup_logging
    from ingest.gateways.hj212 import Hj212Gateway

    setup_logging(settings.log.level)
    gateway = Hj212Gateway(settings, listen=args.listen)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await gateway.run(stop, stats_every_s=args.stats_every)

    asyncio.run(main())
    return 0


def cmd_jt808(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio
    import signal

    from foundation.logs import setup_logging
    from ingest.gateways.jt808 import Jt808Gateway

    setup_logging(settings.log.level)
    gateway = Jt808Gateway(settings, listen=args.listen)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await gateway.run(stop, stats_every_s=args.stats_every)

    asyncio.run(main())
    return 0


def cmd_hj212_passwords(args: argparse.Namespace, settings: Settings) -> int:
    issued = issue_passwords(
        settings, registry_path=args.registry, rotate=args.rotate, rotate_all=args.rotate_all
    )
    store = _passwords_path(settings)
    if not issued:
        print(f"every HJ 212 monitor has its PW already ({store}); nothing new to hand out")
        return 0
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path(store).parent / "batches" / f"{stamp}.csv"
    write_password_batch(out, issued)
    print(
        f"{len(issued)} PW issued (hashes in {store}); the plaintexts are in {out} (mode 0600), "
        "the only copy: type each into its monitor's PW setting, then delete the file"
    )
    return 0


def add_arguments(
    sub: argparse._SubParsersAction,
    load: Callable[[argparse.Namespace], Settings],
    parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser,
) -> None:
    bound = binder(load)

    p = sub.add_parser(
        "gateway", help="protocol gateways (HJ 212-2017 dust monitors, JT/T 808 truck terminals)"
    )
    gsub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=parser_class, required=True)
    q = gsub.add_parser("hj212", help="run the HJ 212-2017 gateway (TCP in, MQTT out)")
    q.add_argument("--listen", metavar="HOST:PORT", help="overrides hj212.listen")
    q.add_argument("--stats-every", type=float, default=30.0, metavar="SECONDS")
    q.add_argument("--registry", help="device registry file (overrides settings)")
    q.set_defaults(func=bound(cmd_hj212))
    q = gsub.add_parser("jt808", help="run the JT/T 808 gateway (TCP in, MQTT out)")
    q.add_argument("--listen", metavar="HOST:PORT", help="overrides jt808.listen")
    q.add_argument("--stats-every", type=float, default=30.0, metavar="SECONDS")
    q.add_argument("--registry", help="device registry file (overrides settings)")
    q.set_defaults(func=bound(cmd_jt808))
    q = gsub.add_parser("hj212-passwords", help="issue or rotate the HJ 212 monitors' PW")
    q.add_argument("--registry", help="device registry file (overrides settings)")
    q.add_argument(
        "--rotate", action="append", metavar="ID", help="a device id or MN to re-issue (repeatable)"
    )
    q.add_argument("--rotate-all", action="store_true", help="re-issue every monitor's PW")
    q.add_argument("--out", help="the CSV of new plaintexts (default: next to the store)")
    q.set_defaults(func=bound(cmd_hj212_passwords))
