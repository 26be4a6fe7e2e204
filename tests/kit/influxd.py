"""A private influxd for one test: its own port, data dir and (optionally) authentication."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateInfluxd:
    """An influxd of this test alone: own port, own data dir; killed with SIGKILL at will."""

    def __init__(self, root: Path, auth: bool = False):
        self.binary = shutil.which("influxd") or "/usr/bin/influxd"
        self.root = root
        self.port = free_port()
        rpc = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.conf = root / "influxdb.conf"
        self.conf.write_text(
            f'reporting-disabled = true\nbind-address = "127.0.0.1:{rpc}"\n'
            f'[meta]\n  dir = "{root}/meta"\n'
            f'[data]\n  dir = "{root}/data"\n  wal-dir = "{root}/wal"\n  query-log-enabled = false\n'
            f'[http]\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n'
            f"  auth-enabled = {'true' if auth else 'false'}\n"
            "[monitor]\n  store-enabled = false\n[continuous_queries]\n  enabled = false\n"
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.root / "influxd.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [self.binary, "-config", str(self.conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=0.5) as r:
                    if r.status == 204:
                        return
            except OSError:
                pass
            assert self.proc.poll() is None, (self.root / "influxd.log").read_text()[-800:]
            assert time.monotonic() < deadline, "private influxd did not answer /ping"
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None
