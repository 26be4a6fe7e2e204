"""Run the real ``citywatch`` command in a subprocess, as an operator (or an officer) would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from citywatch.run import settings_env
from foundation.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess:
    """``python -m citywatch ARGS`` with no CITYWATCH_* from the caller's environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CITYWATCH_")}
    return subprocess.run(
        [sys.executable, "-m", "citywatch", *args],
        env=base | (env or {}),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def officer_cli(s: Settings, *args: str, token: str = "") -> subprocess.CompletedProcess:
    """``python -m citywatch ARGS`` with exactly the settings ``s``, acting with the officer
    ``token`` (``CITYWATCH_OFFICER_TOKEN``) when one is given."""
    env = settings_env(s) | ({"CITYWATCH_OFFICER_TOKEN": token} if token else {})
    return run_cli(*args, env=env)
