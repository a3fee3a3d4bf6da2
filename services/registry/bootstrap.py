"""Composition root of the registry: builds every adapter from settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.registry.adapters.keys import SigningKey
from services.registry.adapters.tables import Base, OutboxRow
from services.registry.api import install_error_mapping, router, well_known
from services.registry.context import RegistryContext, utc_now
from services.registry.handlers import workflow
from services.registry.metrics import RegistryMetrics
from services.registry.settings import RegistrySettings
from shared.auth import TokenVerifier
from shared.db import create_engine, create_schema, ping, session_factory
from shared.events import all_topics
from shared.kafka.admin import connect_producer
from shared.kafka.producer import EventProducer
from shared.outbox import OutboxRelay
from shared.service import create_app

log = logging.getLogger(__name__)
SWEEP_SECONDS = 60.0


def bootstrap(settings: RegistrySettings, *, clock: Callable[[], datetime] = utc_now) -> FastAPI:
    """The registry app; its lifespan opens the database, producer and relay."""
    metrics = RegistryMetrics(CollectorRegistry())
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)
    key = SigningKey.load_or_create(
        settings.jwt_private_key_path, create=settings.jwt_generate_key and settings.is_dev
    )
    admin_token = (
        settings.require_secret("ABSCH_ADMIN_TOKEN", settings.admin_token)
        if settings.admin_token is not None or not settings.is_dev
        else None
    )

    async def resolve_key(kid: str) -> object | None:
        return key.public if kid == key.kid else None

    producer = EventProducer(
        settings.kafka_bootstrap, client_id="registry", metrics=metrics.plumbing
    )
    relay = OutboxRelay(sessions, OutboxRow, producer, metrics.plumbing)
    ctx = RegistryContext(
        settings=settings,
        sessions=sessions,
        relay=relay,
        key=key,
        verifier=TokenVerifier(resolve_key, admin_token=admin_token),
        metrics=metrics,
        clock=clock,
    )

    async def readiness() -> dict[str, bool]:
        return {"database": await ping(engine), "broker": producer.started}

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
        relay.start()
        sweeper = asyncio.create_task(_sweep_forever(ctx))
        try:
            yield
        finally:
            sweeper.cancel()
            setup.cancel()
            await relay.stop()
            await producer.stop()
            await engine.dispose()

    app = create_app(
        title="absch registry",
        description=__doc__ or "",
        lifespan=lifespan,
        metrics=metrics.plumbing,
        readiness=readiness,
    )
    app.state.ctx = ctx
    install_error_mapping(app)
    app.include_router(router)
    app.include_router(well_known)
    return app


async def _sweep_forever(ctx: RegistryContext) -> None:
    while True:
        with contextlib.suppress(Exception):
            await workflow.sweep(ctx)
        await asyncio.sleep(SWEEP_SECONDS)
