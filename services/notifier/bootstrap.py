"""Composition root of the notifier."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifier.adapters.smtp import SmtpMailer, SmtpPool
from services.notifier.adapters.tables import Base, OutboxRow
from services.notifier.api import router
from services.notifier.context import NotifierContext, utc_now
from services.notifier.delivery import DeliveryWorker
from services.notifier.expiry import ExpiryScheduler
from services.notifier.handlers import SPECS, mail_handler, settle
from services.notifier.metrics import NotifierMetrics
from services.notifier.migrations import MIGRATIONS
from services.notifier.parking import ParkingWorker
from services.notifier.projection import Projection
from services.notifier.settings import NotifierSettings
from shared.events import CloudEvent, Topic
from shared.kit.assemble import Kit
from shared.kit.consumer import Delivery

IRCC_TYPES = ("ircc.published", "ircc.amended", "ircc.revoked")


def bootstrap(settings: NotifierSettings, *, clock: Callable[[], datetime] = utc_now) -> FastAPI:
    """The notifier app; its kit runs the view and mail consumers, the delivery worker, the
    expiry sweep and the relay. ``clock`` decides "now" for deliveries and "today" for
    expiry notices."""
    metrics = NotifierMetrics(CollectorRegistry())
    kit = Kit(settings, metrics.plumbing, Base.metadata, outbox=OutboxRow, migrations=MIGRATIONS)
    assert kit.relay is not None
    mailer = SmtpPool(
        lambda: SmtpMailer(
            settings.smtp_host,
            settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
            timeout=settings.smtp_timeout,
        ),
        settings.smtp_connections,
    )
    ctx = NotifierContext(
        settings=settings,
        sessions=kit.sessions,
        projection=Projection(kit.sessions),
        relay=kit.relay,
        mailer=mailer,
        metrics=metrics,
        clock=clock,
    )
    worker = DeliveryWorker(ctx)
    expiry = ExpiryScheduler(
        ctx, interval=settings.expiry_check_interval_seconds, on_queued=worker.wake
    )

    async def on_view_event(event: CloudEvent[Any], _delivery: Delivery) -> None:
        await ctx.projection.apply(event)

    directory = kit.directory()
    directory.mirrors.append(ctx.projection.mirror)
    # Every instance keeps every IRCC, hence a group of its own.
    kit.consumer(
        "view",
        [Topic.IRCC],
        handlers=dict.fromkeys(IRCC_TYPES, on_view_event),
        per_instance=True,
    )

    def view_current() -> bool:
        # The directory was read to its end in a round that started a few fetch waits ago.
        fresh = 3 * settings.kafka_fetch_max_wait_ms / 1000 + 1.0
        return directory.read_to_end_since(time.time() - fresh)

    ctx.view_current = view_current

    async def settle_parked(session: AsyncSession, event: CloudEvent[Any], force: bool) -> bool:
        return await settle(ctx, session, event, force)

    parked = ParkingWorker(
        kit.sessions,
        settle_parked,
        metrics,
        wait_seconds=settings.reference_wait_seconds,
        view_advanced_at=directory.read_to_end_at,
        on_settled=worker.wake,
    )
    mail = mail_handler(ctx, on_parked=parked.wake, on_queued=worker.wake)
    kit.consumer(
        "mail",
        [Topic.IRCC, Topic.CPC, Topic.DISCREPANCY, Topic.UTILIZATION],
        tx_handlers=dict.fromkeys(SPECS, mail),
        group_suffix="",
    )
    kit.add_worker(parked)
    kit.readiness.add("smtp", worker.smtp_ready)
    kit.add_worker(worker)
    kit.add_worker(expiry)
    kit.on_close(mailer.close)
    app = kit.create_app(
        title="absch notifier",
        description=__doc__ or "",
        before_start=ctx.projection.load,
    )
    app.state.ctx = ctx
    app.state.worker = worker
    app.state.expiry = expiry
    # Refuses deactivated users too, from the kit's copy of the directory topic.
    app.state.verifier = kit.token_verifier(settings.jwks_url)
    app.include_router(router)
    return app
