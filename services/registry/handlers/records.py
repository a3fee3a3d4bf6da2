"""Drafts, direct publication, revocation and reads of national records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry.adapters.tables import RecordRow, RevisionRow
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
from shared.auth import Principal
from shared.uid import MAX_ID, BadReference, UidError, parse_reference, parse_uid


@dataclass(frozen=True)
class PublishOutcome:
    """Result of a publish or revoke call: a new revision, or a pending request."""

    document_id: int
    revision: int | None = None
    uid: str | None = None
    request_id: int | None = None


def owner_government(schema: str, body: dict[str, Any], principal: Principal) -> str | None:
    """Government owning a record; a contact without one belongs to its creator's government."""
    term = body.get("government")
    gov = term.get("identifier") if isinstance(term, dict) else None  # any shape may come
    if isinstance(gov, str) and gov:
        return gov.lower()
    return principal.government if schema == "contact" else None


async def find_row(session: AsyncSession, identifier: str) -> RecordRow | None:
    """A record by ``header.identifier``."""
    return await session.scalar(select(RecordRow).where(RecordRow.identifier == identifier))


async def _check_references(
    session: AsyncSession, body: dict[str, Any], gov: str | None, *, published: bool = False
) -> None:
    """absCNA and relatedIRCCs must point at records of the same government [P11, DOMAIN §2];
    at publication they must be published themselves."""
    errors: list[dict[str, str]] = []
    own = body.get("header", {}).get("identifier")
    refs: list[tuple[str, str, str]] = []
    if isinstance(body.get("absCNA"), dict):
        refs.append(("absCNA", body["absCNA"].get("identifier", ""), "authority"))
    for i, ref in enumerate(body.get("relatedIRCCs") or []):
        refs.append((f"relatedIRCCs.{i}", ref.get("identifier", ""), IRCC_SCHEMA))
    for field, ref_id, schema in refs:
        try:
            ident, _rev = parse_reference(ref_id)
        except BadReference as exc:
            errors.append({"field": field, "message": str(exc)})
            continue
        if ident == own:
            errors.append({"field": field, "message": "a record cannot reference itself"})
            continue
        target = await find_row(session, ident)
        if target is None or target.schema_name != schema:
            errors.append({"field": field, "message": f"no {schema} record {ident!r}"})
        elif target.government != gov:
            errors.append({"field": field, "message": "must be a record of the same government"})
        elif published and target.latest_revision == 0:
            errors.append({"field": field, "message": f"{schema} {ident!r} is not published"})
    if errors:
        raise InvalidRecord(errors)


async def save_draft(
    ctx: RegistryContext, principal: Principal, schema: str, identifier: str, body: dict[str, Any]
) -> RecordRow:
    """Validate and store a draft (confidential parts stripped); nothing is half-saved."""
    if schema not in REGISTRY_SCHEMAS:
        raise NotFound(f"the registry keeps no {schema!r} records")
    raw_header = body.get("header")
    header: dict[str, Any] = raw_header if isinstance(raw_header, dict) else {}
    if header.get("identifier") != identifier or header.get("schema") != schema:
        raise InvalidRecord(
            [
                {
                    "field": "header",
                    "message": "header.identifier and header.schema must match the URL",
                }
            ]
        )
    gov = owner_government(schema, body, principal)
    check_can_edit(principal, schema, gov)
    stored = validated(body)
    async with ctx.sessions() as session:
        await _check_references(session, stored, gov)
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
        elif row.schema_name != schema or row.government != gov:
            raise Conflict("a record keeps its schema and government")
        elif row.revoked:
            raise Conflict("revoked certificates are not editable")
        elif row.pending_request_id is not None:
            raise Conflict("record is locked for workflow")
        row.draft = stored
        row.updated_at, row.updated_by = now, principal.id
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
        mode = publish_mode(principal, schema, row.government)
        if row.pending_request_id is not None:
            raise Conflict("record is locked for workflow")
        if row.draft is None:
            raise Conflict("there is no draft to publish")
        try:
            body = prepare_publication(
                row.draft, schema=schema, latest_revision=row.latest_revision, revoked=row.revoked
            )
        except RuleViolation as exc:
            if exc.status == 409:
                raise Conflict(str(exc)) from None
            raise InvalidRecord([{"field": exc.field or "<body>", "message": str(exc)}]) from None
        validated(body)
        await _check_references(session, body, row.government, published=True)
        if mode is PublishMode.REQUEST:
            req = await workflow.open_request(
                ctx, session, row, principal, "publish", body, message=message
            )
            await session.commit()
            return PublishOutcome(row.document_id, request_id=req.id)
        rev = await create_revision(
            ctx, session, row, body, by=principal.id, correlation_id=correlation_id
        )
        await session.commit()
    ctx.relay.wake()
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
    """Find a record by UID (with or without revision), ``identifier[@rev]`` or documentID [C7]."""
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
    # Digits name a documentID [C7], within the range a database integer holds.
    numeric = ident.isdigit() and int(ident) <= MAX_ID
    row = await session.get(RecordRow, int(ident)) if numeric else None
    row = row or await find_row(session, ident)
    return Lookup(row, rev) if row else None


async def read(
    ctx: RegistryContext, principal: Principal | None, ref: str, *, draft: bool = False
) -> tuple[RecordRow, RevisionRow | None]:
    """A revision (or the draft, for its government's editors) of a record."""
    async with ctx.sessions() as session:
        found = await resolve(session, ref)
        if found is None:
            raise NotFound(f"no record {ref!r}")
        row = found.row
        may_see_draft = check_can_read_draft(principal, row.government)
        if draft or (row.latest_revision == 0 and found.revision is None):
            if row.draft is None or not may_see_draft:
                raise NotFound(f"no record {ref!r}")
            return row, None
        number = found.revision or row.latest_revision
        rev = await session.get(RevisionRow, (row.document_id, number))
        if rev is None:
            raise NotFound(f"no revision {number} of {ref!r}")
        return row, rev


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
