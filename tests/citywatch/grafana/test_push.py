"""``citywatch.grafana.push`` against a stand-in for Grafana's HTTP API.

Grafana cannot run on this machine (README, "Tests"), so ``MockGrafanaServer`` is a
mock: a stdlib HTTP server in a thread that keeps folders, datasources and
dashboards the way Grafana's API does (ids and versions it assigns itself,
secrets never returned, extra keys of its own in what it returns) and records
every request, so the tests check the exact paths and bodies grafana-client
sends and that a second push writes nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from citywatch.grafana import DATASOURCE_UID, FOLDER_TITLE, FOLDER_UID
from citywatch.grafana.dashboards import build_all
from citywatch.grafana.push import add_push_arguments, main_push, push
from foundation.errors import CitywatchError

ROOT = Path(__file__).resolve().parents[3]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
TOKEN = "glsa_test_token"
UIDS = sorted(m["uid"] for m in build_all().values())


class MockGrafanaServer:
    """A mock of the part of Grafana's HTTP API that push uses, under an optional sub-path."""

    def __init__(self, token: str = TOKEN, prefix: str = "") -> None:
        self.token = token
        self.prefix = prefix
        self.requests: list[dict] = []
        self.folders: dict[str, dict] = {}
        self.datasources: dict[str, dict] = {}
        self.dashboards: dict[str, dict] = {}
        self._ids = 0
        mock = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                path = self.path.split("?")[0]
                mock.requests.append(
                    {
                        "method": self.command,
                        "path": path,
                        "body": body,
                        "auth": self.headers.get("Authorization"),
                    }
                )
                status, payload = mock.route(
                    self.command, path, body, self.headers.get("Authorization")
                )
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{self.prefix}"

    def __enter__(self) -> MockGrafanaServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def writes(self) -> list[dict]:
        return [r for r in self.requests if r["method"] != "GET"]

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    # ------------------------------------------------------------------ the API
    def route(self, method: str, path: str, body, auth):  # noqa: C901 - one table of routes
        if auth != f"Bearer {self.token}":
            return 401, {"message": "Unauthorized"}
        if not path.startswith(self.prefix + "/api/"):
            return 404, {"message": "Not found"}
        path = path[len(self.prefix) + len("/api") :]
        if m := re.fullmatch(r"/folders/([^/]+)", path):
            uid = m.group(1)
            if uid not in self.folders:
                return 404, {"message": "folder not found", "status": "not-found"}
            if method == "GET":
                return 200, self.folders[uid]
            if method == "PUT":
                self.folders[uid].update(
                    title=body["title"], version=self.folders[uid]["version"] + 1
                )
                return 200, self.folders[uid]
        if path == "/folders" and method == "POST":
            if body.get("uid") in self.folders:
                return 409, {"message": "a folder with the same uid already exists"}
            folder = {
                "id": self._next_id(),
                "uid": body["uid"],
                "title": body["title"],
                "version": 1,
                "url": f"/dashboards/f/{body['uid']}/",
            }
            self.folders[body["uid"]] = folder
            return 200, folder
        if m := re.fullmatch(r"/datasources/uid/([^/]+)", path):
            uid = m.group(1)
            if uid not in self.datasources:
                return 404, {"message": "Data source not found"}
            if method == "GET":
                return 200, self._public_datasource(self.datasources[uid])
            if method == "PUT":
                stored = self.datasources[uid]
                self.datasources[uid] = {
                    **copy.deepcopy(body),
                    "id": stored["id"],
                    "uid": uid,
                    "version": stored["version"] + 1,
                }
                return 200, {"message": "Datasource updated", "id": stored["id"]}
        if path == "/datasources" and method == "POST":
            if any(d["name"] == body["name"] for d in self.datasources.values()):
                return 409, {"message": "data source with the same name already exists"}
            ds = {**copy.deepcopy(body), "id": self._next_id(), "version": 1}
            self.datasources[body["uid"]] = ds
            return 200, {
                "message": "Datasource added",
                "id": ds["id"],
                "datasource": self._public_datasource(ds),
            }
        if m := re.fullmatch(r"/dashboards/uid/([^/]+)", path):
            uid = m.group(1)
            if uid not in self.dashboards:
                return 404, {"message": "Dashboard not found"}
            stored = self.dashboards[uid]
            return 200, {
                "dashboard": copy.deepcopy(stored["dashboard"]),
                "meta": {"folderUid": stored["folderUid"], "provisioned": False, "slug": uid},
            }
        if path == "/dashboards/db" and method == "POST":
            model = copy.deepcopy(body["dashboard"])
            uid = model["uid"]
            old = self.dashboards.get(uid)
            if old and not body.get("overwrite"):
                return 412, {
                    "message": "The dashboard has been changed by someone else",
                    "status": "version-mismatch",
                }
            model["id"] = old["dashboard"]["id"] if old else self._next_id()
            model["version"] = old["dashboard"]["version"] + 1 if old else 1
            self.dashboards[uid] = {"dashboard": model, "folderUid": body.get("folderUid")}
            return 200, {
                "id": model["id"],
                "uid": uid,
                "status": "success",
                "version": model["version"],
            }
        return 404, {"message": f"no route {method} {path}"}

    @staticmethod
    def _public_datasource(ds: dict) -> dict:
        out = {k: copy.deepcopy(v) for k, v in ds.items() if k != "secureJsonData"}
        out.setdefault("orgId", 1)
        out.setdefault("basicAuth", False)
        out.setdefault("withCredentials", False)
        out.setdefault("readOnly", False)
        out["secureJsonFields"] = dict.fromkeys(ds.get("secureJsonData") or {}, True)
        return out


@pytest.fixture
def grafana():
    with MockGrafanaServer() as server:
        yield server


def _push(grafana: MockGrafanaServer, **kw):
    args = {
        "dashboards_dir": DASHBOARDS,
        "datasource_url": "http://influx.city:8086",
        "database": "citywatch",
    }
    args.update(kw)
    return push(grafana.url, TOKEN, **args)


def test_first_push_creates_folder_datasource_and_every_dashboard(grafana) -> None:
    report = _push(grafana)
    assert report.created == [
        f"folder:{FOLDER_UID}",
        f"datasource:{DATASOURCE_UID}",
        *(f"dashboard:{u}" for u in UIDS),
    ]
    assert report.updated == report.unchanged == []
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in grafana.requests)

    writes = grafana.writes()
    assert [(w["method"], w["path"]) for w in writes] == [
        ("POST", "/api/folders"),
        ("POST", "/api/datasources"),
        *[("POST", "/api/dashboards/db")] * 6,
    ]
    assert writes[0]["body"] == {"title": FOLDER_TITLE, "uid": FOLDER_UID}
    ds = writes[1]["body"]
    assert (ds["uid"], ds["type"], ds["access"], ds["url"]) == (
        DATASOURCE_UID,
        "influxdb",
        "proxy",
        "http://influx.city:8086",
    )
    assert ds["jsonData"] == {
        "version": "InfluxQL",
        "dbName": "citywatch",
        "httpMode": "POST",
        "timeInterval": "10s",
    }
    for w in writes[2:]:
        assert w["body"]["folderUid"] == FOLDER_UID and w["body"]["overwrite"] is True
        committed = json.loads(
            (DASHBOARDS / f"{_stem(w['body']['dashboard']['uid'])}.json").read_text(
                encoding="utf-8"
            )
        )
        assert w["body"]["dashboard"] == {
            **{k: v for k, v in committed.items() if k != "version"},
            "id": None,
        }
    assert sorted(grafana.dashboards) == UIDS


def _stem(uid: str) -> str:
    return {m["uid"]: name for name, m in build_all().items()}[uid]


def test_second_push_changes_nothing(grafana) -> None:
    _push(grafana)
    before = len(grafana.requests)
    report = _push(grafana)
    assert report.created == report.updated == []
    assert len(report.unchanged) == 8 and not report.changed
    assert [r for r in grafana.requests[before:] if r["method"] != "GET"] == [], (
        "a second push must only read"
    )
    assert report.summary() == "0 created, 0 updated, 8 unchanged"


def test_push_updates_only_what_drifted(grafana) -> None:
    _push(grafana)
    grafana.dashboards["citywatch-dust"]["dashboard"]["title"] = "edited in the UI"
    grafana.folders[FOLDER_UID]["title"] = "renamed"
    before = len(grafana.requests)
    report = _push(grafana, datasource_url="http://influx-2.city:8086")
    assert report.updated == [
        f"folder:{FOLDER_UID}",
        f"datasource:{DATASOURCE_UID}",
        "dashboard:citywatch-dust",
    ]
    writes = [r for r in grafana.requests[before:] if r["method"] != "GET"]
    assert [(w["method"], w["path"]) for w in writes] == [
        ("PUT", f"/api/folders/{FOLDER_UID}"),
        ("PUT", f"/api/datasources/uid/{DATASOURCE_UID}"),
        ("POST", "/api/dashboards/db"),
    ]
    assert writes[1]["body"]["url"] == "http://influx-2.city:8086"
    assert (
        grafana.dashboards["citywatch-dust"]["dashboard"]["title"] == build_all()["dust"]["title"]
    )
    assert grafana.dashboards["citywatch-dust"]["dashboard"]["version"] == 2
    assert not _push(grafana, datasource_url="http://influx-2.city:8086").changed


def test_existing_datasource_with_deprecated_database_key_is_fixed(grafana) -> None:
    grafana.datasources[DATASOURCE_UID] = {
        "id": 99,
        "uid": DATASOURCE_UID,
        "version": 3,
        "name": "citywatch InfluxDB",
        "type": "influxdb",
        "access": "proxy",
        "url": "http://influx.city:8086",
        "isDefault": False,
        "database": "citywatch",
        "jsonData": {"database": "citywatch", "httpMode": "GET", "keepCookies": []},
    }
    report = _push(grafana)
    assert f"datasource:{DATASOURCE_UID}" in report.updated
    put = next(r for r in grafana.requests if r["method"] == "PUT")
    assert put["body"]["jsonData"] == {
        "dbName": "citywatch",
        "httpMode": "POST",
        "keepCookies": [],
        "version": "InfluxQL",
        "timeInterval": "10s",
    }


def test_secrets_are_compared_by_presence_only(grafana) -> None:
    kw = {"influx_user": "grafana", "influx_password": "s3cret"}
    assert f"datasource:{DATASOURCE_UID}" in _push(grafana, **kw).created
    assert grafana.datasources[DATASOURCE_UID]["secureJsonData"] == {"password": "s3cret"}
    assert f"datasource:{DATASOURCE_UID}" in _push(grafana, **kw).unchanged


def test_push_without_a_directory_uses_the_generator(grafana) -> None:
    report = push(grafana.url, TOKEN, None, "http://influx.city:8086", "citywatch")
    assert len(report.created) == 8
    # and the committed files are the same dashboards: pushing them changes nothing
    assert not _push(grafana).changed


def test_grafana_under_a_sub_path() -> None:
    with MockGrafanaServer(prefix="/grafana") as grafana:
        report = push(grafana.url, TOKEN, DASHBOARDS, "http://influx.city:8086", "citywatch")
        assert len(report.created) == 8
        assert all(r["path"].startswith("/grafana/api/") for r in grafana.requests)


def test_wrong_token_fails_loudly(grafana) -> None:
    from grafana_client.client import GrafanaUnauthorizedError

    with pytest.raises(GrafanaUnauthorizedError):
        push(grafana.url, "wrong", DASHBOARDS, "http://influx.city:8086", "citywatch")
    assert grafana.writes() == []


def test_missing_credentials_and_bad_url_are_refused_before_any_request(
    grafana, monkeypatch
) -> None:
    with pytest.raises(CitywatchError, match="--token"):
        push(grafana.url, None, DASHBOARDS)
    with pytest.raises(CitywatchError, match="Invalid Grafana URL"):
        push("grafana.city:3000", TOKEN, DASHBOARDS)
    assert grafana.requests == []


def test_main_push_cli_glue(grafana, monkeypatch) -> None:
    parser = argparse.ArgumentParser()
    add_push_arguments(parser)
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    args = parser.parse_args(
        ["--url", grafana.url, "--dashboards-dir", str(DASHBOARDS), "--database", "cw"]
    )
    lines: list[str] = []

    class Influx:
        url = "http://influx.city:8086"
        database = "ignored-when-flag-given"
        token = ""

    class Settings:
        influx = Influx()

    assert main_push(args, Settings(), print_=lines.append) == 0
    assert lines[-1] == "8 created, 0 updated, 0 unchanged"
    ds = grafana.datasources[DATASOURCE_UID]
    assert (ds["url"], ds["jsonData"]["dbName"]) == ("http://influx.city:8086", "cw")
