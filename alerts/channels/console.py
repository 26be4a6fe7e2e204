"""The log as a channel: what the embedded default does when no robot is configured.

Routing-file entry: ``console: {}``.
"""

from __future__ import annotations

import logging

from alerts.channels import Result
from alerts.message import Message

log = logging.getLogger("citywatch.alerts.push")


class ConsoleChannel:
    type = "console"

    async def send(self, message: Message) -> Result:
        log.info("PUSH %s to %s\n%s", message.key, message.receiver, message.text)
        return Result.delivered("logged")

    async def close(self) -> None:
        return None
