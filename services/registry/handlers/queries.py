"""Public reads: certificate verification and search."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, or_, select

from services.registry.adapters.tables import RecordRow, RevisionRow
from services.registry.context import RegistryContext
from services.registry.domain import (
    IRCC_SCHEMA,
    VerifyFacts,
    VerifyStatus,
    title_of,
    verify_status,
)
from services.registry.handlers.records import resolve
from shared.uid import format_uid, solr_id_of


@dataclass(frozen=True)
class Verification:
    """Answer of ``/v1/verify``."""

    status: VerifyStatus
    latest_uid: str | None


async def verify(ctx: RegistryContext, ref: str) -> Verification:
    """Is this certificate (revision) valid today?"""
    async with ctx.sessions() as session:
        found = await resolve(session, ref)
        if found is None or found.row.schema_name != IRCC_SCHEMA or found.row.latest_revision == 0:
            return Verification(VerifyStatus.UNKNOWN, None)
        row = found.row
        latest = await session.get(RevisionRow, (row.document_id, row.latest_revision))
        assert latest is not None
        expiry = latest.body.get("dateOfExpiry")
        facts = VerifyFacts(
            row.latest_revision, row.revoked, date.fromisoformat(expiry) if expiry else None
        )
        status = verify_status(facts, found.revision, ctx.clock().date())
        return Verification(status, latest.uid)


@dataclass(frozen=True)
class SearchHit:
    """One published record in search results."""

    uid: str
    schema: str
    government: str | None
    identifier: str
    title: str
    revoked: bool
    document_id: int
    solr_id: str | None  # the real index's ``id`` [C8]; None past its 9 hex digits


async def search(
    ctx: RegistryContext,
    *,
    q: str | None,
    schema: str | None,
    government: str | None,
    page: int,
    page_size: int,
) -> tuple[int, list[SearchHit]]:
    """Published records matching every word of ``q`` and the filters, newest first."""
    query = select(RecordRow).where(RecordRow.latest_revision > 0)
    if schema:
        query = query.where(RecordRow.schema_name == schema)
    if government:
        query = query.where(RecordRow.government == government.lower())
    for word in (q or "").lower().split():
        escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(
            or_(
                RecordRow.search_text.like(f"%{escaped}%", escape="\\"),
                RecordRow.identifier == word,
            )
        )
    async with ctx.sessions() as session:
        total = await session.scalar(select(func.count()).select_from(query.subquery()))
        rows = (
            await session.scalars(
                query.order_by(RecordRow.updated_at.desc(), RecordRow.document_id.desc())
                .offset((page - 1) * page_size)
                .limit(page_size)
            )
        ).all()
        hits = []
        for row in rows:
            rev = await session.get(RevisionRow, (row.document_id, row.latest_revision))
            title = title_of(rev.body if rev else {})
            hits.append(
                SearchHit(
                    format_uid(
                        row.schema_name, row.government, row.document_id, row.latest_revision
                    ),
                    row.schema_name,
                    row.government,
                    row.identifier,
                    title,
                    row.revoked,
                    row.document_id,
                    solr_id_of(row.document_id),
                )
            )
        return int(total or 0), hits
