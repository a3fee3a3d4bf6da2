"""Creating revisions and staging their events (one transaction with the outbox)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry.adapters.tables import OutboxRow, RecordRow, RevisionRow
from services.registry.codes import record_issues
from services.registry.context import RegistryContext
from services.registry.domain import (
    IRCC_SCHEMA,
    ircc_event_type,
    search_text,
)
from services.registry.handlers.errors import InvalidRecord
from shared.events import Topic, new_event
from shared.events.models import DirectoryRecordPublished, IrccEvent
from shared.kit.outbox import stage
from shared.records import AbsPermit, parse_record
from shared.uid import format_uid


def validated(
    body: dict[str, Any], *, published: bool = False, draft: bool = False
) -> dict[str, Any]:
    """The record as stored: validated, confidential parts stripped [P1].

    A ``draft`` is checked for shape only; the publication rules wait for its publication.
    Editors' ``notes`` stay on drafts and never reach a published revision.
    """
    try:
        record = parse_record(body, draft=draft)
    except ValidationError as exc:
        raise InvalidRecord(record_issues(exc)) from None
    if isinstance(record, AbsPermit):
        record = record.strip_confidential()
    dumped: dict[str, Any] = record.dump()
    if published:
        dumped.pop("notes", None)
    elif "notes" in body:
        dumped["notes"] = body["notes"]
    return dumped


async def create_revision(
    ctx: RegistryContext,
    session: AsyncSession,
    row: RecordRow,
    body: dict[str, Any],
    *,
    by: str,
    correlation_id: str | None = None,
) -> RevisionRow:
    """Add revision n+1 of ``row`` with ``body`` and stage its event; caller commits."""
    body = validated(body, published=True)
    revision = row.latest_revision + 1
    uid = format_uid(row.schema_name, row.government, row.document_id, revision)
    rev = RevisionRow(
        document_id=row.document_id,
        revision=revision,
        uid=uid,
        body=body,
        amendment_intent=body.get("amendmentIntent"),
        published_at=ctx.clock(),
        published_by=by,
    )
    session.add(rev)
    row.latest_revision = revision
    row.draft = None
    row.pending_request_id = None
    row.search_text = search_text(body)
    row.updated_at, row.updated_by = ctx.clock(), by
    if rev.amendment_intent == 1:
        row.revoked = True
    stage_revision_event(session, row, rev, topic=ctx.topic, correlation_id=correlation_id)
    kind = (
        ircc_event_type(revision, rev.amendment_intent).split(".")[1]
        if row.schema_name == IRCC_SCHEMA
        else "published"
    )
    ctx.metrics.publications.labels(row.schema_name, kind).inc()
    return rev


def stage_revision_event(
    session: AsyncSession,
    row: RecordRow,
    rev: RevisionRow,
    *,
    topic: Callable[[str], str],
    correlation_id: str | None = None,
    source: str = "registry",
    notify: bool = True,
) -> None:
    """Stage the event of a new revision (``ircc.*`` or ``directory.record.published``) in
    the caller's transaction. The mirror stages its revisions here too (``source``
    ``mirror``, the record's ``mirrored_from``, ``notify`` as asked): the same events as a
    local publication."""
    key = format_uid(row.schema_name, row.government, row.document_id)
    if row.schema_name == IRCC_SCHEMA:
        reason = rev.body.get("amendmentDescription") if rev.amendment_intent is not None else None
        data: IrccEvent | DirectoryRecordPublished = IrccEvent(
            uid=rev.uid,
            identifier=row.identifier,
            document_id=row.document_id,
            revision=rev.revision,
            government=row.government or "",
            reason=reason,
            record=rev.body,
            mirrored_from=row.mirrored_from,
            notify=notify,
        )
        event_type, base = ircc_event_type(rev.revision, rev.amendment_intent), Topic.IRCC
    else:
        data = DirectoryRecordPublished(
            uid=rev.uid,
            schema_=row.schema_name,
            identifier=row.identifier,
            document_id=row.document_id,
            revision=rev.revision,
            government=row.government,
            record=rev.body,
            mirrored_from=row.mirrored_from,
        )
        event_type, base = "directory.record.published", Topic.DIRECTORY
    event = new_event(
        event_type, source=source, subject=rev.uid, data=data, correlation_id=correlation_id
    )
    stage(session, OutboxRow, topic(base), event, key=key)


async def latest_body(session: AsyncSession, row: RecordRow) -> dict[str, Any]:
    """Body of the latest published revision."""
    rev = await session.scalar(
        select(RevisionRow).where(
            RevisionRow.document_id == row.document_id, RevisionRow.revision == row.latest_revision
        )
    )
    assert rev is not None, "latest_revision points at a missing revision"
    return dict(rev.body)
