"""Gateway throughput: frames per CPU-second, against the bare TCP read rate of the same run.

    .venv/bin/python bench/gateways.py [--connections 200] [--frames 250] [--only hj212|jt808]

Against citywatch's own secured Mosquitto (``citywatch services up``, the
ports of the environment). A registry of ``--connections`` HJ 212 monitors
behind one gateway identity is provisioned under the source
``bench:<unique>`` (retired at the end) and their PW are issued. One client
process keeps a TCP connection per monitor and sends ``--frames`` CN=2011
frames on each as fast as the server takes them (Flag=5: a 9014 reply wanted).

1. baseline: a bare asyncio TCP server in its own process that only splits the
   stream at CRLF and counts frames: the read ceiling of one Python process;
2. the gateway (``citywatch gateway hj212``): CRC, syntax, MN and PW, the
   reading, a QoS-1 publish to the broker and the 9014 reply after its PUBACK,
   counted as 9014 replies at the client.

The JT/T 808 rows do the same with ``--connections`` truck terminals (their
authentication codes issued beforehand, as after a registration): each
connection authenticates (0x0102) and sends ``--frames`` 0x0200 location
reports with mileage and load items; the bare server splits at 0x7e, the
gateway (``citywatch gateway jt808``) unescapes, checks the BCC and the
header, reads the report, publishes it and answers 0x8001 after the PUBACK.

Each server's CPU time (user + system, from /proc) is measured over its phase,
so the figures are frames per second of one core of that process, whatever the
other processes (client, Mosquitto) take; wall-clock rates are printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from citywatch import devices, services  # noqa: E402
from citywatch.gateways import issue_passwords  # noqa: E402
from citywatch.run import settings_env  # noqa: E402
from foundation.settings import Settings, load_settings  # noqa: E402
from registry.credentials import grants_from_registry  # noqa: E402
from registry.devices import load_registry  # noqa: E402
from registry.jt808_codes import AuthCodes  # noqa: E402
from sim.hj212 import frame_for  # noqa: E402
from sim.jt808 import auth_message, location_message  # noqa: E402

BARE_SERVER = r"""
import asyncio, os, sys, time
want = int(sys.argv[1]); got = 0; t0 = None; done = asyncio.Event()
SEP, PER = (b"\x7e", 2) if sys.argv[2] == "jt808" else (b"\r\n", 1)
async def serve(reader, writer):
    global got, t0
    buf = b""
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            return
        if t0 is None:
            t0 = (time.perf_counter(), time.process_time())
        buf += chunk
        n = buf.count(SEP)
        if n >= PER:
            n -= n % PER
            got += n // PER
            cut = 0
            for _ in range(n):
                cut = buf.index(SEP, cut) + len(SEP)
            buf = buf[cut:]
            if got >= want:
                done.set()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await done.wait()
    print(time.perf_counter() - t0[0], time.process_time() - t0[1], flush=True)
asyncio.run(main())
"""


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _client(
    port: int, frames: list[list[bytes]], want_replies: bool, out: mp.Queue, sep: bytes = b"\r\n"
) -> None:
    per = 2 if sep == b"\x7e" else 1  # a JT/T 808 reply is between two flags

    async def one(chunk: list[bytes]) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        replies = 0

        async def read() -> None:
            nonlocal replies
            while replies < len(chunk):
                for _ in range(per):
                    await reader.readuntil(sep)
                replies += 1

        reading = asyncio.create_task(read()) if want_replies else None
        for i in range(0, len(chunk), 50):
            writer.write(b"".join(chunk[i : i + 50]))
            await writer.drain()
        if reading is not None:
            await asyncio.wait_for(reading, 120)
        writer.close()
        return replies

    async def main() -> None:
        t0 = time.perf_counter()
        replies = await asyncio.gather(*(one(c) for c in frames))
        out.put((time.perf_counter() - t0, sum(replies)))

    asyncio.run(main())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=200)
    ap.add_argument("--frames", type=int, default=250, help="frames per connection")
    ap.add_argument("--only", choices=("hj212", "jt808"), help="one gateway only")
    args = ap.parse_args()
    settings = load_settings(
        env={k: v for k, v in os.environ.items() if k.startswith("CITYWATCH_")}
    )
    services.up(settings, log=lambda line: None)
    for protocol in ("hj212", "jt808"):
        if args.only in (None, protocol):
            _bench(settings, protocol, args.connections, args.frames)
    return 0


def _bench(settings: Settings, protocol: str, connections: int, per: int) -> None:
    tag = uuid.uuid4().hex[:8]
    source = f"bench:{tag}"
    gateway = f"gw-bench-{tag}"
    tmp = Path(tempfile.mkdtemp(prefix="cw-bench-gw-"))
    now = int(time.time()) * 1000
    if protocol == "hj212":
        rows = ["device_id,kind,district,grid,unit,gateway,mn"] + [
            f"DS-B{tag}-{i},dust,jinshui,G1,U,{gateway},B{tag}{i:05d}" for i in range(connections)
        ]
    else:
        rows = ["device_id,kind,district,grid,unit,gateway,phone"] + [
            f"T-B{tag}-{i},vehicle,jinshui,G1,U,{gateway},0139{i:08d}" for i in range(connections)
        ]
    (tmp / "registry.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    registry = load_registry(tmp / "registry.csv")
    s = (
        settings.replace("paths", registry=str(tmp / "registry.csv"))
        .replace("hj212", passwords=str(tmp / "pw.json"))
        .replace("jt808", auth_codes=str(tmp / "codes.json"))
    )
    change, *_ = devices.provision_grants(
        s, source, grants_from_registry(registry), require_broker=True
    )
    if protocol == "hj212":
        issued = issue_passwords(s)
        frames = [
            [
                frame_for(
                    {"ts": now - (per - k) * 1000, "pm10": 80.0 + k % 50, "pm25": 40.0},
                    i.mn,
                    i.pw,
                )  # fmt: skip
                for k in range(per)
            ]
            for i in issued
        ]
        sep, label = b"\r\n", "check, PW, publish QoS 1, 9014 after PUBACK"
    else:
        phones = [d.phone for d in registry if d.phone]
        codes = AuthCodes(tmp / "codes.json").issue(phones)
        frames = [
            [auth_message(p, 0, codes[p])]
            + [
                location_message(
                    {
                        "ts": now - (per - k) * 1000,
                        "lat": 34.8 + k / 1e5,
                        "lon": 113.6,
                        "speed_kmh": 35.0,
                        "heading_deg": 90,
                        "acc_on": True,
                        "located": True,
                        "cover_closed": True,
                        "body_lifted": False,
                        "load_kg": 18_000,
                        "mileage_km": 1000.0 + k,
                    },
                    p,
                    k + 1,
                )  # fmt: skip
                for k in range(per)
            ]
            for p in phones
        ]
        sep, label = b"\x7e", "BCC, auth, publish QoS 1, 0x8001 after PUBACK"
    total = sum(len(f) for f in frames)
    print(f"{protocol}: {connections} connections x {len(frames[0])} frames = {total:,} frames "
          f"of {len(frames[0][-1])} bytes")  # fmt: skip
    try:
        # 1. the bare read rate
        bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(total), protocol],
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert bare.stdout is not None
        port = int(bare.stdout.readline())
        q: mp.Queue = mp.Queue()
        cl = mp.Process(target=_client, args=(port, frames, False, q, sep))
        cl.start()
        wall, cpu = (float(x) for x in bare.stdout.readline().split())
        q.get(timeout=60)  # the client's own report of the bare phase
        cl.join(60)
        bare.wait(10)
        base_cpu, base_wall = total / cpu, total / wall
        print(f"  bare TCP read (split, count): {base_cpu:>10,.0f} frames per CPU-s "
              f"({base_wall:,.0f}/s wall)")  # fmt: skip

        # 2. the gateway
        gs = s.replace("mqtt", username=gateway, password=change.issued[gateway])
        listen = f"127.0.0.1:{_free_port()}"
        log = open(tmp / "gateway.log", "wb")  # noqa: SIM115
        profile = (
            ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]]
            if os.environ.get("BENCH_PROFILE")
            else []
        )
        gw = subprocess.Popen(
            [sys.executable, *profile, "-m", "citywatch", "gateway", protocol, "--listen", listen],
            env={**settings_env(gs), "CITYWATCH_LOG_LEVEL": "WARNING"}, stdout=log,
            stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
        _wait_port(int(listen.rsplit(":", 1)[1]))
        cpu0 = _cpu(gw.pid)
        cl = mp.Process(target=_client, args=(int(listen.rsplit(":", 1)[1]), frames, True, q, sep))
        cl.start()
        wall, replies = q.get(timeout=600)
        cpu = _cpu(gw.pid) - cpu0
        cl.join(60)
        gw.send_signal(signal.SIGINT)  # the gateway stops cleanly (a profile is written)
        gw.wait(20)
        assert replies == total, f"{replies} replies for {total} frames (see {tmp}/gateway.log)"
        g_cpu, g_wall = total / cpu, total / wall
        print(f"  gateway ({label}): {g_cpu:>10,.0f} frames per "
              f"CPU-s ({g_wall:,.0f}/s wall); 1/{base_cpu / g_cpu:,.0f} of the bare read")  # fmt: skip
    finally:
        devices.retire(s, source)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"the gateway did not listen on {port} within {timeout} s")


if __name__ == "__main__":
    sys.exit(main())
