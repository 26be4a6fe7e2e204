"""Errors a person can act on.

Every mistake in a file a city edits (settings, device registry, rules,
routing) is reported as a ``ConfigError`` that names the file, the line (and
column when known) and what is wrong, so the CLI can print one line and exit
instead of a traceback. A service that does not answer (the MQTT broker, Kafka,
InfluxDB) is a ``ServiceDown`` naming the service, its address and how to start
it, raised by the client that tried.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit


class CitywatchError(Exception):
    """Base of every error the CLI reports as a one-line message (exit code 2)."""


class ConfigError(CitywatchError):
    """A mistake in a configuration, registry or rules file.

    ``str()`` gives ``file:line:column: message`` (line/column omitted when
    unknown), the format editors and CI logs turn into links.
    """

    def __init__(self, file: str | None, line: int | None, message: str, column: int | None = None):
        self.file = file
        self.line = line
        self.column = column
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or "<config>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.message}"


def read_config_text(path: object, what: str) -> tuple[str, str]:
    """(file name, text) of a UTF-8 file a city edits; ``ConfigError`` naming ``what`` otherwise.

    A BOM (left by Windows editors) is accepted; anything not UTF-8 is refused
    with the fix, not decoded by guesswork.
    """
    import os

    name = os.fspath(path)  # type: ignore[arg-type]
    try:
        with open(name, encoding="utf-8-sig") as f:
            return name, f.read()
    except OSError as exc:
        raise ConfigError(name, None, f"cannot read the {what}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(name, None, f"the {what} is not UTF-8; save it as UTF-8") from None


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\"()\]]+)")
"""The operating system's words inside a library's wrapped error ("[Errno 111] Connection refused")."""
MAX_CAUSE_CHARS = 160


def public_address(address: str) -> str:
    """Where a service was looked for, without credentials: ``scheme://host:port`` of a URL,
    ``host:port`` of each bootstrap server. Settings URLs may carry ``user:password@``, and
    an error line is pasted into tickets."""
    parts = []
    for part in address.split(","):
        part = part.strip()
        if "://" in part:
            try:
                u = urlsplit(part)
                host = u.hostname or ""
                host = f"[{host}]" if ":" in host else host
                part = f"{u.scheme}://{host}" + (f":{u.port}" if u.port else "")
            except ValueError:  # a malformed port: keep only what follows the credentials
                scheme, _, rest = part.partition("://")
                part = f"{scheme}://{rest.rpartition('@')[2]}"
        else:
            part = part.rpartition("@")[2]
        parts.append(part)
    return ",".join(parts)


def describe_cause(cause: object) -> str:
    """A short, one-line, redacted reason from an exception or a text.

    ``[Errno 111] Connection refused`` wrapped by urllib, urllib3 or asyncio becomes
    ``Connection refused``; a timeout says so.
    """
    from foundation.logs import redact

    if isinstance(cause, BaseException):
        reason = getattr(cause, "reason", None)  # urllib.error.URLError wraps the OSError
        if isinstance(reason, BaseException):
            return describe_cause(reason)
        if isinstance(cause, TimeoutError):
            text = "no answer before the timeout"
        elif isinstance(cause, OSError) and cause.strerror:
            text = cause.strerror
        else:
            text = str(cause) or type(cause).__name__
    else:
        text = str(cause)
    found = _ERRNO.search(text)
    if found:
        text = found.group(1)
    text = " ".join(text.split())
    if len(text) > MAX_CAUSE_CHARS:
        text = text[: MAX_CAUSE_CHARS - 3] + "..."
    return redact(text)


class ServiceDown(CitywatchError):
    """A service citywatch needs does not answer: not running, another address, or hung.

    Raised where citywatch's clients talk to the service (``store.influxql``,
    ``bus.kafka``, ``bus.mqtt``), so every command that needs it answers an outage
    the same way, in one line the CLI prints: the service, where it was looked for
    (without credentials), why, and the two fixes: start citywatch's own services,
    or point the setting at the one that runs.
    """

    def __init__(
        self, service: str, address: str, setting: str, cause: object = "", fix: str = ""
    ) -> None:
        self.service = service
        self.address = public_address(address)
        self.setting = setting
        self.cause = describe_cause(cause) if cause else ""
        self.fix = fix or f"start it with `citywatch services up` (or check {setting})"
        """What to do; a service citywatch does not run (Grafana) says so instead."""
        super().__init__(str(self))

    def __str__(self) -> str:
        why = f" ({self.cause})" if self.cause else ""
        return f"{self.service} at {self.address} does not answer{why}; {self.fix}"
