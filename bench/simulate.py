"""Can the simulator sustain its load target, against the raw paho ceiling measured in the same run?

    python bench/simulate.py [--rate 5000] [--duration 10] [--devices 3000] [--host 127.0.0.1 --port 1883]

Prints msgs/s for:

* baseline: raw paho QoS-1 publishing of one prebuilt payload in a tight loop
  (MQTT v5, the same back-pressure bounds as the simulator: 20 in flight,
  5,000 queued), to Mosquitto; acknowledged messages / wall time;
* the simulator's event generation alone (``Simulation.events``, no MQTT);
* ``Simulation.expected_ledger_hint`` over the default scenario file's 30 h
  with 300 devices (what ``citywatch run`` computes at its end: generation,
  validation and the real rules), in messages replayed per second;
* ``run_publisher`` unpaced (``speed=0``): generation + publishing in one process;
* ``run_load`` at the target rate with 1 and with 2 publisher processes;

and each one's ratio to the raw ceiling, and the load runs' ratio to the target.
Needs Mosquitto on --host/--port (``citywatch services up`` or the Debian package).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import time
from importlib.metadata import version

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from sim.city import build_city, split_devices  # noqa: E402
from sim.publish import run_load, run_publisher  # noqa: E402
from sim.scenarios import load_scenario_file  # noqa: E402
from sim.simulator import Simulation  # noqa: E402


def raw_ceiling(host: str, port: int, n: int) -> float:
    acked = [0]
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-raw-{os.getpid()}",
                    protocol=mqtt.MQTTv5)  # fmt: skip
    c.on_publish = lambda *a: acked.__setitem__(0, acked[0] + 1)
    c.max_inflight_messages_set(20)
    c.max_queued_messages_set(5000)
    c.connect(host, port)
    c.loop_start()
    time.sleep(0.3)
    payload = (b'{"ts":1793577600000,"pm25":40.1,"pm10":85.3,"tsp":140.2,"noise_db":66.1,'
               b'"wind_speed":2.1,"wind_dir":120,"temp_c":11.2,"humidity":55.0}')  # fmt: skip
    topic = "city/jinshui/dust/DS-BENCH-0001/telemetry"
    t = time.perf_counter()
    for _ in range(n):
        while c.publish(topic, payload, qos=1).rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            time.sleep(0.0005)
    while acked[0] < n and time.perf_counter() - t < 120:
        time.sleep(0.001)
    dt = time.perf_counter() - t
    c.disconnect()
    c.loop_stop()
    return acked[0] / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=5000.0)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--devices", type=int, default=3000)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--n", type=int, default=100_000, help="messages for the raw and unpaced runs")
    a = ap.parse_args()

    print(f"# {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, paho-mqtt {version('paho-mqtt')}")  # fmt: skip
    city = build_city(7, *split_devices(a.devices), id_tag="bench")
    print(f"# city: {len(city)} devices {city.counts()}, target {a.rate:,.0f} msgs/s "
          f"for {a.duration:g} s")  # fmt: skip

    raw = raw_ceiling(a.host, a.port, a.n)
    rows: list[tuple[str, float, str]] = [("raw paho QoS-1 publish (baseline)", raw, "")]

    sim = Simulation(city, seed=1)
    t = time.perf_counter()
    n = sum(1 for _ in itertools.islice(sim.events(None), a.n))
    rows.append(("Simulation.events only (no MQTT)", n / (time.perf_counter() - t), ""))

    scen = load_scenario_file(os.path.join(ROOT, "config", "scenarios", "default.yaml"))
    sim = Simulation(build_city(7, *split_devices(300), fleet=True), scen.scenarios, seed=scen.seed or 7,
                     start_ms=scen.start_ms or 0)  # fmt: skip
    t = time.perf_counter()
    hint = sim.expected_ledger_hint(sim.start_ms + (scen.run_for_ms or 0))
    dt = time.perf_counter() - t
    rows.append(("expected_ledger_hint (300 devices, 30 h)", hint["messages"] / dt,
                 f"{hint['messages']:,} msgs in {dt:.1f} s, {hint['total_yuan']:,} yuan"))  # fmt: skip

    sim = Simulation(city, seed=2)
    s = run_publisher(itertools.islice(sim.events(None), a.n), a.host, a.port,
                      client_id=f"bench-sim-{os.getpid()}", speed=0)  # fmt: skip
    rows.append(("run_publisher speed=0 (1 process)", s.rate, ""))

    for procs in (1, 2):
        ls = run_load(a.rate, a.duration, procs, a.host, a.port, city,
                      client_id_prefix=f"bench-load-{os.getpid()}-{procs}")  # fmt: skip
        rows.append((f"run_load target {a.rate:,.0f}, {procs} process(es)", ls.achieved_rate,
                     f"{ls.achieved_rate / a.rate:6.1%} of target, {ls.acked:,} acked"))  # fmt: skip

    print(f"{'path':48} {'msgs/s':>10} {'vs raw':>8}  note")
    for name, rate, note in rows:
        print(f"{name:48} {rate:10,.0f} {rate / raw:8.2f}  {note}")


if __name__ == "__main__":
    main()
