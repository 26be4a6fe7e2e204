"""Officer actions flowing back into the streams: acknowledge, close as repaired, report an accident.

The CLI (``citywatch case ack|close|accident|note``) and the alerts HTTP API
both end here: one ``OfficerAction`` on ``<prefix>.acks``, keyed by device.
The worker journals it on the device's partition, between its readings, so
the detector applies it in order, and replays of the journal apply it
identically.
"""

from __future__ import annotations

import logging

import orjson

from alerts.gate import Gate
from bus.kafka import ensure_topics_for, producer_for, start_client
from contract.cases import OfficerAction
from contract.officers import AuditRecord
from contract.topics import KafkaTopics
from foundation.settings import Settings

log = logging.getLogger("citywatch.acks")

STAGE_LOOKUP_TIMEOUT_S = 3.0
"""How long the CLI's gate waits on InfluxDB (to connect, and for each read of the answer) for a
case's stage before a stage act (``citywatch case dispatch|feedback|check|extend``). The lookup
only spares an officer a refusal the worker's workflow would make anyway (docs/handover.md,
"Whose stage counts"): an InfluxDB that accepts and never answers must not hold the act up for
the query's usual 30 s."""


async def _publish(settings: Settings, client_id: str, topic: str, record: dict, key: str) -> None:
    """One record on one of citywatch's topics, waiting until Kafka has stored it."""
    k = settings.kafka
    await ensure_topics_for(k)
    producer = await start_client(producer_for(k, client_id=client_id, linger_ms=0), k.bootstrap)
    try:
        body = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
        await producer.send_and_wait(topic, body, key=key.encode())
    finally:
        await producer.stop()


async def submit(settings: Settings, action: OfficerAction) -> None:
    """Publish one officer action and wait until Kafka has stored it."""
    topic = KafkaTopics(settings.kafka.topic_prefix).acks
    await _publish(settings, "citywatch-acks", topic, action.to_dict(), action.device)


async def publish_audit(settings: Settings, record: AuditRecord) -> None:
    """Publish one audit record (``<prefix>.audit``, keyed by officer) and wait for Kafka's ack."""
    topic = KafkaTopics(settings.kafka.topic_prefix).audit
    await _publish(settings, "citywatch-audit", topic, record.to_dict(), record.officer or "-")


def gate_for(settings: Settings) -> Gate:
    """The gate as settings configure it: the directory and policy files, the token store
    in ``<state_dir>/officers``, the device registry, Kafka for acts and audit records."""
    from pathlib import Path

    from alerts.policy import load_policy
    from registry.devices import load_registry
    from registry.officer_tokens import TokenStore
    from registry.officers import load_directory

    directory = load_directory(settings.paths.officers)
    registry = load_registry(settings.paths.registry)
    return Gate(
        lambda: directory,
        TokenStore(Path(settings.paths.state_dir) / "officers"),
        load_policy(settings.paths.policy),
        registry.get,
        lambda action: submit(settings, action),
        lambda record: publish_audit(settings, record),
        stage_of=lambda device, case_id: stage_from_influx(settings, device, case_id),
    )


def stage_from_influx(
    settings: Settings, device: str, case_id: str | None, timeout: float = STAGE_LOOKUP_TIMEOUT_S
) -> tuple[str, str] | None:
    """The current stage of ``device``'s case as InfluxDB's ``case_stage`` points say it (what
    the CLI already reads): the last stage each case reached; None if not known (no point yet,
    several cases in the workflow and none named, InfluxDB not answering within ``timeout``:
    the worker judges). InfluxDB not answering is told in one warning line."""
    from contract.cases import STAGES
    from store.errors import InfluxDown
    from store.read import case_stages

    try:
        changes = case_stages(
            settings, device=device, case_ids=[case_id] if case_id else None, timeout=timeout
        )
    except InfluxDown as exc:
        log.warning(
            "the stage of %s's case is not known: InfluxDB at %s does not answer (%s, waited "
            "up to %g s); the act goes to the worker's workflow, which refuses it if it is out "
            "of turn",
            device,
            exc.address,
            exc.cause or "no answer",
            timeout,
        )
        return None
    except Exception:  # noqa: BLE001 - no view (no database yet...), no judgement here
        return None
    stage: dict[str, str] = {}
    for c in changes:  # by case, in the workflow's order
        if c.stage in STAGES:
            stage[c.case_id] = "evaluated" if c.stage == "closed" else c.stage
    live = [(cid, st) for cid, st in stage.items() if st != "evaluated"]
    if case_id is not None:
        return (case_id, stage[case_id]) if case_id in stage else None
    if len(live) == 1:
        return live[0]
    if not live and stage:
        latest = max(changes, key=lambda c: c.at).case_id
        return latest, stage[latest]
    return None
