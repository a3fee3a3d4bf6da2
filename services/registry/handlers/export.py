"""``GET /v1/export``: published records as the real clearing-house's JSON, streamed.

Each record's latest published revision, exactly as stored (confidential groups were
never stored [P1], editors' notes never published), in one JSON array, so the documents
can go back to the real clearing-house or another instance. Read in documentID order,
a batch per transaction, so a large set is never held in memory whole.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import and_, select

from services.registry.adapters.tables import RecordRow, RevisionRow
from services.registry.context import RegistryContext

BATCH = 500


async def published_records(
    ctx: RegistryContext,
    *,
    schema: str | None = None,
    government: str | None = None,
    batch: int = BATCH,
) -> AsyncIterator[dict[str, Any]]:
    """Latest published revisions (drafts never), in documentID order, filtered."""
    after = 0
    while True:
        query = (
            select(RecordRow.document_id, RevisionRow.body)
            .join(
                RevisionRow,
                and_(
                    RevisionRow.document_id == RecordRow.document_id,
                    RevisionRow.revision == RecordRow.latest_revision,
                ),
            )
            .where(RecordRow.latest_revision > 0, RecordRow.document_id > after)
            .order_by(RecordRow.document_id)
            .limit(batch)
        )
        if schema is not None:
            query = query.where(RecordRow.schema_name == schema)
        if government is not None:
            query = query.where(RecordRow.government == government.lower())
        async with ctx.sessions() as session:
            rows = (await session.execute(query)).all()
        for _, body in rows:
            yield body
        if len(rows) < batch:
            return
        after = rows[-1][0]


async def export_json(
    ctx: RegistryContext, *, schema: str | None = None, government: str | None = None
) -> AsyncIterator[bytes]:
    """:func:`published_records` as the bytes of one JSON array."""
    yield b"["
    separator = b""
    async for body in published_records(ctx, schema=schema, government=government):
        yield separator + json.dumps(body, ensure_ascii=False).encode()
        separator = b","
    yield b"]"
