"""What goes wrong talking to InfluxDB, as the callers of ``store`` see it."""

from __future__ import annotations

import json

from foundation.errors import ServiceDown

__all__ = ["InfluxDown", "InfluxError", "InfluxQueryError", "server_message"]

INFLUX_SETTING = "influx.url / CITYWATCH_INFLUX_URL"


class InfluxError(Exception):
    """A writer, set-up or read failure that the caller has to act on."""


class InfluxQueryError(InfluxError):
    """An InfluxQL statement failed; the message has the server's reason and the query."""


class InfluxDown(InfluxError, ServiceDown):
    """InfluxDB does not answer at ``url`` (refused, unreachable, timed out).

    Both an ``InfluxError`` (what ``store``'s callers catch) and a ``ServiceDown``
    (what the CLI prints as one line with the fix).
    """

    def __init__(self, url: str, cause: object = "") -> None:
        ServiceDown.__init__(self, "InfluxDB", url, INFLUX_SETTING, cause)


def server_message(text: str) -> str:
    """The reason in an InfluxDB error body (``{"error": ...}`` on 1.x, ``{"message": ...}`` on 2.x)."""
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()
    if isinstance(data, dict):
        return str(data.get("error") or data.get("message") or text).strip()
    return text.strip()
