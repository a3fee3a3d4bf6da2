"""Composition root of the monitor: checking worker, cases, API, dashboard."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.monitor.adapters.tables import Base, OutboxRow
from services.monitor.analytics.api import router as utilization_router
from services.monitor.analytics.readmodel import UtilizationView, changelog_topic
from services.monitor.api import dashboard_router, install_error_mapping, router
from services.monitor.cases import CaseStore
from services.monitor.directory import Checkpoints
from services.monitor.metrics import MonitorMetrics
from services.monitor.migrations import MIGRATIONS
from services.monitor.settings import MonitorSettings
from services.monitor.worker import MonitorWorker
from shared.events import CloudEvent, Topic
from shared.kit.assemble import Kit
from shared.kit.consumer import Delivery

CHECKED_TYPES = (
    "ircc.published",
    "ircc.amended",
    "ircc.revoked",
    "cpc.published",
    "cpc.amended",
)


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
    """The monitor app; its kit runs the checking consumer, the case consumer and the
    recheck timer."""
    metrics = MonitorMetrics(CollectorRegistry())
    kit = Kit(settings, metrics.plumbing, Base.metadata, outbox=OutboxRow, migrations=MIGRATIONS)
    assert kit.relay is not None
    prefix = settings.kafka_topic_prefix
    cases = CaseStore(kit.sessions, kit.relay, prefix, clock)
    directory = kit.directory()
    checkpoints = Checkpoints(directory.table)
    worker = MonitorWorker(
        sessions=kit.sessions,
        relay=kit.relay,
        metrics=metrics,
        checkpoints=checkpoints,
        clock=clock,
        prefix=prefix,
        grace_seconds=settings.unknown_grace_seconds,
        recheck_interval=settings.recheck_interval_seconds,
    )
    directory.mirrors.append(checkpoints.mirror)
    directory.listeners.append(checkpoints.on_change)
    checkpoints.listeners.append(worker.recheck_checkpoint)
    # Findings, cases and their events commit with the consumed offset.
    checking = kit.consumer(
        "checking",
        [Topic.IRCC, Topic.CPC],
        tx_handlers=dict.fromkeys(CHECKED_TYPES, worker.on_event_tx),
        group_suffix="",
    )

    async def on_delivery_failed(event: CloudEvent[Any], _delivery: Delivery) -> None:
        metrics.delivery_failures.inc()
        await cases.on_event(event)

    kit.consumer(
        "cases",
        [Topic.NOTIFICATION],
        handlers={"notification.failed": on_delivery_failed},
    )
    kit.add_worker(worker)
    # /v1/utilization reads the analytics tables from their changelog (ADR 0004).
    utilization = UtilizationView(
        settings.kafka_bootstrap,
        changelog_topic(settings.analytics_app_id),
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
    )
    kit.add_worker(utilization)
    metrics.utilization_view.set_function(lambda: float(utilization.state == "following"))

    def live_numbers() -> dict[str, Any]:
        lag = sum(s.value for m in metrics.plumbing.lag.collect() for s in m.samples)
        return {
            "events": _total(metrics.events_seen, "type"),
            "lag": int(lag),
            "time": time.time(),
            "flagged": _total(metrics.flagged, "rule"),
        }

    app = kit.create_app(title="absch monitor", description=__doc__ or "")
    app.state.cases = cases
    app.state.worker = worker
    app.state.checking = checking
    app.state.live_numbers = live_numbers
    app.state.utilization = utilization
    app.state.metrics = metrics
    # Refuses deactivated users too, from the kit's copy of the directory topic.
    app.state.verifier = kit.token_verifier(settings.jwks_url)
    install_error_mapping(app)
    app.include_router(router)
    app.include_router(utilization_router)
    app.include_router(dashboard_router)
    return app
