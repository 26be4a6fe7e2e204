"""What a channel module is made of (docs/alerts.md#channels, docs/extending.md).

A channel module (``alerts/channels/<type>.py``) declares, at module level:

* ``TYPE`` -- its key in a receiver of the routing file (``wecom: {...}``);
* ``OPTIONS`` -- a tuple of ``Option``: every key its entry takes, with its
  kind, whether it is required, its default and whether it is a secret; the
  routing file's loader (``alerts/route.py``) reads and validates an entry from
  this alone, so nothing about a channel is written anywhere else;
* ``TARGET`` -- the options that name what rate limits and ordering are per
  (the robot, the URL, the mailbox); the outbox sends one target's pushes in order;
* ``new(options, timeout_s) -> Channel`` -- the channel object for one entry
  (``options``: every option of ``OPTIONS``, given or defaulted).

It is registered with one line in ``alerts/channels/__init__.py`` (``CHANNELS``),
as Alertmanager registers an integration in ``config/receiver/receiver.go``.

The channel object has one ``async send(message) -> Result``: it says what
happened -- ``delivered``, ``retry`` (later, optionally after
``retry_after_s``) or ``give_up`` (retrying cannot help: a bad robot key, a
refused recipient); the outbox decides when to try again (Alertmanager's
``Notify(ctx, alerts) (retry bool, err error)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from foundation.logs import redact

if TYPE_CHECKING:
    from alerts.message import Message

OPTION_KINDS: dict[str, str] = {
    "text": "text (may say ${ENV_VAR})",
    "url": "an http(s):// URL",
    "address": "an e-mail address",
    "addresses": "an e-mail address or a list of them",
    "whole": "a whole number",
    "flag": "true or false",
    "duration": "a duration with its unit (10s, 500ms)",
    "headers": "a mapping of HTTP header names to text",
}
"""The kinds of option the routing file's loader knows how to read, and how docs/alerts.md calls them."""


@dataclass(frozen=True)
class Option:
    """One key of a channel's entry in the routing file."""

    name: str
    kind: str
    """One of ``OPTION_KINDS``."""
    required: bool = False
    default: Any = None
    """The value when the key is not given (None: absent; ``timeout`` None means ``delivery.timeout``)."""
    secret: bool = False
    """Never echoed in an error or a ``repr``; write it as ``${ENV_VAR}`` in the file."""
    minimum: int = 1
    """The least value of a ``whole`` option."""
    doc: str = ""

    def __post_init__(self) -> None:
        if self.kind not in OPTION_KINDS:
            raise ValueError(
                f"option {self.name!r}: unknown kind {self.kind!r}; one of {', '.join(OPTION_KINDS)}"
            )
        if self.required and self.default is not None:
            raise ValueError(f"option {self.name!r}: a required option has no default")


class OptionError(ValueError):
    """An option's value that reads fine but cannot work (an HMAC key too short to be safe).

    Raised by a channel's ``new``; the alerts service reports it as a ``ConfigError`` naming the
    routing file, the line of the entry and the option, before anything is sent.
    """

    def __init__(self, option: str, reason: str):
        super().__init__(f"{option}: {reason}")
        self.option, self.reason = option, reason


@dataclass(frozen=True)
class Result:
    status: str
    """``delivered``, ``retry`` or ``give_up``."""
    detail: str = ""
    """What happened, for the log, the outbox and the ``<prefix>.alerts`` record: redacted
    (foundation/logs.py) when the result is made, since it often quotes a far end's answer or an
    exception that names the URL -- and a robot's URL holds its key."""
    retry_after_s: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "detail", redact(self.detail))

    @classmethod
    def delivered(cls, detail: str = "ok") -> Result:
        return cls("delivered", detail)

    @classmethod
    def retry(cls, detail: str, after_s: float | None = None) -> Result:
        return cls("retry", detail, after_s)

    @classmethod
    def give_up(cls, detail: str) -> Result:
        return cls("give_up", detail)


class Channel(Protocol):
    type: str

    async def send(self, message: Message) -> Result: ...

    async def close(self) -> None: ...


class ChannelModule(Protocol):
    """The module-level names every ``alerts/channels/<type>.py`` declares (see the module doc)."""

    TYPE: str
    OPTIONS: tuple[Option, ...]
    TARGET: tuple[str, ...]

    def new(self, options: Mapping[str, Any], timeout_s: float) -> Channel: ...
