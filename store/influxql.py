"""The InfluxQL endpoint: one ``POST /query`` with bound parameters, rows out.

Values never go into the query text: they travel in the ``params`` form field
(a JSON object) and the statement names them ``$name``
(``WHERE "case_id" = $case_id AND time >= $start``; InfluxDB 1.6 and the 1.x
API of 2.x/3.x bind them). A bound integer compared with ``time`` is epoch
**nanoseconds**. Only identifiers (measurement, retention policy, database and
field names, which InfluxQL cannot bind) are written into the text, quoted by
``ident``. The schema behind the queries: docs/contracts.md ("InfluxDB").
"""

from __future__ import annotations

import base64
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from foundation.errors import public_address
from store.errors import InfluxDown, InfluxError, InfluxQueryError, server_message
from store.identity import Role, as_role

__all__ = ["ident", "ping", "query", "target"]

_BINDABLE = (str, int, float, bool)


def ident(name: str) -> str:
    """A double-quoted InfluxQL identifier (``"my db"``, ``"a\\"b"``)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def target(
    settings_or_url: Any, database: str | None, token: str | None, role: Role = "reader"
) -> tuple[str, str | None, str]:
    """(base URL, database, credential) from citywatch ``Settings`` or a base URL.

    The credential is what ``query`` sends as ``Authorization``: the settings'
    1.x user and password (``Basic``; with no user set, the embedded identity
    of ``role``, ``store.identity``), else their API token (``Token``), else
    ``token`` as given (a bare token, or a credential ``target`` made).
    """
    influx = getattr(settings_or_url, "influx", None)
    if influx is not None:
        if token is None:
            influx = as_role(settings_or_url, role).influx
        if token is None and influx.username:
            return (
                influx.url.rstrip("/"),
                database or influx.database,
                basic(influx.username, influx.password),
            )
        return (
            influx.url.rstrip("/"),
            database or influx.database,
            token if token is not None else influx.token,
        )
    if not isinstance(settings_or_url, str):
        raise TypeError(f"expected Settings or a URL string, got {type(settings_or_url).__name__}")
    return settings_or_url.rstrip("/"), database, token or ""


def basic(username: str, password: str) -> str:
    """The ``Authorization`` value of InfluxDB 1.x user authentication (never in a URL or a log)."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def authorization(credential: str) -> str:
    """``credential`` as an ``Authorization`` header value (a bare token becomes ``Token <t>``)."""
    return credential if credential.startswith(("Basic ", "Token ")) else f"Token {credential}"


def _params_json(params: Mapping[str, Any]) -> str:
    for name, value in params.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(
                f"Invalid parameter name {name!r}; expected a name like 'case_id' (used as $case_id)"
            )
        if not isinstance(value, _BINDABLE):
            raise TypeError(
                f"Invalid value for parameter ${name}: {type(value).__name__}; expected str, int, float or bool"
            )
    return json.dumps(dict(params))


QUERY_TIMEOUT_S = 30.0
"""Seconds a query waits on InfluxDB by default (to connect, and for each read of the answer):
long enough for a month's report; a lookup that serves an officer waiting sets a shorter one."""


def query(
    settings_or_url: Any,
    database: str | None,
    influxql: str,
    *,
    params: Mapping[str, Any] | None = None,
    epoch: str = "ms",
    token: str | None = None,
    timeout: float = QUERY_TIMEOUT_S,
    role: Role = "reader",
) -> list[dict[str, Any]]:
    """Run InfluxQL and return the rows of every series as dicts.

    ``settings_or_url``: citywatch ``Settings`` (url, token and — when
    ``database`` is None — the database come from ``settings.influx``) or a base
    URL. ``params`` binds ``$name`` in the statement(s). Each row maps column ->
    value (``time`` in epoch ``epoch`` units), plus the series' GROUP BY tags and
    ``_series`` (the measurement / series name). A statement error raises
    ``InfluxQueryError`` with the server's message; no answer raises ``InfluxDown``
    (an ``InfluxError`` and a ``foundation.errors.ServiceDown``).
    ``role`` picks the embedded identity (``store.identity``): readers read,
    ``store.schema`` runs its DDL as ``admin``.
    """
    url, db, tok = target(settings_or_url, database, token, role)
    form = {"q": influxql}
    if db:
        form["db"] = db
    if epoch:
        form["epoch"] = epoch
    if params:
        form["params"] = _params_json(params)
    shown = f"{influxql} (params {form['params']})" if params else influxql
    req = urllib.request.Request(
        f"{url}/query", data=urllib.parse.urlencode(form).encode(), method="POST"
    )
    req.add_header("Content-Type", "application/x-www-form-urlencoded")
    if tok:
        req.add_header("Authorization", authorization(tok))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        raise InfluxQueryError(
            f"InfluxDB answered HTTP {exc.code} ({server_message(text)}) to: {shown}"
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise InfluxDown(url, exc) from None
    try:
        payload = json.loads(body)
    except ValueError:
        raise InfluxError(
            f"what answers at {public_address(url)} is not InfluxDB (its reply to /query is not "
            "JSON); check influx.url / CITYWATCH_INFLUX_URL"
        ) from None
    if "error" in payload:
        raise InfluxQueryError(f"{payload['error']} in: {shown}")
    rows: list[dict[str, Any]] = []
    for result in payload.get("results", []):
        if "error" in result:
            raise InfluxQueryError(f"{result['error']} in: {shown}")
        for series in result.get("series", []):
            cols = series.get("columns", [])
            tags = series.get("tags") or {}
            name = series.get("name")
            for values in series.get("values") or []:
                row = dict(zip(cols, values, strict=False))
                row.update(tags)
                if name is not None:
                    row["_series"] = name
                rows.append(row)
    return rows


PING_TIMEOUT_S = 5.0
"""Seconds ``ping`` waits: a process that checks InfluxDB before it starts should learn of
an outage in seconds, not after a query's timeout."""


def ping(settings_or_url: Any, timeout: float = PING_TIMEOUT_S) -> None:
    """Return if InfluxDB answers at the settings' (or the given) URL; ``InfluxDown`` if not.

    ``GET /ping`` needs no credentials on 1.x, 2.x and the compatibility API of 3.x,
    so any HTTP answer counts: a wrong password is the query's to report, with
    the server's reason.
    """
    url = target(settings_or_url, None, "")[0]
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=timeout) as resp:
            resp.read()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise InfluxDown(url, exc) from None
