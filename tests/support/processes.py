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


class MetricsPortTaken(AssertionError):
    """The service exited because its metrics port was taken meanwhile."""


class ServiceProcess:
    """One service process with its environment, log file and port."""

    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self.env = {
            **os.environ,
            **env,
            "LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        self.env[f"{name.upper()}_HTTP_PORT"] = str(self.port)
        self._new_metrics_port()

    def _new_metrics_port(self) -> None:
        """Pick the metrics port (free now; see :meth:`start` if taken later)."""
        self.metrics_port = free_port()
        self.env[f"{self.name.upper()}_METRICS_PORT"] = str(self.metrics_port)
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
        does), start, and wait until ``/readyz`` answers 200.

        A port picked free can be taken by another process (an outgoing connection gets
        an ephemeral port too) before the service binds it. When that is the metrics
        port, the start is tried again on a new one (tests find it by the public URL,
        which clients made before the start already hold and which never changes)."""
        url = self.env.get(f"{self.name.upper()}_DATABASE_URL") or default_sqlite_url(self.name)
        await upgrade(self.name, url)
        for attempt in range(3):
            try:
                await self._start_once()
                return
            except MetricsPortTaken:
                if attempt == 2:
                    raise
                self._new_metrics_port()

    async def _start_once(self) -> None:
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
                tail = self.log.read_text()[-2000:]
                if "Address already in use" in tail and "start_http_server" in tail:
                    raise MetricsPortTaken(f"{self.name} exited: {tail}")
                raise AssertionError(f"{self.name} exited: {tail}")
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
