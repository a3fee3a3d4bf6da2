"""The private PostgreSQL cluster of the fault tests really stops and really comes back.

Skips without Debian's PostgreSQL server binaries, fails instead under CI (``CI`` set).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.pgcluster import PrivateCluster

pytestmark = pytest.mark.integration

REFUSED_WITHIN = 5.0  # seconds a connection attempt to the stopped server may take


@pytest.fixture
async def cluster() -> AsyncIterator[PrivateCluster]:
    async with PrivateCluster() as pg:
        yield pg


async def _rows(url: str) -> list[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text("SELECT note FROM notes ORDER BY id"))
            return [str(row.note) for row in result]
    finally:
        await engine.dispose()


async def test_a_row_survives_a_stop_and_start_and_nothing_answers_in_between(
    cluster: PrivateCluster,
) -> None:
    url = await cluster.create_database("faults")
    assert url == f"postgresql+asyncpg://postgres@127.0.0.1:{cluster.port}/faults"

    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE notes (id serial PRIMARY KEY, note text)"))
            await conn.execute(text("INSERT INTO notes (note) VALUES ('before the outage')"))
    finally:
        await engine.dispose()
    assert await _rows(url) == ["before the outage"]

    port = cluster.port
    await cluster.stop()
    assert not cluster.running

    started = time.monotonic()
    with pytest.raises((OSError, DBAPIError)):
        await _rows(url)
    assert time.monotonic() - started < REFUSED_WITHIN

    await cluster.start()
    assert cluster.running
    assert cluster.port == port
    # start() returns once the server accepts connections: no waiting here.
    assert await _rows(url) == ["before the outage"]


async def test_leaving_the_block_stops_the_server_and_removes_its_folder() -> None:
    async with PrivateCluster() as pg:
        base, url = pg.base, pg.url
        assert (pg.data_dir / "PG_VERSION").is_file()
    assert not base.exists()
    with pytest.raises((OSError, DBAPIError)):
        await _rows(url)
