"""The system as separate OS processes, as ``tools.devstack`` runs it.

An embedded broker (``tools.broker.EmbeddedBroker``), the timing SMTP sink
(``python -m bench.sink``) and each service as ``python -m services.<name>.main`` with the
devstack's environment (SQLite per service, dev keys), all on free loopback ports under one
state folder. Every process started here is stopped here, by its own PID.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.common import ROOT, progress
from tools.broker import EmbeddedBroker
from tools.migrate import upgrade
from tools.ports import free_port, wait_for_port

SERVICES = ("registry", "checkpoint", "notifier", "monitor")


class Proc:
    """A child process with a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=str(ROOT)
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""


class Stack:
    """Broker, sink and services of one benchmark session."""

    def __init__(self, state: Path, *, env_overrides: dict[str, str] | None = None) -> None:
        self.state = state
        self.state.mkdir(parents=True, exist_ok=True)
        (self.state / "logs").mkdir(exist_ok=True)
        self.admin_token = secrets.token_urlsafe(24)
        self.env_overrides = dict(env_overrides or {})
        self.broker: EmbeddedBroker | None = None
        self.sink: Proc | None = None
        self.sink_port = 0
        self.mail_log = self.state / "mail.log"
        self.ports = {name: free_port() for name in SERVICES}
        self.metrics_ports = {name: free_port() for name in SERVICES}
        self.procs: dict[str, Proc] = {}

    # ------------------------------------------------------------------ environment
    def env(self) -> dict[str, str]:
        assert self.broker is not None
        reg = f"http://127.0.0.1:{self.ports['registry']}"
        env = dict(os.environ)
        env.update(
            {
                "ABSCH_ENV": "dev",
                "KAFKA_BOOTSTRAP": self.broker.bootstrap,
                "KAFKA_TOPIC_PREFIX": "",
                "SMTP_HOST": "127.0.0.1",
                "SMTP_PORT": str(self.sink_port),
                "PUBLIC_BASE_URL": reg,
                "JWKS_URL": f"{reg}/.well-known/jwks.json",
                "ABSCH_ADMIN_TOKEN": self.admin_token,
                "LOG_FORMAT": "json",
                "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO"),
                "JWT_PRIVATE_KEY_PATH": str(self.state / "keys" / "registry-ed25519.pem"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        for name, port in self.ports.items():
            env[f"{name.upper()}_DATABASE_URL"] = f"sqlite+aiosqlite:///{self.state / f'{name}.db'}"
            env[f"{name.upper()}_HTTP_PORT"] = str(port)
            env[f"{name.upper()}_METRICS_PORT"] = str(self.metrics_ports[name])
        env.update(self.env_overrides)
        return env

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def metrics_url(self, name: str) -> str:
        """A service's metrics listener (the public port has no /metrics)."""
        return f"http://127.0.0.1:{self.metrics_ports[name]}/metrics"

    @property
    def bootstrap(self) -> str:
        assert self.broker is not None
        return self.broker.bootstrap

    def pids(self) -> dict[str, int]:
        out = {n: p.pid for n, p in self.procs.items() if p.alive()}
        if self.broker is not None and self.broker.pid:
            out["broker"] = self.broker.pid
        if self.sink is not None and self.sink.alive():
            out["smtp-sink"] = self.sink.pid
        return out

    # ------------------------------------------------------------------ lifecycle
    def start_infra(self) -> None:
        if self.broker is None:
            self.broker = EmbeddedBroker(log_file=self.state / "logs" / "broker.log")
            self.broker.start()
            progress(f"broker pid {self.broker.pid} at {self.broker.bootstrap}")
        if self.sink is None:
            self.sink_port = free_port()
            self.sink = Proc(
                "smtp-sink",
                [
                    sys.executable,
                    "-m",
                    "bench.sink",
                    "--port",
                    str(self.sink_port),
                    "--log",
                    str(self.mail_log),
                ],
                dict(os.environ),
                self.state / "logs" / "smtp-sink.log",
            )
            self.sink.start()
            wait_for_port("127.0.0.1", self.sink_port, 30)

    async def start_services(self, names: list[str], timeout: float = 120.0) -> None:
        """Start services (in order) and wait until each answers /readyz with 200."""
        self.start_infra()
        env = self.env()
        started = time.monotonic()
        for name in names:
            if name in self.procs and self.procs[name].alive():
                continue
            # As compose's <name>-migrate: the service refuses a database behind its schema.
            await upgrade(name, env[f"{name.upper()}_DATABASE_URL"])
            proc = Proc(
                name,
                [sys.executable, "-m", f"services.{name}.main"],
                env,
                self.state / "logs" / f"{name}.log",
            )
            proc.start()
            self.procs[name] = proc
        async with httpx.AsyncClient(timeout=2.0) as client:
            for name in names:
                proc = self.procs[name]
                deadline = time.monotonic() + timeout
                while True:
                    if not proc.alive():
                        raise RuntimeError(f"{name} exited during start:\n{proc.tail()}")
                    try:
                        if (await client.get(f"{self.url(name)}/readyz")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{name} not ready after {timeout}s:\n{proc.tail()}")
                    await asyncio.sleep(0.1)
        progress(
            "ready: "
            + ", ".join(f"{n} pid {self.procs[n].pid}" for n in names)
            + f" ({time.monotonic() - started:.1f}s)"
        )

    def stop_service(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None:
            proc.stop()

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop_service(name)
        if self.sink is not None:
            self.sink.stop(10)
            self.sink = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
