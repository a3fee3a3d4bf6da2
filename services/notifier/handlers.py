"""Turning events into deliveries: resolve recipients, render, record (idempotently).

Sending is the delivery worker's job (``delivery.py``), so an SMTP outage never blocks
consumption: a delivery row is committed before the offset, and the unique
(event id, address) pair means a redelivered event never creates a second mail.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.notifier import domain
from services.notifier.adapters.tables import DeliveryRow
from services.notifier.context import NotifierContext
from services.notifier.rendering import DiscrepancyFacts, MailContext, render
from shared.events import CloudEvent
from shared.events.models import CpcPublished, DiscrepancyEvent, IrccEvent
from shared.kafka.consumer import Delivery

log = logging.getLogger(__name__)
Handler = Callable[[NotifierContext, CloudEvent[Any]], Awaitable[None]]


async def wait_for(ctx: NotifierContext, kind: str, missing: Callable[[], list[str]]) -> None:
    """Give referenced records a moment to arrive on their own topics (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.settings.reference_wait_seconds
    # Another consumer fills the view; polling keeps the two loosely coupled.
    while (left := missing()) and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    if left:
        ctx.metrics.unresolved.labels(kind).inc(len(left))
        log.warning("references still unknown after waiting: %s", left)


async def enqueue(
    ctx: NotifierContext,
    event: CloudEvent[Any],
    template: str,
    recipients: Iterable[domain.Recipient],
    context: MailContext,
) -> int:
    """Create one pending delivery per new (event, address); returns how many were new."""
    created = 0
    async with ctx.sessions() as session:
        known = set(
            await session.scalars(
                select(DeliveryRow.recipient).where(DeliveryRow.event_id == event.id)
            )
        )
        now = ctx.clock()
        for r in recipients:
            if r.address in known:
                continue
            mail = render(template, r.language, context)
            session.add(
                DeliveryRow(
                    event_id=event.id,
                    event_type=event.type,
                    subject=event.subject,
                    recipient=r.address,
                    role=r.role,
                    template=template,
                    language=r.language,
                    mail_subject=mail.subject,
                    text_body=mail.text,
                    html_body=mail.html,
                    status="pending",
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
            known.add(r.address)
            created += 1
        try:
            await session.commit()
        except IntegrityError:  # a concurrent redelivery won the race: nothing to add
            await session.rollback()
            return 0
    for _ in range(created):
        ctx.metrics.queued.labels(template).inc()
    return created


async def on_ircc(ctx: NotifierContext, event: CloudEvent[Any]) -> None:
    """IRCC published, amended or revoked: CNA, provider NFP, providers, PIC holders."""
    data: IrccEvent = event.data
    await ctx.projection.apply(event)
    record = data.record
    cna = domain.reference_id(record.get("absCNA"))
    await wait_for(ctx, "absCNA", lambda: [cna] if cna and not ctx.projection.knows(cna) else [])
    recipients = domain.recipients_for_ircc(record, ctx.projection.directory)
    template = event.type.replace(".", "_")
    await enqueue(
        ctx,
        event,
        template,
        recipients,
        MailContext(
            uid=data.uid,
            public_base_url=ctx.settings.public_base_url,
            event_type=event.type,
            record=record,
            reason=data.reason,
            labels=labels(ctx, [cna] if cna else []),
        ),
    )


async def on_cpc(ctx: NotifierContext, event: CloudEvent[Any]) -> None:
    """CPC published: user-country side and provider side (DESIGN.md §5)."""
    data: CpcPublished = event.data
    record = data.record
    cited = domain.reference_ids(record.get("absIRCCs"))
    checkpoints = domain.reference_ids(record.get("absCheckpoints"))
    await wait_for(ctx, "absIRCCs", lambda: [i for i in cited if ctx.projection.ircc(i) is None])
    await wait_for(
        ctx, "absCheckpoints", lambda: [c for c in checkpoints if not ctx.projection.knows(c)]
    )
    recipients = domain.recipients_for_cpc(record, ctx.projection.ircc, ctx.projection.directory)
    await enqueue(
        ctx,
        event,
        "cpc_published",
        recipients,
        MailContext(
            uid=data.uid,
            public_base_url=ctx.settings.public_base_url,
            event_type=event.type,
            record=record,
            labels=labels(ctx, cited + checkpoints),
        ),
    )


async def on_discrepancy(ctx: NotifierContext, event: CloudEvent[Any]) -> None:
    """Discrepancy flagged: the provider country's NFP and the cited IRCC's CNA."""
    data: DiscrepancyEvent = event.data
    if not data.provider_country:
        return
    ircc = _ircc_for_uid(ctx, data.ircc_uid)
    recipients = domain.recipients_for_discrepancy(
        data.provider_country, ircc, ctx.projection.directory
    )
    facts = DiscrepancyFacts(
        rule=data.rule, cpc_uid=data.cpc_uid, ircc_uid=data.ircc_uid, evidence=data.evidence
    )
    await enqueue(
        ctx,
        event,
        "discrepancy_flagged",
        recipients,
        MailContext(
            uid=data.cpc_uid,
            public_base_url=ctx.settings.public_base_url,
            event_type=event.type,
            record={},
            discrepancy=facts,
        ),
    )


def labels(ctx: NotifierContext, identifiers: Iterable[str]) -> dict[str, Any]:
    """Display names of referenced records: directory names and IRCC UIDs."""
    out: dict[str, Any] = {}
    for ident in identifiers:
        record = ctx.projection.directory.record(ident)
        if record is not None and isinstance(record.get("name"), dict):
            out[ident] = record["name"]
        elif (uid := ctx.projection.ircc_uid(ident)) is not None:
            out[ident] = uid
    return out


def _ircc_for_uid(ctx: NotifierContext, uid: str | None) -> dict[str, Any] | None:
    return ctx.projection.ircc_by_uid(uid) if uid else None


HANDLERS: dict[str, Handler] = {
    "ircc.published": on_ircc,
    "ircc.amended": on_ircc,
    "ircc.revoked": on_ircc,
    "cpc.published": on_cpc,
    "discrepancy.flagged": on_discrepancy,
}


def mail_handler(ctx: NotifierContext) -> Callable[[CloudEvent[Any], Delivery], Awaitable[None]]:
    """Dispatch consumed events through :data:`HANDLERS` (others are ignored)."""

    async def handle(event: CloudEvent[Any], _delivery: Delivery) -> None:
        handler = HANDLERS.get(event.type)
        if handler is not None:
            await handler(ctx, event)

    return handle
