"""Run FastAPI apps under a real uvicorn server inside the test's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from tools.ports import free_port


@asynccontextmanager
async def serving(app: FastAPI, *, port: int | None = None) -> AsyncIterator[str]:
    """Serve ``app`` on loopback; yields its base URL; runs the lifespan both ways."""
    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = asyncio.get_running_loop().time() + 30
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server stopped during startup")
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("server did not start")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
