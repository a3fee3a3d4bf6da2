"""Transactional outbox: events are written with the state change, a relay publishes them.

A service declares ``class OutboxRow(OutboxMixin, Base): __tablename__ = "outbox"`` and
calls :func:`stage` inside the transaction that changes its state. The relay sends rows
in id order with ``acks=all`` and marks them sent, so a broker outage loses nothing: the
API keeps committing and the backlog drains once the broker answers again.

- A row the broker refuses for good (too large, bad topic) moves to ``<outbox>_dead`` with
  its reason and a metric; the rows behind it go on, each published once.
- One relay per outbox is active at a time (a PostgreSQL advisory lock held for the round),
  so events leave in commit order per key even with several instances.
- Backlog and oldest-row age are read from the table every round, failed rounds included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Insert,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from shared.events.envelope import CloudEvent
from shared.kafka.producer import EventProducer, OutgoingMessage, SendFailed
from shared.kit.failures import is_unpublishable
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


def outbox_values(topic: str, event: CloudEvent[Any], *, key: str) -> dict[str, Any]:
    """The columns of one outbox row."""
    return {
        "event_id": event.id,
        "topic": topic,
        "key": key,
        "payload": event.model_dump_json(),
        "created_at": datetime.now(UTC),
    }


def stage(
    session: AsyncSession, row_cls: type[Any], topic: str, event: CloudEvent[Any], *, key: str
) -> None:
    """Add an event to the outbox in the caller's transaction (written at its flush)."""
    session.add(row_cls(**outbox_values(topic, event, key=key)))


async def stage_many(session: AsyncSession, row_cls: type[Any], rows: list[dict[str, Any]]) -> None:
    """Insert :func:`outbox_values` rows now, in one statement and in their order (past the
    unit of work: flush first when rows added with :func:`stage` must come before)."""
    if rows:
        await session.execute(_insert(row_cls.__table__), rows)


@cache
def _insert(table: Table) -> Insert:
    """An outbox's insert, built once (its cache key is then computed once too)."""
    return insert(table)


def dead_table(row_cls: type[Any], metadata: MetaData | None = None) -> Table:
    """The dead-letter table beside an outbox table (``<name>_dead``), in the outbox's
    metadata or in ``metadata`` (the models the migrations are compared with)."""
    metadata = row_cls.metadata if metadata is None else metadata
    name = f"{row_cls.__tablename__}_dead"
    if name in metadata.tables:
        existing: Table = metadata.tables[name]
        return existing
    return Table(
        name,
        metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("event_id", String(64), nullable=False),
        Column("topic", String(255), nullable=False),
        Column("key", String(255), nullable=False),
        Column("payload", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("failed_at", DateTime(timezone=True), nullable=False),
        Column("reason", Text, nullable=False),
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
        self.dead = dead_table(row_cls)
        self._producer = producer
        self._metrics = metrics
        self._batch = batch_size
        self._idle = idle_seconds
        self._max_backoff = max_backoff
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._lease_key = zlib.crc32(f"absch-outbox:{row_cls.__tablename__}".encode()) & 0x7FFFFFFF
        self.oldest_created: datetime | None = None  # of the oldest unsent row, last read
        self.last_round: float = time.monotonic()  # monotonic end of the last round
        self.last_error: str | None = None
        self._emptied = False  # the last round read every unsent row (fewer than a batch)
        metrics.outbox_failures.labels(metrics.service)  # exists from the start
        metrics.outbox_oldest_age.labels(metrics.service).set(0)
        # Built once: building a statement costs more than running it.
        table = row_cls.__table__
        unsent = table.c.sent_at.is_(None)
        self._pending = (
            select(
                table.c.id,
                table.c.event_id,
                table.c.topic,
                table.c.key,
                table.c.payload,
                table.c.created_at,
            )
            .where(unsent)
            .order_by(table.c.id)
            .limit(batch_size)
        )
        self._mark_sent = (
            update(table)
            .where(table.c.id.in_(bindparam("ids", expanding=True)))
            .values(sent_at=bindparam("now"))
        )
        self._backlog = select(func.count(), func.min(table.c.created_at)).where(unsent)

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

    @property
    def running(self) -> bool:
        """False when the relay task ended (only on stop)."""
        return self._task is not None and not self._task.done()

    def oldest_age(self) -> float:
        """Seconds the oldest unsent row has waited (0 when none), as of the last reading."""
        if self.oldest_created is None:
            return 0.0
        oldest = self.oldest_created
        if oldest.tzinfo is None:  # SQLite hands back naive UTC
            oldest = oldest.replace(tzinfo=UTC)
        return max(0.0, (datetime.now(UTC) - oldest).total_seconds())

    async def backlog(self) -> int:
        """Rows not yet published."""
        async with self._sessions() as session:
            count, _ = (await session.execute(self._backlog)).one()
        return int(count or 0)

    async def dead_letters(self) -> list[dict[str, Any]]:
        """Rows moved to the dead-letter table, oldest first."""
        async with self._sessions() as session:
            rows = await session.execute(select(self.dead).order_by(self.dead.c.id))
            return [dict(r._mapping) for r in rows]

    async def measure(self) -> None:
        """Read backlog and oldest age from the table and export them."""
        async with self._sessions() as session:
            count, oldest = (await session.execute(self._backlog)).one()
        self._report(int(count or 0), oldest if count else None)

    def _report(self, backlog: int, oldest: datetime | None) -> None:
        self.oldest_created = oldest
        m = self._metrics
        m.outbox_backlog.labels(m.service).set(backlog)
        m.outbox_oldest_age.labels(m.service).set(self.oldest_age())

    async def _lease(self, session: AsyncSession) -> bool:
        """Hold this outbox's lease for the transaction; False when another relay has it."""
        if session.get_bind().dialect.name != "postgresql":
            return True  # SQLite: one writer at a time anyway
        got = await session.scalar(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": self._lease_key}
        )
        return bool(got)

    async def drain_once(self) -> int:
        """Publish one batch of pending rows; returns how many were sent or dead-lettered.

        Rows the broker refuses for good move to the dead-letter table; rows not sent for
        another reason stay for the next round, and that reason is raised after the rows
        that did go out are marked."""
        failure: BaseException | None = None
        self._emptied = False
        async with self._sessions() as session, session.begin():
            if not await self._lease(session):
                return 0
            # Plain rows, not ORM objects: nothing here is changed through the unit of work.
            rows = (await session.execute(self._pending)).all()
            if not rows:
                self._emptied = True
                return 0
            sent: list[Any] = list(rows)
            done = len(rows)
            try:
                await self._producer.send_many([_message(r) for r in rows])
            except SendFailed as exc:
                sent = [r for r, e in zip(rows, exc.errors, strict=True) if e is None]
                done = len(sent)
                for row, error in zip(rows, exc.errors, strict=True):
                    if error is None:
                        continue
                    if is_unpublishable(error) and not isinstance(error, SendFailed):
                        await self._bury(session, row, error)
                        done += 1
                    elif failure is None:
                        failure = error
            if sent:
                await session.execute(
                    self._mark_sent, {"ids": [r.id for r in sent], "now": datetime.now(UTC)}
                )
        if failure is not None and not done:
            raise failure
        self._emptied = failure is None and len(rows) < self._batch
        return done

    async def _bury(self, session: AsyncSession, row: Any, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"[:2000]
        await session.execute(
            insert(self.dead).values(
                event_id=row.event_id,
                topic=row.topic,
                key=row.key,
                payload=row.payload,
                created_at=row.created_at,
                failed_at=datetime.now(UTC),
                reason=reason,
            )
        )
        await session.execute(delete(self._row).where(self._row.id == row.id))
        m = self._metrics
        m.outbox_dead.labels(m.service, row.topic).inc()
        log.error(
            "outbox row %s (event %s, %s bytes, topic %s) can never be published, moved to %s: %s",
            row.id,
            row.event_id,
            len(row.payload),
            row.topic,
            self.dead.name,
            reason,
        )

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            failed = False
            # Cleared before the round, not after: a commit during it is not left waiting.
            self._wake.clear()
            try:
                sent = await self.drain_once()
                backoff = 0.1
                self.last_error = None
            except Exception as exc:  # broker or database down: keep rows, retry later
                failed, sent, self._emptied = True, 0, False
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._metrics.outbox_failures.labels(self._metrics.service).inc()
                log.warning("outbox relay round failed, retrying in %.1fs: %s", backoff, exc)
            if self._emptied:  # the round read every unsent row: nothing waits but new ones
                self._report(0, None)
            else:
                with contextlib.suppress(Exception):  # the database may be what is down
                    await self.measure()
            self.last_round = time.monotonic()
            if self._stopping and (failed or not sent):
                return
            if failed:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            if sent and (self._stopping or not self._emptied):
                continue  # a full batch: more may be waiting
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._idle)


def _message(row: Any) -> OutgoingMessage:
    return OutgoingMessage(row.topic, row.key.encode(), row.payload.encode())
