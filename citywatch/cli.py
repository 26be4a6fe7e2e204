"""``citywatch``: one command for every part, each a subcommand.

A mistake by the person at the keyboard (a bad flag, a bad setting, a broken
registry or rules file, a service that will not start) ends with one line on
stderr and exit code 2, never a traceback. So does an outage: a command that
needs the MQTT broker, Kafka or InfluxDB and finds it not answering says which,
where, and how to start it (``foundation.errors.ServiceDown``, raised by the
client that tried; the long-running ones check before they start). The line is
redacted: settings may carry passwords.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from contract.kinds import KINDS
from foundation.errors import CitywatchError
from foundation.logs import redact, setup_logging
from foundation.settings import Settings, describe, load_settings
from store.errors import InfluxError

if TYPE_CHECKING:
    from contract.cases import CaseEvent

log = logging.getLogger("citywatch")


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


def _preflight(settings: Settings, *needs: str) -> None:
    """Check that the services a command needs answer, before it starts (``ServiceDown`` if not).

    For the long-running commands that do not wait for their dependencies (the
    bridge's MQTT broker, alerts, simulate), whose own clients retry an outage
    quietly or crash deep inside a framework -- the worker, and the bridge for
    Kafka, wait instead with one warning line (``bus.kafka.Patience``) -- and for an
    officer's act, which the gate would otherwise turn into a refusal that
    cannot even be recorded. ``kafka`` creates the topics, as each of them does
    first anyway; ``mqtt`` and ``influx`` only knock (``bus.mqtt.probe``,
    ``store.influxql.ping``).
    """
    for need in needs:
        if need == "mqtt":
            from bus.mqtt import probe

            probe(settings.mqtt)
        elif need == "kafka":
            from bus.kafka import ensure_topics_for

            asyncio.run(ensure_topics_for(settings.kafka))
        elif need == "influx":
            from store.influxql import ping

            ping(settings)
        else:
            raise ValueError(f"Invalid service {need!r}; expected mqtt, kafka or influx")


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
        return 0 if all(s.healthy and not s.degraded for s in statuses) else 1
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    print(
        f"# settings reference; values in use come from {settings.source} and CITYWATCH_* variables"
    )
    print(describe())
    return 0


def cmd_registry_check(args: argparse.Namespace) -> int:
    from collections import Counter

    from registry.devices import load_registry

    registry = load_registry(args.file, args.fleet)
    kinds = Counter(d.kind for d in registry)
    districts = sorted({d.district for d in registry})
    print(
        f"{args.file}: OK, {len(registry)} devices "
        f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}) in {len(districts)} districts"
    )
    if args.fleet:
        f = registry.fleet
        print(
            f"{args.fleet}: OK, {len(f)} vehicles "
            f"({sum(v.permit is not None for v in f.by_plate.values())} with a permit), "
            f"{len(f.sites)} sites, {len(f.routes)} routes, {len(f.zones)} zones"
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
    _preflight(settings, "mqtt")  # Kafka it waits for (docs/architecture.md, "Outages"); MQTT not
    setup_logging(settings.log.level)
    bridge = Bridge(settings, client_suffix=args.name, event_time_clock=args.event_time)
    _run_async(
        lambda stop: bridge.run(
            stop, stats_every_s=args.stats_every, metrics_port=args.metrics_port
        )
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    import faust

    from streams.worker import build_app, tune_gc

    settings = _settings(args)
    # no preflight: the worker waits for Kafka and InfluxDB with one warning each (issue 14)
    setup_logging(settings.log.level)
    app = build_app(
        settings,
        live_clock=not args.simulation,
        session_timeout_s=args.session_timeout,
        on_topics_lost=_start_afresh,
        afresh=args.afresh,
    )
    worker = faust.Worker(app, loglevel=settings.log.level, quiet=True)
    tune_gc()
    worker.execute_from_commandline()
    return 0


def _start_afresh(loss: object) -> None:
    """The broker lost the journal, the changelogs and the offsets: this worker's state is of a
    journal that is gone. It becomes a new worker process (same pid, same arguments), which
    reads the recreated journal from its start, as restored from the archive (decision 010),
    and books the same entries under the same ids."""
    import logging

    logging.getLogger("citywatch.worker").error(
        "worker: starting afresh on the recreated journal (the broker lost its state)"
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    argv = list(sys.argv[1:])
    if "--afresh" in argv:  # started afresh before: this broker is newer still
        del argv[argv.index("--afresh") : argv.index("--afresh") + 2]
    argv += ["--afresh", str(getattr(loss, "now", None) or "unknown")]
    os.execv(sys.executable, [sys.executable, "-m", "citywatch", *argv])


def cmd_replay(args: argparse.Namespace) -> int:
    from registry.devices import load_registry
    from streams.replay import format_json, format_table, replay_file
    from streams.rules import load_rules

    settings = _settings(args)
    if not os.path.exists(args.file):
        raise CitywatchError(f"{args.file}: no such replay file")
    result = replay_file(
        args.file,
        load_rules(settings.paths.rules),
        load_registry(settings.paths.registry, settings.paths.fleet),
    )
    sys.stdout.write(format_json(result) if args.format == "json" else format_table(result))
    return 0


def _parse_instant(text: str | None) -> int:
    """Epoch milliseconds or RFC 3339 with an offset; None means now."""
    import time
    from datetime import datetime

    if text is None:
        return time.time_ns() // 1_000_000
    if text.isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CitywatchError(
            f"--at {text!r}: expected epoch milliseconds or a time like 2026-10-05T14:30+08:00"
        ) from None
    if parsed.tzinfo is None:
        raise CitywatchError(f"--at {text!r}: give the offset, e.g. {text}+08:00")
    return int(parsed.timestamp() * 1000)


def _officer_token(args: argparse.Namespace) -> str:
    """The acting officer's own token: ``--token-file``, else ``$CITYWATCH_OFFICER_TOKEN_FILE``,
    else ``$CITYWATCH_OFFICER_TOKEN`` (docs/officers.md, "Acting from the CLI")."""
    path = getattr(args, "token_file", None) or os.environ.get("CITYWATCH_OFFICER_TOKEN_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                return f.readline().strip()
        except OSError as exc:
            raise CitywatchError(f"officer token file {path}: {exc.strerror or exc}") from None
    token = os.environ.get("CITYWATCH_OFFICER_TOKEN", "").strip()
    if not token:
        raise CitywatchError(
            "acting on a case needs your own officer token: --token-file FILE or "
            "CITYWATCH_OFFICER_TOKEN (a supervisor issues one: `citywatch officers token issue ID`)"
        )
    return token


def cmd_case_action(args: argparse.Namespace) -> int:
    from alerts.acks import gate_for
    from alerts.gate import ActRequest

    if getattr(args, "officer", None):
        raise CitywatchError(
            "--officer is gone: citywatch acts as the officer whose token it is given "
            "(--token-file or CITYWATCH_OFFICER_TOKEN)"
        )
    settings = _settings(args)
    token = _officer_token(args)
    gate = gate_for(settings)
    req = ActRequest(
        action=args.verb,
        device=args.device,
        channel="cli",
        case_id=args.case,
        note=args.note,
        at=None if args.at is None else _parse_instant(args.at),
        reason=args.reason,
        client=f"cli@{socket.gethostname()}",
        user_agent=f"citywatch-cli pid {os.getpid()}",
        deadline=_parse_instant(args.until) if getattr(args, "until", None) else None,
        passed=getattr(args, "passed", None),
        photos=tuple(getattr(args, "photos", None) or ()),
    )
    _preflight(settings, "kafka")  # without Kafka nothing is recorded, not even a refusal
    outcome = asyncio.run(gate.with_token(token, req))
    if not outcome.accepted:
        raise CitywatchError(f"refused: {outcome.message}")
    a = outcome.action
    assert a is not None
    print(f"{args.verb} on {args.device} by {a.officer} ({a.role}) at {a.at}: {outcome.message}")
    return 0


T = TypeVar("T")


def read_if_any(settings: Settings, reader: Callable[..., list[T]], **filters: Any) -> list[T]:
    """``reader(settings, **filters)``; nothing when the database does not exist yet (no
    worker has run), any other failure as one line (the top-level handler)."""
    from store.errors import InfluxQueryError

    try:
        return reader(settings, **filters)
    except InfluxQueryError as exc:
        if "database not found" in str(exc):
            return []
        raise


def cmd_works_announce(args: argparse.Namespace) -> int:
    """Announce planned works (施工报备) on covers: one act per device through the gate."""
    from alerts.acks import gate_for
    from alerts.gate import ActRequest

    settings = _settings(args)
    token = _officer_token(args)
    gate = gate_for(settings)
    start, end = _parse_instant(args.start), _parse_instant(args.until)
    refused = 0
    for device in args.devices:
        req = ActRequest(
            action="announce_works", device=device, channel="cli", note=args.reason,
            reason=args.reason, works_from=start, works_until=end,
            client=f"cli@{socket.gethostname()}", user_agent=f"citywatch-cli pid {os.getpid()}",
        )  # fmt: skip
        outcome = asyncio.run(gate.with_token(token, req))
        if outcome.accepted:
            print(f"works on {device} from {args.start} until {args.until} announced")
        else:
            refused += 1
            print(f"citywatch: refused for {device}: {outcome.message}", file=sys.stderr)
    return 2 if refused else 0


def _latest_cases(settings: Settings, district: str | None, kind: str | None) -> list[CaseEvent]:
    from store.read import latest_cases

    return read_if_any(settings, latest_cases, district=district or None, kind=kind or None)


def cmd_case_export(args: argparse.Namespace) -> int:
    from citywatch.handover import cmd_export

    return cmd_export(args, _settings, _parse_instant)


def cmd_case_list(args: argparse.Namespace) -> int:
    from contract.clock import iso_utc

    settings = _settings(args)
    cases = _latest_cases(settings, args.district, args.kind)
    if not args.all:
        cases = [c for c in cases if not c.is_final]
    cases.sort(key=lambda c: (c.opened_at, c.case_id))
    print(f"{len(cases)} {'cases' if args.all else 'open cases'}")
    for c in cases:
        print(
            f"{c.case_id:<44} {c.rule:<20} {c.state:<13} {c.severity:<9}"
            f" {c.district:<10} opened {iso_utc(c.opened_at)}  {c.address}"
        )
    return 0


def cmd_case_show(args: argparse.Namespace) -> int:
    from contract.clock import iso_utc
    from store.read import case_events, ledger_entries

    settings = _settings(args)
    events = read_if_any(settings, case_events, case_id=args.case_id)
    if not events:
        raise CitywatchError(
            f"no case {args.case_id!r} in {settings.influx.database}; `citywatch case list --all` shows the ids"
        )
    entries = read_if_any(settings, ledger_entries, case_id=args.case_id)
    first = events[0]
    print(
        f"case {args.case_id}: {first.rule} on {first.device} at {first.address} ({first.district})"
    )
    for e in events:
        print(f"  {iso_utc(e.at)}  {e.state:<13} {e.severity}")
    total = sum(e.amount_yuan for e in entries)
    print(f"ledger: {len(entries)} entries, net {total:,} yuan")
    for e in entries:
        rev = f"  reverses {e.reverses}" if e.reverses else ""
        print(f"  {iso_utc(e.accrued_at)}  {e.id:<56} {e.payer:<24} {e.amount_yuan:>12,}{rev}")
    return 0


def cmd_archive(args: argparse.Namespace) -> int:
    """``citywatch archive run|restore|lag``: the journal's copy on disk (decision 010)."""
    from pathlib import Path

    from streams import archive

    settings = _settings(args)
    directory = Path(args.dir) if args.dir else archive.archive_dir(settings)
    if args.verb == "run":
        setup_logging(settings.log.level)
        _run_async(lambda stop: archive.run_archive(settings, stop, directory=directory))
        return 0
    _preflight(settings, "kafka")
    if args.verb == "restore":
        if not archive.kept(directory):
            raise CitywatchError(
                f"{directory}: no archive there (journal-, audit-, silences-YYYY-MM-DD.jsonl)"
            )
        written = asyncio.run(archive.restore(settings, directory))
        print(
            f"restored from {directory}: "
            + ", ".join(f"{n:,} {kind} records" for kind, n in written.items())
        )
        return 0
    behind = asyncio.run(archive.lag(settings))
    if behind is None:
        print(f"no archive has run for {settings.kafka.topic_prefix} on this broker")
        return 1
    print(f"{behind:,} records of {settings.kafka.topic_prefix} not yet on disk in {directory}")
    return 0 if behind == 0 else 1


def cmd_journal_load(args: argparse.Namespace) -> int:
    from registry.devices import load_registry
    from streams.journal import load

    settings = _settings(args)
    if not os.path.exists(args.file):
        raise CitywatchError(f"{args.file}: no such replay file")
    k = settings.kafka
    bad = []
    with open(args.file, "rb") as f:
        n = asyncio.run(
            load(
                f,
                load_registry(settings.paths.registry),
                k.bootstrap,
                k.topic_prefix,
                k.partitions,
                on_bad=bad.append,
            )
        )
    print(f"{n} records written to {k.topic_prefix}.telemetry; {len(bad)} lines rejected")
    for b in bad[:20]:
        print(f"  line {b.line}: {b.code}: {b.message}")
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    from alerts.service import main as alerts_main

    settings = _settings(args)
    _preflight(settings, "kafka")
    setup_logging(settings.log.level)
    return alerts_main(args, settings)


def cmd_simulate(args: argparse.Namespace) -> int:
    """Publish a simulated city over MQTT: scenario mode (time-warped) or load mode (--rate)."""
    from sim.simulator import build_city, load_scenario_file, split_devices

    settings = _settings(args)
    _preflight(settings, "mqtt")  # the simulator provisions its devices on the running broker
    scen = load_scenario_file(args.scenarios)
    seed = args.seed if args.seed is not None else (scen.seed if scen.seed is not None else 7)
    city = build_city(seed, *split_devices(args.devices), fleet=True)
    city.write_registry(args.registry_out)
    fleet_out = os.path.join(os.path.dirname(args.registry_out) or ".", "fleet.yaml")
    city.write_fleet(fleet_out)
    print(
        f"{len(city.devices)} devices; registry written to {args.registry_out} "
        f"(start bridges with --registry {args.registry_out}), its trucks' fleet file to "
        f"{fleet_out} (workers: CITYWATCH_PATHS_FLEET={fleet_out})"
    )
    # The simulator is its own installer: fresh secrets, kept in memory, removed at the end
    # (docs/contracts.md, "Device identity").
    from citywatch.devices import retire, simulated_identities

    source = f"simulate:{os.path.abspath(args.registry_out)}"
    _, credentials = simulated_identities(settings, city.registry(), source, bridge_names=())
    try:
        return _simulate(args, settings, city, scen, seed, credentials)
    finally:
        retire(settings, source)


def _simulate(
    args: argparse.Namespace,
    settings: Settings,
    city: Any,
    scen: Any,
    seed: int,
    credentials: dict[str, tuple[str, str]],
) -> int:
    import threading

    from citywatch.run import last_weeks_monday
    from citywatch.services import ca_file
    from sim.publish import run_load, run_publisher
    from sim.simulator import Simulation, parse_scenario_flag

    m = settings.mqtt
    ca = (m.ca_file or str(ca_file(settings))) if m.tls else None
    stop = threading.Event()
    if args.rate:

        def show_load(st: object) -> None:
            print(f"\r{st.acked:,} acked, {st.achieved_rate:,.0f} msgs/s", end="", flush=True)  # type: ignore[attr-defined]

        stats = run_load(
            args.rate,
            args.duration,
            args.processes,
            m.host,
            m.port,
            city,
            seed=seed,
            on_progress=show_load,
            credentials=credentials,
            ca_file=ca,
        )
        print(
            f"\nload: target {args.rate:,.0f} msgs/s, achieved {stats.achieved_rate:,.0f} msgs/s "
            f"over {stats.wall_s:.1f} s with {args.processes} process(es), {stats.acked:,} acknowledged"
        )
        return 0
    scenarios = list(scen.scenarios) + [parse_scenario_flag(flag) for flag in args.scenario or ()]
    start_ms = scen.start_ms if args.fixed_start and scen.start_ms else last_weeks_monday()
    run_for = scen.run_for_ms or 30 * 3_600_000
    garbage = (
        args.garbage
        if args.garbage is not None
        else (scen.garbage_share if scen.garbage_share is not None else 0.005)
    )
    sim = Simulation(
        city, scenarios, seed=seed, start_ms=start_ms, speed=args.speed, garbage_share=garbage
    )

    def show(st: object) -> None:
        from citywatch.run import CITY_CLOCK
        from contract.clock import local as local_time

        print(
            f"\rcity time {local_time(st.sim_ms, fmt=CITY_CLOCK, empty='-')}  {st.acked:,} acked  {st.rate:,.0f} msgs/s",
            end="",
            flush=True,
        )  # type: ignore[attr-defined]

    stats = run_publisher(
        sim.events(start_ms + run_for),
        m.host,
        m.port,
        "citywatch-simulate",
        args.speed,
        on_progress=show,
        stop_event=stop,
        start_ms=start_ms,
        ca_file=ca,
        credentials=credentials,
    )
    print(f"\npublished {stats.acked:,} messages; the city's clock reached its end")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from citywatch.run import run

    settings = _settings(args)
    setup_logging("WARNING")
    run(
        settings,
        duration_s=args.duration,
        devices=args.devices,
        seed=args.seed,
        scenario_file=args.scenarios,
        keep_services=args.keep_services,
        live=sys.stdout.isatty(),
        hj212_share=args.hj212_share,
        metrics_port=args.metrics_port,
        ack_listen=args.ack_listen,
        jt808_share=args.jt808_share,
    )
    return 0


def cmd_grafana_push(args: argparse.Namespace) -> int:
    from niquests.exceptions import ConnectionError as NoConnection
    from niquests.exceptions import Timeout

    from citywatch.grafana.push import main_push
    from foundation.errors import ServiceDown, public_address

    try:
        return main_push(args, settings=_settings(args))
    except CitywatchError:
        raise
    except (NoConnection, Timeout) as exc:
        raise ServiceDown(
            "Grafana", args.url, "--url", exc,
            fix="check --url (citywatch does not run Grafana: docs/grafana.md)",
        ) from None  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - HTTP client errors become one line for the operator
        if type(exc).__module__.split(".")[0] in (
            "niquests",
            "requests",
            "urllib3",
            "grafana_client",
        ):
            raise CitywatchError(
                f"Grafana at {public_address(args.url)} refused the push: {exc}"
            ) from None
        raise


def cmd_grafana_generate(args: argparse.Namespace) -> int:
    from citywatch.grafana.dashboards import write_all

    write_all(args.out)
    print(f"dashboards and provisioning files written under {args.out}")
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="citywatch", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--config", help="settings file (default: $CITYWATCH_CONFIG or ./citywatch.toml)"
    )
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
    q.add_argument("--fleet", help="also check a fleet file against it (docs/contracts.md, Fleet)")
    q.set_defaults(func=cmd_registry_check)

    p = sub.add_parser("rules", help="rules file tools")
    rsub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser, required=True)
    q = rsub.add_parser("check", help="validate a rules file")
    q.add_argument("file")
    q.set_defaults(func=cmd_rules_check)

    p = sub.add_parser("bridge", help="run an MQTT -> Kafka bridge")
    p.add_argument(
        "--name", default="1", help="this bridge's name within the shared group (default 1)"
    )
    p.add_argument(
        "--event-time",
        action="store_true",
        help="simulation: stamp received_at with the reading's own time",
    )
    p.add_argument("--stats-every", type=float, default=30.0, metavar="SECONDS")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics on 127.0.0.1:PORT/metrics",
    )
    p.add_argument("--registry", help="device registry file (overrides settings)")
    p.set_defaults(func=cmd_bridge)

    p = sub.add_parser("worker", help="run the Faust stream worker")
    p.add_argument(
        "--simulation",
        action="store_true",
        help="no wall-clock ticks: the input's own time drives the clocks",
    )
    p.add_argument("--session-timeout", type=float, default=6.0, metavar="SECONDS")
    p.add_argument("--afresh", default=None, help=argparse.SUPPRESS)  # set by _start_afresh
    p.add_argument("--registry", help="device registry file (overrides settings)")
    p.add_argument("--rules", help="rules file (overrides settings)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser(
        "alerts", help="run the alerts service: routing, pushes, escalation, ack links"
    )
    from alerts.service import add_arguments as add_alerts_arguments

    add_alerts_arguments(p)
    p.set_defaults(func=cmd_alerts)

    p = sub.add_parser("replay", help="run a recorded JSON Lines file through the rules")
    p.add_argument("file")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--registry", help="device registry file (overrides settings)")
    p.add_argument("--rules", help="rules file (overrides settings)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("simulate", help="publish a simulated city over MQTT (scenarios or load)")
    p.add_argument("--devices", type=int, default=300, help="size of the city (default 300)")
    p.add_argument("--seed", type=int, help="random seed (default: the scenario file's, else 7)")
    p.add_argument("--scenarios", default="config/scenarios/default.yaml", help="scenario file")
    p.add_argument(
        "--scenario",
        action="append",
        metavar="SPEC",
        help="add a scenario, e.g. cover_open:MH-ZY-0001@1h/5h20m (repeatable)",
    )
    p.add_argument(
        "--speed", type=float, default=600.0, help="city seconds per wall second (0: no waiting)"
    )
    p.add_argument(
        "--garbage", type=float, help="share of malformed vendor payloads (default 0.005)"
    )
    p.add_argument(
        "--fixed-start",
        action="store_true",
        help="use the scenario file's start instead of last week's Monday",
    )
    p.add_argument(
        "--rate",
        type=float,
        help="load mode: sustain this many msgs/s instead of playing scenarios",
    )
    p.add_argument("--processes", type=int, default=1, help="load mode: publisher processes")
    p.add_argument("--duration", type=float, default=10.0, help="load mode: seconds")
    p.add_argument(
        "--registry-out",
        default=".state/simulated-registry.csv",
        help="where to write the city's registry",
    )
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("run", help="the main job: a simulated city through the whole pipeline")
    p.add_argument(
        "--duration",
        type=float,
        default=150.0,
        metavar="SECONDS",
        help="wall time the scenario's city time is squeezed into (default 150)",
    )
    p.add_argument(
        "--devices", type=int, default=300, help="size of the simulated city (default 300)"
    )
    p.add_argument("--seed", type=int, help="random seed (default: the scenario file's)")
    p.add_argument("--scenarios", default="config/scenarios/default.yaml", help="scenario file")
    p.add_argument("--rules", help="rules file (overrides settings)")
    p.add_argument(
        "--keep-services", action="store_true", help="leave the services running afterwards"
    )
    p.add_argument(
        "--hj212-share",
        type=float,
        default=0.2,
        metavar="SHARE",
        help="share of dust sites that are HJ 212 monitors reporting through the gateway "
        "(default 0.2; 0: all MQTT)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        metavar="PORT",
        help="the bridge's /metrics, read by the live view (default 0: a free port)",
    )
    p.add_argument(
        "--ack-listen",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="the alerts service's ack endpoint (default 127.0.0.1:0: a free port)",
    )
    p.add_argument(
        "--jt808-share",
        type=float,
        default=0.5,
        metavar="SHARE",
        help="share of the trucks whose terminals speak JT/T 808 through the gateway "
        "(default 0.5; 0: all MQTT)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("case", help="list, show and act on cases")
    csub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser, required=True)
    for verb, text in (
        ("ack", "acknowledge the device's open case"),
        ("close", "close it as repaired"),
        ("accident", "report an accident caused by it"),
        ("note", "add a note"),
        ("confirm_repair", "accept a late repair report: book the reversals (docs/rules.md)"),
        ("reject_repair", "refuse a late repair report: the ledger stays"),
        ("dispatch", "dispatch (派遣) a filed case to its unit, with the rules' deadline"),
        ("feedback", "the unit's report (处置反馈): --note text, --photo references"),
        ("check", "the inspector's check (核查): --passed, or --failed for rework (返工)"),
        ("extend", "approve an extension (延期) of the disposal deadline: --until, --reason"),
    ):
        q = csub.add_parser(verb, help=text)
        if verb == "feedback":
            q.add_argument("--photo", action="append", default=[], dest="photos",
                           help="a photo reference (URL or the platform's id); repeatable")  # fmt: skip
        elif verb == "check":
            g = q.add_mutually_exclusive_group(required=True)
            g.add_argument("--passed", dest="passed", action="store_true", default=None,
                           help="the condition is over: closes the case as an officer's close")  # fmt: skip
            g.add_argument("--failed", dest="passed", action="store_false",
                           help="not over: back to dispatched, counted as rework")  # fmt: skip
        elif verb == "extend":
            q.add_argument("--until", required=True,
                           help="the approved deadline (epoch ms or RFC 3339)")  # fmt: skip
        q.add_argument("device", help="device id, e.g. MH-JS-0001")
        q.add_argument("--officer", help=argparse.SUPPRESS)  # gone: refused with a hint
        q.add_argument("--token-file", help="your officer token (else $CITYWATCH_OFFICER_TOKEN)")
        q.add_argument("--at", help="when (epoch ms or RFC 3339 with offset; default now)")
        q.add_argument("--reason", help="why, when --at is more than the policy's tolerance ago")
        q.add_argument("--case", help="case id, when the device has more than one")
        q.add_argument("--note", help="free text kept with the case")
        q.set_defaults(func=cmd_case_action)
    p_works = sub.add_parser("works", help="announced works (施工报备) on covers")
    wsub = p_works.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser, required=True)
    w = wsub.add_parser(
        "announce", help="planned works on covers: no money, no push inside the window"
    )
    w.add_argument("devices", nargs="+", help="cover device ids")
    w.add_argument(
        "--from", dest="start", required=True, help="window start (epoch ms or RFC 3339)"
    )
    w.add_argument("--until", required=True, help="window end (epoch ms or RFC 3339)")
    w.add_argument("--reason", required=True, help="why (kept in the evidence and the audit)")
    w.add_argument("--token-file", help="your officer token (else $CITYWATCH_OFFICER_TOKEN)")
    w.set_defaults(func=cmd_works_announce)
    q = csub.add_parser("list", help="open cases (from InfluxDB)")
    q.add_argument("--all", action="store_true", help="closed ones too")
    q.add_argument("--district")
    q.add_argument("--kind", choices=KINDS)
    q.set_defaults(func=cmd_case_list)
    q = csub.add_parser("show", help="one case: its events and ledger entries")
    q.add_argument("case_id")
    q.set_defaults(func=cmd_case_show)
    q = csub.add_parser(
        "export", help="cases and their stages for the city's platform (docs/handover.md)"
    )
    q.add_argument("--from", dest="start", required=True,
                   help="stage changes from (epoch ms or RFC 3339)")  # fmt: skip
    q.add_argument("--until", required=True, help="up to (exclusive)")
    q.add_argument("--format", choices=("json", "csv"), default="json")
    q.add_argument("--out", default="-", help="file (default: stdout, JSON only)")
    q.set_defaults(func=cmd_case_export)

    p = sub.add_parser("journal", help="the detector's input log on Kafka")
    jsub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser, required=True)
    q = jsub.add_parser("load", help="write a replay file into the live pipeline's journal")
    q.add_argument("file")
    q.add_argument("--registry", help="device registry file (overrides settings)")
    q.set_defaults(func=cmd_journal_load)

    p = sub.add_parser(
        "archive", help="the journal's copy on disk: what a restarted in-memory broker forgets"
    )
    asub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser, required=True)
    for verb, text in (
        ("run", "archive the journal, audit and silences, one file per topic and day (runs until stopped)"),
        ("restore", "write the archive back into an empty broker (services up does it when the broker lost the journal)"),
        ("lag", "records not yet on disk (exit 1 when some are, or no archive ran)"),
    ):  # fmt: skip
        q = asub.add_parser(verb, help=text)
        q.add_argument(
            "--dir", help="the archive's directory (default <paths.state_dir>/archive/<prefix>)"
        )
        q.set_defaults(func=cmd_archive)

    from citywatch.devices import add_arguments as add_devices_arguments
    from citywatch.officers import add_arguments as add_officers_arguments

    add_devices_arguments(sub, _settings, parser_class=_Parser)
    from citywatch.gateways import add_arguments as add_gateway_arguments

    add_gateway_arguments(sub, _settings, parser_class=_Parser)
    add_officers_arguments(sub, _settings, parser_class=_Parser)
    from citywatch.silences import add_arguments as add_silence_arguments

    add_silence_arguments(sub, _settings, parser_class=_Parser)

    from citywatch.reports.cli import add_arguments as add_report_arguments

    add_report_arguments(sub, _settings, parser_class=_Parser)

    p = sub.add_parser("grafana", help="Grafana dashboards as code")
    gsub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser, required=True)
    q = gsub.add_parser(
        "push", help="create or update the folder, datasource and dashboards in a Grafana"
    )
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
    _quiet_libraries()
    try:
        return int(args.func(args) or 0)
    except (CitywatchError, InfluxError) as exc:
        print(f"citywatch: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        down = _as_outage(exc, args)
        if down is None:
            raise
        print(f"citywatch: {_one_line(down)}", file=sys.stderr)
        return 2


CHATTY_LIBRARIES = ("aiokafka", "kafka")
"""Libraries that log every failed connection attempt at ERROR: in a command run by hand the
outage is told once, by the command. ``setup_logging`` (the long-running commands) puts them
back at WARNING."""


def _quiet_libraries() -> None:
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _one_line(exc: BaseException) -> str:
    """The error's text on one line, with every password and token masked."""
    return redact(" ".join(str(exc).split()))


def _as_outage(exc: Exception, args: argparse.Namespace) -> CitywatchError | None:
    """aiokafka's "no broker answered" from a client not started through ``bus.kafka``."""
    if not type(exc).__module__.startswith("aiokafka"):
        return None
    from bus.kafka import UNREACHABLE, KafkaDown

    if not isinstance(exc, UNREACHABLE):
        return None
    try:
        bootstrap = _settings(args).kafka.bootstrap
    except CitywatchError:
        bootstrap = "kafka.bootstrap"
    return KafkaDown(bootstrap, exc)


if __name__ == "__main__":
    sys.exit(main())
