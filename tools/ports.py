"""Free-port lookup and waiting helpers for local processes.

A port the kernel hands out for ``bind(0)`` comes from the ephemeral range, the same
range outgoing connections draw their local ports from: between the lookup and the
server's own bind, any client connection (a broker or database client of a parallel
test) may take it. So ports come from below that range, from a slice of it per test
worker, and a process never hands the same port out twice.
"""

from __future__ import annotations

import os
import random
import socket
import time
from pathlib import Path

_LOWEST = 10_000
_SLOTS = 16  # disjoint slices: one per test worker (gw0, gw1, ...) or process
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _slot() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        return int(worker[2:]) % _SLOTS
    return os.getpid() % _SLOTS


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now, outside the ephemeral range."""
    high = _ephemeral_low()
    width = (high - _LOWEST) // _SLOTS
    if width < 64:  # an unusual range: let the kernel choose
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            return int(sock.getsockname()[1])
    start = _LOWEST + _slot() * width
    offset = random.randrange(width)
    for step in range(width):
        port = start + (offset + step) % width
        if port not in _handed_out and _bindable(host, port):
            _handed_out.add(port)
            return port
    raise OSError(f"no free port in {start}..{start + width - 1}")


def wait_for_port(host: str, port: int, timeout: float) -> None:
    """Block until a TCP connect to ``host:port`` succeeds, or raise ``TimeoutError``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)
