"""The monitor's view of published checkpoints, kept from the directory topic.

Every instance reads the whole topic from the start on each start. Without a database
(``CheckpointView()``) the view starts empty and listeners hear of every checkpoint as
the topic is read again. With one (``CheckpointView(sessions)``) the view is also kept in
``monitor_checkpoints``: ``await view.load()`` fills it from there at start, so the rules
see the checkpoints before the topic is read again, and a listener is called only when an
event changes what the table holds. Reading the same topic after a restart calls none.

A change is folded into its row under the row's lock and marked pending in the same
transaction; the mark is cleared once the listeners (the re-check of the CPCs citing the
checkpoint) returned. A crash or a failing listener in between leaves it pending, and the
next reading of that checkpoint's events calls the listeners again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.monitor.adapters import state as store
from services.monitor.domain import CheckpointState
from shared.events import CloudEvent
from shared.events.models import DirectoryRecordPublished, DirectoryRecordWithdrawn

Listener = Callable[[str], Awaitable[None]]
CHECKPOINT_SCHEMA = "absCheckpoint"


@dataclass(frozen=True)
class KnownCheckpoint:
    """A checkpoint's state and the revision it comes from."""

    revision: int
    state: CheckpointState


def fold(known: KnownCheckpoint | None, data: Any) -> KnownCheckpoint | None:
    """What one directory event makes of a checkpoint (pure; older revisions never win).

    A withdrawal holds for the revision it follows: only a later revision publishes the
    checkpoint again, so reading the topic again from the start ends where it ended.
    """
    if isinstance(data, DirectoryRecordPublished):
        if known is not None and (
            data.revision < known.revision
            or (data.revision == known.revision and not known.state.published)
        ):
            return known
        state = CheckpointState(data.identifier, (data.government or "").lower(), True)
        return KnownCheckpoint(data.revision, state)
    if isinstance(data, DirectoryRecordWithdrawn) and known is not None:
        return KnownCheckpoint(known.revision, replace(known.state, published=False))
    return known


class CheckpointView:
    """Checkpoints by identifier; listeners hear of every relevant change."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession] | None = None) -> None:
        self._sessions = sessions
        self._known: dict[str, KnownCheckpoint] = {}
        self._pending: set[str] = set()  # stored with a re-check not yet done
        self.listeners: list[Listener] = []

    def snapshot(self) -> dict[str, CheckpointState]:
        """A copy that an evaluation can hold on to."""
        return {ident: known.state for ident, known in self._known.items()}

    async def load(self) -> None:
        """Fill the view from the table (call once at start, before following the topic)."""
        if self._sessions is None:
            return
        async with self._sessions() as session:
            rows = await store.stored_checkpoints(session)
        for row in rows:
            state = CheckpointState(row.identifier, row.government, row.published)
            self._known[row.identifier] = KnownCheckpoint(row.revision, state)
            if row.recheck_pending:
                self._pending.add(row.identifier)

    async def apply(self, event: CloudEvent[Any]) -> None:
        """Fold a directory event in; call the listeners if the checkpoint changed."""
        data = event.data
        ident = self._concerns(data)
        if ident is None:
            return
        known = self._known.get(ident)
        new = fold(known, data)
        if new == known and ident not in self._pending:
            return  # the view holds this or later already, and so does the table
        if self._sessions is None:
            if new is not None:
                self._known[ident] = new
                if known is None or new.state != known.state:
                    await self._notify(ident)
            return
        stored, pending = await self._fold_stored(ident, data)
        if stored is None:
            return
        self._known[ident] = stored
        if not pending:
            self._pending.discard(ident)
            return
        self._pending.add(ident)
        await self._notify(ident)
        async with self._sessions() as session, session.begin():
            await store.checkpoint_rechecked(
                session, ident, stored.revision, stored.state.government, stored.state.published
            )
        self._pending.discard(ident)

    def _concerns(self, data: Any) -> str | None:
        """The checkpoint a directory event is about, if it is about one."""
        if isinstance(data, DirectoryRecordPublished) and data.schema_ == CHECKPOINT_SCHEMA:
            return data.identifier
        if isinstance(data, DirectoryRecordWithdrawn) and (
            data.schema_ == CHECKPOINT_SCHEMA or data.identifier in self._known
        ):
            return data.identifier
        return None

    async def _fold_stored(self, ident: str, data: Any) -> tuple[KnownCheckpoint | None, bool]:
        """Fold the event into the checkpoint's row under its lock: (row now, re-check due)."""
        assert self._sessions is not None
        async with self._sessions() as session, session.begin():
            row = await store.lock_checkpoint(session, ident)
            if row is None:
                first = fold(None, data)
                if first is None:
                    return None, False
                state = first.state
                if await store.insert_checkpoint(
                    session, ident, first.revision, state.government, state.published
                ):
                    return first, True
                row = await store.lock_checkpoint(session, ident)  # another instance's insert
                assert row is not None
            stored = KnownCheckpoint(
                row.revision, CheckpointState(ident, row.government, row.published)
            )
            new = fold(stored, data)
            assert new is not None
            if new != stored:
                row.revision = new.revision
                row.government = new.state.government
                row.published = new.state.published
                row.recheck_pending = row.recheck_pending or new.state != stored.state
            return new, row.recheck_pending

    async def _notify(self, ident: str) -> None:
        for listener in self.listeners:
            await listener(ident)
