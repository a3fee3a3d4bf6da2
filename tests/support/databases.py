"""Fresh, empty databases for a test: SQLite files, or PostgreSQL databases dropped after.

``DATABASE_URL_TEST_PG`` (an asyncpg URL to a server where we may create databases) adds a
PostgreSQL variant of every database-backed test; without it that variant is skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

PG_URL = os.environ.get("DATABASE_URL_TEST_PG")
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

DbFactory = Callable[[str], Awaitable[str]]


def skip_unless_backend(backend: str) -> None:
    """Skip the PostgreSQL variant when no server is configured."""
    if backend == "postgres" and not PG_URL:
        pytest.skip("DATABASE_URL_TEST_PG not set")


@asynccontextmanager
async def databases(backend: str, tmp: Path) -> AsyncIterator[DbFactory]:
    """``await make("registry")`` gives a fresh empty database URL; PostgreSQL ones are
    dropped when the block ends."""
    created: list[str] = []

    async def make(name: str) -> str:
        if backend == "sqlite":
            return f"sqlite+aiosqlite:///{tmp / f'{name}.db'}"
        assert PG_URL
        db = f"absch_{uuid.uuid4().hex[:12]}_{name}"
        admin = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{db}"'))
        await admin.dispose()
        created.append(db)
        return make_url(PG_URL).set(database=db).render_as_string(hide_password=False)

    try:
        yield make
    finally:
        if created and PG_URL:
            admin = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT")
            async with admin.connect() as conn:
                for db in created:
                    await conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
            await admin.dispose()
