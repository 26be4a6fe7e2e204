"""alerts/channels/console.py: the log as a channel (docs/alerts.md#console)."""

from __future__ import annotations

import pytest

from alerts.channels import make_channel
from alerts.channels.console import ConsoleChannel
from alerts.route import parse_routes
from tests.alerts.standins import message, run


def test_console_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="citywatch.alerts.push")
    assert run(ConsoleChannel().send(message())).status == "delivered"
    assert "花园路井盖缺失" in caplog.text


def test_console_entry_of_the_routing_file() -> None:
    cfg = parse_routes(
        "receivers:\n  - {name: a, console: {}}\n  - name: b\n    console:\nroute: {receiver: a}\n"
    )
    for name in ("a", "b"):  # `console:` alone is `console: {}`
        (spec,) = cfg.receivers[name].channels
        assert spec.options == {} and spec.target == "console"
        assert isinstance(make_channel(spec), ConsoleChannel)
