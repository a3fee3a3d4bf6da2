"""Composition root of the monitor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.monitor.metrics import MonitorMetrics
from services.monitor.settings import MonitorSettings
from shared.events import CloudEvent, Topic, topic_name
from shared.kafka.consumer import Delivery, EventConsumer
from shared.kafka.producer import EventProducer
from shared.service import create_app


def bootstrap(settings: MonitorSettings) -> FastAPI:
    """The monitor app; its lifespan runs the event consumer."""
    metrics = MonitorMetrics(CollectorRegistry())
    producer = EventProducer(
        settings.kafka_bootstrap, client_id="monitor", metrics=metrics.plumbing
    )

    async def on_event(event: CloudEvent[Any], _delivery: Delivery) -> None:
        metrics.events_seen.labels(event.type).inc()

    consumer = EventConsumer(
        bootstrap=settings.kafka_bootstrap,
        topics=[
            topic_name(t, settings.kafka_topic_prefix)
            for t in (Topic.DIRECTORY, Topic.IRCC, Topic.CPC)
        ],
        group_id=f"{settings.kafka_topic_prefix}{settings.consumer_group}",
        handler=on_event,
        producer=producer,
        metrics=metrics.plumbing,
        client_id="monitor",
    )

    async def readiness() -> dict[str, bool]:
        return {"broker": consumer.connected}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        consumer.start()
        try:
            yield
        finally:
            await consumer.stop()
            await producer.stop()

    return create_app(
        title="absch monitor",
        description=__doc__ or "",
        lifespan=lifespan,
        metrics=metrics.plumbing,
        readiness=readiness,
    )
