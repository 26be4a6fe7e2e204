"""Run the real ``citywatch`` command in a subprocess, as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
