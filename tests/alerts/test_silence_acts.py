"""Who may silence pushes: the gate's ``push_act`` with personal tokens, the policy's ``silences`` rule,
and the audit record of every attempt (accepted or refused), the silence in it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from alerts.gate import ActRequest, Gate
from alerts.policy import default_policy, load_policy
from alerts.silence import new_silence, scope
from contract.officers import AuditRecord
from foundation.errors import ConfigError
from registry.officer_tokens import TokenStore
from registry.officers import Directory, Officer

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_790_000_000_000
H = 3_600_000

OFFICERS = {o.officer_id: o for o in (
    Officer("grid-js", "网格员", ("grid",), ("jinshui",)),
    Officer("duty-js", "值班员", ("duty",), ("jinshui",)),
    Officer("sup-js", "区督办", ("district_supervisor",), ("jinshui",)),
    Officer("city-1", "市督办", ("city_supervisor",), ()),
)}  # fmt: skip


class Trail:
    def __init__(self) -> None:
        self.audit: list[AuditRecord] = []
        self.performed: list[str] = []


def gate(tmp_path: Path, trail: Trail) -> tuple[Gate, dict[str, str]]:
    tokens = TokenStore(tmp_path / "officers")
    issued = {oid: tokens.issue(oid)[0] for oid in OFFICERS}

    async def audit(record: AuditRecord) -> None:
        trail.audit.append(record)

    async def submit(_action: object) -> None:
        raise AssertionError("a silence is not a case action: nothing goes to the acks topic")

    g = Gate(lambda: Directory(OFFICERS), tokens, load_policy(ROOT / "config" / "policy.yaml"),
             lambda _device: None, submit, audit, clock=lambda: NOW)  # fmt: skip
    return g, issued


def add(g: Gate, trail: Trail, token: str, *matchers: str, hours: float = 4, fail: bool = False):  # noqa: ANN201
    s = new_silence(matchers, created_by="", comment="箱变检修 cabinet repair", now_ms=NOW,
                    ends_at=NOW + int(hours * H))  # fmt: skip

    async def perform(officer: Officer) -> str:
        if fail:
            raise ConnectionError("Kafka went away")
        trail.performed.append(officer.officer_id)
        return f"silence {s.id} added by {officer.officer_id}"

    req = ActRequest(
        action="silence_add", device="", channel="cli", note=s.comment, client="cli@test"
    )
    where = {"SL-JS-0001": "jinshui"}.get
    return asyncio.run(g.push_act(token, req, scope(s, where), perform, duration_ms=s.ends_at - s.starts_at,
                                  extra={"silence": s.to_dict()})), s  # fmt: skip


def test_a_silence_by_an_officer_without_the_role_is_refused_and_audited(tmp_path: Path) -> None:
    trail = Trail()
    g, tokens = gate(tmp_path, trail)
    for officer in ("grid-js", "duty-js"):
        outcome, s = add(g, trail, tokens[officer], "district=jinshui", "rule=streetlight.fault")
        assert not outcome.accepted
        assert outcome.message == (f"{officer} may not silence pushes: that needs district supervisor, "
                                   "city supervisor")  # fmt: skip
        rec = trail.audit[-1]
        assert (rec.outcome, rec.officer, rec.action, rec.channel, rec.reason) == (
            "refused",
            officer,
            "silence_add",
            "cli",
            outcome.message,
        )
        assert rec.extra["silence"]["id"] == s.id and rec.note == "箱变检修 cabinet repair"
        assert rec.credential.startswith("token:")
    assert trail.performed == []  # nothing was published


@pytest.mark.parametrize(
    ("officer", "matchers", "hours", "refusal"),
    [
        ("sup-js", ("district=erqi",), 4, "sup-js does not act in district erqi (theirs: jinshui)"),
        ("sup-js", ("rule=streetlight.fault",), 4, "sup-js acts in jinshui only: confine the silence with district="),
        ("sup-js", ('district=~"jinshui|erqi"',), 4, "sup-js acts in jinshui only"),
        ("sup-js", ("district=jinshui",), 7 * 24 + 1, "a silence lasts at most 7d (policy silences.max_duration)"),
        ("sup-js", ("district=jinshui",), 4, None),
        ("sup-js", ("device=SL-JS-0001",), 4, None),  # the registry puts the device in jinshui
        ("city-1", ("rule=streetlight.fault",), 24, None),  # city-wide
    ],
)  # fmt: skip
def test_a_silence_stays_inside_the_officers_districts_and_the_longest_duration(
    tmp_path: Path, officer: str, matchers: tuple[str, ...], hours: float, refusal: str | None
) -> None:
    trail = Trail()
    g, tokens = gate(tmp_path, trail)
    outcome, s = add(g, trail, tokens[officer], *matchers, hours=hours)
    (rec,) = trail.audit
    if refusal is None:
        assert outcome.accepted and outcome.message == f"silence {s.id} added by {officer}"
        assert (
            rec.outcome == "accepted"
            and rec.reason == outcome.message
            and trail.performed == [officer]
        )
        assert rec.roles == (OFFICERS[officer].roles[0],)
    else:
        assert not outcome.accepted and outcome.message.startswith(refusal), outcome.message
        assert rec.outcome == "refused" and trail.performed == []


def test_a_silence_without_a_valid_token_or_without_kafka_is_refused_and_audited(
    tmp_path: Path,
) -> None:
    trail = Trail()
    g, tokens = gate(tmp_path, trail)
    outcome, _ = add(g, trail, "cwo_nobody_notatoken", "district=jinshui")
    assert (
        not outcome.accepted
        and trail.audit[-1].outcome == "refused"
        and trail.audit[-1].officer == ""
    )
    outcome, _ = add(g, trail, tokens["city-1"], "district=jinshui", fail=True)
    assert (
        not outcome.accepted
        and "could not record it just now (ConnectionError); try again" in outcome.message
    )
    assert trail.audit[-1].outcome == "refused" and trail.audit[-1].officer == "city-1"


def test_the_policy_file_says_who_may_silence_and_for_how_long(tmp_path: Path) -> None:
    shipped = load_policy(ROOT / "config" / "policy.yaml")
    assert (
        shipped.silence_roles
        == default_policy().silence_roles
        == ("district_supervisor", "city_supervisor")
    )
    assert shipped.silence_max_ms == 7 * 24 * H
    p = tmp_path / "policy.yaml"
    p.write_text("silences:\n  roles: [duty]\n  max_duration: 12h\n", encoding="utf-8")
    mine = load_policy(p)
    duty = OFFICERS["duty-js"]
    assert mine.decide_silence(duty, "silence_add", ("jinshui",), 12 * H).allowed
    assert not mine.decide_silence(duty, "silence_add", ("jinshui",), 13 * H).allowed
    assert not mine.decide_silence(OFFICERS["sup-js"], "silence_expire", ("jinshui",)).allowed
    p.write_text("silences:\n  roles: [dutty]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown role 'dutty'.*did you mean 'duty'"):
        load_policy(p)
    p.write_text("silences:\n  max_duration: 12\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="silences.max_duration"):
        load_policy(p)
