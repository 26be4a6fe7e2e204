"""Database set-up (store/schema.py) against the real InfluxDB 1.6.7: retention
policies, continuous queries, and the ledger's RP."""

from __future__ import annotations

import pytest

from store.influxql import query
from store.schema import (
    CASE_EVENT,
    LEDGER_RP,
    PENALTY,
    create_database,
    drop_database,
    ensure_database,
)


def test_ensure_database_creates_db_rps_and_cqs_idempotently(settings):
    db = settings.influx.database
    ensure_database(settings)
    ensure_database(settings, db)  # again: no error, no change

    rps = {r["name"]: r for r in query(settings, None, f'SHOW RETENTION POLICIES ON "{db}"')}
    assert rps["raw"]["duration"] == "720h0m0s" and rps["raw"]["default"] is True
    assert rps["long"]["duration"] == "17520h0m0s" and rps["long"]["default"] is False
    assert rps[LEDGER_RP]["duration"] == "0s" and rps[LEDGER_RP]["default"] is False  # kept forever
    cqs = [r for r in query(settings, None, "SHOW CONTINUOUS QUERIES") if r["_series"] == db]
    assert sorted(r["name"].rsplit("_", 1)[0] for r in cqs) == [
        "cq_dust_1m",
        "cq_manhole_1m",
        "cq_platecam_1m",
        "cq_streetlight_1m",
        "cq_vehicle_1m",  # a truck's minute-mean position and speed, kept two years
        "cq_weighstation_1m",
    ]
    dust = next(r["query"] for r in cqs if r["name"].startswith("cq_dust_1m"))
    assert "mean(pm10) AS pm10" in dust and f"INTO {db}.long.dust FROM {db}.raw.dust" in dust
    assert "GROUP BY time(1m), *" in dust

    # a changed configuration replaces what it changes, nothing else
    ensure_database(settings, raw_duration="7d", downsample={"dust": ("pm10",)}, every="5m")
    rps = {r["name"]: r for r in query(settings, None, f'SHOW RETENTION POLICIES ON "{db}"')}
    assert rps["raw"]["duration"] == "168h0m0s" and rps["raw"]["default"] is True
    cqs = [r for r in query(settings, None, "SHOW CONTINUOUS QUERIES") if r["_series"] == db]
    assert len(cqs) == 1 and cqs[0]["name"].startswith("cq_dust_5m_")
    assert "SELECT mean(pm10) AS pm10 INTO" in cqs[0]["query"]


def test_ensure_database_refuses_bad_durations():
    with pytest.raises(ValueError, match="Invalid 'raw_duration' argument '30 days'"):
        ensure_database("http://127.0.0.1:1", "db", raw_duration="30 days")


def test_qualified_names_of_the_ledger_measurements():
    assert PENALTY == '"ledger"."penalty"' and CASE_EVENT == '"ledger"."case_event"'


def test_create_and_drop_a_database_with_an_awkward_name(settings):
    db = settings.influx.database + " a-b 数据"  # 1.x refuses quotes in a name ("invalid name")
    assert create_database(settings, db) == db
    assert db in {r["name"] for r in query(settings, None, "SHOW DATABASES")}
    drop_database(settings, db)
    drop_database(settings, db)  # gone already: no error
    assert db not in {r["name"] for r in query(settings, None, "SHOW DATABASES")}
