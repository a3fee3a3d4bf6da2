"""Composition: one place builds a service's plumbing, starts it in order, stops it in reverse.

A service's bootstrap creates a :class:`Kit` from its settings, metrics and tables, then
declares its consumers as handler tables (event type → handler) and adds its own
background workers. The kit owns the engine, the producer, the outbox relay, the
supervised consumers and readiness; ``kit.lifespan()`` is the app's lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol

from fastapi import FastAPI
from sqlalchemy import MetaData

from shared.auth import JwksClient, TokenVerifier
from shared.db import create_engine, create_schema, session_factory
from shared.events import CloudEvent, Topic, all_topics, topic_name
from shared.kafka.admin import connect_producer
from shared.kafka.producer import EventProducer
from shared.kit.consumer import Delivery, Handler, SupervisedConsumer, Tx, TxHandler
from shared.kit.deactivations import DEACTIVATION_TYPE, DeactivatedUsers, deactivations_table
from shared.kit.directory import DIRECTORY_TYPES, DirectoryView, directory_table
from shared.kit.offsets import offsets_table
from shared.kit.outbox import OutboxRelay
from shared.kit.readiness import Readiness, Thresholds
from shared.metrics import MetricsServer, PlumbingMetrics
from shared.migrations import Migrations, SchemaError
from shared.service import Lifespan, create_app
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)


class Worker(Protocol):
    """A background task a service runs beside its consumers."""

    def start(self) -> None: ...

    async def stop(self) -> None: ...


def dispatch(table: Mapping[str, Handler]) -> Handler:
    """One handler from a table of event type → handler; other types are ignored."""

    async def handle(event: CloudEvent[Any], delivery: Delivery) -> None:
        handler = table.get(event.type)
        if handler is not None:
            await handler(event, delivery)

    return handle


def dispatch_tx(table: Mapping[str, TxHandler]) -> TxHandler:
    """Like :func:`dispatch`, for transactional handlers."""

    async def handle(tx: Tx, event: CloudEvent[Any], delivery: Delivery) -> None:
        handler = table.get(event.type)
        if handler is not None:
            await handler(tx, event, delivery)

    return handle


class Kit:
    """The plumbing of one service instance."""

    def __init__(
        self,
        settings: ServiceSettings,
        metrics: PlumbingMetrics,
        metadata: MetaData,
        *,
        outbox: type[Any] | None = None,
        migrations: Migrations | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.metrics_server = MetricsServer(
            metrics.registry,
            host=settings.metrics_host or settings.http_host,
            port=settings.metrics_port,
        )
        self.metadata = metadata
        # A service's tables come from its migrations, run before it starts; at start the
        # kit only checks that the database is at head. Without migrations (ad-hoc kits in
        # tests) it creates missing tables itself.
        self.migrations = migrations
        self.schema_revision: str | None = None  # the database's, once checked (/healthz)
        self.engine = create_engine(settings.database_url)
        self.sessions = session_factory(engine=self.engine)
        self.producer = EventProducer(
            settings.kafka_bootstrap, client_id=settings.service, metrics=metrics
        )
        self.offsets = offsets_table(metadata)
        self.relay = OutboxRelay(self.sessions, outbox, self.producer, metrics) if outbox else None
        self.consumers: list[SupervisedConsumer] = []
        self.workers: list[Worker] = []
        self._directory: DirectoryView | None = None
        self._deactivated: DeactivatedUsers | None = None
        self.closers: list[Callable[[], Awaitable[None]]] = []
        self.readiness = Readiness(
            metrics=metrics,
            engine=self.engine,
            bootstrap=settings.kafka_bootstrap,
            topics=all_topics(settings.kafka_topic_prefix),
            partitions=settings.kafka_partitions,
            replication=settings.kafka_replication,
            create_topics=settings.kafka_create_topics,
            thresholds=Thresholds(
                broker_timeout=settings.ready_broker_timeout_seconds,
                consumer_stall=settings.ready_consumer_stall_seconds,
                outbox_age=settings.ready_outbox_age_seconds,
            ),
        )
        if self.relay is not None:
            self.readiness.watch_outbox(self.relay)

    def topic(self, topic: Topic) -> str:
        """Full topic name with the deployment prefix."""
        return topic_name(topic, self.settings.kafka_topic_prefix)

    def consumer(
        self,
        name: str,
        topics: list[Topic],
        *,
        handlers: Mapping[str, Handler] | None = None,
        tx_handlers: Mapping[str, TxHandler] | None = None,
        per_instance: bool = False,
        group_suffix: str | None = None,
        broadcast: bool = False,
    ) -> SupervisedConsumer:
        """Declare a consumer of ``topics``: ``handlers`` run at least once and commit to
        Kafka after; ``tx_handlers`` write in the offset's transaction (exactly-once
        effects). ``per_instance`` gives each instance its own group (every instance reads
        everything, e.g. a view; the instance ids must differ). ``broadcast`` reads every
        partition from the start on each start without a group (idempotent views). The
        group is ``<consumer_group><group_suffix>``, with
        ``-<name>`` as the suffix unless given (deployed groups keep their names)."""
        s = self.settings
        suffix = f"-{name}" if group_suffix is None else group_suffix
        group = f"{s.kafka_topic_prefix}{s.consumer_group}{suffix}"
        if per_instance:
            group += f"-{s.instance_id}"
        consumer = SupervisedConsumer(
            name=name,
            bootstrap=s.kafka_bootstrap,
            topics=[self.topic(t) for t in topics],
            group_id=group,
            producer=self.producer,
            metrics=self.metrics,
            handler=dispatch(handlers) if handlers is not None else None,
            tx_handler=dispatch_tx(tx_handlers) if tx_handlers is not None else None,
            sessions=self.sessions if tx_handlers is not None else None,
            # A broadcast consumer stores no offsets: instances sharing a database would
            # skip what another instance read.
            offsets=self.offsets if tx_handlers is not None and not broadcast else None,
            partitions=s.kafka_partitions,
            replication=s.kafka_replication,
            create_topics=s.kafka_create_topics,
            fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
            broadcast=broadcast,
            types=frozenset(handlers if handlers is not None else tx_handlers or ()),
        )
        self.consumers.append(consumer)
        self.readiness.watch_consumer(consumer)
        return consumer

    def directory(self) -> DirectoryView:
        """The shared view of the published directory (created on first use): its table in
        this service's database, loaded at start, a broadcast consumer of the directory
        topic, and a readiness check until it has read the topic once. The same consumer
        keeps the deactivated users (:meth:`deactivated_users`)."""
        if self._directory is None:
            view = DirectoryView(directory_table(self.metadata))
            users = DeactivatedUsers(deactivations_table(self.metadata))
            # Broadcast: every instance reads it whole at each start. What is stored
            # decides what changed, so re-reading costs no re-checks, and instances need no
            # identity (two with the same id would split a per-instance group silently).
            view.consumer = self.consumer(
                "directory",
                [Topic.DIRECTORY],
                tx_handlers={
                    **dict.fromkeys(DIRECTORY_TYPES, view.on_event),
                    DEACTIVATION_TYPE: users.on_event,
                },
                broadcast=True,
            )
            self.readiness.add("directory", view.ready)
            self._directory, self._deactivated = view, users
        return self._directory

    def deactivated_users(self) -> DeactivatedUsers:
        """The users the registry deactivated, read from the directory topic by the
        directory view's consumer (created with it), kept in a table and in memory."""
        self.directory()
        assert self._deactivated is not None
        return self._deactivated

    def token_verifier(self, jwks_url: str) -> TokenVerifier:
        """Verifies the registry's tokens with its JWKS (fetched once, not per request)
        and refuses deactivated users from :meth:`deactivated_users` (no call either)."""
        return TokenVerifier(
            JwksClient(jwks_url).key, deactivated=self.deactivated_users().is_deactivated
        )

    def add_worker(self, worker: Worker) -> None:
        """Run ``worker`` after the consumers start; it stops before them."""
        self.workers.append(worker)

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Close an adapter (a mailer, say) after everything else stopped."""
        self.closers.append(closer)

    def create_app(
        self,
        *,
        title: str,
        description: str,
        before_start: Callable[[], Awaitable[None]] | None = None,
    ) -> FastAPI:
        """The service's FastAPI app: health, readiness with details, request metrics,
        limits, and this kit's lifespan (which serves ``/metrics`` on its own port)."""
        app = create_app(
            title=title,
            description=description,
            lifespan=self.lifespan(before_start=before_start),
            metrics=self.metrics,
            readiness=self.ready,
            readiness_details=self.readiness.details,
            max_body_bytes=self.settings.http_max_body_bytes,
            schema_revision=lambda: self.schema_revision,
        )
        app.state.kit = self
        return app

    async def ready(self) -> dict[str, bool]:
        """The readiness checks' last outcomes (``/readyz``)."""
        return self.readiness.snapshot()

    def lifespan(self, *, before_start: Callable[[], Awaitable[None]] | None = None) -> Lifespan:
        """Start: metrics listener, schema check, directory view, ``before_start``,
        producer, relay, consumers, workers, readiness. Stop: the reverse. A database that
        is not at the migrations' head stops the start (:class:`SchemaError`)."""
        s = self.settings

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            await self._check_schema()
            if self._directory is not None:
                await self._directory.load(self.sessions)
            if self._deactivated is not None:
                await self._deactivated.load(self.sessions)
            if before_start is not None:
                await before_start()
            connect = asyncio.create_task(
                connect_producer(
                    self.producer,
                    s.kafka_bootstrap,
                    all_topics(s.kafka_topic_prefix),
                    partitions=s.kafka_partitions,
                    replication=s.kafka_replication,
                    create=s.kafka_create_topics,
                ),
                name="producer-connect",
            )
            if self.relay is not None:
                self.relay.start()
            for consumer in self.consumers:
                consumer.start()
            for worker in self.workers:
                worker.start()
            self.readiness.start()
            log.info(
                "%s started: %s consumers, %s workers",
                s.service,
                len(self.consumers),
                len(self.workers),
            )
            try:
                yield
            finally:
                await self.readiness.stop()
                for worker in reversed(self.workers):
                    with contextlib.suppress(Exception):
                        await worker.stop()
                for consumer in reversed(self.consumers):
                    await consumer.stop()
                connect.cancel()
                if self.relay is not None:
                    await self.relay.stop()
                await self.producer.stop()
                for closer in self.closers:
                    with contextlib.suppress(Exception):
                        await closer()
                await self.engine.dispose()

        return self._with_metrics_server(lifespan)

    async def _check_schema(self) -> None:
        """Refuse to start on a database the migrations have not brought to head (the
        message names the command); never create or alter a table here."""
        if self.migrations is None:
            log.info("%s: no migrations, creating missing tables", self.settings.service)
            await create_schema(self.engine, self.metadata)
            return
        try:
            self.schema_revision = await self.migrations.check(self.engine)
        except SchemaError as exc:
            log.error("%s refuses to start: %s", self.settings.service, exc)
            await self.engine.dispose()
            raise
        log.info("%s: database at schema revision %s", self.settings.service, self.schema_revision)

    def _with_metrics_server(self, inner: Lifespan) -> Lifespan:
        """``inner`` inside the metrics listener: it binds first (a taken port fails the
        start before anything else runs) and closes last, so a start and a stop can be
        watched from Prometheus."""

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            self.metrics_server.start()
            try:
                async with inner(app):
                    yield
            finally:
                await self.metrics_server.stop()

        return lifespan
