"""Turning events into deliveries: resolve recipients, render, record (idempotently).

Sending is the delivery worker's job (``delivery.py``), so an SMTP outage never blocks
consumption: a delivery row is committed before the offset, and the unique
(event id, address) pair means a redelivered event never creates a second mail. The
event is marked processed in the same transaction, so a re-read of the topic (new consumer
group, reset offsets) skips it without resolving recipients against today's directory.

The mail consumer runs these in its transaction (effects and offset commit together). An
event naming records the view doesn't know yet is parked (``parking.py``) instead of
holding its partition.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CompoundSelect, Table, bindparam, insert, null, select, union_all
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifier import domain, parking, references, utilization
from services.notifier.adapters.tables import DeliveryRow, ProcessedEvent
from services.notifier.context import NotifierContext
from services.notifier.rendering import DiscrepancyFacts, MailContext, RenderedMail, render
from shared.events import CloudEvent
from shared.events.models import (
    CpcAmended,
    CpcPublished,
    DiscrepancyEvent,
    IrccEvent,
    UtilizationFirstUse,
    UtilizationReport,
)
from shared.kit.consumer import Delivery, Tx, TxHandler

log = logging.getLogger(__name__)


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


async def add_deliveries(
    session: AsyncSession,
    job: MailJob,
    recipients: Iterable[domain.Recipient],
    context: MailContext,
    *,
    known: set[str],
    now: datetime,
) -> int:
    """Insert one rendered, pending delivery per address not in ``known``, in one statement
    of the caller's transaction (a concurrent duplicate raises ``IntegrityError`` here)."""
    rows: list[dict[str, Any]] = []
    rendered: dict[str, RenderedMail] = {}  # the mail depends on the language, not the address
    for r in recipients:
        if r.address in known:
            continue
        mail = rendered.get(r.language)
        if mail is None:
            mail = rendered[r.language] = render(job.template, r.language, context)
        rows.append(
            {
                "event_id": job.event_id,
                "event_type": job.event_type,
                "subject": job.subject,
                "recipient": r.address,
                "role": r.role,
                "government": r.government,
                "template": job.template,
                "language": r.language,
                "mail_subject": mail.subject,
                "text_body": mail.text,
                "html_body": mail.html,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
        )
        known.add(r.address)
    if rows:
        await session.execute(_INSERT_DELIVERIES, rows)
    return len(rows)


async def enqueue_in(
    ctx: NotifierContext,
    session: AsyncSession,
    job: MailJob,
    recipients: Iterable[domain.Recipient],
    context: MailContext,
    *,
    known: set[str],
) -> int:
    """Add one pending delivery per new address and mark the event processed, in the
    caller's transaction; returns how many deliveries were new."""
    now = ctx.clock()
    created = await add_deliveries(session, job, recipients, context, known=known, now=now)
    await mark_processed(session, job.event_id, job.event_type, created, now)
    ctx.metrics.queued.labels(job.template).inc(created)
    return created


# Statements run per event, built once: building one costs more than running it.
_INSERT_DELIVERIES = insert(cast(Table, DeliveryRow.__table__))
_MARK_PROCESSED = insert(cast(Table, ProcessedEvent.__table__))
# The processed mark (recipient NULL) and any queued addresses, in one query. Rows from
# before processed_events existed still count: one mail per pair, ever.
_KNOWN: CompoundSelect[Any] = union_all(
    select(null().label("recipient")).where(ProcessedEvent.event_id == bindparam("event_id")),
    select(DeliveryRow.recipient).where(DeliveryRow.event_id == bindparam("event_id")),
)


async def mark_processed(
    session: AsyncSession, event_id: str, event_type: str, deliveries: int, now: datetime
) -> None:
    """Record in the caller's transaction that the event's deliveries exist."""
    await session.execute(
        _MARK_PROCESSED,
        {
            "event_id": event_id,
            "event_type": event_type,
            "deliveries": deliveries,
            "processed_at": now,
        },
    )


async def known_recipients(session: AsyncSession, event_id: str) -> set[str] | None:
    """Addresses already queued for an event; None when the event was processed whole."""
    recipients = list(await session.scalars(_KNOWN, {"event_id": event_id}))
    if None in recipients:
        return None
    return set(recipients)


async def enqueue(
    ctx: NotifierContext,
    job: MailJob,
    recipients: Iterable[domain.Recipient],
    context: MailContext,
) -> int:
    """:func:`enqueue_in` in a transaction of its own (scheduled notices)."""
    async with ctx.sessions() as session:
        known = await known_recipients(session, job.event_id)
        if known is None:
            return 0
        try:
            created = await enqueue_in(ctx, session, job, recipients, context, known=known)
            await session.commit()
        except IntegrityError:  # a concurrent run won the race: nothing to add
            await session.rollback()
            return 0
    return created


Built = tuple[MailJob, list[domain.Recipient], MailContext]
Earlier = Callable[[AsyncSession, CloudEvent[Any]], Awaitable[list[domain.Recipient]]]


@dataclass(frozen=True)
class MailSpec:
    """How one event type becomes mails: what it needs to know, and what it sends."""

    kind: str
    missing: Callable[[NotifierContext, CloudEvent[Any]], list[str]]
    build: Callable[[NotifierContext, CloudEvent[Any]], Built]
    # Recipients of the record's earlier copies, read in the mail's transaction; they get
    # this one too (after those the rules name, whose roles win).
    earlier: Earlier | None = None


def _ircc_missing(ctx: NotifierContext, event: CloudEvent[Any]) -> list[str]:
    data: IrccEvent = event.data
    return references.missing_for_ircc(data.record, ctx.projection.directory)


def _ircc_build(ctx: NotifierContext, event: CloudEvent[Any]) -> Built:
    """IRCC published, amended or revoked: CNA, provider NFP, providers, PIC holders."""
    data: IrccEvent = event.data
    record = data.record
    recipients = domain.recipients_for_ircc(record, ctx.projection.directory)
    cna = domain.reference_ids(record.get("absCNA"))
    context = MailContext(
        uid=data.uid,
        public_base_url=ctx.settings.public_base_url,
        event_type=event.type,
        record=record,
        reason=data.reason,
        labels=labels(ctx, cna),
    )
    return MailJob.of(event, event.type.replace(".", "_")), list(recipients), context


def _cpc_missing(ctx: NotifierContext, event: CloudEvent[Any]) -> list[str]:
    data: CpcPublished = event.data
    projection = ctx.projection
    return references.missing_for_cpc(data.record, projection.ircc, projection.directory)


def _cpc_build(ctx: NotifierContext, event: CloudEvent[Any]) -> Built:
    """CPC published or amended: user-country side and provider side (DESIGN.md §5); an
    amendment's mail says why and which fields changed."""
    data: CpcPublished = event.data
    record = data.record
    projection = ctx.projection
    recipients = domain.recipients_for_cpc(record, projection.ircc, projection.directory)
    cited = domain.reference_ids(record.get("absIRCCs"))
    checkpoints = domain.reference_ids(record.get("absCheckpoints"))
    amended = data if isinstance(data, CpcAmended) else None
    context = MailContext(
        uid=data.uid,
        public_base_url=ctx.settings.public_base_url,
        event_type=event.type,
        record=record,
        reason=amended.reason if amended else None,
        labels=labels(ctx, cited + checkpoints),
        changed=tuple(amended.changed) if amended else (),
        previous_uid=amended.previous_uid if amended else None,
    )
    template = "cpc_amended" if amended else "cpc_published"
    return MailJob.of(event, template), list(recipients), context


CPC_MAIL_TYPES = ("cpc.published", "cpc.amended")


async def _earlier_cpc_recipients(
    session: AsyncSession, event: CloudEvent[Any]
) -> list[domain.Recipient]:
    """Who got the first publication's copy, or the revision's this one amends (which went
    to all of them too): an amendment reaches the same people, even a party it no longer
    cites."""
    data = event.data
    if not isinstance(data, CpcAmended):
        return []
    first = f"{data.uid.rsplit('-', 1)[0]}-1"
    rows = await session.execute(
        select(
            DeliveryRow.recipient, DeliveryRow.language, DeliveryRow.role, DeliveryRow.government
        )
        .where(
            DeliveryRow.subject.in_({first, data.previous_uid}),
            DeliveryRow.event_type.in_(CPC_MAIL_TYPES),
        )
        .order_by(DeliveryRow.id)
    )
    found: dict[str, domain.Recipient] = {}
    for address, language, role, government in rows:
        found.setdefault(
            address, domain.Recipient(address, language, role, "", address, government)
        )
    return list(found.values())


def _discrepancy_missing(ctx: NotifierContext, event: CloudEvent[Any]) -> list[str]:
    data: DiscrepancyEvent = event.data
    return references.missing_for_discrepancy(
        data.ircc_uid, _ircc_for_uid(ctx, data.ircc_uid), ctx.projection.directory
    )


def _discrepancy_build(ctx: NotifierContext, event: CloudEvent[Any]) -> Built:
    """Discrepancy flagged: the provider country's NFP and the cited IRCC's CNA."""
    data: DiscrepancyEvent = event.data
    recipients = domain.recipients_for_discrepancy(
        data.provider_country, _ircc_for_uid(ctx, data.ircc_uid), ctx.projection.directory
    )
    facts = DiscrepancyFacts(
        rule=data.rule, cpc_uid=data.cpc_uid, ircc_uid=data.ircc_uid, evidence=data.evidence
    )
    context = MailContext(
        uid=data.cpc_uid,
        public_base_url=ctx.settings.public_base_url,
        event_type=event.type,
        record={},
        discrepancy=facts,
    )
    return MailJob.of(event, "discrepancy_flagged"), list(recipients), context


def _first_use_cna(ctx: NotifierContext, data: UtilizationFirstUse) -> str | None:
    """The absCNA the alert names, else the one of the IRCC as the view knows it."""
    if data.cna:
        return domain.reference_id(data.cna)
    ircc = ctx.projection.ircc(data.ircc)
    found = domain.reference_ids((ircc or {}).get("absCNA"))
    return found[0] if found else None


def _first_use_missing(ctx: NotifierContext, event: CloudEvent[Any]) -> list[str]:
    return references.missing_for_cna(_first_use_cna(ctx, event.data), ctx.projection.directory)


def _first_use_build(ctx: NotifierContext, event: CloudEvent[Any]) -> Built:
    """Utilization first use: the provider country's ABS NFPs and the IRCC's CNA."""
    data: UtilizationFirstUse = event.data
    recipients = domain.recipients_for_first_use(
        data.provider_country, _first_use_cna(ctx, data), ctx.projection.directory
    )
    context = MailContext(
        uid=data.cpc_uid,
        public_base_url=ctx.settings.public_base_url,
        event_type=event.type,
        utilization=utilization.first_use_facts(data, ctx.projection.ircc_uid),
    )
    return MailJob.of(event, "utilization_first_use"), recipients, context


def _report_build(ctx: NotifierContext, event: CloudEvent[Any]) -> Built:
    """Monthly utilization report: the provider country's ABS NFPs and all its CNAs."""
    data: UtilizationReport = event.data
    facts = utilization.report_facts(data, ctx.projection.ircc_uid)
    recipients = domain.recipients_for_utilization_report(
        data.provider_country, ctx.projection.directory
    )
    # Upper case like a UID, so the delivery log finds it (``?subject=MX:2026-11``).
    subject = f"{data.provider_country.upper()}:{data.month}"
    context = MailContext(
        uid=subject,
        public_base_url=ctx.settings.public_base_url,
        event_type=event.type,
        labels=labels(ctx, (ident for ident, _ in facts.checkpoints)),
        utilization=facts,
    )
    job = MailJob(event.id, event.type, subject, "utilization_report")
    return job, recipients, context


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


_IRCC = MailSpec("ircc", _ircc_missing, _ircc_build)
SPECS: dict[str, MailSpec] = {
    "ircc.published": _IRCC,
    "ircc.amended": _IRCC,
    "ircc.revoked": _IRCC,
    "cpc.published": MailSpec("cpc", _cpc_missing, _cpc_build),
    "cpc.amended": MailSpec("cpc", _cpc_missing, _cpc_build, _earlier_cpc_recipients),
    "discrepancy.flagged": MailSpec("discrepancy", _discrepancy_missing, _discrepancy_build),
    "utilization.first_use": MailSpec("utilization", _first_use_missing, _first_use_build),
    # Country-wide recipients only: nothing to wait for but a current directory view.
    "utilization.report": MailSpec("utilization", lambda _ctx, _event: [], _report_build),
}


async def settle(
    ctx: NotifierContext, session: AsyncSession, event: CloudEvent[Any], force: bool
) -> bool:
    """Queue the event's mails in ``session``'s transaction; False (nothing written) when a
    record it names is unknown or the directory view lags, unless ``force``."""
    spec = SPECS.get(event.type)
    if spec is None:
        return True
    known = await known_recipients(session, event.id)
    if known is None:  # processed before: a re-read of the topic is cheap
        return True
    if isinstance(event.data, IrccEvent):
        # Its own mail may name it. In this transaction: another session would wait for
        # the write lock this one holds (SQLite).
        await ctx.projection.apply_in(session, event)
    if not getattr(event.data, "notify", True):
        # A revision mirrored without --notify: its source mails (the record is still known).
        await mark_processed(session, event.id, event.type, 0, ctx.clock())
        return True
    missing = spec.missing(ctx, event)
    # Country-wide recipients (a government's NFPs and CNAs) can't be listed one by one:
    # they need a view that has read the directory to its end.
    if not force and (missing or not ctx.view_current()):
        return False
    if missing:
        ctx.metrics.unresolved.labels(spec.kind).inc(len(missing))
        log.warning(
            "%s %s: references still unknown, mailing who is known: %s",
            event.type,
            event.id,
            missing,
        )
    job, recipients, context = spec.build(ctx, event)
    if spec.earlier is not None:
        recipients += await spec.earlier(session, event)
    if not recipients and not known:
        # Processed all the same (waiting would not make anyone appear), but never silently.
        ctx.metrics.nobody.labels(spec.kind).inc()
        log.warning("%s %s (%s): nobody to mail", event.type, event.id, event.subject)
    await enqueue_in(ctx, session, job, recipients, context, known=known)
    return True


def mail_handler(
    ctx: NotifierContext, on_parked: Callable[[], None], on_queued: Callable[[], None]
) -> TxHandler:
    """The mail consumer's transactional handler: queue the mails, or park the event."""

    async def handle(tx: Tx, event: CloudEvent[Any], delivery: Delivery) -> None:
        spec = SPECS.get(event.type)
        if spec is None:
            return
        session = tx.session
        key = delivery.key or event.subject
        this_waits, key_waits = await parking.parked(session, event.id, key)
        if this_waits:
            return  # a copy of an event that already waits
        if key_waits or not await settle(ctx, session, event, False):
            missing = spec.missing(ctx, event)
            parking.park(session, event, key, missing)
            ctx.metrics.parked_total.labels(spec.kind).inc()
            tx.after_commit(on_parked)
            return
        tx.after_commit(on_queued)

    return handle
