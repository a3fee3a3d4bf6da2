"""Reading a service's Prometheus text from its metrics listener, never its public port.

Every service serves ``/metrics`` on a port of its own (``<SERVICE>_METRICS_PORT``; the
public app answers 404 there). The suite sets those ports to 0 (``tests/conftest.py``), so
each instance picks a free one; :func:`tests.support.servers.serving` and
:class:`tests.support.processes.ServiceProcess` note where each public URL's metrics are,
so a test scrapes through the client it already holds: ``await scrape(stack.monitor)``.
"""

from __future__ import annotations

import httpx

_BY_PUBLIC_URL: dict[str, str] = {}


def _key(target: httpx.AsyncClient | str) -> str:
    url = target.base_url if isinstance(target, httpx.AsyncClient) else target
    return str(url).rstrip("/")


def register(public_url: str, metrics_url: str) -> None:
    """Note that the service at ``public_url`` serves its metrics at ``metrics_url``."""
    _BY_PUBLIC_URL[_key(public_url)] = metrics_url


def forget(public_url: str) -> None:
    """The service at ``public_url`` stopped."""
    _BY_PUBLIC_URL.pop(_key(public_url), None)


def metrics_url(target: httpx.AsyncClient | str) -> str:
    """The metrics URL of the service a client (or public base URL) talks to."""
    try:
        return _BY_PUBLIC_URL[_key(target)]
    except KeyError:
        raise AssertionError(f"no metrics listener known for {_key(target)}") from None


async def scrape(target: httpx.AsyncClient | str) -> str:
    """The Prometheus text of the service a client (or public base URL) talks to."""
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.get(metrics_url(target))
    assert resp.status_code == 200, resp.text
    return resp.text
