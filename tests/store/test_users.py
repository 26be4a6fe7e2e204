"""The embedded InfluxDB's identities (store/users.py, store/identity.py) on a private
influxd with authentication on, as ``citywatch services up`` runs its own: an admin
citywatch creates itself, a writer that only writes, a reader that only reads."""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from foundation.settings import Settings, load_settings
from store.errors import InfluxQueryError
from store.identity import ROLES, as_role, auth_dir, credentials
from store.influxql import basic, query, target
from store.schema import create_database
from store.users import InfluxIdentityError, accepts_anonymous, ensure_users
from tests.kit.influxd import PrivateInfluxd

NOW = int(time.time() * 1000)
"""Point times (ms) inside the raw retention policy's 30 days."""


def _settings(server: PrivateInfluxd, state: Path) -> Settings:
    return load_settings(
        None,
        env={
            "CITYWATCH_INFLUX_URL": server.url,
            "CITYWATCH_INFLUX_DATABASE": "citywatch",
            "CITYWATCH_PATHS_STATE_DIR": str(state),
        },
    )


@pytest.fixture
def embedded(tmp_path: Path):
    (tmp_path / "influx").mkdir()
    server = PrivateInfluxd(tmp_path / "influx", auth=True)
    server.start()
    settings = _settings(server, tmp_path / "state")
    ensure_users(settings)
    yield server, settings
    server.kill()


def _write(url: str, db: str, line: str, auth: str) -> int:
    req = urllib.request.Request(
        f"{url}/write?{urllib.parse.urlencode({'db': db, 'precision': 'ms'})}", data=line.encode()
    )
    if auth:
        req.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_secrets_are_kept_owner_only_one_file_per_role(embedded) -> None:
    _, settings = embedded
    for user in ROLES.values():
        path = auth_dir(settings) / user
        assert path.stat().st_mode & 0o777 == 0o600
        assert len(path.read_text().strip()) >= 32
    assert auth_dir(settings).stat().st_mode & 0o777 == 0o700


def test_nobody_without_a_secret_writes_reads_or_drops(embedded) -> None:
    server, _ = embedded
    assert _write(server.url, "citywatch", f"penalty amount=1i {NOW}", "") == 401
    assert not accepts_anonymous(server.url)
    with pytest.raises(InfluxQueryError, match="401|unable to parse authentication"):
        query(server.url, "citywatch", "DROP MEASUREMENT penalty")
    with pytest.raises(InfluxQueryError, match="authorization failed"):
        query(server.url, "citywatch", "SHOW DATABASES", token=basic(ROLES["admin"], "a guess"))


def test_the_writer_writes_but_cannot_read_or_drop(embedded) -> None:
    server, settings = embedded
    writer = target(settings, None, None, "writer")[2]
    assert _write(server.url, "citywatch", f"penalty amount=1i {NOW}", writer) == 204
    with pytest.raises(InfluxQueryError, match="requires READ"):
        query(settings, None, "SELECT * FROM penalty", role="writer")
    with pytest.raises(InfluxQueryError, match="requires admin"):
        query(settings, None, "DROP MEASUREMENT penalty", role="writer")


def test_the_reader_reads_but_cannot_write_or_drop(embedded) -> None:
    server, settings = embedded
    assert (
        _write(
            server.url,
            "citywatch",
            f"penalty amount=7i {NOW}",
            target(settings, None, None, "writer")[2],
        )
        == 204
    )
    assert [r["amount"] for r in query(settings, None, "SELECT amount FROM penalty")] == [7]
    reader = target(settings, None, None, "reader")[2]
    assert _write(server.url, "citywatch", f"penalty amount=1i {NOW + 1}", reader) == 403
    for statement in ("DROP MEASUREMENT penalty", 'DROP DATABASE "citywatch"'):
        with pytest.raises(InfluxQueryError, match="requires admin"):
            query(settings, None, statement)


def test_a_database_created_later_is_granted_to_writer_and_reader(embedded) -> None:
    server, settings = embedded
    create_database(settings, "another")
    assert (
        _write(server.url, "another", f"m v=1 {NOW}", target(settings, None, None, "writer")[2])
        == 204
    )
    assert len(query(settings, "another", "SELECT * FROM m")) == 1


def test_ensure_users_again_changes_nothing_and_keeps_the_secrets(embedded) -> None:
    server, settings = embedded
    before = {u: (auth_dir(settings) / u).read_text() for u in ROLES.values()}
    ensure_users(settings)
    assert before == {u: (auth_dir(settings) / u).read_text() for u in ROLES.values()}
    users = {r["user"]: r["admin"] for r in query(settings, None, "SHOW USERS", role="admin")}
    assert users == {"citywatch-admin": True, "citywatch-writer": False, "citywatch-reader": False}


def test_another_state_folder_is_refused_naming_where_its_secrets_are(embedded, tmp_path) -> None:
    server, _ = embedded
    stranger = _settings(server, tmp_path / "other-state")
    with pytest.raises(
        InfluxIdentityError, match=r"refuses citywatch-admin's secret kept in .*other-state"
    ):
        ensure_users(stranger)


def test_an_operators_own_user_is_used_as_is_for_every_role(tmp_path) -> None:
    s = load_settings(None, env={"CITYWATCH_INFLUX_USERNAME": "ops", "CITYWATCH_INFLUX_PASSWORD": "pw",
                                 "CITYWATCH_PATHS_STATE_DIR": str(tmp_path)})  # fmt: skip
    for role in ROLES:
        assert as_role(s, role).influx.username == "ops"  # type: ignore[arg-type]
    assert credentials(s, "writer")["password"] == "pw"
