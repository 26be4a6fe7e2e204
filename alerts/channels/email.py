"""E-mail over SMTP, with the standard library's ``smtplib`` run in a thread.

Subject is the message title, body the plain text (Chinese first, English
below), both UTF-8; ``Message-ID`` is derived from the push's idempotency
key, so a mail client shows a repeated delivery as the same mail.

Transient SMTP answers (4xx), connection errors and timeouts are retried;
permanent ones (5xx, every recipient refused) are given up.

Routing-file entry (docs/alerts.md#email)::

    email: {host: smtp.example.gov.cn, port: 587, starttls: true, from: citywatch@example.gov.cn,
            to: [duty@example.gov.cn], username: citywatch, password: "${SMTP_PASSWORD}"}
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from alerts.channels.plugin import Option, Result
from alerts.message import Message

TYPE = "email"
OPTIONS = (
    Option("host", "text", required=True, doc="the SMTP server"),
    Option("port", "whole", default=25),
    Option("from", "address", required=True, doc="the sender"),
    Option("to", "addresses", required=True, doc="the recipients"),
    Option("username", "text", doc="log in with this name (and `password`)"),
    Option("password", "text", secret=True),
    Option("starttls", "flag", default=False, doc="STARTTLS after connecting"),
    Option("ssl", "flag", default=False, doc="TLS from the start (SMTPS, usually port 465)"),
    Option("timeout", "duration", doc="per SMTP session (default: `delivery.timeout`)"),
)
TARGET = ("host", "port", "to")


def new(o: Mapping[str, Any], timeout_s: float) -> EmailChannel:
    return EmailChannel(host=o["host"], port=o["port"], sender=o["from"], to=o["to"], username=o["username"],
                        password=o["password"], starttls=o["starttls"], ssl=o["ssl"], timeout_s=timeout_s)  # fmt: skip


class EmailChannel:
    type = TYPE

    def __init__(self, host: str, port: int, sender: str, to: list[str], username: str | None = None,
                 password: str | None = None, starttls: bool = False, ssl: bool = False,
                 timeout_s: float = 10.0):  # fmt: skip
        self.host, self.port, self.sender, self.to = host, port, sender, list(to)
        self.username, self.password = username, password
        self.starttls, self.ssl, self.timeout_s = starttls, ssl, timeout_s

    def build(self, message: Message) -> EmailMessage:
        mail = EmailMessage()
        mail["Subject"] = message.title
        mail["From"] = self.sender
        mail["To"] = ", ".join(self.to)
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = f"<{message.key}@citywatch>"
        mail["X-Citywatch-Idempotency-Key"] = message.key
        mail.set_content(message.text, charset="utf-8")
        return mail

    def _send_blocking(self, mail: EmailMessage) -> Result:
        try:
            cls = smtplib.SMTP_SSL if self.ssl else smtplib.SMTP
            with cls(self.host, self.port, timeout=self.timeout_s) as smtp:
                if self.starttls:
                    smtp.starttls()
                if self.username:
                    smtp.login(self.username, self.password or "")
                refused = smtp.send_message(mail)
            if refused:
                return Result.delivered(f"accepted, but refused for {sorted(refused)}")
            return Result.delivered("250 accepted")
        except smtplib.SMTPRecipientsRefused as exc:
            return Result.give_up(f"every recipient refused: {exc.recipients}")
        except smtplib.SMTPResponseException as exc:
            detail = f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"
            return Result.retry(detail) if 400 <= exc.smtp_code < 500 else Result.give_up(detail)
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            return Result.retry(f"{type(exc).__name__}: {exc}")

    async def send(self, message: Message) -> Result:
        return await asyncio.to_thread(self._send_blocking, self.build(message))

    async def close(self) -> None:
        return None
