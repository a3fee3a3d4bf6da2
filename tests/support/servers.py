"""Run FastAPI apps under a real uvicorn server inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn
from fastapi import FastAPI

from tests.support import metrics
from tools.ports import free_port


@asynccontextmanager
async def serving(
    app: FastAPI, *, port: int | None = None, migrate: bool = True
) -> AsyncIterator[str]:
    """Serve ``app`` on loopback; yields its base URL; runs the lifespan both ways.

    A service's database is first brought to its migrations' head, as a deployment runs
    ``python -m services.<name>.migrate`` before the service (``migrate=False``: as it is).

    A free port can be taken by another process before we bind it (parallel test
    workers): without a fixed ``port``, binding is retried on a fresh one. A service's
    metrics listener is noted for :func:`tests.support.metrics.scrape`.
    """
    kit = getattr(app.state, "kit", None)
    if migrate and kit is not None and kit.migrations is not None:
        await kit.migrations.upgrade(kit.settings.database_url)
    for attempt in range(5):
        chosen = port or free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=chosen, log_config=None, access_log=False, lifespan="on"
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(_serve(server))
        deadline = asyncio.get_running_loop().time() + 60
        while not server.started and not task.done():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("server did not start")
            await asyncio.sleep(0.01)
        if server.started:
            break
        with contextlib.suppress(BaseException):
            task.result()
        if port is not None or attempt == 4:
            raise RuntimeError(f"server could not start on port {chosen}")
    url = f"http://127.0.0.1:{chosen}"
    if kit is not None:
        metrics.register(url, kit.metrics_server.url)
    try:
        yield url
    finally:
        metrics.forget(url)
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def _serve(server: uvicorn.Server) -> None:
    # uvicorn exits (SystemExit) when the port is taken; as a task's exception that would
    # stop the whole event loop instead of letting the caller try another port.
    try:
        await server.serve()
    except SystemExit as exc:
        raise OSError(f"server exited with {exc.code}") from None


# uvicorn closes a keep-alive connection after 5 idle seconds; a client that reuses one
# about then may write to a socket the server is closing (httpx.ReadError). Let clients
# drop idle connections well before.
KEEPALIVE_EXPIRY_SECONDS = 2.0


def service_client(url: str, *, timeout: float = 30.0) -> httpx.AsyncClient:
    """An HTTP client for a service under test at ``url``."""
    return httpx.AsyncClient(
        base_url=url,
        timeout=timeout,
        limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS),
    )
