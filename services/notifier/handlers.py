"""Turning events into deliveries: resolve recipients, render, record (idempotently).

Sending is the delivery worker's job (``delivery.py``), so an SMTP outage never blocks
consumption: a delivery row is committed before the offset, and the unique
(event id, address) pair means a redelivered event never creates a second mail. The
event is marked processed in the same transaction, so a re-read of the topic (new consumer
group, reset offsets) skips it without waiting for references or resolving recipients
against today's directory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifier import domain, references
from services.notifier.adapters.tables import DeliveryRow, ProcessedEvent
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


@dataclass(frozen=True)
class MailJob:
    """What causes mails: an event (or a scheduled notice), its subject UID and template."""

    event_id: str
    event_type: str
    subject: str
    template: str

    @classmethod
    def of(cls, event: CloudEvent[Any], template: str) -> MailJob:
        """The job of a consumed event."""
        return cls(event.id, event.type, event.subject, template)


def add_deliveries(
    session: AsyncSession,
    job: MailJob,
    recipients: Iterable[domain.Recipient],
    context: MailContext,
    *,
    known: set[str],
    now: datetime,
) -> int:
    """Add one rendered, pending delivery per address not in ``known``; caller commits."""
    created = 0
    for r in recipients:
        if r.address in known:
            continue
        mail = render(job.template, r.language, context)
        session.add(
            DeliveryRow(
                event_id=job.event_id,
                event_type=job.event_type,
                subject=job.subject,
                recipient=r.address,
                role=r.role,
                template=job.template,
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
    return created


async def already_processed(ctx: NotifierContext, event_id: str) -> bool:
    """True when the deliveries of this event were created before (e.g. a topic re-read)."""
    async with ctx.sessions() as session:
        return await session.get(ProcessedEvent, event_id) is not None


async def enqueue(
    ctx: NotifierContext,
    job: MailJob,
    recipients: Iterable[domain.Recipient],
    context: MailContext,
) -> int:
    """Create one pending delivery per new (event, address) and mark the event processed,
    in one transaction; returns how many deliveries were new."""
    async with ctx.sessions() as session:
        if await session.get(ProcessedEvent, job.event_id) is not None:
            return 0
        # Rows from before processed_events existed still count: one mail per pair, ever.
        known = set(
            await session.scalars(
                select(DeliveryRow.recipient).where(DeliveryRow.event_id == job.event_id)
            )
        )
        now = ctx.clock()
        created = add_deliveries(session, job, recipients, context, known=known, now=now)
        session.add(
            ProcessedEvent(
                event_id=job.event_id,
                event_type=job.event_type,
                deliveries=created,
                processed_at=now,
            )
        )
        try:
            await session.commit()
        except IntegrityError:  # a concurrent redelivery won the race: nothing to add
            await session.rollback()
            return 0
    ctx.metrics.queued.labels(job.template).inc(created)
    return created


async def on_ircc(ctx: NotifierContext, event: CloudEvent[Any]) -> None:
    """IRCC published, amended or revoked: CNA, provider NFP, providers, PIC holders."""
    data: IrccEvent = event.data
    await ctx.projection.apply(event)
    record = data.record
    directory = ctx.projection.directory
    await wait_for(ctx, "ircc", lambda: references.missing_for_ircc(record, directory))
    recipients = domain.recipients_for_ircc(record, directory)
    cna = domain.reference_ids(record.get("absCNA"))
    await enqueue(
        ctx,
        MailJob.of(event, event.type.replace(".", "_")),
        recipients,
        MailContext(
            uid=data.uid,
            public_base_url=ctx.settings.public_base_url,
            event_type=event.type,
            record=record,
            reason=data.reason,
            labels=labels(ctx, cna),
        ),
    )


async def on_cpc(ctx: NotifierContext, event: CloudEvent[Any]) -> None:
    """CPC published: user-country side and provider side (DESIGN.md §5)."""
    data: CpcPublished = event.data
    record = data.record
    projection = ctx.projection
    await wait_for(
        ctx,
        "cpc",
        lambda: references.missing_for_cpc(record, projection.ircc, projection.directory),
    )
    recipients = domain.recipients_for_cpc(record, projection.ircc, projection.directory)
    cited = domain.reference_ids(record.get("absIRCCs"))
    checkpoints = domain.reference_ids(record.get("absCheckpoints"))
    await enqueue(
        ctx,
        MailJob.of(event, "cpc_published"),
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
    directory = ctx.projection.directory
    await wait_for(
        ctx,
        "discrepancy",
        lambda: references.missing_for_discrepancy(
            data.ircc_uid, _ircc_for_uid(ctx, data.ircc_uid), directory
        ),
    )
    recipients = domain.recipients_for_discrepancy(
        data.provider_country, _ircc_for_uid(ctx, data.ircc_uid), directory
    )
    facts = DiscrepancyFacts(
        rule=data.rule, cpc_uid=data.cpc_uid, ircc_uid=data.ircc_uid, evidence=data.evidence
    )
    await enqueue(
        ctx,
        MailJob.of(event, "discrepancy_flagged"),
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


VIEW_MARGIN_SECONDS = 1.0


def mail_handler(ctx: NotifierContext) -> Callable[[CloudEvent[Any], Delivery], Awaitable[None]]:
    """Dispatch consumed events through :data:`HANDLERS` (others are ignored)."""

    async def handle(event: CloudEvent[Any], _delivery: Delivery) -> None:
        handler = HANDLERS.get(event.type)
        # A processed event is skipped before any waiting, so re-reading a topic is cheap.
        if handler is None or await already_processed(ctx, event.id):
            return
        if ctx.view_caught_up is not None:
            # Country-wide recipients (a government's NFPs and CNAs) cannot be waited for one
            # by one: wait until the view has read everything published before this event.
            # The margin covers fetch responses that were already in flight.
            since = event.time.timestamp() + VIEW_MARGIN_SECONDS
            if not await ctx.view_caught_up(since, ctx.settings.reference_wait_seconds):
                ctx.metrics.unresolved.labels("view").inc()
        await handler(ctx, event)

    return handle
