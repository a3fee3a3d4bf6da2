"""Users the registry deactivated, as this instance knows them: refused without asking anyone.

The registry announces a deactivation with ``directory.user.deactivated`` on the directory
topic. The kit's directory consumer (broadcast: every partition, from the start, on every
start) hands those events to :class:`DeactivatedUsers`, which keeps the ids in the
service's table ``kit_deactivated_users`` and in a set in memory; the token verifier
consults the set, so refusing a token costs no call and no query.

- **Monotonic.** Deactivation is final, so the set only grows: reading the topic again, in
  any order, from any instance, ends with the same set, and an insert that finds the id
  already stored (another instance on the same database) changes nothing.
- **After commit.** An id joins the set once its row committed, so memory never leads the
  table; a restart loads the table before the consumer runs, so a restarted instance
  refuses what it refused before without waiting for the topic.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Column, DateTime, MetaData, String, Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.events import CloudEvent
from shared.events.models import UserDeactivated
from shared.kit.consumer import Delivery, Tx

log = logging.getLogger(__name__)
TABLE_NAME = "kit_deactivated_users"
DEACTIVATION_TYPE = "directory.user.deactivated"


def deactivations_table(metadata: MetaData) -> Table:
    """The deactivated users' table in a service's metadata."""
    if TABLE_NAME in metadata.tables:
        existing: Table = metadata.tables[TABLE_NAME]
        return existing
    return Table(
        TABLE_NAME,
        metadata,
        Column("user_id", String(64), primary_key=True),
        Column("deactivated_at", DateTime(timezone=True), nullable=False),
    )


def _insert(session: AsyncSession, table: Table) -> Any:
    dialect = session.get_bind().dialect.name
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(table)


class DeactivatedUsers:
    """The ids of deactivated users; see the module docstring."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self._ids: set[str] = set()
        self.loaded = False

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    async def is_deactivated(self, user_id: str) -> bool:
        """The token verifier's check (memory only: no I/O per request)."""
        return user_id in self._ids

    async def load(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        """Fill memory from the table (at start, before the consumer runs)."""
        async with sessions() as session:
            ids = (await session.scalars(select(self.table.c.user_id))).all()
        self._ids.update(ids)
        self.loaded = True

    async def on_event(self, tx: Tx, event: CloudEvent[Any], _delivery: Delivery) -> None:
        """Store one deactivation in the consumer's transaction; remember it once committed."""
        data = event.data
        if not isinstance(data, UserDeactivated):
            return
        user_id = data.user_id
        if user_id in self._ids:
            return  # read again (a restart re-reads the topic): nothing new
        await tx.session.execute(
            _insert(tx.session, self.table)
            .values(user_id=user_id, deactivated_at=data.deactivated_at)
            .on_conflict_do_nothing(index_elements=["user_id"])
        )
        tx.after_commit(lambda: self._remember(user_id))

    def _remember(self, user_id: str) -> None:
        if user_id not in self._ids:
            self._ids.add(user_id)
            log.info("user %s deactivated: its tokens are refused from now on", user_id)
