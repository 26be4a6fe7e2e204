"""How fast does the InfluxDB writer go, against raw HTTP POSTs measured in the same run?

    python bench/influx_write.py [--url http://127.0.0.1:18086] [--n 300000] [--repeat 2]

Prints points/s for:

* line building: ``store.points.telemetry_line`` (f-string builder) vs
  influxdb-client's ``Point(...).to_line_protocol()`` for the same readings;
* baseline: raw aiohttp POSTs of pre-built 5,000-line bodies, one connection,
  one request at a time (the ceiling the writer is compared with; bench/RESULTS.md);
* ``InfluxWriter``: the same pre-built lines through ``add()`` in 5,000-line
  chunks (batch_size 5000) until ``stop()`` has flushed everything;
* end to end: building the lines from readings plus the writer.

and each one's ratio to the baseline. Each run writes into its own throwaway
database (dropped at the end), so series creation costs the same in both.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import aiohttp  # noqa: E402

from contract.reading import Reading  # noqa: E402
from foundation.settings import load_settings  # noqa: E402
from registry.devices import Device  # noqa: E402
from store import points  # noqa: E402
from store.identity import credentials  # noqa: E402
from store.influxql import target  # noqa: E402
from store.schema import create_database, drop_database  # noqa: E402
from store.writer import InfluxWriter  # noqa: E402

BATCH = 5000


def make_readings(n: int, devices: int = 2000) -> tuple[list[Reading], list[Device]]:
    base = (int(time.time()) // 60) * 60_000 - 86_400_000
    devs = [
        Device(
            f"DU-{i:05d}",
            "dust",
            f"d{i % 6}",
            f"g{i % 50}",
            f"Builder {i % 40} Ltd",
            None,
            "",
            None,
            None,
            None,
            None,
            None,
        )
        for i in range(devices)
    ]
    out = []
    for i in range(n):
        d = i % devices
        out.append(
            Reading(
                devs[d].device_id,
                "dust",
                devs[d].district,
                base + i,
                base + i + 3,
                {
                    "pm25": 40 + i % 17,
                    "pm10": 80.5 + (i % 23),
                    "noise_db": 61.2,
                    "temp_c": 12.5,
                    "humidity": 55,
                    "wind_speed": 2.4,
                },
            )
        )
    return out, devs


def build_fstring(readings, devs) -> list[str]:
    line = points.telemetry_line
    return [line(r, devs[i % len(devs)]) for i, r in enumerate(readings)]  # type: ignore[misc]


def build_client_point(readings, devs) -> list[str]:
    from influxdb_client import Point, WritePrecision

    out = []
    for i, r in enumerate(readings):
        d = devs[i % len(devs)]
        p = Point("dust").tag("device", d.device_id).tag("district", d.district).tag("grid", d.grid)
        p = p.tag("unit", d.unit)
        for k, v in r.fields.items():
            p = p.field(k, float(v))
        out.append(p.time(r.ts, WritePrecision.MS).to_line_protocol())
    return out


async def baseline(url: str, db: str, lines: list[str], auth: str = "") -> float:
    bodies = [
        ("\n".join(lines[i : i + BATCH]) + "\n").encode() for i in range(0, len(lines), BATCH)
    ]
    target = f"{url}/write?db={db}&precision=ms"
    headers = {"Authorization": auth} if auth else {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), headers=headers) as s:
        t = time.perf_counter()
        for body in bodies:
            async with s.post(target, data=body) as resp:
                assert resp.status == 204, await resp.text()
        return time.perf_counter() - t


async def through_writer(
    url: str, db: str, lines: list[str], build=None, auth: dict | None = None
) -> tuple[float, object]:
    w = InfluxWriter(url, db, batch_size=BATCH, **(auth or {}))
    await w.start()
    t = time.perf_counter()
    if build is not None:
        lines = build()
    for i in range(0, len(lines), BATCH):
        await w.add(lines[i : i + BATCH])
    await w.stop()
    return time.perf_counter() - t, w.stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--url", default=os.environ.get("CITYWATCH_INFLUX_URL", "http://127.0.0.1:18086")
    )
    ap.add_argument("--n", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    n = args.n
    # citywatch's embedded InfluxDB has authentication on: the bench is its admin (store.identity)
    settings = load_settings(env={**os.environ, "CITYWATCH_INFLUX_URL": args.url})
    auth = credentials(settings, "admin")
    header = target(settings, None, None, "admin")[2]
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cpus, "
        f"n={n}, batch={BATCH}, server {args.url}"
    )
    readings, devs = make_readings(n)

    t = time.perf_counter()
    lines = build_fstring(readings, devs)
    t_build = time.perf_counter() - t
    m = min(n, 100_000)
    t = time.perf_counter()
    client_lines = build_client_point(readings[:m], devs)
    t_client = (time.perf_counter() - t) * n / m
    print(f"build   points.telemetry_line         {n / t_build:>12,.0f} lines/s")
    print(
        f"build   influxdb_client Point         {n / t_client:>12,.0f} lines/s   "
        f"(f-string builder is {t_client / t_build:.1f}x faster)"
    )
    assert len(client_lines) == m

    dbs: list[str] = []

    def fresh() -> str:
        db = create_database(settings, "bench_" + uuid.uuid4().hex[:8])
        dbs.append(db)
        return db

    best = {"baseline": float("inf"), "writer": float("inf"), "e2e": float("inf")}
    try:
        for _ in range(args.repeat):
            best["baseline"] = min(
                best["baseline"], asyncio.run(baseline(args.url, fresh(), lines, header))
            )
            dt, stats = asyncio.run(through_writer(args.url, fresh(), lines, auth=auth))
            assert stats.written == n and stats.rejected == 0, stats  # type: ignore[attr-defined]
            best["writer"] = min(best["writer"], dt)
            dt, stats = asyncio.run(
                through_writer(
                    args.url, fresh(), [], build=lambda: build_fstring(readings, devs), auth=auth
                )
            )
            best["e2e"] = min(best["e2e"], dt)
    finally:
        for db in dbs:
            drop_database(settings, db)
    base = n / best["baseline"]
    print(f"write   baseline raw aiohttp POST     {base:>12,.0f} points/s   1.00x")
    for key, label in (
        ("writer", "InfluxWriter (pre-built lines)"),
        ("e2e", "build + InfluxWriter"),
    ):
        rate = n / best[key]
        print(f"write   {label:<30}{rate:>12,.0f} points/s   {rate / base:.2f}x")


if __name__ == "__main__":
    main()
