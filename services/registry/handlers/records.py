"""Drafts, direct publication, revocation and reads of national records."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry.adapters.tables import RecordRow, RevisionRow
from services.registry.codes import INVALID_VALUE, government_issue, issue
from services.registry.context import RegistryContext
from services.registry.domain import (
    IRCC_SCHEMA,
    REGISTRY_SCHEMAS,
    PublishMode,
    RuleViolation,
    check_can_edit,
    check_can_read_draft,
    prepare_publication,
    prepare_revocation,
    publish_mode,
)
from services.registry.handlers import workflow
from services.registry.handlers.errors import Conflict, InvalidRecord, NotFound
from services.registry.handlers.publishing import create_revision, latest_body, validated
from services.registry.handlers.validation import publication_issues
from shared.auth import Principal
from shared.uid import MAX_ID, BadReference, UidError, parse_reference, parse_solr_id, parse_uid

# A government as the records hold it [C1]; the record models give the same answer later.
_ISO2 = re.compile(r"[A-Za-z]{2}")


@dataclass(frozen=True)
class PublishOutcome:
    """Result of a publish or revoke call: a new revision, or a pending request."""

    document_id: int
    revision: int | None = None
    uid: str | None = None
    request_id: int | None = None


def owner_government(schema: str, body: dict[str, Any], principal: Principal) -> str | None:
    """Government owning a record; a contact without one belongs to its creator's government.

    A government named otherwise than by its ISO code ("Mexico", "MEX") is a 422 naming the
    field, before any rights are checked: no government could own it.
    """
    term = body.get("government")
    gov = term.get("identifier") if isinstance(term, dict) else None  # any shape may come
    if isinstance(gov, str) and gov and not _ISO2.fullmatch(gov):
        raise InvalidRecord(
            [
                {
                    "field": "government.identifier",
                    "message": f"{gov[:40]!r} is not an ISO 3166 alpha-2 code: name the "
                    "government by its two-letter code (e.g. 'mx'), not by a name or a "
                    "three-letter code",
                }
            ]
        )
    if isinstance(gov, str) and gov:
        return gov.lower()
    return principal.government if schema == "contact" else None


def check_local(row: RecordRow) -> None:
    """A mirrored record is read-only: its source publishes its revisions (409)."""
    if row.mirrored_from is not None:
        raise Conflict(
            f"{row.identifier} is mirrored read-only from {row.mirrored_from}: "
            "edit, amend or revoke it there, and the mirror brings the new revision"
        )


async def find_row(session: AsyncSession, identifier: str) -> RecordRow | None:
    """A record by ``header.identifier``."""
    return await session.scalar(select(RecordRow).where(RecordRow.identifier == identifier))


def checked_draft(
    principal: Principal, schema: str, identifier: str, body: dict[str, Any]
) -> tuple[str | None, dict[str, Any]]:
    """The owner government and the draft as stored, once its shape and the caller's right
    to edit hold; nothing is read or written."""
    if schema not in REGISTRY_SCHEMAS:
        raise NotFound(f"the registry keeps no {schema!r} records")
    raw_header = body.get("header")
    header: dict[str, Any] = raw_header if isinstance(raw_header, dict) else {}
    if header.get("identifier") != identifier or header.get("schema") != schema:
        raise InvalidRecord(
            [
                issue(
                    "header",
                    "header.identifier and header.schema must match the URL",
                    INVALID_VALUE,
                )
            ]
        )
    wrong_government = government_issue(schema, body)
    if wrong_government is not None:
        raise InvalidRecord([wrong_government])
    gov = owner_government(schema, body, principal)
    check_can_edit(principal, schema, gov)
    return gov, validated(body, draft=True)


async def stage_draft(
    ctx: RegistryContext,
    session: AsyncSession,
    principal: Principal,
    schema: str,
    identifier: str,
    gov: str | None,
    stored: dict[str, Any],
) -> RecordRow:
    """Add or update the draft in the caller's transaction; refused before any write."""
    row = await find_row(session, identifier)
    now = ctx.clock()
    if row is None:
        row = RecordRow(
            identifier=identifier,
            schema_name=schema,
            government=gov,
            created_at=now,
            created_by=principal.id,
            latest_revision=0,
            revoked=False,
            search_text="",
        )
        session.add(row)
    elif row.mirrored_from is not None:
        check_local(row)
    elif row.schema_name != schema or row.government != gov:
        raise Conflict("a record keeps its schema and government")
    elif row.revoked:
        raise Conflict("revoked certificates are not editable")
    elif row.pending_request_id is not None:
        raise Conflict("record is locked for workflow")
    row.draft = stored
    row.updated_at, row.updated_by = now, principal.id
    return row


async def save_draft(
    ctx: RegistryContext, principal: Principal, schema: str, identifier: str, body: dict[str, Any]
) -> RecordRow:
    """Store a draft whose shape holds (confidential parts stripped); nothing is half-saved.

    Its publication rules wait for publication, as in the real clearing-house; its
    government is checked first (422 when absent or unknown, 403 when another's).
    """
    gov, stored = checked_draft(principal, schema, identifier, body)
    async with ctx.sessions() as session:
        row = await stage_draft(ctx, session, principal, schema, identifier, gov, stored)
        await session.commit()
    ctx.metrics.drafts_saved.labels(schema).inc()
    return row


async def publish(
    ctx: RegistryContext,
    principal: Principal,
    schema: str,
    identifier: str,
    *,
    message: str | None = None,
    correlation_id: str | None = None,
) -> PublishOutcome:
    """Publish the current draft (PA), or open a publication request (NAU) [W2]."""
    async with ctx.sessions() as session:
        row = await find_row(session, identifier)
        if row is None or row.schema_name != schema:
            raise NotFound(f"no {schema} record {identifier!r}")
        out = await stage_publication(
            ctx, session, principal, row, message=message, correlation_id=correlation_id
        )
        await session.commit()
    if out.revision is not None:
        ctx.relay.wake()
    return out


async def stage_publication(
    ctx: RegistryContext,
    session: AsyncSession,
    principal: Principal,
    row: RecordRow,
    *,
    message: str | None = None,
    correlation_id: str | None = None,
) -> PublishOutcome:
    """Publish ``row``'s draft, or open its request, in the caller's transaction; refused
    before any write."""
    schema = row.schema_name
    mode = publish_mode(principal, schema, row.government)
    check_local(row)
    if row.pending_request_id is not None:
        raise Conflict("record is locked for workflow")
    if row.draft is None:
        raise Conflict("there is no draft to publish")
    if row.revoked:
        raise Conflict("revoked certificates are not editable")
    found = await publication_issues(
        session,
        schema,
        row.draft,
        government=row.government,
        latest_revision=row.latest_revision,
    )
    if found:
        raise InvalidRecord(found)
    body = prepare_publication(
        row.draft, schema=schema, latest_revision=row.latest_revision, revoked=False
    )
    if mode is PublishMode.REQUEST:
        req = await workflow.open_request(
            ctx, session, row, principal, "publish", body, message=message
        )
        return PublishOutcome(row.document_id, request_id=req.id)
    rev = await create_revision(
        ctx, session, row, body, by=principal.id, correlation_id=correlation_id
    )
    return PublishOutcome(row.document_id, rev.revision, rev.uid)


async def revoke(
    ctx: RegistryContext,
    principal: Principal,
    identifier: str,
    reason: dict[str, str],
    *,
    correlation_id: str | None = None,
) -> PublishOutcome:
    """Revoke a published IRCC: a final revision with ``amendmentIntent = 1`` [P7]."""
    async with ctx.sessions() as session:
        row = await find_row(session, identifier)
        if row is None or row.schema_name != IRCC_SCHEMA:
            raise NotFound(f"no absPermit record {identifier!r}")
        mode = publish_mode(principal, IRCC_SCHEMA, row.government)
        check_local(row)
        if row.latest_revision == 0:
            raise Conflict("only a published IRCC can be revoked")
        if row.revoked:
            raise Conflict("the IRCC is already revoked")
        if row.pending_request_id is not None:
            raise Conflict("record is locked for workflow")
        try:
            body = prepare_revocation(await latest_body(session, row), reason)
        except RuleViolation as exc:
            raise InvalidRecord([{"field": exc.field or "reason", "message": str(exc)}]) from None
        if mode is PublishMode.REQUEST:
            req = await workflow.open_request(ctx, session, row, principal, "revoke", body)
            await session.commit()
            return PublishOutcome(row.document_id, request_id=req.id)
        rev = await create_revision(
            ctx, session, row, body, by=principal.id, correlation_id=correlation_id
        )
        await session.commit()
    ctx.relay.wake()
    return PublishOutcome(row.document_id, rev.revision, rev.uid)


@dataclass(frozen=True)
class Lookup:
    """A record and the revision a UID asked for (None = latest)."""

    row: RecordRow
    revision: int | None


async def resolve(session: AsyncSession, ref: str) -> Lookup | None:
    """Find a record by UID (with or without revision), ``identifier[@rev]``, documentID [C7]
    or the real index's Solr ``id`` [C8] (``@rev`` allowed after the last two)."""
    try:
        uid = parse_uid(ref)
    except UidError:
        uid = None
    if uid is not None:
        row = await session.get(RecordRow, uid.document_id)
        if row is None or row.schema_name != uid.schema:
            return None
        if row.government and uid.government != row.government.upper():
            return None
        return Lookup(row, uid.revision)
    try:
        ident, rev = parse_reference(ref)
    except BadReference:
        return None
    # Digits name a documentID [C7], within the range a database integer holds; so does a
    # Solr id [C8]. Either wins over a header.identifier that happens to look the same.
    numeric = ident.isdigit() and int(ident) <= MAX_ID
    document_id = int(ident) if numeric else _solr_document_id(ident)
    row = await session.get(RecordRow, document_id) if document_id is not None else None
    row = row or await find_row(session, ident)
    return Lookup(row, rev) if row else None


def _solr_document_id(text: str) -> int | None:
    try:
        return parse_solr_id(text)
    except UidError:
        return None


@dataclass(frozen=True)
class Reading:
    """What ``GET /v1/records/{uid}`` shows: a record, the revision asked for (None for the
    draft) and, once the IRCC is revoked, the revision that revoked it [P7]."""

    row: RecordRow
    revision: RevisionRow | None
    revocation: RevisionRow | None


async def revocation_of(session: AsyncSession, row: RecordRow) -> RevisionRow | None:
    """The revision that revoked the record: its last, as a revoked record is frozen [P7]."""
    if not row.revoked:
        return None
    return await session.get(RevisionRow, (row.document_id, row.latest_revision))


async def read(
    ctx: RegistryContext, principal: Principal | None, ref: str, *, draft: bool = False
) -> Reading:
    """A revision (or the draft, for its government's editors) of a record. The Secretariat
    reads a government's draft only through the audit endpoint (403 here)."""
    async with ctx.sessions() as session:
        found = await resolve(session, ref)
        if found is None:
            raise NotFound(f"no record {ref!r}")
        row = found.row
        if draft or (row.latest_revision == 0 and found.revision is None):
            if row.draft is None:
                raise NotFound(f"no record {ref!r}")
            if not check_can_read_draft(principal, row.government, row.schema_name):
                raise NotFound(f"no record {ref!r}")
            return Reading(row, None, None)
        number = found.revision or row.latest_revision
        rev = await session.get(RevisionRow, (row.document_id, number))
        if rev is None:
            raise NotFound(f"no revision {number} of {ref!r}")
        return Reading(row, rev, await revocation_of(session, row))


async def revisions(ctx: RegistryContext, ref: str) -> tuple[RecordRow, list[RevisionRow]]:
    """Every published revision of a record, oldest first."""
    async with ctx.sessions() as session:
        found = await resolve(session, ref)
        if found is None or found.row.latest_revision == 0:
            raise NotFound(f"no published record {ref!r}")
        revs = (
            await session.scalars(
                select(RevisionRow)
                .where(RevisionRow.document_id == found.row.document_id)
                .order_by(RevisionRow.revision)
            )
        ).all()
        return found.row, list(revs)
