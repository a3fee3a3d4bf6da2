"""Publication requests [W2-W4]: NAU requests, PA approves or rejects, requester recalls.

Requests time out after ``request_timeout_days`` (90) and the PA gets a reminder every
``reminder_interval_days``; :func:`sweep` applies both and takes its clock from the context.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry.adapters.tables import (
    NotificationRow,
    RecordRow,
    RequestRow,
    UserRow,
)
from services.registry.context import RegistryContext
from services.registry.domain import check_can_decide, title_of
from services.registry.handlers.errors import Conflict, NotFound
from services.registry.handlers.publishing import create_revision
from shared.auth import Principal, Role, forbidden
from shared.kit.failures import is_transient

log = logging.getLogger(__name__)


async def _publishing_authorities(session: AsyncSession, government: str | None) -> list[str]:
    rows = await session.scalars(
        select(UserRow.id).where(
            UserRow.role == Role.PA.value,
            UserRow.government == government,
            UserRow.active.is_(True),
        )
    )
    return list(rows)


def _notify(
    ctx: RegistryContext,
    session: AsyncSession,
    users: list[str],
    req: RequestRow,
    row: RecordRow,
    action: str,
    *,
    iteration: int = 1,
    info: str | None = None,
) -> None:
    body = req.body or row.draft or {}
    for user in users:
        session.add(
            NotificationRow(
                user_id=user,
                request_id=req.id,
                action=action,
                iteration=iteration,
                info=info,
                identifier=row.identifier,
                schema_name=row.schema_name,
                title=title_of(body),
                state="unread",
                created_at=ctx.clock(),
            )
        )


async def _ask_publishing_authorities(
    ctx: RegistryContext,
    session: AsyncSession,
    req: RequestRow,
    row: RecordRow,
    *,
    iteration: int = 1,
    info: str | None = None,
) -> None:
    """Notify the government's PAs of a request (its opening or a reminder)."""
    users = await _publishing_authorities(session, row.government)
    _notify(ctx, session, users, req, row, "request", iteration=iteration, info=info)


async def open_request(
    ctx: RegistryContext,
    session: AsyncSession,
    row: RecordRow,
    principal: Principal,
    action: str,
    body: dict[str, Any],
    *,
    message: str | None = None,
) -> RequestRow:
    """Lock the record and ask its government's PA to decide."""
    req = RequestRow(
        document_id=row.document_id,
        government=row.government,
        action=action,
        state="running",
        body=body,
        message=message,
        requested_by=principal.id,
        created_at=ctx.clock(),
        reminders_sent=0,
    )
    session.add(req)
    await session.flush()
    row.pending_request_id = req.id
    await _ask_publishing_authorities(ctx, session, req, row, info=message)
    ctx.metrics.pending_requests.inc()
    return req


async def _load(session: AsyncSession, request_id: int) -> tuple[RequestRow, RecordRow]:
    req = await session.get(RequestRow, request_id)
    if req is None:
        raise NotFound(f"no request {request_id}")
    row = await session.get(RecordRow, req.document_id)
    assert row is not None
    return req, row


def _close(
    ctx: RegistryContext,
    req: RequestRow,
    row: RecordRow,
    state: str,
    result: str | None,
    by: str | None,
) -> None:
    if req.state != "running":
        raise Conflict(f"request {req.id} is {req.state}")
    req.state, req.result, req.decided_by, req.closed_at = state, result, by, ctx.clock()
    row.pending_request_id = None
    ctx.metrics.pending_requests.dec()


async def approve(
    ctx: RegistryContext,
    principal: Principal,
    request_id: int,
    *,
    correlation_id: str | None = None,
) -> tuple[RequestRow, str]:
    """Publish the requested revision; returns the request and the new UID."""
    async with ctx.sessions() as session:
        req, row = await _load(session, request_id)
        check_can_decide(principal, row.government)
        _close(ctx, req, row, "completed", "approved", principal.id)
        rev = await create_revision(
            ctx, session, row, req.body or {}, by=principal.id, correlation_id=correlation_id
        )
        _notify(ctx, session, [req.requested_by], req, row, "approved")
        await session.commit()
    ctx.relay.wake()
    return req, rev.uid


async def reject(
    ctx: RegistryContext, principal: Principal, request_id: int, reason: str
) -> RequestRow:
    """Refuse with a reason; the draft returns to its owners, unlocked."""
    async with ctx.sessions() as session:
        req, row = await _load(session, request_id)
        check_can_decide(principal, row.government)
        _close(ctx, req, row, "completed", "rejected", principal.id)
        req.reason = reason
        _notify(ctx, session, [req.requested_by], req, row, "rejected", info=reason)
        await session.commit()
        return req


async def recall(ctx: RegistryContext, principal: Principal, request_id: int) -> RequestRow:
    """The requester withdraws its request."""
    async with ctx.sessions() as session:
        req, row = await _load(session, request_id)
        if req.requested_by != principal.id:
            raise forbidden("only the requester can recall a request")
        _close(ctx, req, row, "canceled", "recalled", principal.id)
        _notify(
            ctx,
            session,
            await _publishing_authorities(session, row.government),
            req,
            row,
            "recalled",
        )
        await session.commit()
        return req


async def sweep(ctx: RegistryContext) -> dict[str, int]:
    """Send due reminders and time out requests older than the limit.

    Each request is handled in its own transaction: one that fails is logged, counted
    (``absch_periodic_records_skipped_total{task="workflow"}``) and skipped, and the rest go on.
    A transient failure (the database away) ends the round; the next one tries again.
    """
    counts = {"reminded": 0, "timedout": 0}
    async with ctx.sessions() as session:
        running = list(
            await session.scalars(select(RequestRow.id).where(RequestRow.state == "running"))
        )
    for request_id in running:
        try:
            outcome = await _sweep_one(ctx, request_id)
        except Exception as exc:
            if is_transient(exc):
                raise
            ctx.metrics.plumbing.skipped("workflow")
            log.exception("workflow sweep of request %s failed; the sweep goes on", request_id)
            continue
        if outcome:
            counts[outcome] += 1
    return counts


async def _sweep_one(ctx: RegistryContext, request_id: int) -> str | None:
    """Remind about or time out one running request; which one it did, if any."""
    now = ctx.clock()
    timeout = timedelta(days=ctx.settings.request_timeout_days)
    interval = timedelta(days=ctx.settings.reminder_interval_days)
    async with ctx.sessions() as session:
        req = await session.get(RequestRow, request_id)
        if req is None or req.state != "running":
            return None  # decided since the list was read
        row = await session.get(RecordRow, req.document_id)
        if row is None:
            raise LookupError(f"request {request_id} names no record {req.document_id}")
        age = now - _aware(req.created_at)
        outcome: str | None = None
        if age >= timeout:
            _close(ctx, req, row, "canceled", "timedout", None)
            _notify(ctx, session, [req.requested_by], req, row, "timedout")
            outcome = "timedout"
        elif age >= interval * (req.reminders_sent + 1):
            req.reminders_sent += 1
            await _ask_publishing_authorities(
                ctx, session, req, row, iteration=req.reminders_sent + 1
            )
            outcome = "reminded"
        await session.commit()
        return outcome


def _aware(value: datetime) -> datetime:
    # SQLite returns naive datetimes even for timezone-aware columns.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def notifications_for(ctx: RegistryContext, principal: Principal) -> list[NotificationRow]:
    """The caller's notifications, newest first."""
    async with ctx.sessions() as session:
        rows = await session.scalars(
            select(NotificationRow)
            .where(NotificationRow.user_id == principal.id)
            .order_by(NotificationRow.id.desc())
        )
        return list(rows)


async def requests_for(ctx: RegistryContext, principal: Principal) -> list[RequestRow]:
    """Requests of the caller's government, for its editors (all for the admin)."""
    if not principal.is_admin and principal.role not in {Role.NFP, Role.PA, Role.NAU}:
        raise forbidden("only the government's editors see its requests")
    async with ctx.sessions() as session:
        query = select(RequestRow).order_by(RequestRow.id.desc())
        if not principal.is_admin:
            query = query.where(RequestRow.government == principal.government)
        return list(await session.scalars(query))
