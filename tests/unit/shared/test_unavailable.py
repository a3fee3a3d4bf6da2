"""A database or broker that can't be reached gives 503 with Retry-After, not a 500."""

from __future__ import annotations

import sqlite3

import httpx
from fastapi import FastAPI
from sqlalchemy.exc import IntegrityError, OperationalError

from shared.http import PROBLEM_JSON, install_problem_handlers


def _app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/db-down")
    async def db_down() -> None:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    @app.get("/timeout")
    async def timeout() -> None:
        raise TimeoutError

    @app.get("/bug")
    async def bug() -> None:
        raise IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed"))

    return app


async def test_transient_failures_are_503_with_retry_after() -> None:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for path in ("/db-down", "/timeout"):
            resp = await client.get(path)
            assert resp.status_code == 503, path
            assert resp.headers["content-type"] == PROBLEM_JSON
            assert resp.headers["retry-after"] == "5"
            assert resp.json()["title"] == "Service Unavailable"
        bug = await client.get("/bug")
        assert bug.status_code == 500
        assert bug.json()["title"] == "Internal Server Error"
