"""``/healthz``: alive, the release the process runs, and its database's schema revision."""

from __future__ import annotations

import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from shared.metrics import PlumbingMetrics
from shared.service import create_app
from shared.version import VERSION

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"


async def test_healthz_carries_the_release_and_the_schema_revision() -> None:
    checked: list[str] = []  # what the start found in the database; nothing yet

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield

    async def readiness() -> dict[str, bool]:
        return {"ok": True}

    app = create_app(
        title="unit",
        description="",
        lifespan=lifespan,
        metrics=PlumbingMetrics(CollectorRegistry(), "unit"),
        readiness=readiness,
        schema_revision=lambda: checked[-1] if checked else None,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://unit") as client:
        resp = await client.get("/healthz")
        assert resp.status_code == 200
        assert resp.json() == {"status": "ok", "version": VERSION, "schema_revision": None}
        checked.append("0002")
        assert (await client.get("/healthz")).json()["schema_revision"] == "0002"
        schema = (await client.get("/openapi.json")).json()["components"]["schemas"]
        assert set(schema["Liveness"]["properties"]) == {"status", "version", "schema_revision"}


def test_the_release_is_pyprojects_version() -> None:
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    assert declared == VERSION, "the installed metadata is stale: reinstall (make install)"
