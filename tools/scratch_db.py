"""Fresh, empty databases: SQLite files in a folder, or PostgreSQL databases dropped after.

Used by the tests (one set per test) and the benchmarks (one per measurement).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

DbFactory = Callable[[str], Awaitable[str]]


@asynccontextmanager
async def scratch_databases(server: str | None, folder: Path) -> AsyncIterator[DbFactory]:
    """``await make("registry")`` gives a fresh empty database URL: a SQLite file in
    ``folder`` when ``server`` is None, else a new database on that PostgreSQL server
    (an asyncpg URL), dropped when the block ends."""
    created: list[str] = []

    async def make(name: str) -> str:
        if server is None:
            return f"sqlite+aiosqlite:///{folder / f'{name}.db'}"
        db = f"absch_{uuid.uuid4().hex[:12]}_{name}"
        admin = create_async_engine(server, isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{db}"'))
        await admin.dispose()
        created.append(db)
        return make_url(server).set(database=db).render_as_string(hide_password=False)

    try:
        yield make
    finally:
        if created and server is not None:
            admin = create_async_engine(server, isolation_level="AUTOCOMMIT")
            async with admin.connect() as conn:
                for db in created:
                    await conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
            await admin.dispose()
