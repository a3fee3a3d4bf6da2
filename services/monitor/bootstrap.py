"""Composition root of the monitor: stream processor, case projection, API, dashboard."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.monitor.adapters.tables import Base, OutboxRow
from services.monitor.api import dashboard_router, install_error_mapping, router
from services.monitor.cases import CaseStore
from services.monitor.directory import CheckpointView
from services.monitor.metrics import MonitorMetrics
from services.monitor.settings import MonitorSettings
from services.monitor.worker import MonitorWorker
from shared.auth import JwksClient, TokenVerifier
from shared.db import create_engine, create_schema, ping, session_factory
from shared.events import CloudEvent, Topic, all_topics, topic_name
from shared.kafka.admin import connect_producer
from shared.kafka.consumer import Delivery, EventConsumer, Handler
from shared.kafka.follower import TopicFollower
from shared.kafka.producer import EventProducer
from shared.outbox import OutboxRelay
from shared.service import create_app


def utc_now() -> datetime:
    """The real clock."""
    return datetime.now(UTC)


def _total(counter: Any, label: str) -> dict[str, float]:
    """Current totals of a labelled counter, by that label's value."""
    return {
        sample.labels[label]: sample.value
        for metric in counter.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    }


def bootstrap(settings: MonitorSettings, *, clock: Callable[[], datetime] = utc_now) -> FastAPI:
    """The monitor app; its lifespan runs the checking worker and the case projection."""
    metrics = MonitorMetrics(CollectorRegistry())
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)
    prefix = settings.kafka_topic_prefix
    producer = EventProducer(
        settings.kafka_bootstrap, client_id="monitor", metrics=metrics.plumbing
    )
    relay = OutboxRelay(sessions, OutboxRow, producer, metrics.plumbing)
    cases = CaseStore(sessions, relay, prefix, clock)
    view = CheckpointView()
    worker = MonitorWorker(
        sessions=sessions,
        relay=relay,
        metrics=metrics,
        checkpoints=view,
        clock=clock,
        prefix=prefix,
        grace_seconds=settings.unknown_grace_seconds,
        recheck_interval=settings.recheck_interval_seconds,
    )
    view.listeners.append(worker.recheck_checkpoint)
    follower = TopicFollower(
        settings.kafka_bootstrap,
        topic_name(Topic.DIRECTORY, prefix),
        view.apply,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
    )

    def consumer(topics: list[Topic], suffix: str, handler: Handler) -> EventConsumer:
        return EventConsumer(
            bootstrap=settings.kafka_bootstrap,
            topics=[topic_name(t, prefix) for t in topics],
            group_id=f"{prefix}{settings.consumer_group}{suffix}",
            handler=handler,
            producer=producer,
            metrics=metrics.plumbing,
            client_id=f"monitor{suffix}",
            partitions=settings.kafka_partitions,
            replication=settings.kafka_replication,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        )

    checking = consumer([Topic.IRCC, Topic.CPC], "", worker.on_event)

    async def on_case_event(event: CloudEvent[Any], _delivery: Delivery) -> None:
        if event.type == "notification.failed":
            metrics.delivery_failures.inc()
        await cases.on_event(event)

    projection = consumer([Topic.DISCREPANCY, Topic.NOTIFICATION], "-cases", on_case_event)

    def live_numbers() -> dict[str, Any]:
        lag = sum(s.value for m in metrics.plumbing.lag.collect() for s in m.samples)
        return {
            "events": _total(metrics.events_seen, "type"),
            "lag": int(lag),
            "time": time.time(),
            "flagged": _total(metrics.flagged, "rule"),
        }

    async def readiness() -> dict[str, bool]:
        return {
            "database": await ping(engine),
            "broker": projection.connected,
            "stream": checking.connected,
        }

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await create_schema(engine, Base.metadata)
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
        follower.start()
        projection.start()
        checking.start()
        worker.start()
        try:
            yield
        finally:
            await worker.stop()
            await checking.stop()
            await projection.stop()
            await follower.stop()
            setup.cancel()
            await relay.stop()
            await producer.stop()
            await engine.dispose()

    app = create_app(
        title="absch monitor",
        description=__doc__ or "",
        lifespan=lifespan,
        metrics=metrics.plumbing,
        readiness=readiness,
    )
    app.state.cases = cases
    app.state.worker = worker
    app.state.checking = checking
    app.state.live_numbers = live_numbers
    app.state.verifier = TokenVerifier(JwksClient(settings.jwks_url).key)
    install_error_mapping(app)
    app.include_router(router)
    app.include_router(dashboard_router)
    return app
