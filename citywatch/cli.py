"""``citywatch``: one command for every part, each a subcommand.

A mistake by the person at the keyboard (a bad flag, a bad setting, a broken
registry or rules file, a service that will not start) ends with one line on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence

from citywatch.errors import CitywatchError
from citywatch.settings import Settings, describe, load_settings

log = logging.getLogger("citywatch")

QUIET_LOGGERS = ("aiokafka", "faust", "mode", "kafka", "aiohttp.access")


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # DESIGN §9: these libraries build debug records per event; keep them at warning.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, getattr(logging, level)))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line plus the usage, exit 2
        self.print_usage(sys.stderr)
        self.exit(2, f"citywatch: error: {message}\n")


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    overrides = {}
    if getattr(args, "registry", None):
        overrides["registry"] = args.registry
    if getattr(args, "rules", None):
        overrides["rules"] = args.rules
    if overrides:
        settings = settings.replace("paths", **overrides)
    return settings


# ---------------------------------------------------------------- subcommands


def cmd_services(args: argparse.Namespace) -> int:
    from citywatch import services

    settings = _settings(args)
    if args.verb == "up":
        for st in services.up(settings):
            print(st.line())
    elif args.verb == "down":
        stopped = services.down(settings)
        if not stopped:
            print("nothing to stop: citywatch started no service that is still running")
    else:
        statuses = services.status(settings)
        for st in statuses:
            print(st.line())
        return 0 if all(s.healthy for s in statuses) else 1
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    print(f"# settings reference; values in use come from {settings.source} and CITYWATCH_* variables")
    print(describe())
    return 0


def cmd_registry_check(args: argparse.Namespace) -> int:
    from collections import Counter

    from ingest.registry import load_registry

    registry = load_registry(args.file)
    kinds = Counter(d.kind for d in registry)
    districts = sorted({d.district for d in registry})
    print(
        f"{args.file}: OK, {len(registry)} devices "
        f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}) in {len(districts)} districts"
    )
    return 0


def cmd_rules_check(args: argparse.Namespace) -> int:
    from streams.rules import load_rules

    load_rules(args.file)
    print(f"{args.file}: OK")
    return 0


def _run_async(main: Callable[[asyncio.Event], object]) -> None:
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)  # type: ignore[misc]

    asyncio.run(runner())


def cmd_bridge(args: argparse.Namespace) -> int:
    from ingest.bridge import Bridge

    settings = _settings(args)
    setup_logging(settings.log.level)
    bridge = Bridge(settings, client_suffix=args.name, event_time_clock=args.event_time)
    _run_async(lambda stop: bridge.run(stop, stats_every_s=args.stats_every, metrics_port=args.metrics_port))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    import faust

    from ingest.kafka import ensure_topics
    from streams.worker import build_app

    settings = _settings(args)
    setup_logging(settings.log.level)
    k = settings.kafka
    asyncio.run(ensure_topics(k.bootstrap, k.topic_prefix, k.partitions))
    app = build_app(settings, live_clock=not args.simulation, session_timeout_s=args.session_timeout)
    worker = faust.Worker(app, loglevel=settings.log.level, quiet=True)
    worker.execute_from_commandline()
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from ingest.registry import load_registry
    from streams.replay import format_json, format_table, replay_file
    from streams.rules import load_rules

    settings = _settings(args)
    if not os.path.exists(args.file):
        raise CitywatchError(f"{args.file}: no such replay file")
    result = replay_file(args.file, load_rules(settings.paths.rules), load_registry(settings.paths.registry))
    sys.stdout.write(format_json(result) if args.format == "json" else format_table(result))
    return 0


def cmd_grafana_push(args: argparse.Namespace) -> int:
    from citywatch.grafana.push import main_push

    try:
        return main_push(args, settings=_settings(args))
    except CitywatchError:
        raise
    except Exception as exc:  # noqa: BLE001 - HTTP client errors become one line for the operator
        if type(exc).__module__.split(".")[0] in ("niquests", "requests", "urllib3", "grafana_client"):
            raise CitywatchError(f"Grafana at {args.url} could not be reached or refused the push: {exc}") from None
        raise


def cmd_grafana_generate(args: argparse.Namespace) -> int:
    from citywatch.grafana.dashboards import write_all

    write_all(args.out)
    print(f"dashboards and provisioning files written under {args.out}")
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="citywatch", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", help="settings file (default: $CITYWATCH_CONFIG or ./citywatch.toml)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("services", help="start, stop or show the embedded services")
    p.add_argument("verb", choices=("up", "down", "status"))
    p.set_defaults(func=cmd_services)

    p = sub.add_parser("config", help="print the settings reference")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("registry", help="device registry tools")
    rsub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser, required=True)
    q = rsub.add_parser("check", help="validate a registry file")
    q.add_argument("file")
    q.set_defaults(func=cmd_registry_check)

    p = sub.add_parser("rules", help="rules file tools")
    rsub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser, required=True)
    q = rsub.add_parser("check", help="validate a rules file")
    q.add_argument("file")
    q.set_defaults(func=cmd_rules_check)

    p = sub.add_parser("bridge", help="run an MQTT -> Kafka bridge")
    p.add_argument("--name", default="1", help="this bridge's name within the shared group (default 1)")
    p.add_argument("--event-time", action="store_true",
                   help="simulation: stamp received_at with the reading's own time")
    p.add_argument("--stats-every", type=float, default=30.0, metavar="SECONDS")
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve Prometheus metrics on 127.0.0.1:PORT/metrics")
    p.add_argument("--registry", help="device registry file (overrides settings)")
    p.set_defaults(func=cmd_bridge)

    p = sub.add_parser("worker", help="run the Faust stream worker")
    p.add_argument("--simulation", action="store_true",
                   help="no wall-clock ticks: the input's own time drives the clocks")
    p.add_argument("--session-timeout", type=float, default=6.0, metavar="SECONDS")
    p.add_argument("--registry", help="device registry file (overrides settings)")
    p.add_argument("--rules", help="rules file (overrides settings)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("replay", help="run a recorded JSON Lines file through the rules")
    p.add_argument("file")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--registry", help="device registry file (overrides settings)")
    p.add_argument("--rules", help="rules file (overrides settings)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("grafana", help="Grafana dashboards as code")
    gsub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser, required=True)
    q = gsub.add_parser("push", help="create or update the folder, datasource and dashboards in a Grafana")
    from citywatch.grafana.push import add_push_arguments

    add_push_arguments(q)
    q.set_defaults(func=cmd_grafana_push)
    q = gsub.add_parser("generate", help="regenerate deploy/grafana from the generator")
    q.add_argument("--out", default="deploy/grafana")
    q.set_defaults(func=cmd_grafana_generate)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except CitywatchError as exc:
        print(f"citywatch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
