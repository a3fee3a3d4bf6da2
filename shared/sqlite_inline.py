"""SQLite statements run on the event loop's thread, not handed to aiosqlite's thread.

aiosqlite runs each call in a thread of its own and wakes the loop with the result: a
queue put, a thread switch and a self-pipe write per statement, fetch and commit. Measured
on the services' own transactions (a select, an insert and a commit), that hand-off was
about 40 % of the CPU of a transaction. The statements of these services are short (index
lookups and single-row writes), so running them where they are awaited costs less than
handing them over.

What a thread did for us, and how it is kept:

- **Waiting for a lock.** SQLite's busy handler sleeps in the calling thread; on the loop
  that would stall everything. These connections have ``busy_timeout=0`` and wait here
  instead: on ``SQLITE_BUSY`` the call is retried after an ``asyncio.sleep`` that grows
  from 1 ms to 100 ms, for as long as the busy timeout it replaces (30 s). Writers of one
  process already take turns in the loop (``shared.db.queue_writers``); this is for other
  processes sharing the file.
- **Everything else.** aiosqlite's thread still exists (SQLAlchemy sets the isolation
  level through its queue) and still opens and closes the connection.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import aiosqlite
from sqlalchemy import event
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_only

BUSY_WAIT_SECONDS = 30.0  # as long as the busy timeout of a threaded connection
WARN_AFTER_SECONDS = 1.0

log = logging.getLogger(__name__)
_FIRST_PAUSE, _LONGEST_PAUSE = 0.001, 0.1


class InlineConnection(aiosqlite.Connection):
    """An aiosqlite connection whose calls run on the loop's thread."""

    # Class-wide (a process runs one service): exported as absch_sqlite_lock_waits_total
    # and absch_sqlite_lock_wait_seconds_total.
    busy_retries = 0  # how often a call met a lock held by another process
    busy_wait_seconds = 0.0  # time spent waiting for such locks

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        deadline: float | None = None
        warn_at: float | None = None
        pause = _FIRST_PAUSE
        while True:
            if not self._running or not self._connection:
                raise ValueError("Connection closed")
            try:
                return fn(*args, **kwargs)
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_BUSY:
                    raise  # BUSY_SNAPSHOT and the like: waiting would not help
                now = time.monotonic()
                if deadline is None:
                    deadline, warn_at = now + BUSY_WAIT_SECONDS, now + WARN_AFTER_SECONDS
                elif now >= deadline:
                    log.error(
                        "SQLite lock still held by another process after %.0fs", BUSY_WAIT_SECONDS
                    )
                    raise
                elif warn_at is not None and now >= warn_at:
                    warn_at = None  # once per statement: a long wait is visible while it lasts
                    log.warning(
                        "waiting %.0fs so far for a SQLite lock held by another process",
                        WARN_AFTER_SECONDS,
                    )
            InlineConnection.busy_retries += 1
            await asyncio.sleep(pause)
            InlineConnection.busy_wait_seconds += time.monotonic() - now
            pause = min(pause * 2, _LONGEST_PAUSE)


def run_inline(engine: AsyncEngine) -> None:
    """Make ``engine`` (aiosqlite, a file database) open :class:`InlineConnection`s."""

    @event.listens_for(engine.sync_engine, "do_connect")
    def _connect(dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]) -> Any:
        params = {**cparams, "check_same_thread": False, "timeout": 0}

        def connector() -> sqlite3.Connection:
            conn: sqlite3.Connection = sqlite3.connect(*cargs, **params)
            return conn

        connection = InlineConnection(connector, 64)
        connection._thread.daemon = True  # as SQLAlchemy does for its own aiosqlite threads
        opened: Any = await_only(connection)
        return AsyncAdapt_aiosqlite_connection(dialect.dbapi, opened)
