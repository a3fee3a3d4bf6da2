"""SQLite: the writers of one engine take turns in the event loop, never in SQLite's lock.

SQLite's busy timeout is set to 0 here, so a writer that met another's lock would fail at
once with "database is locked"; queued by ``shared.db.queue_writers``, none does.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from threading import get_ident
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import create_engine
from shared.metrics import PlumbingMetrics
from shared.sqlite_inline import InlineConnection
from tests.support.poll import eventually

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


async def test_a_lock_held_elsewhere_is_waited_for_in_the_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two engines on one file stand for two processes: the second writer waits for the
    first's lock without stalling the loop (a ticker keeps running), says so in the log
    once the wait passes a second, then commits."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    first, second = create_engine(url), create_engine(url)
    try:
        async with first.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, writer INT)"))
        release = asyncio.Event()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while not release.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        async def holder() -> None:
            async with first.begin() as conn:
                await conn.execute(text("INSERT INTO t (writer) VALUES (1)"))
                await release.wait()

        async def waiter() -> None:
            async with second.begin() as conn:
                await conn.execute(text("INSERT INTO t (writer) VALUES (2)"))

        registry = PlumbingMetrics(CollectorRegistry(), "svc").registry

        def exported(name: str) -> float:
            return registry.get_sample_value(name, {"service": "svc"}) or 0.0

        retries = exported("absch_sqlite_lock_waits_total")
        waited = exported("absch_sqlite_lock_wait_seconds_total")
        tasks = [asyncio.create_task(c) for c in (ticker(), holder())]
        await eventually(lambda: ticks > 0, what="ticker running")
        waiting = asyncio.create_task(waiter())
        await eventually(
            lambda: exported("absch_sqlite_lock_waits_total") > retries + 3,
            what="the waits counted on /metrics",
        )
        ticks_while_waiting = ticks
        await eventually(lambda: ticks > ticks_while_waiting + 3, what="loop still turning")
        assert not waiting.done()
        with caplog.at_level(logging.WARNING, logger="shared.sqlite_inline"):
            await eventually(
                lambda: any("SQLite lock" in r.getMessage() for r in caplog.records),
                what="a warning about the wait",
            )
        assert not waiting.done()
        assert exported("absch_sqlite_lock_wait_seconds_total") - waited >= 0.9
        release.set()
        await asyncio.wait_for(asyncio.gather(waiting, *tasks), timeout=20)
        assert await _rows_of(second) == [1, 2]
    finally:
        await first.dispose()
        await second.dispose()


async def _rows_of(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as conn:
        return [r[0] for r in await conn.execute(text("SELECT writer FROM t ORDER BY id"))]


async def test_statements_run_on_the_loop_thread(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'thread.db'}")
    seen: list[int] = []

    def thread_id() -> int:
        seen.append(get_ident())
        return 0

    try:
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            assert isinstance(raw.driver_connection, InlineConnection)
            sqlite_conn = raw.driver_connection._conn
            sqlite_conn.create_function("thread_id", 0, thread_id)
            await conn.execute(text("SELECT thread_id()"))
        assert seen == [get_ident()]
    finally:
        await engine.dispose()
