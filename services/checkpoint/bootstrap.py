"""Composition root of the checkpoint service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from services.checkpoint import handlers
from services.checkpoint.adapters.tables import Base, OutboxRow
from services.checkpoint.api import install_error_mapping, router
from services.checkpoint.context import CheckpointContext, CheckpointMetrics, utc_now
from services.checkpoint.settings import CheckpointSettings
from shared.auth import JwksClient, TokenVerifier
from shared.db import create_engine, create_schema, ping, session_factory
from shared.events import CloudEvent, Topic, all_topics, topic_name
from shared.kafka.admin import connect_producer
from shared.kafka.consumer import Delivery, EventConsumer
from shared.kafka.producer import EventProducer
from shared.outbox import OutboxRelay
from shared.service import Lifespan, create_app


def _directory_consumer(ctx: CheckpointContext, producer: EventProducer) -> EventConsumer:
    settings, prefix = ctx.settings, ctx.settings.kafka_topic_prefix

    async def on_directory(event: CloudEvent[Any], _delivery: Delivery) -> None:
        await handlers.on_directory(ctx, event)

    # Every instance needs every checkpoint, hence a consumer group of its own.
    return EventConsumer(
        bootstrap=settings.kafka_bootstrap,
        topics=[topic_name(Topic.DIRECTORY, prefix)],
        group_id=f"{prefix}{settings.consumer_group}-view-{settings.instance_id}",
        handler=on_directory,
        producer=producer,
        metrics=ctx.metrics.plumbing,
        client_id="checkpoint-view",
        partitions=settings.kafka_partitions,
        replication=settings.kafka_replication,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
    )


def _lifespan(
    ctx: CheckpointContext, engine: AsyncEngine, producer: EventProducer, directory: EventConsumer
) -> Lifespan:
    settings = ctx.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await create_schema(engine, Base.metadata)
        setup = asyncio.create_task(
            connect_producer(
                producer,
                settings.kafka_bootstrap,
                all_topics(settings.kafka_topic_prefix),
                partitions=settings.kafka_partitions,
                replication=settings.kafka_replication,
            )
        )
        ctx.relay.start()
        directory.start()
        try:
            yield
        finally:
            await directory.stop()
            setup.cancel()
            await ctx.relay.stop()
            await producer.stop()
            await engine.dispose()

    return lifespan


def bootstrap(settings: CheckpointSettings, *, clock: Callable[[], datetime] = utc_now) -> FastAPI:
    """The checkpoint app; its lifespan runs the directory consumer and the outbox relay."""
    metrics = CheckpointMetrics(CollectorRegistry())
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)
    producer = EventProducer(
        settings.kafka_bootstrap, client_id="checkpoint", metrics=metrics.plumbing
    )
    relay = OutboxRelay(sessions, OutboxRow, producer, metrics.plumbing)
    ctx = CheckpointContext(
        settings=settings, sessions=sessions, relay=relay, metrics=metrics, clock=clock
    )
    directory = _directory_consumer(ctx, producer)

    async def readiness() -> dict[str, bool]:
        return {"database": await ping(engine), "broker": directory.connected}

    app = create_app(
        title="absch checkpoint",
        description=__doc__ or "",
        lifespan=_lifespan(ctx, engine, producer, directory),
        metrics=metrics.plumbing,
        readiness=readiness,
    )
    app.state.ctx = ctx
    app.state.verifier = TokenVerifier(JwksClient(settings.jwks_url).key)
    install_error_mapping(app)
    app.include_router(router)
    return app
