"""Composition root of the notifier."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.adapters.smtp import SmtpMailer
from services.notifier.adapters.tables import Base, OutboxRow
from services.notifier.api import router
from services.notifier.context import NotifierContext, utc_now
from services.notifier.delivery import DeliveryWorker
from services.notifier.expiry import ExpiryScheduler
from services.notifier.handlers import mail_handler
from services.notifier.metrics import NotifierMetrics
from services.notifier.projection import Projection
from services.notifier.settings import NotifierSettings
from shared.auth import JwksClient, TokenVerifier
from shared.db import create_engine, create_schema, ping, session_factory
from shared.events import CloudEvent, Topic, all_topics, topic_name
from shared.kafka.admin import connect_producer
from shared.kafka.consumer import Delivery, EventConsumer, Handler
from shared.kafka.producer import EventProducer
from shared.outbox import OutboxRelay
from shared.service import Lifespan, create_app


@dataclass
class _Parts:
    """Everything the lifespan starts and stops."""

    engine: AsyncEngine
    producer: EventProducer
    ctx: NotifierContext
    worker: DeliveryWorker
    expiry: ExpiryScheduler
    consumers: list[EventConsumer]


def _context(settings: NotifierSettings, clock: Callable[[], datetime]) -> _Parts:
    metrics = NotifierMetrics(CollectorRegistry())
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)
    producer = EventProducer(
        settings.kafka_bootstrap, client_id="notifier", metrics=metrics.plumbing
    )
    mailer = SmtpMailer(
        settings.smtp_host,
        settings.smtp_port,
        username=settings.smtp_username,
        password=settings.smtp_password,
        starttls=settings.smtp_starttls,
        timeout=settings.smtp_timeout,
    )
    ctx = NotifierContext(
        settings=settings,
        sessions=sessions,
        projection=Projection(sessions),
        relay=OutboxRelay(sessions, OutboxRow, producer, metrics.plumbing),
        mailer=mailer,
        metrics=metrics,
        clock=clock,
    )
    worker = DeliveryWorker(ctx)
    interval = settings.expiry_check_interval_seconds
    expiry = ExpiryScheduler(ctx, interval=interval, on_queued=worker.wake)
    return _Parts(engine, producer, ctx, worker, expiry, _consumers(ctx, producer, worker))


def _consumers(
    ctx: NotifierContext, producer: EventProducer, worker: DeliveryWorker
) -> list[EventConsumer]:
    """The view consumer (directory, IRCC) and the mail consumer (IRCC, CPC, discrepancy)."""
    settings, prefix = ctx.settings, ctx.settings.kafka_topic_prefix
    handle_mail = mail_handler(ctx)

    async def on_mail_event(event: CloudEvent[Any], delivery: Delivery) -> None:
        await handle_mail(event, delivery)
        worker.wake()

    async def on_projection_event(event: CloudEvent[Any], _delivery: Delivery) -> None:
        await ctx.projection.apply(event)

    def consumer(topics: list[Topic], group: str, handler: Handler, client: str) -> EventConsumer:
        return EventConsumer(
            bootstrap=settings.kafka_bootstrap,
            topics=[topic_name(t, prefix) for t in topics],
            group_id=f"{prefix}{group}",
            handler=handler,
            producer=producer,
            metrics=ctx.metrics.plumbing,
            client_id=client,
            partitions=settings.kafka_partitions,
            replication=settings.kafka_replication,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        )

    # Every instance keeps the whole directory and IRCC view, hence a group of its own.
    view_group = f"{settings.consumer_group}-view-{settings.instance_id}"
    view = consumer([Topic.DIRECTORY, Topic.IRCC], view_group, on_projection_event, "notifier-view")
    directory = topic_name(Topic.DIRECTORY, prefix)

    async def directory_caught_up(since: float, timeout: float) -> bool:
        return await view.caught_up(directory, since, timeout)

    ctx.view_caught_up = directory_caught_up
    return [
        view,
        consumer(
            [Topic.IRCC, Topic.CPC, Topic.DISCREPANCY],
            settings.consumer_group,
            on_mail_event,
            "notifier-mail",
        ),
    ]


def _lifespan(parts: _Parts) -> Lifespan:
    ctx, settings = parts.ctx, parts.ctx.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await create_schema(parts.engine, Base.metadata)
        await ctx.projection.load()
        setup = asyncio.create_task(
            connect_producer(
                parts.producer,
                settings.kafka_bootstrap,
                all_topics(settings.kafka_topic_prefix),
                partitions=settings.kafka_partitions,
                replication=settings.kafka_replication,
            )
        )
        ctx.relay.start()
        parts.worker.start()
        for consumer in parts.consumers:
            consumer.start()
        parts.expiry.start()
        try:
            yield
        finally:
            await parts.expiry.stop()
            for consumer in reversed(parts.consumers):
                await consumer.stop()
            await parts.worker.stop()
            setup.cancel()
            await ctx.relay.stop()
            await ctx.mailer.close()
            await parts.producer.stop()
            await parts.engine.dispose()

    return lifespan


def bootstrap(settings: NotifierSettings, *, clock: Callable[[], datetime] = utc_now) -> FastAPI:
    """The notifier app; its lifespan runs consumers, the delivery worker, the expiry sweep
    and the relay. ``clock`` decides "now" for deliveries and "today" for expiry notices."""
    parts = _context(settings, clock)
    mail_consumer = parts.consumers[-1]

    async def readiness() -> dict[str, bool]:
        return {"database": await ping(parts.engine), "broker": mail_consumer.connected}

    app = create_app(
        title="absch notifier",
        description=__doc__ or "",
        lifespan=_lifespan(parts),
        metrics=parts.ctx.metrics.plumbing,
        readiness=readiness,
    )
    app.state.ctx = parts.ctx
    app.state.worker = parts.worker
    app.state.expiry = parts.expiry
    app.state.verifier = TokenVerifier(JwksClient(settings.jwks_url).key)
    app.include_router(router)
    return app
