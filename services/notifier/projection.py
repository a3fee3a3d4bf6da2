"""The notifier's view of IRCCs, and its recipient index of the published directory.

IRCC rows live in the database (so a restart does not re-read history) and in memory (so
recipient resolution needs no I/O); every instance keeps them all, fed by a consumer of
its own that reads every partition of the IRCC topic. The directory itself is the kit's
view (``shared/kit/directory.py``); :meth:`Projection.mirror` keeps the in-memory index
the recipient rules read in step with it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notifier.adapters.tables import IrccRow
from services.notifier.domain import InMemoryDirectory
from shared.events import CloudEvent
from shared.events.models import IrccEvent
from shared.kit.directory import Entry
from shared.uid import UidError, parse_uid


class Projection:
    """IRCC state (memory and database) and the directory's recipient index (memory)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self.directory = InMemoryDirectory()
        self._irccs: dict[str, dict[str, Any]] = {}
        self._revoked: set[str] = set()
        self._by_document: dict[int, str] = {}
        self._uids: dict[str, str] = {}

    def mirror(self, entry: Entry) -> None:
        """Follow one change of the kit's directory view (published, or not any more)."""
        if entry.published:
            self.directory.add(entry.record)
        else:
            self.directory.remove(entry.identifier)

    async def load(self) -> None:
        """Fill the IRCC memory view from the database."""
        async with self._sessions() as session:
            for ircc in await session.scalars(select(IrccRow)):
                self._irccs[ircc.identifier] = ircc.body
                self._by_document[ircc.document_id] = ircc.identifier
                self._uids[ircc.identifier] = ircc.uid
                if ircc.revoked:
                    self._revoked.add(ircc.identifier)

    def ircc(self, identifier: str) -> dict[str, Any] | None:
        """Latest known revision of an IRCC (``@rev`` ignored)."""
        return self._irccs.get(identifier.split("@", 1)[0])

    def ircc_uid(self, identifier: str) -> str | None:
        """UID of the latest known revision of an IRCC."""
        return self._uids.get(identifier.split("@", 1)[0])

    def ircc_by_uid(self, uid: str) -> dict[str, Any] | None:
        """Latest known revision of the IRCC a UID names (any revision)."""
        try:
            document_id = parse_uid(uid).document_id
        except UidError:
            return None
        identifier = self._by_document.get(document_id)
        return self._irccs.get(identifier) if identifier else None

    def knows(self, identifier: str) -> bool:
        """True when a directory record is published under this identifier."""
        return self.directory.record(identifier) is not None

    async def apply(self, event: CloudEvent[Any]) -> None:
        """Fold one IRCC event in (idempotent; older revisions never win)."""
        try:
            await self._apply(event)
        except IntegrityError:
            # The mail consumer and the view consumer both fold IRCC events in; when they
            # insert the same new row at once, the loser simply applies over the winner.
            await self._apply(event)

    async def _apply(self, event: CloudEvent[Any]) -> None:
        async with self._sessions() as session:
            await self.apply_in(session, event)
            await session.commit()

    async def apply_in(self, session: AsyncSession, event: CloudEvent[Any]) -> None:
        """Fold one event in within the caller's transaction (the caller commits). Memory
        moves at once: the view only ever holds published records, so a rollback leaves
        nothing wrong in it."""
        data = event.data
        if isinstance(data, IrccEvent):
            await self._publish_ircc(session, data, revoked=event.type == "ircc.revoked")
            await session.flush()

    async def _publish_ircc(self, session: AsyncSession, data: IrccEvent, *, revoked: bool) -> None:
        row = await session.get(IrccRow, data.identifier)
        if row is None:
            row = IrccRow(
                identifier=data.identifier,
                document_id=data.document_id,
                government=data.government,
                uid=data.uid,
                revision=0,
                revoked=False,
                body={},
                expiry_notice_sent=False,
            )
            session.add(row)
        if revoked:
            row.revoked = True
            self._revoked.add(data.identifier)
        if data.revision >= row.revision:
            row.uid, row.revision, row.body = data.uid, data.revision, data.record
            self._irccs[data.identifier] = data.record
            self._uids[data.identifier] = data.uid
        self._by_document[data.document_id] = data.identifier

    def is_revoked(self, identifier: str) -> bool:
        """True once any revision of the IRCC was a revocation."""
        return identifier.split("@", 1)[0] in self._revoked
