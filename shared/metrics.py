"""Prometheus helpers: one registry per service instance, plumbing metrics shared by all.

Plumbing series are named ``absch_*`` with a ``service`` label so that one alert rule
covers every service; a service's own series are named ``<service>_<thing>_<unit>``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIServer

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from shared.sqlite_inline import InlineConnection

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _SqliteLockWaits(Collector):
    """Waits for a SQLite lock held by another process (a second service or a CLI on the
    same file): a rising rate means writers queue behind each other."""

    def __init__(self, service: str) -> None:
        self._service = service

    def collect(self) -> Iterator[CounterMetricFamily]:
        waits = CounterMetricFamily(
            "absch_sqlite_lock_waits",
            "Statements that found the SQLite file locked by another process and waited",
            labels=["service"],
        )
        waits.add_metric([self._service], InlineConnection.busy_retries)
        seconds = CounterMetricFamily(
            "absch_sqlite_lock_wait_seconds",
            "Time spent waiting for SQLite locks held by another process",
            labels=["service"],
        )
        seconds.add_metric([self._service], InlineConnection.busy_wait_seconds)
        yield waits
        yield seconds


class PlumbingMetrics:
    """Consumer, producer, outbox and HTTP series of one service instance."""

    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        self.registry = registry
        self.service = service
        self.consumed = Counter(
            "absch_events_consumed_total",
            "Events read from Kafka, by outcome",
            ["service", "topic", "outcome"],
            registry=registry,
        )
        self.handle_seconds = Histogram(
            "absch_event_handle_seconds",
            "Time to handle one consumed event",
            ["service", "topic"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.lag = Gauge(
            "absch_consumer_lag_messages",
            "Messages between the consumer's position and the high watermark",
            ["service", "group", "topic", "partition"],
            registry=registry,
        )
        self.dlq = Counter(
            "absch_dlq_messages_total",
            "Messages sent to a dead-letter topic",
            ["service", "topic"],
            registry=registry,
        )
        self.published = Counter(
            "absch_events_published_total",
            "Events acknowledged by the broker",
            ["service", "topic"],
            registry=registry,
        )
        self.outbox_backlog = Gauge(
            "absch_outbox_backlog_events",
            "Outbox rows not yet published",
            ["service"],
            registry=registry,
        )
        self.outbox_failures = Counter(
            "absch_outbox_publish_failures_total",
            "Failed outbox relay rounds",
            ["service"],
            registry=registry,
        )
        self.outbox_oldest_age = Gauge(
            "absch_outbox_oldest_age_seconds",
            "Age of the oldest unpublished outbox row (0 when empty), read every relay round",
            ["service"],
            registry=registry,
        )
        self.outbox_dead = Counter(
            "absch_outbox_dead_letters_total",
            "Outbox rows moved to the dead-letter table because they can never be published",
            ["service", "topic"],
            registry=registry,
        )
        self.consumer_last_poll = Gauge(
            "absch_consumer_last_poll_timestamp_seconds",
            "Unix time of the consumer loop's last completed poll",
            ["service", "group"],
            registry=registry,
        )
        self.consumer_restarts = Counter(
            "absch_consumer_restarts_total",
            "Consumer loops restarted after an error in poll, handle or commit",
            ["service", "group"],
            registry=registry,
        )
        self.consumer_transient = Counter(
            "absch_consumer_transient_failures_total",
            "Handler attempts that failed transiently; the partition paused and retried",
            ["service", "group", "topic"],
            registry=registry,
        )
        self.consumer_paused = Gauge(
            "absch_consumer_paused_partitions",
            "Partitions paused while a transient failure lasts",
            ["service", "group"],
            registry=registry,
        )
        self.commit_failures = Counter(
            "absch_consumer_commit_failures_total",
            "Offset commits that failed (the events are redelivered, effects are idempotent)",
            ["service", "group"],
            registry=registry,
        )
        self.job_skips = Counter(
            "absch_periodic_records_skipped_total",
            "Records a periodic task (expiry sweep, workflow sweep, recheck) failed on and "
            "skipped, so the rest of the round went on",
            # Not "job": Prometheus gives that label to the scrape job.
            ["service", "task"],
            registry=registry,
        )
        registry.register(_SqliteLockWaits(service))
        self.ready = Gauge(
            "absch_ready",
            "1 when a readiness check passes, 0 when it fails (as last evaluated)",
            ["service", "check"],
            registry=registry,
        )
        self.http_requests = Counter(
            "absch_http_requests_total",
            "HTTP requests served",
            ["service", "method", "route", "status"],
            registry=registry,
        )
        self.http_seconds = Histogram(
            "absch_http_request_seconds",
            "HTTP request latency",
            ["service", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def skipped(self, task: str) -> None:
        """Count one record a periodic task failed on and skipped."""
        self.job_skips.labels(self.service, task).inc()


def install_metrics(app: FastAPI, metrics: PlumbingMetrics) -> None:
    """Count every request by its route template (bounded labels). ``/metrics`` is not a
    route of the public app: :class:`MetricsServer` serves it on a port of its own."""
    app.add_middleware(CountRequests, metrics=metrics)


class MetricsServer:
    """A service instance's registry in Prometheus text on a listener of its own, so that
    only the monitoring network reaches it (the public port answers 404 for ``/metrics``).

    prometheus_client's own server, in a thread: a scrape never waits for the event loop,
    so the numbers stay readable while the loop is busy or stuck, which is when they matter.
    Every path answers (Prometheus asks for ``/metrics``)."""

    def __init__(self, registry: CollectorRegistry, *, host: str, port: int) -> None:
        self.registry = registry
        self.host = host
        self.requested_port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the requested one, or the free one picked for port 0)."""
        if self._server is None:
            raise RuntimeError("the metrics server is not running")
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        """The listener's ``/metrics`` URL (a wildcard host reads as loopback)."""
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> None:
        """Bind and serve; an address in use fails the start, as the HTTP port does."""
        self._server, self._thread = start_http_server(
            self.requested_port, addr=self.host, registry=self.registry
        )
        log.info("metrics on %s", self.url)

    async def stop(self) -> None:
        """Stop serving and release the port (waits for the serving thread's next poll)."""
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is None:
            return
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        if thread is not None:
            await asyncio.to_thread(thread.join, 5)


class CountRequests:
    """ASGI middleware counting requests by route template and status (no per-request
    Starlette middleware machinery: it costs a measurable share of a request)."""

    def __init__(self, app: Any, metrics: PlumbingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_status(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            template = getattr(scope.get("route"), "path", "<unmatched>")
            m = self.metrics
            m.http_requests.labels(m.service, scope["method"], template, str(status[0])).inc()
            m.http_seconds.labels(m.service, template).observe(time.perf_counter() - start)
