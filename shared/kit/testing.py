"""Fast tests of a service's handlers through the kit, with in-memory fakes for adapters.

A :class:`HandlerHarness` runs a handler table (event type → :data:`TxHandler`) the way a
transactional :class:`~shared.kit.consumer.SupervisedConsumer` does, without a broker:
each :meth:`HandlerHarness.feed` is one poll batch of one partition, so it is one
transaction that first stores the partition's next offset, then hands every event (sent
through the wire codec and back, so handlers see what a consumer decodes) to
:func:`~shared.kit.assemble.dispatch_tx` with its correlation id set, and runs the
:class:`~shared.kit.consumer.Tx`'s after-commit hooks once the transaction committed. A
handler that raises rolls the whole batch back (offset included) and the error comes out
of ``feed``; in a service that is where the consumer would retry or dead-letter.

The database is SQLite in memory, one connection shared by every session (``StaticPool``),
so ``harness.sessions`` both wires the service's adapters and reads what the handlers
wrote::

    async with HandlerHarness(Base.metadata, {"cpc.published": handle}) as harness:
        await harness.feed(event, key="ABSCH-CPC-DE-1001")
        rows = await harness.rows(DeliveryRow)

:class:`FakeMailer` stands in for an SMTP mailer: it keeps every message it accepts and
raises the errors it was told to raise for given addresses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from email import message_from_bytes
from email.message import Message
from email.utils import getaddresses
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from sqlalchemy import MetaData, Table, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import StaticPool

from shared.db import create_engine, create_schema, session_factory
from shared.events import CloudEvent, UnknownEventType, decode_event
from shared.kit import offsets as store
from shared.kit.assemble import dispatch_tx
from shared.kit.consumer import Delivery, Tx, TxHandler
from shared.logging import correlation_id

log = logging.getLogger(__name__)

MEMORY_URL = "sqlite+aiosqlite://"
_Row = TypeVar("_Row")


class HandlerHarness:
    """A service's tables in an in-memory database and its handler table, fed by hand.

    ``metadata`` is the service's ``MetaData`` (the kit's offsets table is added to it, as
    :class:`~shared.kit.assemble.Kit` does); ``handlers`` maps event types to
    transactional handlers, other types are ignored (it may also be given later, with
    :meth:`use`). Events go to ``topic`` (partition 0) unless :meth:`feed` is told
    otherwise; offsets count from 0 per topic and partition. The database lives until
    :meth:`close` (``async with`` does both ends).
    """

    def __init__(
        self,
        metadata: MetaData,
        handlers: Mapping[str, TxHandler] | None = None,
        *,
        topic: str = "harness",
        group: str = "harness",
    ) -> None:
        self.metadata = metadata
        self.topic = topic
        self.group = group
        self.offsets: Table = store.offsets_table(metadata)
        self.engine: AsyncEngine = create_engine(MEMORY_URL, poolclass=StaticPool)
        self.sessions: async_sessionmaker[AsyncSession] = session_factory(self.engine)
        self.hook_errors: list[Exception] = []  # after-commit hooks that raised (logged)
        self._handle = dispatch_tx(handlers or {})
        self._next: dict[tuple[str, int], int] = {}

    def use(self, handlers: Mapping[str, TxHandler]) -> None:
        """Handle events with ``handlers`` from now on (a table whose handlers need adapters
        built on :attr:`sessions` can only be given once the harness exists)."""
        self._handle = dispatch_tx(handlers)

    async def start(self) -> None:
        """Create the tables (idempotent)."""
        await create_schema(self.engine, self.metadata)

    async def close(self) -> None:
        """Drop the in-memory database."""
        await self.engine.dispose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def feed(
        self,
        *events: CloudEvent[Any],
        key: str | None = None,
        topic: str | None = None,
        partition: int = 0,
    ) -> list[Delivery]:
        """Handle ``events`` as one consumed batch of ``topic[partition]``, all with record
        key ``key``: one transaction with the offset, hooks after the commit. Returns each
        event's :class:`Delivery`. An event type the codec does not know is skipped (its
        offset passes), as the consumer skips it; an invalid event raises ``DecodeError``
        (the consumer would dead-letter it)."""
        if not events:
            return []
        topic = self.topic if topic is None else topic
        expected = self._next.get((topic, partition))
        first = expected or 0
        deliveries = [Delivery(topic, partition, first + i, key) for i in range(len(events))]
        decoded = [_over_the_wire(event) for event in events]
        next_offset = first + len(events)
        async with self.sessions() as session, session.begin():
            # As the consumer does: the offset first (SQLite's write lock before any read).
            await store.store_offset(
                session,
                self.offsets,
                self.group,
                topic,
                partition,
                expected=expected,
                next_offset=next_offset,
            )
            tx = Tx(session)
            for event, delivery in zip(decoded, deliveries, strict=True):
                if event is None:
                    continue
                token = correlation_id.set(event.correlationid)
                try:
                    await self._handle(tx, event, delivery)
                finally:
                    correlation_id.reset(token)
        self._next[(topic, partition)] = next_offset
        for hook in tx.hooks:
            try:
                hook()
            except Exception as exc:  # as the consumer: a hook never undoes the commit
                log.exception("after-commit hook failed")
                self.hook_errors.append(exc)
        return deliveries

    async def stored_offset(self, topic: str | None = None, partition: int = 0) -> int | None:
        """The next offset stored for ``topic[partition]`` (None: nothing committed)."""
        topic = self.topic if topic is None else topic
        async with self.sessions() as session:
            stored = await store.read_offsets(
                session, self.offsets, self.group, [(topic, partition)]
            )
        return stored.get((topic, partition))

    async def rows(self, entity: type[_Row]) -> list[_Row]:
        """Every row of a mapped class, in primary key order."""
        query = select(entity).order_by(*inspect(entity).primary_key)
        async with self.sessions() as session:
            return list((await session.scalars(query)).all())

    async def staged(self, outbox: type[Any]) -> list[CloudEvent[Any]]:
        """Events staged in an outbox table (``OutboxMixin``), in staging order."""
        async with self.sessions() as session:
            rows = await session.scalars(select(outbox).order_by(outbox.id))
            return [decode_event(row.payload.encode()) for row in rows]


def _over_the_wire(event: CloudEvent[Any]) -> CloudEvent[Any] | None:
    """What a consumer decodes from the event's wire form (None: unknown type, skipped)."""
    try:
        return decode_event(event.to_json_bytes())
    except UnknownEventType:
        return None


class Mailer(Protocol):
    """What a mail delivery needs of its mailer (``SmtpMailer`` is one)."""

    async def send(self, message: Message) -> None: ...

    async def send_bytes(self, sender: str, recipient: str, data: bytes) -> None: ...


class FakeMailer:
    """An in-memory :class:`Mailer`: accepted messages land in :attr:`sent`.

    ``fail(address, error)`` makes every send to that address raise ``error``, e.g. the
    notifier's ``PermanentFailure("550 5.1.1 no such user")`` or
    ``TemporaryFailure("451 4.3.0 try again later")``; ``fail_all(error)`` fails every send
    (the server unreachable); ``heal`` undoes both. Addresses match case-insensitively
    against the ``To`` header.
    """

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.attempts = 0
        self.closed = False
        self._failures: dict[str, Callable[[], Exception]] = {}
        self._fail_all: Callable[[], Exception] | None = None

    def fail(self, address: str, error: Exception) -> None:
        """Raise ``error`` for every send to ``address`` until :meth:`heal`."""
        self._failures[address.lower()] = lambda: error

    def fail_all(self, error: Exception) -> None:
        """Raise ``error`` for every send until :meth:`heal`."""
        self._fail_all = lambda: error

    def heal(self, address: str | None = None) -> None:
        """Accept sends again (to ``address``, or to everyone)."""
        if address is None:
            self._failures.clear()
            self._fail_all = None
        else:
            self._failures.pop(address.lower(), None)

    @property
    def recipients(self) -> list[str]:
        """Lower-cased ``To`` addresses of the accepted messages, in sending order."""
        return [address for message in self.sent for address in _to(message)]

    async def send(self, message: Message) -> None:
        """Accept ``message``, or raise what an address was told to raise."""
        self.attempts += 1
        if self._fail_all is not None:
            raise self._fail_all()
        for address in _to(message):
            failure = self._failures.get(address)
            if failure is not None:
                raise failure()
        self.sent.append(message)

    async def send_bytes(self, sender: str, recipient: str, data: bytes) -> None:
        """Accept a flattened message, as :meth:`send` accepts a built one."""
        await self.send(message_from_bytes(data))

    async def close(self) -> None:
        """Nothing to close; remembered for assertions."""
        self.closed = True


def _to(message: Message) -> list[str]:
    return [address.lower() for _, address in getaddresses(message.get_all("To", []))]
