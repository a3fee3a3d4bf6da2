"""Session-wide real components: the embedded broker, SMTP sinks, databases.

``KAFKA_BOOTSTRAP`` points the suite at an existing broker instead of the embedded one.
``DATABASE_URL_TEST_PG`` (an asyncpg URL to a server where we may create databases) adds a
PostgreSQL run of every database-backed test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tools.broker import EmbeddedBroker
from tools.smtp_sink import SmtpSink

PG_URL = os.environ.get("DATABASE_URL_TEST_PG")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The broker every integration test talks to."""
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    broker = EmbeddedBroker(log_file=tmp_path_factory.mktemp("broker") / "tansu.log")
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def topic_prefix() -> str:
    """Topics of their own for each test, so tests never see each other's events."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpSink]:
    """A real SMTP server on loopback keeping every message."""
    with SmtpSink(maildir=tmp_path / "mail") as sink:
        yield sink


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def db_backend(request: pytest.FixtureRequest) -> str:
    """Each database-backed test runs on SQLite, and on PostgreSQL when configured."""
    if request.param == "postgres" and not PG_URL:
        pytest.skip("DATABASE_URL_TEST_PG not set")
    return str(request.param)


DbFactory = Callable[[str], Awaitable[str]]


@pytest.fixture
async def db_url(db_backend: str, tmp_path: Path) -> AsyncIterator[DbFactory]:
    """``await db_url("registry")`` gives a fresh, empty database URL for one service."""
    created: list[str] = []

    async def make(name: str) -> str:
        if db_backend == "sqlite":
            return f"sqlite+aiosqlite:///{tmp_path / f'{name}.db'}"
        assert PG_URL
        db = f"absch_{uuid.uuid4().hex[:12]}_{name}"
        admin = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{db}"'))
        await admin.dispose()
        created.append(db)
        return make_url(PG_URL).set(database=db).render_as_string(hide_password=False)

    yield make
    if created and PG_URL:
        admin = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            for db in created:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        await admin.dispose()
