"""The log as a channel: what the embedded default does when no robot is configured.

Routing-file entry (docs/alerts.md#console): ``console: {}``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from alerts.channels.plugin import Option, Result
from alerts.message import Message

log = logging.getLogger("citywatch.alerts.push")

TYPE = "console"
OPTIONS: tuple[Option, ...] = ()
TARGET: tuple[str, ...] = ()


def new(o: Mapping[str, Any], timeout_s: float) -> ConsoleChannel:
    return ConsoleChannel()


class ConsoleChannel:
    type = TYPE

    async def send(self, message: Message) -> Result:
        log.info("PUSH %s to %s\n%s", message.key, message.receiver, message.text)
        return Result.delivered("logged")

    async def close(self) -> None:
        return None
