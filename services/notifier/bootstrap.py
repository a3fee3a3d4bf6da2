"""Composition root of the notifier."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.notifier.adapters.smtp import SmtpMailer
from services.notifier.adapters.tables import Base, OutboxRow
from services.notifier.api import router
from services.notifier.context import NotifierContext, utc_now
from services.notifier.delivery import DeliveryWorker
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
from shared.service import create_app


def bootstrap(settings: NotifierSettings, *, clock: Callable[[], datetime] = utc_now) -> FastAPI:
    """The notifier app; its lifespan runs consumers, the delivery worker and the relay."""
    metrics = NotifierMetrics(CollectorRegistry())
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)
    producer = EventProducer(
        settings.kafka_bootstrap, client_id="notifier", metrics=metrics.plumbing
    )
    relay = OutboxRelay(sessions, OutboxRow, producer, metrics.plumbing)
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
        relay=relay,
        mailer=mailer,
        metrics=metrics,
        clock=clock,
    )
    worker = DeliveryWorker(ctx)
    prefix = settings.kafka_topic_prefix
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
            metrics=metrics.plumbing,
            client_id=client,
            partitions=settings.kafka_partitions,
            replication=settings.kafka_replication,
        )

    # Every instance keeps the whole directory and IRCC view, hence a group of its own.
    projection_consumer = consumer(
        [Topic.DIRECTORY, Topic.IRCC],
        f"{settings.consumer_group}-view-{settings.instance_id}",
        on_projection_event,
        "notifier-view",
    )
    mail_consumer = consumer(
        [Topic.IRCC, Topic.CPC, Topic.DISCREPANCY],
        settings.consumer_group,
        on_mail_event,
        "notifier-mail",
    )
    jwks = JwksClient(settings.jwks_url)

    async def readiness() -> dict[str, bool]:
        return {"database": await ping(engine), "broker": mail_consumer.connected}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await create_schema(engine, Base.metadata)
        await ctx.projection.load()
        setup = asyncio.create_task(
            connect_producer(
                producer,
                settings.kafka_bootstrap,
                all_topics(prefix),
                partitions=settings.kafka_partitions,
                replication=settings.kafka_replication,
            )
        )
        relay.start()
        worker.start()
        projection_consumer.start()
        mail_consumer.start()
        try:
            yield
        finally:
            await mail_consumer.stop()
            await projection_consumer.stop()
            await worker.stop()
            setup.cancel()
            await relay.stop()
            await mailer.close()
            await producer.stop()
            await engine.dispose()

    app = create_app(
        title="absch notifier",
        description=__doc__ or "",
        lifespan=lifespan,
        metrics=metrics.plumbing,
        readiness=readiness,
    )
    app.state.ctx = ctx
    app.state.worker = worker
    app.state.verifier = TokenVerifier(jwks.key)
    app.include_router(router)
    return app
