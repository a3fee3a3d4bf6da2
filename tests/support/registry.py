"""A registry under test and a client that knows its users."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from services.registry.bootstrap import bootstrap
from services.registry.settings import RegistrySettings
from tests.support.records import authority
from tests.support.servers import service_client, serving

ADMIN_TOKEN = "test-admin-token-0123456789"


def registry_settings(
    *, kafka: str, prefix: str, db: str, tmp: Path, **extra: Any
) -> RegistrySettings:
    """Settings for a test registry."""
    return RegistrySettings(
        kafka_bootstrap=kafka,
        kafka_topic_prefix=prefix,
        database_url=db,
        admin_token=ADMIN_TOKEN,
        jwt_private_key_path=tmp / "registry-key.pem",
        environment="test",
        **extra,
    )


@asynccontextmanager
async def running_registry(
    settings: RegistrySettings, **kw: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """Serve a registry; yields an HTTP client pointed at it."""
    app = bootstrap(settings, **kw)
    async with serving(app) as url, service_client(url) as client:
        client.app = app  # type: ignore[attr-defined]
        yield client


def auth(token: str) -> dict[str, str]:
    """Authorization header for a token."""
    return {"Authorization": f"Bearer {token}"}


async def create_user(
    client: httpx.AsyncClient, creator: str, role: str, government: str | None = None, **extra: Any
) -> str:
    """Create a user and return its token."""
    body = {
        "name": f"{role} {government}",
        "email": f"{role}@{government or 'scbd'}.example",
        "role": role,
        "government": government,
        **extra,
    }
    resp = await client.post("/v1/users", json=body, headers=auth(creator))
    assert resp.status_code == 201, resp.text
    return str(resp.json()["token"])


async def government_users(client: httpx.AsyncClient, gov: str) -> dict[str, str]:
    """An NFP, PA, NAU and CNA reader for ``gov``, keyed by role."""
    nfp = await create_user(client, ADMIN_TOKEN, "nfp", gov)
    return {
        "nfp": nfp,
        "pa": await create_user(client, nfp, "pa", gov),
        "nau": await create_user(client, nfp, "nau", gov),
        "cna": await create_user(client, nfp, "cna", gov),
    }


async def publish(client: httpx.AsyncClient, token: str, record: dict[str, Any]) -> dict[str, Any]:
    """Save ``record`` as a draft and publish it directly; returns the publish result."""
    schema, ident = record["header"]["schema"], record["header"]["identifier"]
    resp = await client.put(f"/v1/records/{schema}/{ident}", json=record, headers=auth(token))
    assert resp.status_code == 200, resp.text
    resp = await client.post(f"/v1/records/{schema}/{ident}/publish", headers=auth(token))
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    return out


MxRegistry = tuple[httpx.AsyncClient, dict[str, str], str]


@asynccontextmanager
async def registry_with_cna(
    kafka: str, prefix: str, db_url: Any, tmp: Path
) -> AsyncIterator[MxRegistry]:
    """A registry with Mexico's users (by role) and a published CNA (its identifier)."""
    settings = registry_settings(kafka=kafka, prefix=prefix, db=await db_url("registry"), tmp=tmp)
    async with running_registry(settings) as client:
        users = await government_users(client, "mx")
        cna = authority("mx", ["cna@mx.example"])
        await publish(client, users["pa"], cna)
        yield client, users, cna["header"]["identifier"]
