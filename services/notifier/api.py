"""Notifier HTTP API (v1): the delivery log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from sqlalchemy import select

from services.notifier.adapters.tables import DeliveryRow
from services.notifier.context import NotifierContext
from shared.auth import Principal, Role, current_principal
from shared.http import PROBLEM_RESPONSES
from shared.timestamps import UtcDateTime
from shared.uid import UidError, parse_uid


async def get_ctx(request: Request) -> NotifierContext:
    """The notifier context of this app."""
    ctx: NotifierContext = request.app.state.ctx
    return ctx


Ctx = Annotated[NotifierContext, Depends(get_ctx)]
Caller = Annotated[Principal, Depends(current_principal)]
router = APIRouter(prefix="/v1", responses=PROBLEM_RESPONSES)

# Who reads its government's deliveries: its authorities, as for the monitor's cases.
# Checkpoint operators and dashboard operators see none (the Secretariat sees all).
READERS = frozenset({Role.NFP, Role.PA, Role.NAU, Role.CNA})


class DeliveryView(BaseModel):
    """Who was sent what about a record, when, and how it went."""

    event_id: str
    event_type: str
    subject: str
    recipient: str
    role: str
    government: str | None
    template: str
    language: str
    status: str
    attempts: int
    last_error: str | None
    created_at: UtcDateTime
    sent_at: UtcDateTime | None


def _revision_less(uid: str) -> bool:
    """True for a whole UID without its revision (a permanent link)."""
    try:
        return parse_uid(uid).revision is None
    except UidError:
        return False


@router.get("/deliveries", response_model=list[DeliveryView], tags=["deliveries"])
async def deliveries(
    ctx: Ctx,
    caller: Caller,
    subject: str = Query(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:@\-]+$",
        description="record UID (with or without revision)",
    ),
    status: str | None = Query(default=None, pattern="^(pending|sent|failed)$"),
    limit: int = Query(default=500, ge=1, le=5000),
) -> list[DeliveryView]:
    """Deliveries for a record UID; a revision-less UID matches every revision.

    Only those to the caller's government's side (all for the Secretariat): a CPC's log
    shows the user country its own recipients and each provider country its own, never the
    other's; a government the record doesn't concern gets an empty list, as the monitor
    omits cases."""
    if not caller.is_admin and (caller.role not in READERS or caller.government is None):
        return []
    query = select(DeliveryRow).order_by(DeliveryRow.id).limit(limit)
    if not caller.is_admin:
        query = query.where(DeliveryRow.government == caller.government)
    uid = subject.upper()
    if _revision_less(uid):
        # Every revision: "<uid>-<n>" exactly (LIKE wildcards escaped, the rest a number).
        pattern = uid.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(
            (DeliveryRow.subject == uid)
            | (
                DeliveryRow.subject.like(pattern + "-%", escape="\\")
                & ~DeliveryRow.subject.like(pattern + "-%-%", escape="\\")
            )
        )
    else:  # anything else names one subject, never a prefix of others
        query = query.where(DeliveryRow.subject == uid)
    if status:
        query = query.where(DeliveryRow.status == status)
    async with ctx.sessions() as session:
        rows = (await session.scalars(query)).all()
    return [
        DeliveryView(
            event_id=r.event_id,
            event_type=r.event_type,
            subject=r.subject,
            recipient=r.recipient,
            role=r.role,
            government=r.government,
            template=r.template,
            language=r.language,
            status=r.status,
            attempts=r.attempts,
            last_error=r.last_error,
            created_at=r.created_at,
            sent_at=r.sent_at,
        )
        for r in rows
    ]
