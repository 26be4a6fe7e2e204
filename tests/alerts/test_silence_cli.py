"""``citywatch silence add | list | expire`` on the real Kafka-protocol broker, with the alerts service
running: the CLI acts with officers' own tokens, every act is audited, and the running service picks
each silence up without a restart."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from alerts.service import AlertsService
from contract.topics import KafkaTopics
from foundation.settings import Settings
from tests.alerts.standins import HttpStandIn, async_wait_for, case_event
from tests.kit.cli import officer_cli
from tests.kit.kafka import produce, read_topic
from tests.kit.officers import with_officers
from tests.kit.routes import grid_officer_routes

pytestmark = pytest.mark.services


async def cli(s: Settings, *args: str, token: str = "") -> subprocess.CompletedProcess[str]:
    """``officer_cli`` off the event loop, which the running alerts service shares."""
    return await asyncio.to_thread(officer_cli, s, *args, token=token)


def test_the_cli_round_trip_adds_lists_and_expires_a_silence_the_running_service_obeys(
    settings: Settings, tmp_path: Path, hook: HttpStandIn, unique: str
) -> None:
    s, tokens = with_officers(settings, tmp_path, unique, "grid", "sup")
    case = case_event(1, district="jinshui")
    comment = "井盖更换施工 cover replacement"

    async def go() -> dict[str, object]:
        svc = AlertsService(
            s, grid_officer_routes(tmp_path, hook.url), tmp_path / "state", http_port=-1
        )
        stop = asyncio.Event()
        task = asyncio.create_task(svc.run(stop))
        seen: dict[str, object] = {}
        try:
            refused = await cli(s, "silence", "add", "district=jinshui", "kind=manhole", "--duration", "2h",
                                "--comment", comment, token=tokens["grid"])  # fmt: skip
            seen["refused"] = refused
            added = await cli(s, "silence", "add", "district=jinshui", "kind=manhole", "--duration", "2h",
                              "--comment", comment, token=tokens["sup"])  # fmt: skip
            assert added.returncode == 0, added.stderr
            sid = added.stdout.strip().splitlines()[-1]
            seen["added"], seen["id"] = added, sid
            await async_wait_for(
                lambda: sid in svc.silences.by_id, 20, "the running service to have it"
            )
            seen["listed"] = await cli(s, "silence", "list")
            await produce(s, [("cases", case)])
            await async_wait_for(
                lambda: svc.stats["muted"] >= 1, 20, "the case's open notice muted"
            )
            await asyncio.sleep(0.5)
            seen["pushed_while_silenced"] = len(hook.delivered)
            seen["expired"] = expired = await cli(
                s, "silence", "expire", sid[:8], token=tokens["sup"]
            )
            assert expired.returncode == 0, expired.stderr
            await async_wait_for(
                lambda: len(hook.delivered) >= 1, 20, "the push once the silence is over"
            )
            seen["after"] = await cli(s, "silence", "list")
            seen["all"] = await cli(s, "silence", "list", "--expired")
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)
        k = s.kafka
        seen["audit"] = await read_topic(k.bootstrap, KafkaTopics(k.topic_prefix).audit, 3, 10)
        seen["records"] = await read_topic(k.bootstrap, KafkaTopics(k.topic_prefix).alerts, 2, 10)
        return seen

    seen = asyncio.run(go())
    sid = str(seen["id"])
    refused = seen["refused"]
    assert isinstance(refused, subprocess.CompletedProcess) and refused.returncode == 2
    assert refused.stderr.strip() == (f"citywatch: refused: grid-{unique} may not silence pushes: that needs "
                                      "district supervisor, city supervisor")  # fmt: skip
    assert f'silence {sid}: district="jinshui", kind="manhole"' in seen["added"].stdout  # type: ignore[union-attr]
    listed = seen["listed"].stdout  # type: ignore[union-attr]
    assert listed.startswith("1 silences") and sid in listed and "active" in listed
    assert comment in listed and f"by sup-{unique}" in listed
    # silenced: nothing pushed, the notice recorded with the silence's id
    assert seen["pushed_while_silenced"] == 0
    muted = [r for r in seen["records"] if r["status"] == "silenced"]  # type: ignore[union-attr]
    assert [(r["cases"], r["silenced_by"], r["detail"]) for r in muted] == [
        ([{"case_id": case["case_id"], "change": "open"}], [sid], f"silenced by {sid}")
    ]
    # expired by a prefix of its id: the still-open case is told once
    assert f"silence {sid} expired by sup-{unique}" in seen["expired"].stdout  # type: ignore[union-attr]
    (push,) = hook.delivered
    assert [(c["case_id"], c["change"]) for c in push.json()["cases"]] == [
        (case["case_id"], "unsilenced")
    ]
    assert seen["after"].stdout.startswith("0 silences")  # type: ignore[union-attr]
    everything = seen["all"].stdout  # type: ignore[union-attr]
    assert (
        sid in everything and "expired" in everything and f"expired by sup-{unique}" in everything
    )
    # every act on the audit trail, the refused one too, each with the silence
    acts = sorted((a["action"], a["outcome"], a["officer"]) for a in seen["audit"])  # type: ignore[union-attr]
    assert acts == sorted([("silence_add", "refused", f"grid-{unique}"), ("silence_add", "accepted", f"sup-{unique}"),
                           ("silence_expire", "accepted", f"sup-{unique}")])  # fmt: skip
    accepted = [a for a in seen["audit"] if a["outcome"] == "accepted"]  # type: ignore[union-attr]
    assert {a["extra"]["silence"]["id"] for a in accepted} == {sid}
    assert all(
        a["channel"] == "cli" and a["credential"].startswith("token:") for a in seen["audit"]
    )  # type: ignore[union-attr]
