"""Logging set-up shared by every process citywatch starts (CLI, bridge, worker, alerts).

One place, so a process started on its own (``python -m alerts.service``) logs
exactly as one started by the CLI, and so the libraries that build a debug
record per event are held at warning everywhere (docs/architecture.md).
"""

from __future__ import annotations

import logging
import sys

QUIET_LOGGERS = ("aiokafka", "faust", "mode", "kafka", "aiohttp.access")


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, getattr(logging, level)))
