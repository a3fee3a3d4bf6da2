"""SQLite: the writers of one engine take turns in the event loop, never in SQLite's lock.

SQLite's busy timeout is set to 0 here, so a writer that met another's lock would fail at
once with "database is locked"; queued by ``shared.db.queue_writers``, none does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import create_engine

# Within the engine's pool (5 + 10 overflow): each writer holds a connection throughout.
WRITERS = 12


@pytest.fixture
async def engine(tmp_path: Path) -> Any:
    eng = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'writers.db'}")

    @event.listens_for(eng.sync_engine, "connect")
    def _no_busy_wait(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=0")
        cur.close()

    async with eng.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, writer INT, step INT)"))
    yield eng
    await eng.dispose()


async def _rows(engine: AsyncEngine) -> list[tuple[int, int]]:
    async with engine.connect() as conn:
        result = await conn.execute(text("SELECT writer, step FROM t ORDER BY id"))
        return [(r[0], r[1]) for r in result]


async def test_twelve_interleaved_writers_all_commit(engine: AsyncEngine) -> None:
    started = 0
    all_started = asyncio.Event()

    async def writer(n: int) -> None:
        nonlocal started
        async with engine.connect() as conn:
            await conn.execute(text("SELECT count(*) FROM t"))  # reads never wait
            started += 1
            if started == WRITERS:
                all_started.set()
            await all_started.wait()
            for step in range(3):
                await conn.execute(text(f"INSERT INTO t (writer, step) VALUES ({n}, {step})"))
                await asyncio.sleep(0)  # let the others try to write meanwhile
            await conn.commit()

    await asyncio.gather(*(writer(n) for n in range(WRITERS)))
    rows = await _rows(engine)
    assert sorted(rows) == [(n, s) for n in range(WRITERS) for s in range(3)]
    # One writer at a time: each one's rows are consecutive.
    writers = [w for w, _ in rows]
    assert all(writers[i] == writers[i - i % 3] for i in range(len(writers)))


async def test_a_writer_that_fails_gives_the_turn_back(engine: AsyncEngine) -> None:
    holding = asyncio.Event()

    async def failing() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("INSERT INTO t (writer, step) VALUES (1, 0)"))
            holding.set()
            await asyncio.sleep(0)
            raise RuntimeError("the handler failed")

    async def waiting() -> None:
        await holding.wait()
        async with engine.connect() as conn:
            await conn.execute(text("INSERT INTO t (writer, step) VALUES (2, 0)"))
            await conn.commit()

    results = await asyncio.wait_for(
        asyncio.gather(failing(), waiting(), return_exceptions=True), timeout=20
    )
    assert isinstance(results[0], RuntimeError)
    assert results[1] is None
    assert await _rows(engine) == [(2, 0)]
