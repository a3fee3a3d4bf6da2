"""The Secretariat's reading of a government's drafts [W1]: explicit and logged.

A draft belongs to its government's editors. The Secretariat (admin) may read one only
here, ``GET /v1/audit/drafts/{schema}/{identifier}``; every reading, and every attempt at
a draft that is not there, leaves a log line naming who read what (``audit``:
``draft_read``). Other draft reads refuse the admin (``domain.AUDIT_ONLY``).
"""

from __future__ import annotations

import logging

from services.registry.adapters.tables import RecordRow
from services.registry.context import RegistryContext
from services.registry.domain import check_can_audit
from services.registry.handlers.errors import NotFound
from services.registry.handlers.records import find_row
from shared.auth import Principal

log = logging.getLogger(__name__)
AUDIT_EVENT = "draft_read"


async def read_draft(
    ctx: RegistryContext, principal: Principal, schema: str, identifier: str
) -> RecordRow:
    """The draft of record ``identifier`` of ``schema``, for the Secretariat (403 otherwise;
    404 when there is no such draft). Logged, found or not."""
    check_can_audit(principal)
    async with ctx.sessions() as session:
        row = await find_row(session, identifier)
    found = row is not None and row.schema_name == schema and row.draft is not None
    log.info(
        "draft audit: %s read the %s draft %s of %s%s",
        principal.id,
        schema,
        identifier,
        row.government if row is not None else "-",
        "" if found else " (no such draft)",
        extra={
            "audit": AUDIT_EVENT,
            "user_id": principal.id,
            "schema": schema,
            "identifier": identifier,
            "government": row.government if row is not None else None,
            "found": found,
        },
    )
    if row is None or not found:
        raise NotFound(f"no {schema} draft {identifier!r}")
    return row
