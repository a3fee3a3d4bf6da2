"""One stack for a whole test module (and database backend), reused by many cases.

``conftest.py`` gives each test its own topic prefix, SMTP sink and databases (function
scope). The security modules build one stack per module and backend instead and reuse it
across many cases (a matrix, a fuzzer, hypothesis examples): :func:`module_stack` makes its
own prefix and databases, so it can back a module-scoped fixture.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.stack import Stack, running_stack
from tools.smtp_sink import SmtpSink

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


@asynccontextmanager
async def module_stack(
    *, kafka: str, backend: str, tmp: Path, smtp: SmtpSink, **extra: Any
) -> AsyncIterator[tuple[Stack, str]]:
    """All four services on fresh databases and a fresh topic prefix; yields the stack and
    the prefix."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    async with (
        databases(backend, tmp) as db_url,
        running_stack(
            kafka=kafka, prefix=prefix, db_url=db_url, tmp=tmp, smtp=smtp, **extra
        ) as stack,
    ):
        yield stack, prefix
