"""Bytes a Mosquitto broker holds per queued QoS-1 message: the B of docs/operations.md's sizing.

    .venv/bin/python bench/broker_queue.py [--messages 200000] [--payload-bytes 125]

Starts its own Mosquitto (the machine's binary, anonymous, on a free loopback
port, no persistence: only memory is measured), subscribes one persistent
session to ``city/#`` at QoS 1 and disconnects it, publishes ``--messages``
readings of ``--payload-bytes`` on telemetry topics of 3,000 devices, and reads
the broker's RSS before and after (``/proc/<pid>/status``). The baseline is the
broker's RSS with the offline session and nothing queued, measured in the same
run. Progress every 20,000 messages.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _payload(size: int) -> bytes:
    base = {"ts": 1764000000000, "pm10": 123.4, "pm25": 56.7, "seq": 0}
    pad = max(0, size - len(orjson.dumps({**base, "note": ""})))
    return orjson.dumps({**base, "note": "x" * pad})


def _client(client_id: str, port: int, persistent: bool) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    if persistent:
        props.SessionExpiryInterval = 3600
    c.connect("127.0.0.1", port, clean_start=not persistent, properties=props)
    c.loop_start()
    return c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--payload-bytes", type=int, default=125)
    args = ap.parse_args()
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
            "persistence false\n"
        )
        broker = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            time.sleep(0.5)
            sub = _client("bench-queue-sub", port, persistent=True)
            sub.subscribe("city/#", qos=1)
            time.sleep(0.5)
            sub.disconnect()
            sub.loop_stop()
            time.sleep(0.5)
            before = _rss_kib(broker.pid)
            pub = _client("bench-queue-pub", port, persistent=False)
            payload = _payload(args.payload_bytes)
            topic_bytes = 0
            for start in range(0, args.messages, 1000):
                infos = []
                for i in range(start, min(args.messages, start + 1000)):
                    topic = f"city/jinshui/dust/DU-JS-{i % 3000:04d}/telemetry"
                    topic_bytes += len(topic)
                    infos.append(pub.publish(topic, payload, qos=1))
                for info in infos:
                    info.wait_for_publish(60)
                if (start + 1000) % 20_000 == 0:
                    print(f"  {start + 1000:,} queued, broker RSS {_rss_kib(broker.pid):,} KiB")
            time.sleep(1)
            after = _rss_kib(broker.pid)
            pub.disconnect()
            pub.loop_stop()
        finally:
            broker.terminate()
            broker.wait(10)
    n = args.messages
    per = (after - before) * 1024 / n
    wire = len(payload) + topic_bytes / n
    print(
        f"mosquitto: {subprocess.run(['mosquitto', '-h'], capture_output=True, text=True).stdout.splitlines()[0]}"
    )
    print(f"{n:,} QoS-1 messages queued for one offline session")
    print(f"broker RSS {before:,} KiB (baseline: the session, nothing queued) -> {after:,} KiB")
    print(
        f"{per:.0f} bytes per queued message; payload + topic {wire:.0f} bytes ({per / wire:.1f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
