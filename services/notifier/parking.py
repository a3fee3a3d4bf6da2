"""Events whose recipients can't be resolved yet wait here, not in their partition.

A mail event can overtake the directory records or the IRCC it names (they travel on
other topics). Instead of holding the partition, the mail consumer parks such an event in
the database, in the transaction that moves the offset, and goes on with the next one.
Later events with the same key are parked behind it, so one record's mails keep their
order. The :class:`ParkingWorker` tries parked events again whenever the directory view
advances; after ``reference_wait_seconds`` an event is handled with what is known (the
unknown references counted in ``notifier_unresolved_references_total``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, case, delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import BindParameter

from services.notifier.adapters.tables import ParkedEvent
from services.notifier.metrics import NotifierMetrics
from shared.events import CloudEvent, decode_event
from shared.kit.failures import is_transient

log = logging.getLogger(__name__)

# (session, event, force) -> True when handled; False: references missing, park it.
Settle = Callable[[AsyncSession, CloudEvent[Any], bool], Awaitable[bool]]


_EVENT: BindParameter[str] = bindparam("event_id")
_KEY: BindParameter[str] = bindparam("key")
# Built once, like every statement run per event: building one costs more than running it.
_PARKED = select(func.max(case((ParkedEvent.event_id == _EVENT, 1), else_=0)), func.count()).where(
    or_(ParkedEvent.key == _KEY, ParkedEvent.event_id == _EVENT)
)


async def parked(session: AsyncSession, event_id: str, key: str) -> tuple[bool, bool]:
    """(this very event already waits, some event with this key waits), in one query: a
    redelivered copy adds nothing, and later events of a key must wait behind it."""
    row = (await session.execute(_PARKED, {"event_id": event_id, "key": key})).one()
    return bool(row[0]), bool(row[1])


def park(session: AsyncSession, event: CloudEvent[Any], key: str, missing: list[str]) -> None:
    """Park ``event`` in the caller's transaction."""
    session.add(
        ParkedEvent(
            event_id=event.id,
            key=key,
            event_type=event.type,
            payload=event.model_dump_json(),
            missing=json.dumps(missing[:50]),
            parked_at=datetime.now(UTC),
        )
    )


class ParkingWorker:
    """Retries parked events when the view advances; forces them after the wait."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settle: Settle,
        metrics: NotifierMetrics,
        *,
        wait_seconds: float,
        view_advanced_at: Callable[[], float],
        on_settled: Callable[[], None],
        idle_seconds: float = 0.5,
    ) -> None:
        self._sessions = sessions
        self._settle = settle
        self._metrics = metrics
        self._wait = wait_seconds
        self._view_advanced_at = view_advanced_at
        self._on_settled = on_settled
        self._idle = idle_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_try = 0.0

    def wake(self) -> None:
        """Something was parked, or the view may have advanced."""
        self._wake.set()

    def start(self) -> None:
        """Run in the background."""
        self._task = asyncio.create_task(self._run(), name="notifier-parking")

    async def stop(self) -> None:
        """Stop (parked events stay parked in the database)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        pause = self._idle
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)
            self._wake.clear()
            try:
                await self.run_once()
                pause = self._idle
            except Exception as exc:  # the database may be away: try less and less often
                pause = min(pause * 2, 10.0)
                if is_transient(exc):
                    log.warning("parking round failed, next in %.1fs: %s", pause, exc)
                else:
                    log.exception("parking round failed, next in %.1fs", pause)

    async def run_once(self) -> int:
        """Try every parked event once, oldest first per key; returns how many settled."""
        started = time.time()
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(ParkedEvent.id, ParkedEvent.key, ParkedEvent.parked_at)
                    .order_by(ParkedEvent.id)
                    .limit(500)
                )
            ).all()
        blocked: set[str] = set()
        settled = 0
        advanced = self._view_advanced_at()
        for row_id, key, parked_at in rows:
            if key in blocked:
                continue
            parked = _epoch(parked_at)
            force = started - parked >= self._wait
            # Nothing new can be known unless the view read more since the last try.
            if not force and advanced <= self._last_try and advanced <= parked:
                blocked.add(key)
                continue
            if await self._try(row_id, force):
                settled += 1
            else:
                blocked.add(key)
        self._last_try = started
        async with self._sessions() as session:
            left = await session.scalar(select(func.count()).select_from(ParkedEvent))
        self._metrics.parked.set(int(left or 0))
        if settled:
            self._on_settled()
        return settled

    async def _try(self, row_id: int, force: bool) -> bool:
        try:
            async with self._sessions() as session, session.begin():
                # Taking the row away first is the write that locks it (and SQLite's write
                # lock) before anything is read; it comes back if the event must wait more.
                taken = await session.execute(
                    delete(ParkedEvent)
                    .where(ParkedEvent.id == row_id)
                    .returning(ParkedEvent.payload)
                )
                payload = taken.scalar_one_or_none()
                if payload is None:  # another instance settled it
                    return True
                event = decode_event(payload.encode())
                if not await self._settle(session, event, force):
                    raise _NotYet
        except _NotYet:
            return False
        except IntegrityError:  # settled concurrently elsewhere: nothing left to do
            return True
        return True


class _NotYet(Exception):
    """Rolls the attempt back: the event stays parked."""


def _epoch(moment: datetime) -> float:
    if moment.tzinfo is None:  # SQLite hands back naive UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
