"""Push the citywatch folder, datasource and dashboards into a running Grafana.

``push(url, token, ...)`` reads what Grafana has, compares it with what
citywatch wants, and writes only what differs, so a second push changes
nothing; the :class:`PushReport` says what was created, updated or left alone.
It speaks to Grafana's HTTP API through grafana-client (``GrafanaApi``), the
maintained fork of the abandoned grafana-api (docs/decisions/003).

Dashboards pushed here are ordinary dashboards in the citywatch folder. Do not
also provision the same uids from files: Grafana refuses API writes to
provisioned dashboards (docs/grafana.md).

The CLI calls :func:`main_push` with arguments declared by
:func:`add_push_arguments` (``citywatch grafana push --url --token``).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError

from citywatch.grafana import (
    DATASOURCE_NAME,
    DATASOURCE_TYPE,
    DATASOURCE_UID,
    FOLDER_TITLE,
    FOLDER_UID,
)
from foundation.errors import CitywatchError, ConfigError
from foundation.settings import Settings
from store.identity import as_role

TOKEN_ENV = "GRAFANA_TOKEN"
PUSH_MESSAGE = "citywatch grafana push"
_VOLATILE = ("id", "version")
"""Dashboard keys Grafana assigns itself; ignored when comparing."""


@dataclass
class PushReport:
    """What one push did. Items are ``folder:<uid>``, ``datasource:<uid>``, ``dashboard:<uid>``."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)

    def summary(self) -> str:
        parts = [
            f"{len(self.created)} created",
            f"{len(self.updated)} updated",
            f"{len(self.unchanged)} unchanged",
        ]
        return ", ".join(parts)

    def lines(self) -> list[str]:
        out = [f"created   {x}" for x in self.created]
        out += [f"updated   {x}" for x in self.updated]
        out += [f"unchanged {x}" for x in self.unchanged]
        return out + [self.summary()]


def datasource_model(
    datasource_url: str,
    database: str,
    *,
    influx_user: str = "",
    influx_password: str = "",
    influx_token: str = "",
) -> dict[str, Any]:
    """The datasource as citywatch wants it (same as the provisioning file).

    datasource_url: InfluxDB's address *as Grafana reaches it*.
    database: the 1.x database (or the v1-compatibility mapping on 2.x/3.x).
    influx_user / influx_password: InfluxDB 1.x credentials, if it has auth on.
    influx_token: a 2.x/3.x API token, sent as ``Authorization: Token ...``.
    """
    json_data: dict[str, Any] = {
        "version": "InfluxQL",
        "dbName": database,
        "httpMode": "POST",
        "timeInterval": "10s",
    }
    secure: dict[str, str] = {}
    model: dict[str, Any] = {
        "name": DATASOURCE_NAME,
        "uid": DATASOURCE_UID,
        "type": DATASOURCE_TYPE,
        "access": "proxy",
        "url": datasource_url,
        "isDefault": False,
        "jsonData": json_data,
    }
    if influx_user:
        model["user"] = influx_user
    if influx_password:
        secure["password"] = influx_password
    if influx_token:
        json_data["httpHeaderName1"] = "Authorization"
        secure["httpHeaderValue1"] = f"Token {influx_token}"
    if secure:
        model["secureJsonData"] = secure
    return model


def load_dashboards(dashboards_dir: str | Path | None) -> list[dict]:
    """Every ``*.json`` of ``dashboards_dir`` (sorted by name), or, with ``None``,
    the generator's own output (what an installed citywatch carries)."""
    if dashboards_dir is None:
        from citywatch.grafana.dashboards import build_all

        return list(build_all().values())
    folder = Path(dashboards_dir)
    files = sorted(folder.glob("*.json"))
    if not files:
        raise ConfigError(
            str(folder),
            None,
            "no dashboard *.json here; regenerate with "
            "`python -m citywatch.grafana.dashboards --out deploy/grafana`",
        )
    out = []
    for f in files:
        model = json.loads(f.read_text(encoding="utf-8"))
        if not model.get("uid"):
            raise ConfigError(
                str(f), None, "dashboard has no uid; push needs one to update it in place"
            )
        out.append(model)
    return out


def grafana_api(url: str, token: str | None, *, timeout: float = 10.0) -> GrafanaApi:
    """A ``GrafanaApi`` for ``url`` (may carry a sub-path, e.g. https://host/grafana,
    or ``user:password@`` for basic auth) authenticated with ``token`` if given."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise CitywatchError(
            f"Invalid Grafana URL {url!r}; use e.g. http://127.0.0.1:3000 or https://host/grafana"
        )
    if not token and not (parsed.username and parsed.password):
        raise CitywatchError(
            f"no Grafana credentials: pass --token (or set {TOKEN_ENV}) with a service-account "
            "token of role Editor or Admin, or put user:password@ in the URL"
        )
    # grafana-client glues its "api" straight onto the URL's path: give it a trailing slash.
    path = parsed.path if parsed.path.endswith("/") else parsed.path + "/"
    url = urlunparse(parsed._replace(path=path))
    return GrafanaApi.from_url(url, credential=token or None, timeout=timeout)


def _missing(exc: GrafanaClientError) -> bool:
    return exc.status_code == 404


def _comparable(dashboard: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in dashboard.items() if k not in _VOLATILE}


def _datasource_differs(have: Mapping[str, Any], want: Mapping[str, Any]) -> bool:
    for key, value in want.items():
        if key == "jsonData":
            have_json = have.get("jsonData") or {}
            if any(have_json.get(k) != v for k, v in value.items()):
                return True
        elif key == "secureJsonData":
            # Grafana never returns secrets, only which are set.
            fields = have.get("secureJsonFields") or {}
            if not all(fields.get(k) for k in value):
                return True
        elif have.get(key) != value:
            return True
    return False


def push(
    url: str,
    token: str | None,
    dashboards_dir: str | Path | None = None,
    datasource_url: str = "http://127.0.0.1:18086",
    database: str = "citywatch",
    *,
    influx_user: str = "",
    influx_password: str = "",
    influx_token: str = "",
    timeout: float = 10.0,
    api: GrafanaApi | None = None,
) -> PushReport:
    """Create or update the citywatch folder, datasource and dashboards in Grafana.

    url: Grafana's base URL. token: a service-account token (Bearer); may be
    ``None`` when ``url`` carries ``user:password@``. dashboards_dir: a folder
    of dashboard JSON (``deploy/grafana/dashboards``), or ``None`` for the
    generator's output. datasource_url, database, influx_*: the InfluxDB
    datasource, see :func:`datasource_model`. api: an existing ``GrafanaApi``
    (then url/token/timeout are not used).

    Idempotent: each object is read first and written only if it differs
    (dashboards compared whole, ignoring Grafana's id and version; the
    datasource on the keys citywatch sets). Errors from Grafana propagate as
    grafana-client exceptions, after whatever was already written.
    """
    dashboards = load_dashboards(dashboards_dir)
    gapi = api or grafana_api(url, token, timeout=timeout)
    report = PushReport()
    _push_folder(gapi, report)
    want_ds = datasource_model(
        datasource_url,
        database,
        influx_user=influx_user,
        influx_password=influx_password,
        influx_token=influx_token,
    )
    _push_datasource(gapi, want_ds, report)
    for model in dashboards:
        _push_dashboard(gapi, model, report)
    return report


def _push_folder(gapi: GrafanaApi, report: PushReport) -> None:
    item = f"folder:{FOLDER_UID}"
    try:
        have = gapi.folder.get_folder(FOLDER_UID)
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        gapi.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
        report.created.append(item)
        return
    if have.get("title") == FOLDER_TITLE:
        report.unchanged.append(item)
    else:
        gapi.folder.update_folder(FOLDER_UID, title=FOLDER_TITLE, overwrite=True)
        report.updated.append(item)


def _push_datasource(gapi: GrafanaApi, want: dict[str, Any], report: PushReport) -> None:
    item = f"datasource:{DATASOURCE_UID}"
    try:
        have = gapi.datasource.get_datasource_by_uid(DATASOURCE_UID)
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        gapi.datasource.create_datasource(want)
        report.created.append(item)
        return
    if _datasource_differs(have, want):
        body = dict(want)
        body["jsonData"] = {**(have.get("jsonData") or {}), **want["jsonData"]}
        body["jsonData"].pop("database", None)  # the deprecated spelling of dbName
        gapi.datasource.update_datasource_by_uid(DATASOURCE_UID, body)
        report.updated.append(item)
    else:
        report.unchanged.append(item)


def _push_dashboard(gapi: GrafanaApi, model: dict[str, Any], report: PushReport) -> None:
    uid = model["uid"]
    item = f"dashboard:{uid}"
    try:
        have = gapi.dashboard.get_dashboard(uid)
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        have = None
    if have is not None:
        same = _comparable(have.get("dashboard") or {}) == _comparable(model)
        if same and (have.get("meta") or {}).get("folderUid") == FOLDER_UID:
            report.unchanged.append(item)
            return
    body = {
        "dashboard": {**_comparable(model), "id": None},
        "folderUid": FOLDER_UID,
        "overwrite": True,
        "message": PUSH_MESSAGE,
    }
    gapi.dashboard.update_dashboard(body)
    (report.created if have is None else report.updated).append(item)


# --------------------------------------------------------------------------- CLI glue


def add_push_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``citywatch grafana push``'s options on ``parser``."""
    parser.add_argument("--url", required=True, help="Grafana base URL, e.g. http://127.0.0.1:3000")
    parser.add_argument(
        "--token", default=None, help=f"service-account token (default: ${TOKEN_ENV})"
    )
    parser.add_argument(
        "--dashboards-dir",
        default=None,
        help="folder of dashboard JSON to push (default: the dashboards built into citywatch)",
    )
    parser.add_argument(
        "--datasource-url",
        default=None,
        help="InfluxDB URL as Grafana reaches it (default: the influx.url setting)",
    )
    parser.add_argument(
        "--database", default=None, help="InfluxDB database (default: the influx.database setting)"
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per Grafana request")


def main_push(args: argparse.Namespace, settings: Any = None, print_: Any = print) -> int:
    """Run a push from parsed arguments; ``settings`` (citywatch Settings) gives
    the InfluxDB defaults. Prints one line per object and a summary; returns 0."""
    if isinstance(settings, Settings):
        settings = as_role(settings, "reader")  # Grafana's data source only reads
    influx = getattr(settings, "influx", None)
    datasource_url = args.datasource_url or getattr(influx, "url", None) or "http://127.0.0.1:18086"
    database = args.database or getattr(influx, "database", None) or "citywatch"
    token = args.token or os.environ.get(TOKEN_ENV) or None
    report = push(
        args.url,
        token,
        args.dashboards_dir,
        datasource_url,
        database,
        influx_user=getattr(influx, "username", "") or "",
        influx_password=getattr(influx, "password", "") or "",
        influx_token=getattr(influx, "token", "") or "",
        timeout=getattr(args, "timeout", 10.0),
    )
    for line in report.lines():
        print_(line)
    return 0
