"""IRCC expiry notices [P9]: the issuing CNA hears once, 60 days before ``dateOfExpiry``.

Not driven by an event but by a periodic sweep over the IRCC projection. The notice and
``IrccRow.expiry_notice_sent`` are written in one transaction; the job's id is derived from
the IRCC, so two instances sweeping at once still create one delivery per address (the
delivery table's unique pair), and the loser just rolls back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.notifier import domain
from services.notifier.adapters.tables import DeliveryRow, IrccRow
from services.notifier.context import NotifierContext
from services.notifier.handlers import MailJob, add_deliveries, labels
from services.notifier.rendering import MailContext, permanent_uid
from shared.kit.failures import is_transient

log = logging.getLogger(__name__)
Wake = Callable[[], None]

TEMPLATE = "ircc_expiry"
EVENT_TYPE = "ircc.expiry_notice"


def notice_job(row: IrccRow) -> MailJob:
    """The (deterministic) job of an IRCC's one expiry notice."""
    return MailJob(
        event_id=f"expiry-{permanent_uid(row.uid)}",
        event_type=EVENT_TYPE,
        subject=row.uid,
        template=TEMPLATE,
    )


async def sweep_expiry(ctx: NotifierContext) -> int:
    """Queue the notices due today (by ``ctx.clock``); returns how many mails were queued.

    An IRCC whose CNA resolves to nobody yet is left for a later sweep, until it expires.
    """
    today = ctx.clock().date()
    async with ctx.sessions() as session:
        candidates = await session.scalars(
            select(IrccRow).where(IrccRow.revoked.is_(False), IrccRow.expiry_notice_sent.is_(False))
        )
        due = []
        for row in candidates:
            try:
                if domain.expiry_notice_due(
                    row.body, today=today, revoked=row.revoked, already_sent=row.expiry_notice_sent
                ):
                    due.append(row.identifier)
            except Exception:  # one odd record must not stop every country's reminders
                ctx.metrics.plumbing.skipped("expiry")
                log.exception("expiry check of %s failed; the sweep goes on", row.uid)
    queued = 0
    for identifier in due:
        try:
            queued += await _notify(ctx, identifier)
        except Exception as exc:
            if is_transient(exc):
                raise  # the database is away: the whole sweep tries again later
            ctx.metrics.plumbing.skipped("expiry")
            log.exception("expiry notice for %s failed; the sweep goes on", identifier)
    if queued:
        log.info("queued %s IRCC expiry notice(s)", queued)
    return queued


async def _notify(ctx: NotifierContext, identifier: str) -> int:
    async with ctx.sessions() as session:
        row = await session.get(IrccRow, identifier)
        if row is None or row.revoked or row.expiry_notice_sent:
            return 0
        recipients = domain.recipients_for_expiry(row.body, ctx.projection.directory)
        if not recipients:
            log.info("expiry notice for %s waits: the issuing CNA has no known address", row.uid)
            return 0
        job = notice_job(row)
        known = set(
            await session.scalars(
                select(DeliveryRow.recipient).where(DeliveryRow.event_id == job.event_id)
            )
        )
        context = MailContext(
            uid=row.uid,
            public_base_url=ctx.settings.public_base_url,
            event_type=EVENT_TYPE,
            record=row.body,
            labels=labels(ctx, domain.reference_ids(row.body.get("absCNA"))),
        )
        try:
            created = await add_deliveries(
                session, job, recipients, context, known=known, now=ctx.clock()
            )
            row.expiry_notice_sent = True
            await session.commit()
        except IntegrityError:  # another instance queued the same notice first
            await session.rollback()
            return 0
    ctx.metrics.queued.labels(TEMPLATE).inc(created)
    return created


class ExpiryScheduler:
    """Runs :func:`sweep_expiry` at start and then every ``interval`` seconds."""

    def __init__(self, ctx: NotifierContext, *, interval: float, on_queued: Wake) -> None:
        self._ctx = ctx
        self._interval = interval
        self._on_queued = on_queued
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run in the background."""
        self._task = asyncio.create_task(self._run(), name="expiry-sweep")

    async def stop(self, timeout: float = 10.0) -> None:
        """Finish the sweep in hand, then stop."""
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout)
            if not self._task.done():
                self._task.cancel()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if await sweep_expiry(self._ctx):
                    self._on_queued()
            except Exception:  # database hiccup: the next sweep tries again
                log.exception("expiry sweep failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)
