"""Officers: their roles, the channels they act through, and the audit record of every act.

Money moves when an officer acts (a close stops a 10,000 yuan/h clock, an
accident report books 1,500,000), so who acted, as what, through which door
and with which credential is part of the evidence (docs/officers.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OFFICER_ROLES = ("duty", "grid", "district_supervisor", "city_supervisor", "finance")
"""duty: 值班员, watches the wall and acknowledges; grid: 网格员, goes out and repairs/closes;
district_supervisor / city_supervisor: 区级/市级督办, decide claims, accidents and backdating;
finance: 财务, reads settlements and acts on no case."""

ROLE_NAMES: dict[str, tuple[str, str]] = {
    "duty": ("值班员", "duty officer"),
    "grid": ("网格员", "grid officer"),
    "district_supervisor": ("区级督办", "district supervisor"),
    "city_supervisor": ("市级督办", "city supervisor"),
    "finance": ("财务", "finance"),
}

CHANNELS = ("link", "cli", "api")
"""How an act reached citywatch: a signed link from a push, the CLI, the HTTP API."""

OUTCOMES = ("accepted", "refused", "pending")
"""accepted: on its way to the case; refused: nothing changed, ``reason`` says why;
pending: recorded, waiting for a second officer (an accident report, four eyes)."""


@dataclass(frozen=True)
class AuditRecord:
    """One officer act, accepted or refused, as ``<prefix>.audit`` carries it (docs/officers.md)."""

    at: int
    """When citywatch received it (epoch ms, wall clock)."""
    officer: str
    """The officer id the credential belongs to ("" when no credential was valid)."""
    roles: tuple[str, ...]
    channel: str
    credential: str
    """The credential's id (a token id, a link's nonce): never the secret."""
    action: str
    device: str
    case_id: str | None
    outcome: str
    reason: str = ""
    client: str = ""
    user_agent: str = ""
    acted_at: int | None = None
    """The instant the act claims (``at`` of the action; earlier when backdated)."""
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.channel not in CHANNELS:
            raise ValueError(f"Invalid channel {self.channel!r}; expected one of {CHANNELS}")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"Invalid outcome {self.outcome!r}; expected one of {OUTCOMES}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "officer": self.officer,
            "roles": list(self.roles),
            "channel": self.channel,
            "credential": self.credential,
            "action": self.action,
            "device": self.device,
            "case_id": self.case_id,
            "outcome": self.outcome,
            "reason": self.reason,
            "client": self.client,
            "user_agent": self.user_agent,
            "acted_at": self.acted_at,
            "note": self.note,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AuditRecord:
        return cls(
            at=int(d["at"]),
            officer=str(d.get("officer") or ""),
            roles=tuple(str(r) for r in d.get("roles") or ()),
            channel=str(d["channel"]),
            credential=str(d.get("credential") or ""),
            action=str(d.get("action") or ""),
            device=str(d.get("device") or ""),
            case_id=d.get("case_id"),
            outcome=str(d["outcome"]),
            reason=str(d.get("reason") or ""),
            client=str(d.get("client") or ""),
            user_agent=str(d.get("user_agent") or ""),
            acted_at=None if d.get("acted_at") is None else int(d["acted_at"]),
            note=d.get("note"),
            extra=dict(d.get("extra") or {}),
        )
