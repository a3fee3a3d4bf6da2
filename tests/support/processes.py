"""Services as real OS processes (``python -m services.<name>.main``), for signal tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from shared.settings import default_sqlite_url
from tests.support import metrics
from tests.support.poll import eventually
from tools.migrate import upgrade
from tools.ports import free_port


class ServiceProcess:
    """One service process with its environment, log file and port."""

    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.port = free_port()
        self.metrics_port = free_port()
        self.log = log
        self.env = {
            **os.environ,
            **env,
            f"{name.upper()}_HTTP_PORT": str(self.port),
            f"{name.upper()}_METRICS_PORT": str(self.metrics_port),
            "LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
        }
        self.proc: subprocess.Popen[bytes] | None = None
        metrics.register(self.url, self.metrics_url)

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        """Where its metrics listener serves ``/metrics``."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    async def start(self) -> None:
        """Bring its database to the migrations' head (as compose's ``<name>-migrate``
        does), start, and wait until ``/readyz`` answers 200."""
        url = self.env.get(f"{self.name.upper()}_DATABASE_URL") or default_sqlite_url(self.name)
        await upgrade(self.name, url)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once, nothing blocks
                [sys.executable, "-m", f"services.{self.name}.main"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

        async def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            try:
                async with httpx.AsyncClient(timeout=2) as client:
                    return (await client.get(f"{self.url}/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(ready, timeout=60, what=f"{self.name} ready")

    def signal(self, sig: signal.Signals) -> None:
        """Send a signal to the process."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        """Wait for exit and return the exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Terminate if still running (test clean-up)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
