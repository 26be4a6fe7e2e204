"""Every act the gate accepts leaves with an id of its own (decision 010, §6): the detector applies
an id once, so the id must be made where the act is made, one per act, for every verb."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from alerts.gate import ActRequest, Gate
from alerts.policy import load_policy
from contract.cases import ACTIONS, OfficerAction
from contract.journal import decode, encode, to_record
from contract.officers import AuditRecord
from registry.officer_tokens import TokenStore
from registry.officers import Directory, Officer
from streams.harness import REG

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_790_000_000_000
H = 3_600_000

CITY = Officer("city-1", "市督办", ("city_supervisor",), ())
"""A city supervisor: the policy lets them take every case action, anywhere."""

FIELDS: dict[str, dict] = {
    "note": {"note": "井盖已围挡"},
    "feedback": {"note": "已更换井盖", "photos": ("ph-1",)},
    "check": {"passed": True},
    "extend": {"deadline": NOW + 24 * H, "reason": "材料未到"},
    "announce_works": {"works_from": NOW, "works_until": NOW + 4 * H, "reason": "管道检修"},
}


def test_every_accepted_act_carries_its_own_uuid4(tmp_path: Path) -> None:
    submitted: list[OfficerAction] = []

    async def submit(action: OfficerAction) -> None:
        submitted.append(action)

    async def audit(_record: AuditRecord) -> None:
        return None

    tokens = TokenStore(tmp_path / "officers")
    token, _ = tokens.issue(CITY.officer_id)
    gate = Gate(lambda: Directory({CITY.officer_id: CITY}), tokens,
                load_policy(ROOT / "config" / "policy.yaml"), REG.get, submit, audit,
                clock=lambda: NOW)  # fmt: skip
    for verb in ACTIONS + ("close",):  # close twice: the same request is another act
        req = ActRequest(action=verb, device="MH-MAIN", channel="cli", **FIELDS.get(verb, {}))
        outcome = asyncio.run(gate.with_token(token, req))
        assert outcome.accepted, (verb, outcome.message)
        assert outcome.action is submitted[-1]
    assert [a.action for a in submitted] == [*ACTIONS, "close"]
    ids = [a.action_id for a in submitted]
    assert all(isinstance(i, str) and uuid.UUID(hex=i).version == 4 for i in ids), ids
    assert len(set(ids)) == len(ids), "one id per act"
    # the id travels: the acks record, the journal record the forwarder writes, decoded again
    for a in submitted:
        back = decode(encode(to_record(a, "jinshui", "manhole")[1]))
        assert isinstance(back, OfficerAction) and back.action_id == a.action_id
        assert OfficerAction.from_dict(a.to_dict()) == a
