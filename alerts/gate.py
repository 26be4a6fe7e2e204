"""The one door officers' acts come through: who they are, whether they may, and the record.

The CLI (``citywatch case ...``), the HTTP API (bearer token) and the signed
links of a push all hand their request here (docs/officers.md):

1. **who**: a personal token (``registry.officer_tokens``) or, for a link, the
   officer the link was made for; the officer must be in the directory
   (``registry.officers``) now, not only when the token was issued;
2. **may**: the city's policy (``alerts.policy``) for the action, the officer's
   roles and districts, the note and any backdating;
3. **record**: the act, accepted or refused, goes to ``<prefix>.audit`` with who,
   role, channel, credential id, client address and user agent, the case, the
   outcome and the reason; an accepted act goes to ``<prefix>.acks`` as an
   ``OfficerAction`` carrying the same provenance into the case's evidence, and
   an ``action_id`` of its own (a uuid4) by which the detector applies it once,
   however often a forwarder or a restore delivers it (decision 010, §6).

Acts on the pushes rather than on a case (adding or expiring a silence) come
through ``push_act``: the same token, directory and audit trail, the policy's
``silences`` rule instead of a case action's.

Nothing here trusts the request: a free-text officer id is never taken, and a
refusal is one line saying why.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from alerts.policy import Policy
from contract.cases import ACTIONS, STAGE_ACTIONS, OfficerAction
from contract.officers import AuditRecord
from registry.devices import Device
from registry.officer_tokens import TokenError, TokenStore
from registry.officers import Directory, Officer
from streams.workflow import StageRefusal, stage_refusal

__all__ = ["ActRequest", "Gate", "Outcome"]

log = logging.getLogger("citywatch.alerts.gate")


@dataclass(frozen=True)
class ActRequest:
    action: str
    device: str
    channel: str
    case_id: str | None = None
    note: str | None = None
    at: int | None = None
    """The instant the act claims; None: now. Earlier than now is backdating."""
    reason: str | None = None
    client: str = ""
    user_agent: str = ""
    works_from: int | None = None
    works_until: int | None = None
    """``announce_works``: the window of the planned works."""
    deadline: int | None = None
    """``extend``: the approved disposal deadline."""
    passed: bool | None = None
    """``check``: the inspector's result."""
    photos: tuple[str, ...] = ()
    """``feedback``: the unit's photo references."""


@dataclass(frozen=True)
class Outcome:
    accepted: bool
    message: str
    audit: AuditRecord
    action: OfficerAction | None = None
    out_of_turn: StageRefusal | None = None
    """A stage act refused because the case is not in a stage that takes it (HTTP 409)."""


StageOf = Callable[[str, str | None], tuple[str, str] | None]
"""(device, case id or None) -> (case id, its current stage), or None when not known here."""


def _stage_fields(req: ActRequest) -> dict[str, Any]:
    """An act's own fields for its audit record: an announcement's window, a stage act's deadline,
    result and photo references (not the photos)."""
    out: dict[str, Any] = {}
    if req.works_from is not None and req.works_until is not None:  # the settlement lists them
        out["works_from"], out["works_until"] = req.works_from, req.works_until
    if req.deadline is not None:
        out["deadline"] = req.deadline
    if req.passed is not None:
        out["passed"] = req.passed
    if req.photos:
        out["photos"] = [str(p)[:500] for p in req.photos[:20]]
    return out


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Gate:
    def __init__(
        self,
        directory: Callable[[], Directory],
        tokens: TokenStore,
        policy: Policy,
        device: Callable[[str], Device | None],
        submit: Callable[[OfficerAction], Awaitable[None]],
        audit: Callable[[AuditRecord], Awaitable[None]],
        clock: Callable[[], int] = _wall_ms,
        stage_of: StageOf | None = None,
    ) -> None:
        self.directory, self.tokens, self.policy = directory, tokens, policy
        self.device, self.submit, self.publish_audit, self.clock = device, submit, audit, clock
        self.stage_of = stage_of
        """Where the gate reads a case's current stage (the alerts service: the cases topic it
        follows; the CLI: InfluxDB's case_stage points). The worker's own flow stays the judge
        (docs/handover.md): a view that lags lets an act through, which the workflow refuses."""

    async def with_token(self, token: str, req: ActRequest) -> Outcome:
        """An act on the strength of a personal token (CLI, HTTP API)."""
        who = await self._identify(token, req)
        if isinstance(who, Outcome):
            return who
        return await self.as_officer(*who, req)

    async def _identify(self, token: str, req: ActRequest,
                        extra: dict[str, Any] | None = None) -> tuple[Officer, str] | Outcome:  # fmt: skip
        """(officer, credential id) of a valid token of a directory officer, else the refusal."""
        try:
            info = self.tokens.verify(token, self.clock())
        except TokenError as exc:
            return await self._refuse(None, "", req, str(exc), extra=extra)
        officer = self.directory().get(info.officer)
        credential = f"token:{info.token_id}"
        if officer is None:
            return await self._refuse(None, credential, req,
                                      f"officer {info.officer} is no longer in the directory", extra=extra)  # fmt: skip
        return officer, credential

    async def push_act(self, token: str, req: ActRequest, scope: tuple[str, ...] | None,
                       perform: Callable[[Officer], Awaitable[str]], duration_ms: int | None = None,
                       extra: dict[str, Any] | None = None) -> Outcome:  # fmt: skip
        """An act on the pushes (``req.action`` ``silence_add`` | ``silence_expire``), by token.

        The policy's ``silences`` rule decides for the districts the silence is confined to
        (``scope``; None: anywhere); ``perform(officer)`` records it (publishes the silence) and
        returns the line the officer and the audit record read; ``extra`` (the silence) goes
        into the audit record, accepted or refused.
        """
        who = await self._identify(token, req, extra)
        if isinstance(who, Outcome):
            return who
        officer, credential = who
        decision = self.policy.decide_silence(officer, req.action, scope, duration_ms)
        if not decision.allowed:
            return await self._refuse(officer, credential, req, decision.reason, extra=extra)
        try:
            said = await perform(officer)
        except Exception as exc:  # noqa: BLE001 - Kafka down: nothing recorded, say so
            log.error("could not record %s: %s", req.action, exc)
            return await self._refuse(officer, credential, req,
                                      f"could not record it just now ({type(exc).__name__}); try again", extra=extra)  # fmt: skip
        record = self._record(
            officer, credential, req, "accepted", said, role=decision.role, extra=extra
        )
        await self._audit(record)
        return Outcome(True, said, record)

    async def for_link(self, officer_id: str, credential: str, req: ActRequest) -> Outcome:
        """An act from a signed link made for ``officer_id`` (its signature already checked)."""
        officer = self.directory().get(officer_id)
        if officer is None:
            return await self._refuse(None, credential, req,
                                      f"officer {officer_id} is no longer in the directory")  # fmt: skip
        return await self.as_officer(officer, credential, req)

    async def as_officer(self, officer: Officer, credential: str, req: ActRequest) -> Outcome:
        if req.action not in ACTIONS:
            return await self._refuse(officer, credential, req, f"unknown action {req.action!r}")
        dev = self.device(req.device)
        if dev is None:
            return await self._refuse(officer, credential, req,
                                      f"no device {req.device!r} in the registry")  # fmt: skip
        now = self.clock()
        at = now if req.at is None else req.at
        decision = self.policy.decide(
            officer,
            req.action,
            dev.district,
            acted_at=at,
            now=now,
            note=req.note,
            reason=req.reason,
        )
        if not decision.allowed:
            return await self._refuse(officer, credential, req, decision.reason, at)
        turn = self._out_of_turn(req, dev)
        if turn is not None:
            refused = await self._refuse(officer, credential, req, turn.line, at)
            return replace(refused, out_of_turn=turn)
        try:
            action = self._action(req, dev, officer, decision.role, credential, at, now,
                                  decision.backdated)  # fmt: skip
        except ValueError as exc:  # the act's own fields (an extension without its deadline...)
            return await self._refuse(officer, credential, req, str(exc), at)
        try:
            await self.submit(action)
        except Exception as exc:  # noqa: BLE001 - Kafka down: nothing recorded, say so
            log.error("could not record %s on %s: %s", req.action, req.device, exc)
            return await self._refuse(officer, credential, req,
                                      f"could not record it just now ({type(exc).__name__}); try again", at)  # fmt: skip
        record = self._record(
            officer, credential, req, "accepted", decision.reason, at, decision.role
        )
        await self._audit(record)
        return Outcome(True, decision.reason, record, action)

    def _out_of_turn(self, req: ActRequest, dev: Device) -> StageRefusal | None:
        """A stage act the case's current stage does not take (``streams.workflow.stage_refusal``,
        the worker's own rule), when the gate knows that stage; None: in turn, or not known."""
        if req.action not in STAGE_ACTIONS or self.stage_of is None:
            return None
        try:
            known = self.stage_of(dev.device_id, req.case_id)
        except Exception as exc:  # noqa: BLE001 - a view that cannot be read judges nothing
            log.warning(
                "current stage of %s not known (%s): the workflow judges the act",
                dev.device_id,
                exc,
            )
            return None
        if known is None:
            return None
        case_id, stage = known
        return stage_refusal(stage, req.action, case_id)

    @staticmethod
    def _action(req: ActRequest, dev: Device, officer: Officer, role: str, credential: str,
                at: int, now: int, backdated: bool) -> OfficerAction:  # fmt: skip
        return OfficerAction(
            action=req.action,
            device=dev.device_id,
            at=at,
            officer=officer.officer_id,
            case_id=req.case_id,
            note=req.note,
            role=role,
            channel=req.channel,
            credential=credential,
            reason=req.reason if backdated or req.action in ("announce_works", "extend") else None,
            recorded_at=now,
            works_from=req.works_from,
            works_until=req.works_until,
            deadline=req.deadline,
            passed=req.passed,
            photos=tuple(req.photos),
            action_id=uuid.uuid4().hex,  # applied once however often delivered (decision 010, §6)
        )

    # ------------------------------------------------------------------ the record

    def _record(
        self, officer: Officer | None, credential: str, req: ActRequest, outcome: str,
        reason: str, at: int | None = None, role: str = "", extra: dict[str, Any] | None = None,
    ) -> AuditRecord:  # fmt: skip
        return AuditRecord(
            at=self.clock(),
            officer=officer.officer_id if officer else "",
            roles=(role,) if role else (officer.roles if officer else ()),
            channel=req.channel,
            credential=credential,
            action=req.action[:40],
            device=req.device[:64],
            case_id=req.case_id,
            outcome=outcome,
            reason=reason,
            client=req.client[:100],
            user_agent=req.user_agent[:200],
            acted_at=at,
            note=req.note[:1000] if isinstance(req.note, str) else None,
            extra=dict(extra or {}) | _stage_fields(req),
        )

    async def _refuse(
        self, officer: Officer | None, credential: str, req: ActRequest, reason: str,
        at: int | None = None, extra: dict[str, Any] | None = None,
    ) -> Outcome:  # fmt: skip
        record = self._record(officer, credential, req, "refused", reason, at, extra=extra)
        await self._audit(record)
        log.info(  # the caller tells the officer; the audit record keeps it
            "refused %s on %s by %s via %s: %s",
            record.action, record.device, record.officer or "(no valid credential)", req.channel, reason,
        )  # fmt: skip
        return Outcome(False, reason, record)

    async def _audit(self, record: AuditRecord) -> None:
        try:
            await self.publish_audit(record)
        except Exception as exc:  # noqa: BLE001 - the act's own outcome stands; the log keeps it
            log.error("audit record not published (%s): %s", exc, record.to_dict())
