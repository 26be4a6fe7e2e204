"""InfluxDB 1.x with authentication on: citywatch reads and writes as the user its settings name.

A private influxd with ``auth-enabled = true`` (tests/kit/influxd.py): an
admin, a writer (the worker) and a reader (reports, Grafana), as
docs/contracts.md, "InfluxDB" prescribes for production.
"""

from __future__ import annotations

import asyncio

import pytest

from foundation.settings import load_settings
from store.errors import InfluxError, InfluxQueryError
from store.influxql import query
from store.writer import InfluxWriter
from tests.kit.influxd import PrivateInfluxd


@pytest.fixture
def secured(tmp_path):
    server = PrivateInfluxd(tmp_path, auth=True)
    server.start()
    # The first user may be created without credentials, and must be an admin.
    query(server.url, None, "CREATE USER admin WITH PASSWORD 'adm1n-pw' WITH ALL PRIVILEGES")
    admin = {"CITYWATCH_INFLUX_URL": server.url, "CITYWATCH_INFLUX_USERNAME": "admin",
             "CITYWATCH_INFLUX_PASSWORD": "adm1n-pw", "CITYWATCH_INFLUX_DATABASE": "cw"}  # fmt: skip
    s = load_settings(None, env=admin)
    query(s, None, 'CREATE DATABASE "cw"')
    query(s, None, "CREATE USER writer WITH PASSWORD 'wr1ter-pw'")
    query(s, None, 'GRANT WRITE ON "cw" TO writer')
    query(s, None, "CREATE USER reader WITH PASSWORD 'r3ader-pw'")
    query(s, None, 'GRANT READ ON "cw" TO reader')
    yield server
    server.kill()


def _as(server: PrivateInfluxd, user: str, password: str):  # type: ignore[no-untyped-def]
    return load_settings(None, env={"CITYWATCH_INFLUX_URL": server.url, "CITYWATCH_INFLUX_DATABASE": "cw",
                                    "CITYWATCH_INFLUX_USERNAME": user, "CITYWATCH_INFLUX_PASSWORD": password})  # fmt: skip


def _write(server: PrivateInfluxd, user: str, password: str, line: str) -> InfluxWriter:
    async def go() -> InfluxWriter:
        w = InfluxWriter(
            server.url, "cw", username=user, password=password, retry_initial_s=0.1, retry_max_s=0.2
        )
        await w.start()
        await w.add([line])
        try:
            await asyncio.wait_for(w.flush(), 3)
        except TimeoutError:
            pass  # a refused write is retried until stopped: the caller judges by what arrived
        try:
            await w.stop(timeout=1)
        except InfluxError as exc:
            assert "unwritten" in str(exc)  # refused lines are kept, never dropped silently
        return w

    return asyncio.run(go())


def test_without_credentials_a_secured_influxdb_answers_nothing(secured: PrivateInfluxd) -> None:
    with pytest.raises(InfluxQueryError, match="401"):
        query(secured.url, "cw", "SHOW MEASUREMENTS")


def test_the_writer_writes_and_the_reader_reads_with_their_own_credentials(
    secured: PrivateInfluxd,
) -> None:
    _write(secured, "writer", "wr1ter-pw", "penalty,entry_id=e1 amount_yuan=10000i 1700000000000")
    rows = query(_as(secured, "reader", "r3ader-pw"), None, "SELECT amount_yuan FROM penalty")
    assert [r["amount_yuan"] for r in rows] == [10000]


def test_the_reader_cannot_write_or_drop_the_ledger(secured: PrivateInfluxd) -> None:
    _write(secured, "writer", "wr1ter-pw", "penalty,entry_id=e1 amount_yuan=10000i 1700000000000")
    _write(secured, "reader", "r3ader-pw", "penalty,entry_id=e2 amount_yuan=99i 1700000000001")
    reader = _as(secured, "reader", "r3ader-pw")
    with pytest.raises(InfluxQueryError, match="403|not authorized|privilege"):
        query(reader, None, "DROP MEASUREMENT penalty")
    rows = query(reader, None, "SELECT amount_yuan FROM penalty")
    assert [r["amount_yuan"] for r in rows] == [10000]


def test_the_password_is_never_in_an_error_message(secured: PrivateInfluxd) -> None:
    wrong = _as(secured, "writer", "not-the-pw")
    with pytest.raises(InfluxQueryError) as err:
        query(wrong, None, "SHOW MEASUREMENTS")
    assert "not-the-pw" not in str(err.value)
    assert "not-the-pw" not in repr(wrong)
