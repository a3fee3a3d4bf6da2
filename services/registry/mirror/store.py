"""Mirrored revisions into the registry's database, with their events (ADR 0005).

One transaction per record: its new revisions, their events in the outbox and the
cursor moved past it commit together, so a crash anywhere leaves either all of a record
or none of it, and a rerun resumes after the last record committed. The registry's relay
publishes the events as it publishes its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.registry.adapters.tables import (
    MirrorCursorRow,
    MirroredCommuniqueRow,
    OutboxRow,
    RecordRow,
    RevisionRow,
)
from services.registry.domain import IRCC_SCHEMA, REGISTRY_SCHEMAS, ircc_event_type, search_text
from services.registry.handlers.errors import InvalidRecord
from services.registry.handlers.publishing import stage_revision_event, validated
from services.registry.mirror.source import IndexEntry
from shared.events import Topic, new_event
from shared.events.models import CpcAmended, CpcPublished
from shared.kit.outbox import stage
from shared.records import parse_record, record_errors
from shared.uid import BadReference, format_uid, parse_reference

CPC_SCHEMA = "absCheckpointCommunique"
# Dependency order: a CPC names checkpoints and IRCCs, an IRCC its CNA, so a first
# mirror hands the monitor and the notifier what each event refers to before the event.
MIRRORED_SCHEMAS = ("focalPoint", "authority", "absCheckpoint", IRCC_SCHEMA, CPC_SCHEMA)
MIRROR_USER = "mirror"


class Rejected(Exception):
    """A record the mirror cannot map; the message is the reason written to the rejects."""


@dataclass(frozen=True)
class Revision:
    """A mapped revision: its number and the body as stored here."""

    number: int
    body: dict[str, Any]


def event_type(schema: str, number: int, body: dict[str, Any]) -> str:
    """The event a revision goes out as: the same as a local publication's."""
    if schema == IRCC_SCHEMA:
        return ircc_event_type(number, body.get("amendmentIntent"))
    if schema == CPC_SCHEMA:
        return "cpc.published" if number == 1 else "cpc.amended"
    return "directory.record.published"


def map_revision(entry: IndexEntry, number: int, body: dict[str, Any]) -> Revision:
    """A source body as this registry stores it: same identity as the index names, valid
    for its schema, confidential parts stripped [P1], editors' notes dropped."""
    header = body.get("header")
    if not isinstance(header, dict) or header.get("identifier") != entry.identifier:
        raise Rejected(f"revision {number}: header.identifier is not {entry.identifier}")
    if header.get("schema") != entry.schema:
        raise Rejected(f"revision {number}: header.schema is not {entry.schema}")
    term = body.get("government")
    gov = term.get("identifier") if isinstance(term, dict) else None
    own = isinstance(gov, str) and gov.lower() == entry.government
    if entry.government is not None and not own:
        raise Rejected(f"revision {number}: government is not {entry.government}")
    if entry.schema == CPC_SCHEMA:
        try:
            record = parse_record(body)
        except ValidationError as exc:
            raise Rejected(f"revision {number}: {_issues(record_errors(exc))}") from None
        stored: dict[str, Any] = record.dump()
        stored.pop("notes", None)
        return Revision(number, stored)
    try:
        return Revision(number, validated(body, published=True))
    except InvalidRecord as exc:
        raise Rejected(f"revision {number}: {_issues(exc.errors)}") from None


def _issues(errors: list[dict[str, str]]) -> str:
    return "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])


class MirrorStore:
    """The registry database as the mirror of one ``source`` sees it."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        source: str,
        topic: Callable[[str], str],
        notify: bool,
        clock: Callable[[], datetime],
    ) -> None:
        self._sessions = sessions
        self.source = source
        self._topic = topic
        self._notify = notify
        self._clock = clock

    async def cursor(self, schema: str) -> tuple[str | None, str | None]:
        """Update time and id of the last record taken of ``schema`` (None: from the start)."""
        async with self._sessions() as session:
            row = await session.get(MirrorCursorRow, (self.source, schema))
        return (row.updated, row.last_id) if row is not None else (None, None)

    async def local_revision(self, entry: IndexEntry) -> int:
        """The latest revision of the entry's record held here (0: none).

        ``Rejected`` when a local record (or another source's) holds its documentID or
        identifier: a mirror never renumbers, so it cannot take that record."""
        async with self._sessions() as session:
            if entry.schema == CPC_SCHEMA:
                return await self._communique_revision(session, entry)
            if entry.schema not in REGISTRY_SCHEMAS:
                raise Rejected(f"schema {entry.schema} is not mirrored")
            row = await session.get(RecordRow, entry.document_id)
            if row is None:
                row = await session.scalar(
                    select(RecordRow).where(RecordRow.identifier == entry.identifier)
                )
            if row is None:
                return 0
            if row.mirrored_from != self.source:
                owner = row.mirrored_from or "a local record"
                raise Rejected(f"documentID or identifier taken here by {owner}")
            if row.identifier != entry.identifier or row.document_id != entry.document_id:
                raise Rejected("documentID and identifier name two records here")
            if row.schema_name != entry.schema:
                raise Rejected(f"the record here is a {row.schema_name}")
            return row.latest_revision

    async def _communique_revision(self, session: AsyncSession, entry: IndexEntry) -> int:
        rows = (
            await session.execute(
                select(MirroredCommuniqueRow.identifier, func.max(MirroredCommuniqueRow.revision))
                .where(MirroredCommuniqueRow.document_id == entry.document_id)
                .group_by(MirroredCommuniqueRow.identifier)
            )
        ).all()
        if not rows:
            return 0
        ((identifier, latest),) = rows
        if identifier != entry.identifier:
            raise Rejected("documentID names another communiqué here")
        return int(latest)

    async def apply(self, entry: IndexEntry, revisions: list[Revision], *, passed: int) -> None:
        """Store ``revisions`` (in order, contiguous after what is held), stage their
        events and move the cursor past ``entry`` (and the ``passed`` records before it
        that needed no write), in one transaction."""
        async with self._sessions() as session:
            if entry.schema == CPC_SCHEMA:
                await self._add_communique(session, entry, revisions)
            else:
                await self._add_record(session, entry, revisions)
            await self._move(session, entry.schema, entry.updated, entry.solr_id, passed + 1)
            await session.commit()

    async def skip(self, schema: str, updated: str, solr_id: str, *, records: int) -> None:
        """Move the cursor to (``updated``, ``solr_id``), past ``records`` more records that
        needed no write (held already, or rejected)."""
        async with self._sessions() as session:
            await self._move(session, schema, updated, solr_id, records)
            await session.commit()

    async def _move(
        self, session: AsyncSession, schema: str, updated: str, solr_id: str, records: int
    ) -> None:
        row = await session.get(MirrorCursorRow, (self.source, schema))
        if row is None:
            row = MirrorCursorRow(source=self.source, schema_name=schema, records=0)
            session.add(row)
        row.updated, row.last_id, row.moved_at = updated, solr_id, self._clock()
        row.records = (row.records or 0) + records

    async def _add_record(
        self, session: AsyncSession, entry: IndexEntry, revisions: list[Revision]
    ) -> None:
        now = self._clock()
        row = await session.get(RecordRow, entry.document_id)
        if row is None:
            row = RecordRow(
                document_id=entry.document_id,
                identifier=entry.identifier,
                schema_name=entry.schema,
                government=entry.government,
                latest_revision=0,
                revoked=False,
                search_text="",
                created_at=now,
                created_by=MIRROR_USER,
                updated_at=now,
                updated_by=MIRROR_USER,
                mirrored_from=self.source,
            )
            session.add(row)
            await session.flush()
            await _keep_local_numbers_apart(session, entry.document_id)
        for revision in revisions:
            rev = RevisionRow(
                document_id=row.document_id,
                revision=revision.number,
                uid=format_uid(row.schema_name, row.government, row.document_id, revision.number),
                body=revision.body,
                amendment_intent=revision.body.get("amendmentIntent"),
                published_at=now,
                published_by=MIRROR_USER,
            )
            session.add(rev)
            row.latest_revision = revision.number
            row.search_text = search_text(revision.body)
            row.updated_at, row.updated_by = now, MIRROR_USER
            if rev.amendment_intent == 1:
                row.revoked = True
            stage_revision_event(
                session, row, rev, topic=self._topic, source="mirror", notify=self._notify
            )

    async def _add_communique(
        self, session: AsyncSession, entry: IndexEntry, revisions: list[Revision]
    ) -> None:
        gov = entry.government or ""
        previous = await session.scalar(
            select(MirroredCommuniqueRow)
            .where(MirroredCommuniqueRow.document_id == entry.document_id)
            .order_by(MirroredCommuniqueRow.revision.desc())
            .limit(1)
        )
        for revision in revisions:
            uid = format_uid(CPC_SCHEMA, gov, entry.document_id, revision.number)
            row = MirroredCommuniqueRow(
                document_id=entry.document_id,
                revision=revision.number,
                uid=uid,
                identifier=entry.identifier,
                government=gov,
                source=self.source,
                body=revision.body,
                mirrored_at=self._clock(),
            )
            session.add(row)
            event = new_event(
                event_type(CPC_SCHEMA, revision.number, revision.body),
                source="mirror",
                subject=uid,
                data=self._communique_event(entry, revision, uid, previous),
            )
            key = format_uid(CPC_SCHEMA, gov, entry.document_id)
            stage(session, OutboxRow, self._topic(Topic.CPC), event, key=key)
            previous = row

    def _communique_event(
        self,
        entry: IndexEntry,
        revision: Revision,
        uid: str,
        previous: MirroredCommuniqueRow | None,
    ) -> CpcPublished:
        fields: dict[str, Any] = {
            "uid": uid,
            "identifier": entry.identifier,
            "document_id": entry.document_id,
            "revision": revision.number,
            "government": entry.government or "",
            "checkpoints": _references(revision.body, "absCheckpoints"),
            "record": revision.body,
            "mirrored_from": self.source,
            "notify": self._notify,
        }
        if revision.number == 1:
            return CpcPublished(**fields)
        before = previous.body if previous is not None else {}
        reason = revision.body.get("amendmentDescription")
        if not (isinstance(reason, dict) and reason):
            # The communiqué schema has no reason field: say where the revision came from.
            reason = {"en": f"revision {revision.number} published at {self.source}"}
        return CpcAmended(
            **fields,
            reason=reason,
            previous_uid=format_uid(
                CPC_SCHEMA, entry.government, entry.document_id, revision.number - 1
            ),
            changed=sorted(
                k
                for k in set(before) | set(revision.body)
                if k != "header" and before.get(k) != revision.body.get(k)
            ),
        )


def _references(record: dict[str, Any], field: str) -> list[str]:
    out = []
    for ref in record.get(field) or []:
        try:
            out.append(parse_reference(str(ref.get("identifier", "")))[0])
        except BadReference:
            continue
    return out


async def _keep_local_numbers_apart(session: AsyncSession, document_id: int) -> None:
    """PostgreSQL hands out local documentIDs from a sequence that explicit ids don't move:
    move it past a mirrored id, so a later local record never collides with it. (SQLite
    takes the largest id plus one by itself.)"""
    if session.get_bind().dialect.name != "postgresql":
        return
    await session.execute(
        text(
            "SELECT setval(pg_get_serial_sequence('records', 'document_id'), :id) "
            "WHERE :id > (SELECT last_value FROM records_document_id_seq)"
        ),
        {"id": document_id},
    )
