"""The bridge's pump against a stand-in producer: the rescue ladder, step by step.

The real broker cannot be made to fail one produce batch whole, or to refuse
every dead letter, on demand; this producer can. What reaches Kafka, what is
acked to MQTT and what is counted are checked for each failure. The same
paths on the real Mosquitto and tansu are in test_bridge.py.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.errors import (
    CorruptRecordException,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    TopicAuthorizationFailedError,
)

from contract.reading import Reading
from foundation.settings import load_settings
from ingest.bridge import Bridge, KafkaRecord, kafka_unavailable

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_763_800_000_000
TOPIC = "city/jinshui/manhole/MH-1/telemetry"


class StandInProducer:
    """Futures resolve together once the pump stops sending (one produce batch).

    ``refuse(topic, value)`` -> an exception raised by ``send`` itself (None: accepted);
    ``fail(topic, value)`` -> an exception failing the future of that record; with
    ``whole_batch``, every record sent with it fails too, as a batch refused whole.
    """

    def __init__(self, refuse=None, fail=None, whole_batch: bool = False) -> None:  # noqa: ANN001
        self.refuse = refuse or (lambda topic, value: None)
        self.fail = fail or (lambda topic, value: None)
        self.whole_batch = whole_batch
        self.stored: list[tuple[str, dict[str, Any]]] = []
        self._pending: list[tuple[str, bytes, asyncio.Future]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future:
        error = self.refuse(topic, value)
        if error is not None:
            raise error
        future = asyncio.get_running_loop().create_future()
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append((topic, value, future))
        return future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        errors = [self.fail(t, v) for t, v, _ in pending]
        batch_error = next((e for e in errors if e is not None), None) if self.whole_batch else None
        for (topic, value, future), error in zip(pending, errors, strict=True):
            error = error or batch_error
            if error is not None:
                future.set_exception(error)
            else:
                self.stored.append((topic, orjson.loads(value)))
                future.set_result(None)

    def on(self, suffix: str) -> list[dict[str, Any]]:
        return [v for t, v in self.stored if t.endswith(suffix)]


class StandInClient:
    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, mid: int, qos: int) -> None:
        self.acked.append(mid)


@pytest.fixture
def bridge(tmp_path: Path) -> Bridge:
    registry = tmp_path / "registry.csv"
    registry.write_text(
        "device_id,kind,district,grid,unit,road_class,address,lat,lon,pm10_warning,pm10_violation,component_code\n"
        "MH-1,manhole,jinshui,G,U,main,addr,34.7,113.6,,,\n",
        encoding="utf-8",
    )
    settings = load_settings(ROOT / "tests" / "citywatch.test.toml", env={})
    settings = settings.replace("paths", registry=str(registry), state_dir=str(tmp_path))
    return Bridge(settings, clock=lambda: NOW)


def _reading(seq: int) -> bytes:
    return orjson.dumps({"ts": NOW - 1000 + seq, "open": False, "seq": seq})


POISON = b'{"ts": %d, "open": true, "poison": 1}' % NOW


def _pump(bridge: Bridge, producer: StandInProducer, payloads: list[bytes]) -> StandInClient:
    """Run the pump over one batch of these payloads; re-raise what stopped it."""
    client = StandInClient()

    async def go() -> None:
        for mid, payload in enumerate(payloads, start=1):
            bridge._queue.put_nowait((mid, 1, TOPIC, payload, NOW))
        task = asyncio.create_task(bridge._pump(producer, client))
        while not task.done() and bridge.stats.acked < len(payloads):
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        task.cancel()

    asyncio.run(asyncio.wait_for(go(), 10))
    return client


def _poisoned(error: Exception):  # noqa: ANN202
    return lambda topic, value: error if b'"poison"' in value else None


def test_a_batch_refused_whole_is_retried_alone_and_only_the_poison_is_dead_lettered(
    bridge: Bridge, caplog: pytest.LogCaptureFixture
) -> None:
    producer = StandInProducer(fail=_poisoned(CorruptRecordException()), whole_batch=True)
    with caplog.at_level(logging.ERROR, logger="ingest.bridge"):
        client = _pump(bridge, producer, [_reading(0), POISON, _reading(2)])
    assert client.acked == [1, 2, 3]
    assert {r["fields"]["seq"] for r in producer.on(".telemetry")} == {0, 2}
    (letter,) = producer.on(".deadletter")
    assert letter["code"] == "internal_error" and letter["device"] == "MH-1"
    assert (
        "passed validation" in letter["message"] and "CorruptRecordException" in letter["message"]
    )
    assert base64.b64decode(letter["raw_b64"]) == POISON
    assert bridge.stats.forwarded == 2 and bridge.stats.rejected == {"internal_error": 1}
    assert bridge.stats.in_flight == 0
    assert [r.levelname for r in caplog.records] == ["ERROR"]  # logged once, with the reason
    assert "dead-lettered as internal_error" in caplog.records[0].getMessage()


def test_a_record_refused_at_send_is_dead_lettered_and_its_neighbours_forwarded(
    bridge: Bridge,
) -> None:
    producer = StandInProducer(refuse=_poisoned(MessageSizeTooLargeError()))
    client = _pump(bridge, producer, [_reading(0), POISON, _reading(2)])
    assert client.acked == [1, 2, 3]
    assert [r["fields"]["seq"] for r in producer.on(".telemetry")] == [0, 2]
    assert [d["code"] for d in producer.on(".deadletter")] == ["internal_error"]
    assert bridge.stats.forwarded == 2


def test_a_reading_that_does_not_serialise_is_dead_lettered(bridge: Bridge) -> None:
    class Fragile(Bridge):
        def _encode(self, result) -> KafkaRecord:  # noqa: ANN001
            if isinstance(result, Reading) and "poison" in result.fields:
                raise TypeError("Recursion limit reached")
            return super()._encode(result)

    fragile = Fragile(bridge.settings, clock=lambda: NOW)
    producer = StandInProducer()
    client = _pump(fragile, producer, [POISON, _reading(1)])
    assert client.acked == [1, 2]
    (letter,) = producer.on(".deadletter")
    assert (
        "serialising its reading record failed (TypeError: Recursion limit reached)"
        in (letter["message"])
    )
    assert base64.b64decode(letter["raw_b64"]) == POISON
    assert [r["fields"]["seq"] for r in producer.on(".telemetry")] == [1]


def test_when_the_dead_letter_with_raw_bytes_is_refused_one_without_them_goes(
    bridge: Bridge,
) -> None:
    def refuse(topic: str, value: bytes) -> Exception | None:
        if b'"poison"' in value:
            return MessageSizeTooLargeError()
        if topic.endswith(".deadletter") and b'"raw_b64":""' not in value:
            return MessageSizeTooLargeError()
        return None

    producer = StandInProducer(refuse=refuse)
    client = _pump(bridge, producer, [POISON, b"{not json"])
    assert client.acked == [1, 2]
    letters = producer.on(".deadletter")
    assert [d["code"] for d in letters] == ["internal_error", "not_json"]
    assert all(d["raw_b64"] == "" and "raw bytes left out" in d["message"] for d in letters)
    # a dead letter of validation keeps its own code, and says why its bytes are missing
    assert (
        "payload is not valid" in letters[1]["message"]
        and "then producing" in letters[1]["message"]
    )
    assert bridge.stats.rejected == {"internal_error": 1, "not_json": 1}


@pytest.mark.parametrize(
    "error",
    [KafkaTimeoutError(), NotLeaderForPartitionError()],
    ids=["timeout", "retriable"],
)
def test_kafka_itself_failing_stops_the_pump_before_anything_is_acked(
    bridge: Bridge, error: Exception
) -> None:
    producer = StandInProducer(fail=lambda topic, value: error)
    with pytest.raises(type(error)):
        _pump(bridge, producer, [_reading(0), _reading(1)])
    assert bridge.stats.acked == 0 and bridge.stats.forwarded == 0
    assert producer.on(".deadletter") == []  # a reading lost to an outage is redelivered, not filed


def test_kafka_refusing_even_a_bare_dead_letter_stops_the_pump_unacked(bridge: Bridge) -> None:
    producer = StandInProducer(
        refuse=lambda topic, value: (
            TopicAuthorizationFailedError()
            if topic.endswith(".deadletter") or b'"poison"' in value
            else None
        )
    )
    with pytest.raises(TopicAuthorizationFailedError):
        _pump(bridge, producer, [_reading(0), POISON])
    assert bridge.stats.acked == 0


def test_what_counts_as_kafka_unavailable() -> None:
    assert kafka_unavailable(KafkaTimeoutError())
    assert kafka_unavailable(NotLeaderForPartitionError())
    assert kafka_unavailable(asyncio.CancelledError())
    assert not kafka_unavailable(MessageSizeTooLargeError())
    assert not kafka_unavailable(CorruptRecordException())
    assert not kafka_unavailable(TypeError("Recursion limit reached"))
