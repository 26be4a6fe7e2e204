"""The CLI: a mistake by the person at the keyboard is one line, never a traceback (citywatch/cli.py)."""

from __future__ import annotations

import pytest

from tests.kit.cli import run_cli as _cli


@pytest.mark.parametrize(
    "args", [["frobnicate"], ["services", "restart"], ["case", "ack"], ["replay"]]
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


def test_acting_on_a_case_without_an_officer_token_says_how_to_get_one() -> None:
    done = _cli("case", "ack", "MH-1")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "citywatch: acting on a case needs your own officer token: --token-file FILE or "
        "CITYWATCH_OFFICER_TOKEN (a supervisor issues one: `citywatch officers token issue ID`)"
    ]
