"""The InfluxQL endpoint (store/influxql.py) against the real InfluxDB 1.6.7:
rows out, errors that name the query, values bound as parameters."""

from __future__ import annotations

import pytest

from foundation.errors import ServiceDown
from store.errors import InfluxDown, InfluxError, InfluxQueryError
from store.influxql import ident, ping, query, target
from store.schema import create_database


def _write(settings, body: str) -> None:
    import urllib.parse
    import urllib.request

    q = urllib.parse.urlencode({"db": settings.influx.database, "precision": "ms"})
    req = urllib.request.Request(f"{settings.influx.url}/write?{q}", data=body.encode())
    req.add_header("Authorization", target(settings, None, None, "admin")[2])
    urllib.request.urlopen(req, timeout=10).read()


def test_query_error_names_the_query(settings):
    create_database(settings)
    with pytest.raises(InfluxQueryError, match="SELEKT"):
        query(settings, None, "SELEKT * FROM x")


def test_no_server_is_an_influx_error_that_says_so():
    with pytest.raises(InfluxError, match="does not answer"):
        query("http://127.0.0.1:1", "db", "SHOW DATABASES", timeout=2)


def test_no_server_is_an_outage_naming_influxdb_and_how_to_start_it():
    with pytest.raises(InfluxDown) as err:
        query("http://127.0.0.1:1", "db", "SHOW DATABASES", timeout=2)
    assert isinstance(err.value, ServiceDown)
    assert str(err.value) == (
        "InfluxDB at http://127.0.0.1:1 does not answer (Connection refused); start it with "
        "`citywatch services up` (or check influx.url / CITYWATCH_INFLUX_URL)"
    )


def test_ping_returns_when_influxdb_answers_and_says_so_when_it_does_not(settings):
    ping(settings)  # no credentials needed: /ping is open on 1.x
    with pytest.raises(InfluxDown, match="InfluxDB at http://127.0.0.1:1 does not answer"):
        ping("http://127.0.0.1:1", timeout=2)


def test_something_that_is_not_influxdb_answering_is_said_so(settings):
    import http.server
    import threading

    class NotInflux(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html>a login page</html>")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotInflux)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        with pytest.raises(InfluxError, match=f"what answers at {url} is not InfluxDB"):
            query(url, "db", "SHOW DATABASES", timeout=2)
    finally:
        server.shutdown()


def test_values_are_bound_never_spliced(settings):
    create_database(settings)
    _write(settings, "m,k=a v=1 1000\nm,k=b v=2 2000\nm,k=c v=3 3000")
    rows = query(settings, None, "SELECT v FROM m WHERE k = $k", params={"k": "b"})
    assert [(r["time"], r["v"]) for r in rows] == [(2000, 2)]
    # an injection attempt is just a value that matches nothing
    assert query(settings, None, "SELECT v FROM m WHERE k = $k", params={"k": "b' OR k = 'a"}) == []
    # a bound integer compared with time is epoch nanoseconds
    rows = query(settings, None, "SELECT v FROM m WHERE time >= $t", params={"t": 2000 * 1_000_000})
    assert [r["v"] for r in rows] == [2, 3]
    # one set of parameters serves every statement of the request
    rows = query(settings, None, "SELECT v FROM m WHERE k = $x; SELECT v FROM m WHERE k = $y",
                 params={"x": "a", "y": "c"})  # fmt: skip
    assert [r["v"] for r in rows] == [1, 3]


def test_parameters_are_checked_before_sending():
    with pytest.raises(TypeError, match=r"parameter \$k: list"):
        query("http://127.0.0.1:1", "db", "SELECT 1", params={"k": [1]})
    with pytest.raises(ValueError, match="Invalid parameter name 'a b'"):
        query("http://127.0.0.1:1", "db", "SELECT 1", params={"a b": 1})


def test_ident_quotes_identifiers():
    assert ident("penalty") == '"penalty"'
    assert ident('a "b\\c') == '"a \\"b\\\\c"'
