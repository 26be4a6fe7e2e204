"""Publishing like a sensor fleet does: paho, MQTT v5, QoS 1, with its own back-pressure."""

from __future__ import annotations

import time

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


class Publisher:
    def __init__(self, host: str, port: int, client_id: str):
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(100)
        self.client.connect(host, port)
        self.client.loop_start()

    def publish(
        self, topic: str, payload: bytes | str | dict, qos: int = 1
    ) -> mqtt.MQTTMessageInfo:
        if isinstance(payload, dict):
            payload = orjson.dumps(payload)
        while True:
            info = self.client.publish(topic, payload, qos=qos)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                return info
            time.sleep(0.01)  # MQTT_ERR_QUEUE_SIZE: wait for acks (bench/RESULTS.md)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def drop_session(host: str, port: int, client_id: str) -> None:
    """End a bridge's persistent session so it stops collecting copies after its test."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.connect(host, port, clean_start=True)
    client.loop_start()
    time.sleep(0.2)
    client.disconnect()
    client.loop_stop()
