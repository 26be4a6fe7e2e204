"""The database citywatch writes into: retention policies, continuous queries,
and the qualified names readers use (docs/contracts.md, "InfluxDB"; the points
themselves are written by ``store.points``).

* ``raw`` (30 days, the DEFAULT RP): telemetry, dead letters and quarantined
  journal records (their raw bytes stay on ``<prefix>.quarantine``).
* ``long`` (730 days): the 1-minute means the continuous queries make of raw.
* ``ledger`` (``LEDGER_RP``, kept forever): ``penalty`` and ``case_event``.
  Money and the evidence behind it are settled months later and disputed for
  years, so they never expire with the telemetry. Query them qualified:
  ``FROM "ledger"."penalty"`` (``PENALTY``, ``CASE_EVENT``).

This is InfluxDB 1.x DDL (and 3.x's InfluxQL DDL where offered); 2.x buckets
and tasks are set up with the influx CLI instead.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from store import points
from store.identity import ROLES, Role, embedded_secret
from store.influxql import ident, query, target

__all__ = [
    "AUDIT",
    "CASE_EVENT",
    "DEFAULT_DOWNSAMPLE",
    "LEDGER_RP",
    "PENALTY",
    "create_database",
    "drop_database",
    "ensure_database",
]

LEDGER_RP = "ledger"
"""Retention policy of ``penalty`` and ``case_event`` (infinite; see ``ensure_database``)."""

PENALTY = f"{ident(LEDGER_RP)}.{ident(points.PENALTY)}"
CASE_EVENT = f"{ident(LEDGER_RP)}.{ident(points.CASE_EVENT)}"
CASE_STAGE = f"{ident(LEDGER_RP)}.{ident(points.CASE_STAGE)}"
AUDIT = f"{ident(LEDGER_RP)}.{ident(points.AUDIT)}"
"""Qualified measurement names for InfluxQL ``FROM`` clauses: ``"ledger"."penalty"``."""

LIGHTING_MARKS = ("should_lit", "lit_when_should")
"""Fields the worker adds to lamp telemetry for the lighting rate (docs/rules.md)."""
DEFAULT_DOWNSAMPLE: dict[str, tuple[str, ...]] = {}
"""measurement -> numeric fields averaged per minute into the long RP (the number
fields of each kind, docs/contracts.md "Payloads"; filled from ``contract.kinds.KIND_SPECS``)."""


def _default_downsample() -> dict[str, tuple[str, ...]]:
    if not DEFAULT_DOWNSAMPLE:
        from contract.kinds import KIND_SPECS

        for kind, spec in KIND_SPECS.items():
            DEFAULT_DOWNSAMPLE[kind] = tuple(spec.numbers)
        # the lighting rate's marks (store.points.telemetry_line): kept two years like the readings
        DEFAULT_DOWNSAMPLE["streetlight"] += LIGHTING_MARKS
    return DEFAULT_DOWNSAMPLE


def _duration_ok(d: str) -> bool:
    return d == "INF" or re.fullmatch(r"(\d+(ns|u|µ|ms|s|m|h|d|w))+", d) is not None


def _database(
    settings_or_url: Any, database: str | None, token: str | None
) -> tuple[str, str, str]:
    url, db, tok = target(settings_or_url, database, token, "admin")
    if not db:
        raise ValueError("Invalid 'database' argument None; pass a database name or Settings")
    return url, db, tok


def create_database(
    settings_or_url: Any, database: str | None = None, *, token: str | None = None
) -> str:
    """``CREATE DATABASE`` (idempotent) with the server's default RP only; returns the name.

    For tests and benchmarks that want a bare database; the pipeline uses ``ensure_database``.
    """
    url, db, tok = _database(settings_or_url, database, token)
    query(url, db, f"CREATE DATABASE {ident(db)}", token=tok)
    _grant_embedded(settings_or_url, db, lambda text: query(url, db, text, token=tok))
    return db


def drop_database(
    settings_or_url: Any, database: str | None = None, *, token: str | None = None
) -> None:
    """``DROP DATABASE`` (no error when it does not exist)."""
    url, db, tok = _database(settings_or_url, database, token)
    query(url, None, f"DROP DATABASE {ident(db)}", token=tok)


def ensure_database(
    settings_or_url: Any,
    database: str | None = None,
    *,
    raw_rp: str = "raw",
    raw_duration: str = "30d",
    long_rp: str = "long",
    long_duration: str = "730d",
    ledger_rp: str = LEDGER_RP,
    ledger_duration: str = "INF",
    every: str = "1m",
    downsample: Mapping[str, Sequence[str]] | None = None,
    token: str | None = None,
) -> None:
    """Create (or bring up to date) the database, its retention policies and CQs. Idempotent.

    * ``raw_rp`` (default ``raw``, 30 days) is the DEFAULT RP: telemetry, dead letters and
      quarantined records land there.
    * ``long_rp`` (default ``long``, 730 days = 2 years) receives the downsampled telemetry.
    * ``ledger_rp`` (default ``ledger``, kept forever) holds ``penalty`` and ``case_event``.
    * one continuous query per measurement in ``downsample`` (default: the number
      fields of each telemetry kind) writing ``mean(f) AS f`` per ``every`` and per
      series (``GROUP BY time(every), *``) from raw into long. A CQ's name carries
      a hash of its text (``cq_dust_1m_3fa2c1``): changing the fields or interval
      replaces it, running again with the same settings changes nothing.
    * with citywatch's embedded identities (``store.identity``): WRITE on the
      database to ``citywatch-writer`` and READ to ``citywatch-reader``
      (InfluxDB 1.x has no grant on all databases).
    """
    for name, value in (
        ("raw_duration", raw_duration),
        ("long_duration", long_duration),
        ("ledger_duration", ledger_duration),
        ("every", every),
    ):
        if not _duration_ok(value):
            raise ValueError(
                f"Invalid {name!r} argument {value!r}; expected an InfluxQL duration like '30d', '1m', '104w' or 'INF'"
            )
    if len({raw_rp, long_rp, ledger_rp}) != 3:
        raise ValueError(
            f"Invalid retention policy names raw_rp={raw_rp!r}, long_rp={long_rp!r}, ledger_rp={ledger_rp!r}: "
            "they must differ"
        )
    url, db, tok = _database(settings_or_url, database, token)
    q = lambda text: query(url, db, text, token=tok)  # noqa: E731
    q(f"CREATE DATABASE {ident(db)}")
    existing = {r["name"]: r for r in q(f"SHOW RETENTION POLICIES ON {ident(db)}")}
    for rp, duration, default in (
        (raw_rp, raw_duration, True),
        (long_rp, long_duration, False),
        (ledger_rp, ledger_duration, False),
    ):
        verb = "ALTER" if rp in existing else "CREATE"
        rep = "" if verb == "ALTER" else " REPLICATION 1"
        q(
            f"{verb} RETENTION POLICY {ident(rp)} ON {ident(db)} DURATION {duration}{rep}"
            f"{' DEFAULT' if default else ''}"
        )
    fields_by_m = _default_downsample() if downsample is None else downsample
    wanted: dict[str, str] = {}
    for measurement, fields in fields_by_m.items():
        if not fields:
            continue
        select = ", ".join(f"mean({ident(f)}) AS {ident(f)}" for f in fields)
        body = (
            f"SELECT {select} INTO {ident(db)}.{ident(long_rp)}.{ident(measurement)} "
            f"FROM {ident(db)}.{ident(raw_rp)}.{ident(measurement)} GROUP BY time({every}), *"
        )
        digest = hashlib.sha1(body.encode()).hexdigest()[:6]
        safe = re.sub(r"[^A-Za-z0-9_]", "_", measurement)
        wanted[f"cq_{safe}_{every}_{digest}"] = f"BEGIN {body} END"
    have = {r["name"] for r in q("SHOW CONTINUOUS QUERIES") if r.get("_series") == db}
    for name in sorted(have - set(wanted)):
        if name.startswith("cq_"):
            q(f"DROP CONTINUOUS QUERY {ident(name)} ON {ident(db)}")
    for name, text in wanted.items():
        if name not in have:
            q(f"CREATE CONTINUOUS QUERY {ident(name)} ON {ident(db)} {text}")
    _grant_embedded(settings_or_url, db, q)


def _grant_embedded(settings_or_url: Any, db: str, q: Any) -> None:
    """WRITE to the embedded writer, READ to the embedded reader, when citywatch's
    identities are the ones in use (not an operator's own user on their server)."""
    if isinstance(settings_or_url, str) or settings_or_url.influx.username not in (
        "",
        ROLES["admin"],
    ):
        return
    grants: tuple[tuple[Role, str], ...] = (("writer", "WRITE"), ("reader", "READ"))
    for role, privilege in grants:
        if embedded_secret(settings_or_url, role) is not None:
            q(f"GRANT {privilege} ON {ident(db)} TO {ident(ROLES[role])}")
