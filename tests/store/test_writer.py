"""The InfluxDB writer (store/writer.py) against the real InfluxDB 1.6.7.

The shared server (``settings``) for values, ledger sums, partial writes and
setup; a PRIVATE influxd started by these tests (its own port and data dir,
never the shared one) for the outage and back-pressure tests; and
``FakeInfluxV2Server``, a small aiohttp stand-in that records requests, for the
v2 API path (influxdb-client's asyncio client; no InfluxDB 2.x can be installed
here) and for the HTTP answers a 1.x server never gives (429 with Retry-After,
a 2.x-style whole-batch 400).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time

import pytest
from aiohttp import web

from contract.reading import Reading
from registry.devices import Device
from store import points
from store.errors import InfluxError
from store.identity import credentials
from store.influxql import query
from store.schema import create_database
from store.writer import InfluxWriter
from tests.kit.influxd import PrivateInfluxd, free_port

NOW = (int(time.time()) // 60) * 60_000 - 3_600_000  # an hour ago, on a minute


def create_db(settings) -> str:
    return create_database(settings)


def run(coro):
    return asyncio.run(coro)


# ------------------------------------------------------------------ constructor


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(precision="x"),
            "Invalid 'precision' argument 'x'; valid options: ('ms', 's', 'us', 'ns')",
        ),
        (dict(batch_size=0), "Invalid 'batch_size' argument 0; expected an int > 0"),
        (
            dict(max_buffer=10),
            "Invalid 'max_buffer' argument 10; expected an int >= batch_size (5000)",
        ),
        (
            dict(url="localhost:8086"),
            "Invalid 'url' argument 'localhost:8086'; expected a base URL",
        ),
        (
            dict(retry_max_s=0.1),
            "Invalid 'retry_max_s' argument 0.1; expected a number of seconds >= retry_initial_s",
        ),
        (dict(org="city"), "org is set but token is empty"),
    ],
)
def test_constructor_names_the_fix(kwargs, message):
    args = dict(url="http://127.0.0.1:8086", database="db") | kwargs
    with pytest.raises(ValueError) as exc:
        InfluxWriter(**args)
    assert message in str(exc.value)


def test_add_before_start_says_how():
    w = InfluxWriter("http://127.0.0.1:8086", "db")
    assert w.try_add(["m v=1 1"]) is False
    with pytest.raises(InfluxError, match="await writer.start"):
        run(w.add(["m v=1 1"]))


# ------------------------------------------------------------------ exact values on the real server


def _dev(i: int) -> Device:
    return Device(
        f"MH-{i:04d}",
        "manhole",
        "jinshui" if i % 2 else "erqi",
        f"g-{i % 3}",
        f"Unit {i % 2}",
        "main",
        "",
        None,
        None,
        None,
        None,
        None,
    )


def test_points_are_found_with_exact_values(settings):
    db = create_db(settings)
    readings = [
        Reading(
            f"MH-{i:04d}",
            "manhole",
            _dev(i).district,
            NOW + i * 1000,
            NOW + i * 1000 + 7,
            {"open": i % 2 == 0, "tilt_deg": i if i % 3 else i + 0.25, "rssi": -70 - i},
        )
        for i in range(50)
    ]
    lines = [points.telemetry_line(r, _dev(i)) for i, r in enumerate(readings)]

    async def go():
        async with InfluxWriter(
            settings.influx.url, db, **credentials(settings, "admin"), flush_interval_s=0.05
        ) as w:
            await w.add(lines)
        return w.stats

    stats = run(go())
    assert stats.written == 50 and stats.rejected == 0 and stats.buffered == 0
    rows = query(settings, None, "SELECT * FROM manhole ORDER BY time")
    assert len(rows) == 50
    for i, row in enumerate(rows):
        assert row["time"] == NOW + i * 1000
        assert (
            row["device"] == f"MH-{i:04d}"
            and row["grid"] == f"g-{i % 3}"
            and row["unit"] == f"Unit {i % 2}"
        )
        assert row["district"] == _dev(i).district
        assert row["open"] is (i % 2 == 0)
        assert row["tilt_deg"] == (i if i % 3 else i + 0.25) and row["rssi"] == -70 - i
    series = {r["key"] for r in query(settings, None, "SHOW SERIES FROM manhole")}
    assert len(series) == 50
    types = {
        r["fieldKey"]: r["fieldType"] for r in query(settings, None, "SHOW FIELD KEYS FROM manhole")
    }
    assert types == {"open": "boolean", "tilt_deg": "float", "rssi": "float"}


def _entry(i, case, amount, at, hour=None, reverses=None, payer_type="property_unit"):
    return {
        "id": i,
        "case_id": case,
        "rule": "manhole",
        "device": "MH-0001",
        "payer": "Water Co" if payer_type == "property_unit" else "jinshui",
        "payer_type": payer_type,
        "district": "jinshui",
        "amount_yuan": amount,
        "accrued_at": at,
        "hour_index": hour,
        "reverses": reverses,
        "evidence": [],
    }


def test_two_reversals_at_one_instant_both_survive_and_sum_is_the_ledger_net(settings):
    db = create_db(settings)
    case = "MH-0001:1"
    h = 3_600_000
    ledger = [
        _entry(f"{case}:1", case, 10_000, NOW, 1),
        _entry(f"{case}:2", case, 10_000, NOW + h, 2),
        _entry(f"{case}:3", case, 10_000, NOW + 2 * h, 3),
        _entry(
            f"{case}:acc:gov", case, 500_000, NOW + 2 * h, None, payer_type="district_government"
        ),
        # two reversals booked at the same watermark instant, for the same case
        _entry(f"{case}:2:rev", case, -10_000, NOW + 3 * h, None, f"{case}:2"),
        _entry(f"{case}:3:rev", case, -10_000, NOW + 3 * h, None, f"{case}:3"),
    ]

    async def go():
        async with InfluxWriter(
            settings.influx.url, db, **credentials(settings, "admin"), flush_interval_s=0.05
        ) as w:
            await w.add(points.penalty_line(e) for e in ledger)

    run(go())
    rows = query(settings, None, "SELECT * FROM penalty")
    assert len(rows) == len(ledger)
    got = {r["entry_id"]: r for r in rows}
    for e in ledger:
        r = got[e["id"]]
        assert r["amount_yuan"] == e["amount_yuan"] and type(r["amount_yuan"]) is int
        assert r["time"] == e["accrued_at"] and r["case_id"] == case
        assert r["reverses"] == (e["reverses"] or "")
        assert r["hour_index"] == (-1 if e["hour_index"] is None else e["hour_index"])
    total = query(
        settings,
        None,
        "SELECT sum(amount_yuan) FROM penalty WHERE case_id = $case",
        params={"case": case},
    )
    assert total[0]["sum"] == sum(e["amount_yuan"] for e in ledger) == 510_000
    types = {
        r["fieldKey"]: r["fieldType"] for r in query(settings, None, "SHOW FIELD KEYS FROM penalty")
    }
    assert types["amount_yuan"] == "integer" and types["hour_index"] == "integer"


def test_a_malformed_line_is_skipped_and_does_not_wedge_the_pipeline(settings, caplog):
    db = create_db(settings)
    good = [f"m,k=a v={i} {NOW + i}" for i in range(10)]
    bad = "m,k=a v=oops-not-a-number 123"
    conflict = f"m,k=a v=5i {NOW + 100}"  # integer into a float field: a type conflict

    async def go():
        async with InfluxWriter(
            settings.influx.url, db, **credentials(settings, "admin"), flush_interval_s=0.05
        ) as w:
            await w.add(good[:5] + [bad] + good[5:])
            await w.flush()
            await w.add([conflict])
            await w.flush()
            await w.add([f"m,k=a v=99 {NOW + 200}"])
        return w.stats

    stats = run(go())
    assert stats.rejected == 2 and stats.written == 11 and stats.retries == 0
    assert "v=oops-not-a-number" in caplog.text and "field type conflict" in caplog.text
    rows = query(settings, None, "SELECT v FROM m")
    assert [r["v"] for r in rows] == list(range(10)) + [99]


def test_retry_after_a_lost_response_stores_each_point_once(settings):
    """Idempotence the retry relies on: the same lines written twice are stored once."""
    db = create_db(settings)
    lines = [points.penalty_line(_entry(f"e{i}", "c", 10_000, NOW + i)) for i in range(20)]

    async def go():
        async with InfluxWriter(
            settings.influx.url, db, **credentials(settings, "admin"), flush_interval_s=0.05
        ) as w:
            await w.add(lines)
            await w.flush()
            await w.add(lines)  # as if the first response had been lost

    run(go())
    assert (
        query(settings, None, "SELECT count(amount_yuan), sum(amount_yuan) FROM penalty")[0]["sum"]
        == 200_000
    )
    assert query(settings, None, "SELECT count(amount_yuan) FROM penalty")[0]["count"] == 20


# ------------------------------------------------------------------ a private influxd (outage)


@pytest.fixture
def private_influxd(tmp_path):
    assert shutil.which("influxd") or os.access("/usr/bin/influxd", os.X_OK), (
        "influxd not installed: `make test` installs it (scripts/setup.sh), or apt-get install -y influxdb"
    )
    server = PrivateInfluxd(tmp_path)
    yield server
    server.kill()


def _stream_line(i: int) -> str:
    return f"outage,device=D{i % 7} seq={i}i,v={i * 0.5} {NOW + i}"


def _assert_every_point_once(url: str, n: int) -> None:
    rows = query(url, "cw", "SELECT seq, v, device FROM outage")
    assert len(rows) == n
    for row in rows:
        i = row["time"] - NOW
        assert row["seq"] == i and row["v"] == i * 0.5 and row["device"] == f"D{i % 7}"
    assert sorted(r["seq"] for r in rows) == list(range(n))


def test_influxd_killed_mid_stream_loses_nothing_and_doubles_nothing(private_influxd):
    srv = private_influxd
    srv.start()
    query(srv.url, None, "CREATE DATABASE cw")
    n = 30_000

    async def go():
        w = InfluxWriter(
            srv.url,
            "cw",
            batch_size=1000,
            flush_interval_s=0.02,
            max_buffer=50_000,
            retry_initial_s=0.05,
            retry_max_s=0.2,
            request_timeout_s=5,
        )
        await w.start()
        for start in range(0, n, 500):
            await w.add(_stream_line(i) for i in range(start, start + 500))
            if start == 10_000:
                await asyncio.sleep(0.05)  # let batches be in flight
                srv.kill()
            if start == 20_000:
                assert w.stats.retries > 0 and w.stats.buffered > 0
                await asyncio.to_thread(srv.start)  # same data dir
            await asyncio.sleep(0.002)
        await w.stop(timeout=30)
        return w.stats

    stats = run(go())
    assert stats.buffered == 0 and stats.rejected == 0 and stats.retries > 0
    assert stats.written >= n  # a batch whose answer was lost in the kill may be counted twice
    _assert_every_point_once(srv.url, n)


def test_backpressure_while_down_then_everything_written(private_influxd):
    srv = private_influxd  # not started yet: the server is down

    async def go():
        w = InfluxWriter(
            srv.url,
            "cw",
            batch_size=100,
            max_buffer=300,
            flush_interval_s=0.02,
            retry_initial_s=0.05,
            retry_max_s=0.2,
            request_timeout_s=5,
        )
        await w.start()
        assert w.try_add([_stream_line(i) for i in range(0, 200)]) is True
        assert w.try_add([_stream_line(i) for i in range(200, 300)]) is True
        assert w.try_add([_stream_line(300)]) is False  # full: refused, nothing dropped
        assert w.buffered == 300
        blocked = asyncio.ensure_future(w.add([_stream_line(i) for i in range(300, 400)]))
        await asyncio.sleep(0.5)
        assert not blocked.done()  # add() waits: back-pressure
        assert w.buffered == 300 and w.stats.retries > 0 and w.stats.last_error
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(w.add([_stream_line(999)]), 0.2)
        # the server returns
        await asyncio.to_thread(srv.start)
        await asyncio.to_thread(query, srv.url, None, "CREATE DATABASE cw")
        await asyncio.wait_for(blocked, 15)
        await asyncio.wait_for(w.flush(), 15)
        assert w.try_add([_stream_line(i) for i in range(400, 500)]) is True
        await w.stop(timeout=15)
        return w.stats

    stats = run(go())
    assert stats.buffered == 0 and stats.rejected == 0
    _assert_every_point_once(srv.url, 500)


def test_stop_with_timeout_reports_what_was_not_written(private_influxd):
    async def go():
        w = InfluxWriter(private_influxd.url, "cw", retry_initial_s=0.05, retry_max_s=0.1)
        await w.start()
        await w.add(["m v=1 1", "m v=2 2"])
        with pytest.raises(InfluxError, match="stopped with 2 lines unwritten"):
            await w.stop(timeout=0.3)

    run(go())


# ------------------------------------------------------------------ v2 path (stand-in server)


class FakeInfluxV2Server:
    """A STAND-IN for InfluxDB 2.x's write API (no 2.x server can run here).

    Records every request (method, path, query, headers, body lines) and answers
    from ``script`` (a list of (status, headers, body) used in order, then 204).
    Lines containing ``reject_marker`` make the whole request fail with 400, as
    2.x does for a batch with an unparsable line.
    """

    def __init__(self, script=None, reject_marker: str | None = None, port: int = 0):
        self.port = port
        self.script = list(script or [])
        self.reject_marker = reject_marker
        self.requests: list[dict] = []
        self.stored: list[str] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = (await request.read()).decode()
        lines = [line for line in body.split("\n") if line]
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "headers": dict(request.headers),
                "lines": lines,
                "t": time.monotonic(),
            }
        )
        if self.script:
            status, headers, text = self.script.pop(0)
            return web.Response(status=status, headers=headers, text=text)
        if self.reject_marker and any(self.reject_marker in line for line in lines):
            return web.json_response(
                {"code": "invalid", "message": "unable to parse points"}, status=400
            )
        self.stored.extend(lines)
        return web.Response(status=204)

    async def __aenter__(self):
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc):
        await self.runner.cleanup()


def test_v2_path_url_params_authorization_and_body():
    lines = [f"penalty,case_id=c,entry_id=e{i} amount_yuan=10000i {NOW + i}" for i in range(7)]

    async def go():
        async with FakeInfluxV2Server() as fake:
            w = InfluxWriter(
                fake.url, "citywatch", token="s3cr3t==", org="zhengzhou city", flush_interval_s=0.05
            )
            assert w.api == "v2"
            async with w:
                await w.add(lines)
            return fake

    fake = run(go())
    assert len(fake.requests) == 1
    req = fake.requests[0]
    assert req["method"] == "POST" and req["path"] == "/api/v2/write"
    assert req["query"] == {"org": "zhengzhou city", "bucket": "citywatch", "precision": "ms"}
    assert req["headers"]["Authorization"] == "Token s3cr3t=="
    assert req["headers"]["Content-Type"].startswith("text/plain")
    assert req["headers"]["User-Agent"].startswith("influxdb-client-python/")  # the client sent it
    assert req["lines"] == lines


def test_v2_path_with_retention_policy_writes_into_bucket_db_slash_rp():
    async def go():
        async with FakeInfluxV2Server() as fake:
            async with InfluxWriter(
                fake.url, "cw", token="t", org="o", retention_policy="ledger", flush_interval_s=0.05
            ) as w:
                await w.add(["m v=1 1"])
            return fake

    req = run(go()).requests[0]
    assert req["path"] == "/api/v2/write"
    assert req["query"] == {"org": "o", "bucket": "cw/ledger", "precision": "ms"}


def test_v2_429_and_503_from_the_client_back_off_and_keep_order():
    """influxdb-client raises ApiException (status, Retry-After); the writer backs off on it."""

    async def go():
        script = [
            (429, {"Retry-After": "0.3"}, '{"code":"too many requests","message":"slow down"}'),
            (503, {}, '{"code":"unavailable","message":"try later"}'),
        ]
        async with FakeInfluxV2Server(script) as fake:
            async with InfluxWriter(
                fake.url,
                "cw",
                token="t",
                org="o",
                batch_size=2,
                flush_interval_s=0.02,
                retry_initial_s=0.05,
                retry_max_s=0.1,
            ) as w:
                await w.add([f"m v={i} {i}" for i in range(6)])
            return fake, w.stats

    fake, stats = run(go())
    assert stats.retries == 2 and stats.written == 6 and stats.rejected == 0
    assert stats.last_error == "HTTP 503: try later"
    times = [r["t"] for r in fake.requests]
    assert times[1] - times[0] >= 0.29  # waited as the 429 told
    assert [r["lines"] for r in fake.requests[:3]] == [
        ["m v=0 0", "m v=1 1"]
    ] * 3  # head batch kept
    assert fake.stored == [f"m v={i} {i}" for i in range(6)]


def test_v2_server_down_pushes_back_then_everything_arrives_in_order():
    port = free_port()
    lines = [f"m v={i} {i}" for i in range(8)]

    async def go():
        w = InfluxWriter(
            f"http://127.0.0.1:{port}",
            "cw",
            token="t",
            org="o",
            batch_size=2,
            max_buffer=4,
            flush_interval_s=0.02,
            retry_initial_s=0.05,
            retry_max_s=0.1,
            request_timeout_s=2,
        )
        await w.start()
        await w.add(lines[:4])
        blocked = asyncio.ensure_future(w.add(lines[4:]))
        await asyncio.sleep(0.4)
        assert not blocked.done() and w.buffered == 4  # add() waits: back-pressure
        assert w.stats.retries > 0 and "Connect" in (w.stats.last_error or "")
        async with FakeInfluxV2Server(port=port) as fake:
            await asyncio.wait_for(blocked, 10)
            await w.stop(timeout=10)
        return fake, w.stats

    fake, stats = run(go())
    assert stats.buffered == 0 and stats.rejected == 0 and stats.written == 8
    assert fake.stored == lines


def test_v1_path_with_retention_policy_and_token_only():
    async def go():
        async with FakeInfluxV2Server() as fake:
            async with InfluxWriter(
                fake.url, "cw", token="t", retention_policy="long", flush_interval_s=0.05
            ) as w:
                await w.add(["m v=1 1"])
            return fake

    req = run(go()).requests[0]
    assert req["path"] == "/write" and req["query"] == {"db": "cw", "precision": "ms", "rp": "long"}
    assert req["headers"]["Authorization"] == "Token t"


def test_429_retry_after_is_honoured_and_order_kept():
    async def go():
        script = [
            (429, {"Retry-After": "0.3"}, '{"message":"slow down"}'),
            (503, {}, "unavailable"),
        ]
        async with FakeInfluxV2Server(script) as fake:
            async with InfluxWriter(
                fake.url,
                "cw",
                batch_size=2,
                flush_interval_s=0.02,
                retry_initial_s=0.05,
                retry_max_s=0.1,
            ) as w:
                await w.add([f"m v={i} {i}" for i in range(6)])
            return fake, w.stats

    fake, stats = run(go())
    assert stats.retries == 2 and stats.written == 6
    times = [r["t"] for r in fake.requests]
    assert times[1] - times[0] >= 0.29  # waited as told
    assert [r["lines"] for r in fake.requests[:3]] == [
        ["m v=0 0", "m v=1 1"]
    ] * 3  # head batch kept
    assert fake.stored == [f"m v={i} {i}" for i in range(6)]


def test_whole_batch_400_is_bisected_to_the_bad_line(caplog):
    lines = [f"m v={i} {i}" for i in range(16)]
    lines[11] = "m BAD 11"

    async def go():
        async with FakeInfluxV2Server(reject_marker="BAD") as fake:
            async with InfluxWriter(
                fake.url, "cw", token="t", org="o", batch_size=16, flush_interval_s=0.02
            ) as w:
                await w.add(lines)
                await w.add(["m v=100 100"])
            return fake, w.stats

    fake, stats = run(go())
    assert stats.rejected == 1 and stats.written == 16 and stats.retries == 0
    assert fake.stored == [line for line in lines if "BAD" not in line] + ["m v=100 100"]
    assert "m BAD 11" in caplog.text
