"""Transactional outbox: events are written with the state change, a relay publishes them.

A service declares ``class OutboxRow(OutboxMixin, Base): __tablename__ = "outbox"`` and
calls :func:`stage` inside the transaction that changes its state. The relay sends rows
in id order with ``acks=all`` and marks them sent, so a broker outage loses nothing: the
API keeps committing and the backlog drains once the broker answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, String, Text, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from shared.events.envelope import CloudEvent
from shared.kafka.producer import EventProducer, OutgoingMessage
from shared.metrics import PlumbingMetrics

log = logging.getLogger(__name__)


class OutboxMixin:
    """Columns of an outbox table."""

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    topic: Mapped[str] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(String(255))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, index=True
    )


def stage(
    session: AsyncSession, row_cls: type[Any], topic: str, event: CloudEvent[Any], *, key: str
) -> None:
    """Add an event to the outbox in the caller's transaction."""
    session.add(
        row_cls(
            event_id=event.id,
            topic=topic,
            key=key,
            payload=event.model_dump_json(),
            created_at=datetime.now(UTC),
        )
    )


class OutboxRelay:
    """Background task publishing unsent outbox rows, oldest first."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        row_cls: type[Any],
        producer: EventProducer,
        metrics: PlumbingMetrics,
        *,
        batch_size: int = 500,
        idle_seconds: float = 1.0,
        max_backoff: float = 5.0,
    ) -> None:
        self._sessions = sessions
        self._row = row_cls
        self._producer = producer
        self._metrics = metrics
        self._batch = batch_size
        self._idle = idle_seconds
        self._max_backoff = max_backoff
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        metrics.outbox_failures.labels(metrics.service)  # exists from the start

    def wake(self) -> None:
        """Ask for a publishing round now (call after committing staged events)."""
        self._wake.set()

    def start(self) -> None:
        """Run the relay loop in the background."""
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self, *, flush_timeout: float = 5.0) -> None:
        """Stop after a last attempt to publish what is pending."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, flush_timeout)
            if not self._task.done():
                self._task.cancel()

    async def backlog(self) -> int:
        """Rows not yet published."""
        async with self._sessions() as session:
            count = await session.scalar(
                select(func.count()).select_from(self._row).where(self._row.sent_at.is_(None))
            )
        return int(count or 0)

    async def drain_once(self) -> int:
        """Publish one batch of pending rows; returns how many were sent."""
        async with self._sessions() as session:
            rows = (
                await session.scalars(
                    select(self._row)
                    .where(self._row.sent_at.is_(None))
                    .order_by(self._row.id)
                    .limit(self._batch)
                    # Several relays of one service never publish the same rows (PostgreSQL;
                    # SQLite has a single writer anyway and ignores the clause).
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return 0
            await self._producer.send_many(
                [OutgoingMessage(r.topic, r.key.encode(), r.payload.encode()) for r in rows]
            )
            await session.execute(
                update(self._row)
                .where(self._row.id.in_([r.id for r in rows]))
                .values(sent_at=datetime.now(UTC))
            )
            await session.commit()
            return len(rows)

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                sent = await self.drain_once()
                backoff = 0.1
                self._metrics.outbox_backlog.labels(self._metrics.service).set(await self.backlog())
            except Exception as exc:  # broker or database down: keep rows, retry later
                self._metrics.outbox_failures.labels(self._metrics.service).inc()
                log.warning("outbox relay round failed, retrying in %.1fs: %s", backoff, exc)
                if self._stopping:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            if sent:
                continue
            if self._stopping:
                return
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._idle)
