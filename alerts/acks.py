"""Officer actions flowing back into the streams: acknowledge, close as repaired, report an accident.

The CLI (``citywatch case ack|close|accident|note``) and the alerts HTTP API
both end here: one ``OfficerAction`` on ``<prefix>.acks``, keyed by device.
The worker journals it on the device's partition, between its readings, so
the detector applies it in order, and replays of the journal apply it
identically.
"""

from __future__ import annotations

import orjson

from bus.kafka import ensure_topics_for, producer_for
from contract.cases import OfficerAction
from contract.topics import KafkaTopics
from foundation.settings import Settings


async def submit(settings: Settings, action: OfficerAction) -> None:
    """Publish one officer action and wait until Kafka has stored it."""
    k = settings.kafka
    await ensure_topics_for(k)
    producer = producer_for(k, client_id="citywatch-acks", linger_ms=0)
    await producer.start()
    try:
        body = orjson.dumps(action.to_dict(), option=orjson.OPT_SORT_KEYS)
        await producer.send_and_wait(
            KafkaTopics(k.topic_prefix).acks, body, key=action.device.encode()
        )
    finally:
        await producer.stop()
