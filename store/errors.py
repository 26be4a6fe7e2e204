"""What goes wrong talking to InfluxDB, as the callers of ``store`` see it."""

from __future__ import annotations

import json

__all__ = ["InfluxError", "InfluxQueryError", "server_message"]


class InfluxError(Exception):
    """A writer, set-up or read failure that the caller has to act on."""


class InfluxQueryError(InfluxError):
    """An InfluxQL statement failed; the message has the server's reason and the query."""


def server_message(text: str) -> str:
    """The reason in an InfluxDB error body (``{"error": ...}`` on 1.x, ``{"message": ...}`` on 2.x)."""
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()
    if isinstance(data, dict):
        return str(data.get("error") or data.get("message") or text).strip()
    return text.strip()
