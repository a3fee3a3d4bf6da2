"""The published directory (NFPs, CNAs, contacts, checkpoints): one view for every service.

Each instance reads the whole directory topic, from the start on every start (no consumer
group, so instances need no identity), and keeps every record's latest revision in its
database (``kit_directory``) and in memory. A restart loads the table first; re-reading the
topic then changes nothing stored, so it costs no re-checks, and events older than what
memory holds skip the database altogether.

- **Changes.** Listeners run inside the transaction that stores a change, and only when
  the stored entry really changed, so a service's reaction to a change (the monitor
  re-checking the CPCs that cite a checkpoint) commits with it, exactly once, on one
  instance, even when several share a database.
- **Barrier.** :meth:`DirectoryView.read_to_end_since` says whether the consumer has read
  the topic to its end in a poll round that started after a given moment of this
  process's clock: "caught up to what was published before X", never a comparison with a
  producer's clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.events import CloudEvent
from shared.events.models import DirectoryRecordPublished, DirectoryRecordWithdrawn
from shared.kit.consumer import Delivery, SupervisedConsumer, Tx

log = logging.getLogger(__name__)
TABLE_NAME = "kit_directory"
DIRECTORY_TYPES = ("directory.record.published", "directory.record.withdrawn")


@dataclass(frozen=True)
class Entry:
    """The latest known revision of one directory record."""

    identifier: str
    schema: str
    government: str | None
    uid: str
    revision: int
    published: bool
    record: dict[str, Any]


# (transaction, entry before or None, entry after): runs in the change's transaction.
Listener = Callable[[Tx, Entry | None, Entry], Awaitable[None]]
# Memory indexes a service derives from the view (the notifier's recipient directory).
Mirror = Callable[[Entry], None]


def directory_table(metadata: MetaData) -> Table:
    """The directory table in a service's metadata."""
    if TABLE_NAME in metadata.tables:
        existing: Table = metadata.tables[TABLE_NAME]
        return existing
    return Table(
        TABLE_NAME,
        metadata,
        Column("identifier", String(128), primary_key=True),
        Column("schema_name", String(64), nullable=False),
        Column("government", String(8), nullable=True, index=True),
        Column("uid", String(64), nullable=False),
        Column("revision", Integer, nullable=False),
        Column("published", Boolean, nullable=False),
        Column("body", JSON, nullable=False),
    )


def fold(known: Entry | None, event: CloudEvent[Any]) -> Entry | None:
    """What one directory event makes of an entry (pure; older revisions never win).

    A withdrawal holds for the revision it follows: only a later revision publishes the
    record again, so reading the topic again from the start ends where it ended.
    """
    data = event.data
    if isinstance(data, DirectoryRecordPublished):
        if known is not None and (
            data.revision < known.revision
            or (data.revision == known.revision and not known.published)
        ):
            return known
        return Entry(
            identifier=data.identifier,
            schema=data.schema_,
            government=(data.government or "").lower() or None,
            uid=data.uid,
            revision=data.revision,
            published=True,
            record=data.record,
        )
    if isinstance(data, DirectoryRecordWithdrawn) and known is not None:
        return replace(known, published=False)
    return known


class DirectoryView:
    """The directory as this instance knows it; see the module docstring."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self._entries: dict[str, Entry] = {}
        self.listeners: list[Listener] = []
        self.mirrors: list[Mirror] = []
        self.consumer: SupervisedConsumer | None = None
        self.loaded = False

    # -- reading --------------------------------------------------------------------------

    def get(self, identifier: str) -> Entry | None:
        """The entry of ``<identifier>[@rev]``, published or withdrawn."""
        return self._entries.get(identifier.split("@", 1)[0].strip())

    def record(self, identifier: str) -> dict[str, Any] | None:
        """The published record of ``<identifier>[@rev]``."""
        entry = self.get(identifier)
        return entry.record if entry is not None and entry.published else None

    def entries(self, schema: str | None = None) -> Iterable[Entry]:
        """Every entry (of one schema)."""
        return [e for e in self._entries.values() if schema is None or e.schema == schema]

    def read_to_end_since(self, moment: float) -> bool:
        """True when a poll round that started at or after ``moment`` (``time.time()`` of
        this process) found nothing left to read on the directory topic."""
        consumer = self.consumer
        if consumer is None:
            return True
        return min(consumer.caught_up_at.get(t, 0.0) for t in consumer.topics) >= moment

    def read_to_end_at(self) -> float:
        """Start of the last poll round that found the topic read to its end (0: never)."""
        consumer = self.consumer
        if consumer is None:
            return time.time()
        return min(consumer.caught_up_at.get(t, 0.0) for t in consumer.topics)

    async def ready(self) -> tuple[bool, str]:
        """Readiness: the topic has been read to its end at least once."""
        if self.read_to_end_at() > 0:
            return True, f"{len(self._entries)} records"
        return False, f"still reading ({len(self._entries)} records so far)"

    # -- keeping it ---------------------------------------------------------------------

    async def load(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        """Fill memory from the table (at start, before the consumer runs)."""
        t = self.table
        async with sessions() as session:
            rows = await session.execute(select(t))
            for row in rows:
                entry = Entry(
                    identifier=row.identifier,
                    schema=row.schema_name,
                    government=row.government,
                    uid=row.uid,
                    revision=row.revision,
                    published=row.published,
                    record=row.body,
                )
                self._remember(entry)
        self.loaded = True

    async def on_event(self, tx: Tx, event: CloudEvent[Any], _delivery: Delivery) -> None:
        """Fold one directory event in, in the consumer's transaction."""
        data = event.data
        if not isinstance(data, DirectoryRecordPublished | DirectoryRecordWithdrawn):
            return
        known = self._entries.get(data.identifier)
        if known is not None and fold(known, event) == known:
            # Memory lags the table, never leads it: nothing this event could change.
            return
        before = await self._stored(tx.session, data.identifier)
        after = fold(before, event)
        if after is None:
            return  # a withdrawal of something never published here
        tx.after_commit(lambda: self._remember(after))
        if after == before:
            return  # read again (another instance stored it, or a restart): nothing new
        await self._store(tx.session, before, after)
        for listener in self.listeners:
            await listener(tx, before, after)

    async def _stored(self, session: AsyncSession, identifier: str) -> Entry | None:
        t = self.table
        row = (
            await session.execute(select(t).where(t.c.identifier == identifier).with_for_update())
        ).first()
        if row is None:
            return None
        return Entry(
            identifier=row.identifier,
            schema=row.schema_name,
            government=row.government,
            uid=row.uid,
            revision=row.revision,
            published=row.published,
            record=row.body,
        )

    async def _store(self, session: AsyncSession, before: Entry | None, after: Entry) -> None:
        t = self.table
        values = {
            "schema_name": after.schema,
            "government": after.government,
            "uid": after.uid,
            "revision": after.revision,
            "published": after.published,
            "body": after.record,
        }
        if before is None:
            await session.execute(insert(t).values(identifier=after.identifier, **values))
        else:
            await session.execute(
                update(t).where(t.c.identifier == after.identifier).values(**values)
            )

    def _remember(self, entry: Entry) -> None:
        self._entries[entry.identifier] = entry
        for mirror in self.mirrors:
            mirror(entry)
