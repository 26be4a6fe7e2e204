"""The CLI: a mistake by the person at the keyboard is one line, never a traceback (citywatch/cli.py)."""

from __future__ import annotations

import pytest

from tests.kit.cli import run_cli as _cli


@pytest.mark.parametrize(
    "args", [["frobnicate"], ["services", "restart"], ["case", "ack", "MH-1"], ["replay"]]
)
def test_cli_misuse_prints_a_message_not_a_traceback(args: list[str]) -> None:
    done = _cli(*args)
    assert done.returncode == 2
    assert "citywatch: error:" in done.stderr and "Traceback" not in done.stderr


def test_missing_replay_file_is_one_line() -> None:
    done = _cli("replay", "/nonexistent/day.jsonl")
    assert (
        done.returncode == 2
        and done.stderr.strip() == "citywatch: /nonexistent/day.jsonl: no such replay file"
    )
