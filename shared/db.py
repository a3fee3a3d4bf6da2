"""Async SQLAlchemy engines for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import StaticPool
from sqlalchemy.util import await_only

from shared.sqlite_inline import run_inline


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """Engine for ``url``; SQLite gets its folder created, WAL and a busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        return create_async_engine(url, **kwargs)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)
    # A file shared by connections of this process: statements on the loop's thread,
    # writers taking turns in the loop (an in-memory test database keeps aiosqlite as is).
    shared_file = (
        bool(parsed.database)
        and parsed.database != ":memory:"
        and kwargs.get("poolclass") is not StaticPool
    )
    # Inline connections wait for other processes' locks in the loop, not in SQLite.
    busy_ms = 0 if shared_file else 30_000

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")
        cur.close()

    if shared_file:
        run_inline(engine)
        queue_writers(engine)
    return engine


# Statements before which sqlite3 opens its (deferred) transaction, and DDL.
_WRITE = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER)\b", re.IGNORECASE)
_WRITER = "absch_sqlite_writer"
WRITER_WAIT_SECONDS = 30.0  # as long as the busy timeout it stands in for


def queue_writers(engine: AsyncEngine) -> None:
    """Let one transaction of this engine write at a time, the others waiting in the event loop.

    SQLite admits one writer; another that finds the database locked sleeps in SQLite's busy
    handler (1 ms, growing to 100 ms a time) and tries again. With 16 requests at once most
    of a write's time went there (an INSERT took 220 ms, 0.3 ms once queued here). A
    connection takes the turn at its first write, which is where sqlite3 opens the
    transaction, and gives it back when it returns to the pool (after commit or rollback).
    """
    turn = asyncio.Lock()

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _take_turn(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if conn.info.get(_WRITER) or not _WRITE.match(statement):
            return
        await_only(asyncio.wait_for(turn.acquire(), WRITER_WAIT_SECONDS))
        conn.info[_WRITER] = True

    def _give_back(_dbapi_conn: Any, record: Any, *_args: Any) -> None:
        if record is not None and record.info.pop(_WRITER, False):
            turn.release()

    for name in ("checkin", "invalidate", "soft_invalidate", "close", "detach"):
        event.listen(engine.sync_engine.pool, name, _give_back)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded attributes after commit (handlers return them)."""
    return async_sessionmaker(engine, expire_on_commit=False)


SCHEMA_LOCK = 0x41425343  # any constant shared by every instance of every service


async def create_schema(engine: AsyncEngine, metadata: MetaData) -> None:
    """Create missing tables (idempotent; instances starting together take turns)."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
        await conn.run_sync(metadata.create_all)


async def ping(engine: AsyncEngine) -> bool:
    """True when the database answers a trivial query."""
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:  # any driver error means "not ready"
        return False
    return True
