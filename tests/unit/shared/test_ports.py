"""Ports for test servers come from below the ephemeral range, one slice per worker."""

from __future__ import annotations

import socket

import pytest

from tools import ports


def test_ports_are_bindable_distinct_and_below_the_ephemeral_range() -> None:
    handed = [ports.free_port() for _ in range(50)]
    assert len(set(handed)) == 50
    low = ports._ephemeral_low()
    assert all(ports._LOWEST <= p < low for p in handed)
    for port in handed[:5]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


def test_workers_draw_from_disjoint_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    width = (ports._ephemeral_low() - ports._LOWEST) // ports._SLOTS
    seen: dict[int, set[int]] = {}
    for worker in (0, 1, 5):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{worker}")
        seen[worker] = {ports.free_port() for _ in range(10)}
        start = ports._LOWEST + worker * width
        assert all(start <= p < start + width for p in seen[worker])
    assert not (seen[0] & seen[1])
    assert not (seen[1] & seen[5])


def test_a_port_in_use_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tools.ports.random.randrange", lambda width: 0)
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw7")
    width = (ports._ephemeral_low() - ports._LOWEST) // ports._SLOTS
    start = ports._LOWEST + 7 * width
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", start))
        squatter.listen()
        port = ports.free_port()
    assert port != start
    assert start < port < start + width
