"""citywatch processes started the way an operator starts them: `python -m citywatch ...`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from foundation.settings import Settings
from tests.conftest import settings_env


class Proc:
    def __init__(self, args: list[str], settings: Settings, log: Path):
        self.args, self.settings, self.log = args, settings, log
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "citywatch", *self.args],
            env=settings_env(self.settings),
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,  # noqa: SIM115
            stdin=subprocess.DEVNULL,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for_log(self, needle: str, count: int = 1, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.text().count(needle) >= count:
                return
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.args[0]} exited {self.proc.returncode}:\n{self.text()[-3000:]}"
                )
            time.sleep(0.1)
        raise AssertionError(
            f"{self.args[0]}: no {needle!r} within {timeout}s:\n{self.text()[-3000:]}"
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def restart(self) -> None:
        self.kill()
        self.proc = self._spawn()

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_until(
    check: Callable[[], object], timeout: float = 60, every: float = 0.5, what: str = "condition"
):  # noqa: ANN201
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


def metric(port: int, name: str) -> float:
    """One unlabelled sample of a process's Prometheus endpoint on loopback (the bridge's
    ``--metrics-port``); a name it does not expose fails the test."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in the metrics on port {port}")
