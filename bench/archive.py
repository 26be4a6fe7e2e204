"""What does the journal archive cost, against no archive, in the same run? (decision 010)

    python bench/archive.py [--records 100000] [--repeat 2]

Against the Kafka of the settings (``CITYWATCH_KAFKA_BOOTSTRAP``; the embedded
tansu by default), each pass writes the same journal (readings of 2,000 manhole
covers, as the bridge produces them: acks=all, linger 5 ms) into a fresh
prefix, twice:

* **baseline**: no archive; the produce rate, and the ack latency of 500
  single records sent one at a time (``send_and_wait``) after the bulk;
* **archive**: the same while ``citywatch archive run`` (a subprocess, as an
  operator runs it) archives the prefix; the same two figures, then how long
  the archive took to have everything on disk (lag 0), its CPU seconds, RSS,
  bytes on disk per record and fsyncs;
* **restore**: ``archive.restore`` of that archive into a third, empty prefix.

Each figure is the median over ``--repeat`` passes, with the ratio to the
baseline of the same pass. The prefixes' archives are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import orjson  # noqa: E402

from bus.kafka import ensure_topics_for, producer_for  # noqa: E402
from citywatch.run import settings_env  # noqa: E402
from contract.journal import journal_key  # noqa: E402
from contract.topics import KafkaTopics  # noqa: E402
from foundation.settings import Settings, load_settings  # noqa: E402
from streams import archive  # noqa: E402

DISTRICTS = ("jinshui", "erqi", "zhongyuan", "guancheng", "huiji", "zhengdong")


def records(n: int) -> list[tuple[bytes, bytes]]:
    base = (int(time.time()) // 60) * 60_000 - 86_400_000
    out = []
    for i in range(n):
        d = DISTRICTS[i % len(DISTRICTS)]
        dev = f"MH-{i % 2000:05d}"
        ts = base + i * 50
        rec = {"type": "reading", "device": dev, "kind": "manhole", "district": d, "ts": ts,
               "received_at": ts + 30, "fields": {"open": False, "tilt_deg": 1.5, "battery_pct": 80, "rssi": -71},
               "topic": f"city/{d}/manhole/{dev}/telemetry"}  # fmt: skip
        out.append((journal_key(d), orjson.dumps(rec)))
    return out


async def produce(s: Settings, recs: list[tuple[bytes, bytes]]) -> tuple[float, float]:
    """(records/s of the bulk, median ms of 500 single acks afterwards)."""
    k = s.kafka
    await ensure_topics_for(k)
    topic = KafkaTopics(k.topic_prefix).telemetry
    producer = producer_for(k, client_id="bench-archive")
    await producer.start()
    try:
        t0 = time.perf_counter()
        futures = [await producer.send(topic, v, key=key) for key, v in recs]
        await asyncio.gather(*futures)
        rate = len(recs) / (time.perf_counter() - t0)
        lat = []
        for key, v in recs[:500]:
            t = time.perf_counter()
            await producer.send_and_wait(topic, v, key=key)
            lat.append((time.perf_counter() - t) * 1000)
    finally:
        await producer.stop()
    return rate, statistics.median(lat)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def one_pass(base: Settings, recs: list[tuple[bytes, bytes]], state: Path) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    plain = base.replace("kafka", topic_prefix=f"bench-archive-{tag}-a")
    rate0, lat0 = asyncio.run(produce(plain, recs))
    kept = base.replace("kafka", topic_prefix=f"bench-archive-{tag}-b").replace(
        "paths", state_dir=str(state)
    )
    asyncio.run(ensure_topics_for(kept.kafka))
    log = state / f"archive-{tag}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "citywatch", "archive", "run"],
        env=settings_env(kept), stdout=open(log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "archive of" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        cpu_before = cpu_s(proc.pid)
        t0 = time.perf_counter()
        rate1, lat1 = asyncio.run(produce(kept, recs))
        produced = time.perf_counter()
        while asyncio.run(archive.lag(kept)) not in (0,):
            time.sleep(0.1)
        on_disk_s = time.perf_counter() - t0
        tail_s = time.perf_counter() - produced
        cpu = cpu_s(proc.pid) - cpu_before
        rss = rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    text = log.read_text()
    fsyncs = int(text.rsplit("restored records skipped, ", 1)[1].split(" fsyncs")[0])
    directory = archive.archive_dir(kept)
    size = sum(p.stat().st_size for p in directory.glob("*.jsonl"))
    target = kept.replace("kafka", topic_prefix=f"bench-archive-{tag}-c")
    t0 = time.perf_counter()
    written = asyncio.run(archive.restore(target, directory))
    restore_s = time.perf_counter() - t0
    assert written["journal"] == len(recs) + 500, written  # the bulk and the single acks
    return {
        "rate0": rate0, "lat0": lat0, "rate1": rate1, "lat1": lat1, "on_disk_s": on_disk_s, "tail_s": tail_s,
        "cpu_s": cpu, "rss_mb": rss, "bytes_per": size / len(recs), "fsyncs": fsyncs,
        "restore_rate": len(recs) / restore_s,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    base = load_settings(None)
    recs = records(args.records)
    state = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    print(
        f"citywatch archive benchmark: {platform.node()} {os.cpu_count()} cpus, Python "
        f"{platform.python_version()}; Kafka {base.kafka.bootstrap}; {args.records:,} journal "
        f"records ({len(recs[0][1])} bytes each) x {args.repeat} passes"
    )
    runs: list[dict[str, Any]] = []
    try:
        for i in range(args.repeat):
            r = one_pass(base, recs, state)
            runs.append(r)
            print(f"pass {i + 1}: " + ", ".join(f"{k} {v:,.2f}" for k, v in r.items()))
    finally:
        shutil.rmtree(state, ignore_errors=True)
    m = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print("row                                   figure          vs baseline")
    print(f"produce, no archive (baseline)        {m['rate0']:>9,.0f} rec/s   1.00x")
    print(
        f"produce, archive running              {m['rate1']:>9,.0f} rec/s   {m['rate1'] / m['rate0']:.2f}x"
    )
    print(f"single ack p50, no archive            {m['lat0']:>9.2f} ms      1.00x")
    print(
        f"single ack p50, archive running       {m['lat1']:>9.2f} ms      {m['lat1'] / m['lat0']:.2f}x"
    )
    print(
        f"archive: all on disk after            {m['on_disk_s']:>9.2f} s       ({args.records / m['on_disk_s']:,.0f} rec/s incl. the produce)"
    )
    print(
        f"archive: behind the produce by        {m['tail_s']:>9.2f} s       (from the last ack to lag 0, lag polled every 0.1 s)"
    )
    print(
        f"archive: CPU                          {m['cpu_s']:>9.2f} s       ({m['cpu_s'] / args.records * 1e6:.1f} µs per record)"
    )
    print(f"archive: RSS at the end               {m['rss_mb']:>9.1f} MB")
    print(
        f"archive: on disk                      {m['bytes_per']:>9.1f} B/rec   (the journal record: {len(recs[0][1])} B)"
    )
    print(
        f"archive: fsyncs                       {m['fsyncs']:>9,.0f}         ({args.records / max(m['fsyncs'], 1):,.0f} records per fsync)"
    )
    print(f"restore into an empty prefix          {m['restore_rate']:>9,.0f} rec/s")


if __name__ == "__main__":
    main()
