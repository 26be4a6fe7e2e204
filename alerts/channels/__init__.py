"""Channels: one module per channel type, registered by one line in ``CHANNELS`` (docs/alerts.md#channels).

What a channel module declares (``TYPE``, ``OPTIONS``, ``TARGET``, ``new``) is
in ``alerts/channels/plugin.py``; what each type sends is its section of
docs/alerts.md. Adding one is its module, its line in the table below, its
section of docs/alerts.md and its test (docs/extending.md#adding-an-alert-channel).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from alerts.channels import console, dingtalk, email, webhook, wecom
from alerts.channels.plugin import Channel, ChannelModule
from foundation.logs import register_secret


class ChannelEntry(Protocol):
    """One channel entry of a receiver, as the routing file's loader gives it (``alerts.route.ChannelSpec``)."""

    @property
    def type(self) -> str: ...
    @property
    def options(self) -> Mapping[str, Any]: ...


CHANNELS: dict[str, ChannelModule] = {m.TYPE: m for m in (wecom, dingtalk, webhook, email, console)}
"""Every channel type, in the order docs/alerts.md lists them."""


def channel_target(ctype: str, options: Mapping[str, Any]) -> str:
    """What rate limits and ordering are per: ``wecom:<url>``, ``email:<host>:<port>:<to,...>``, ``console``."""
    parts = [ctype]
    for name in CHANNELS[ctype].TARGET:
        v = options[name]
        parts.append(",".join(v) if isinstance(v, list | tuple) else str(v))
    return ":".join(parts)


def make_channel(spec: ChannelEntry, default_timeout_ms: int = 10_000) -> Channel:
    """The channel object for one channel entry of a receiver (its ``timeout``, else ``default_timeout_ms``).

    Its secret options (robot URLs, HMAC keys, passwords) are registered for redaction first, so
    no log line, delivery detail or alerts record of this process shows them (docs/alerts.md#channels).
    """
    for o in CHANNELS[spec.type].OPTIONS:
        if o.secret and isinstance(spec.options.get(o.name), str):
            register_secret(spec.options[o.name])
    timeout_ms = spec.options.get("timeout")
    return CHANNELS[spec.type].new(
        spec.options, (default_timeout_ms if timeout_ms is None else timeout_ms) / 1000
    )
