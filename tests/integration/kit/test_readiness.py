"""Readiness of a service built from the kit tells the truth about real components.

Each test runs a small :class:`Kit` (database, producer, outbox relay, consumers,
background readiness) through its own lifespan.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import DeclarativeBase

from shared.events import CloudEvent, Topic, all_topics, new_event
from shared.events.models import IrccEvent
from shared.kafka.admin import ensure_topics
from shared.kit.assemble import Kit
from shared.kit.consumer import Delivery
from shared.kit.outbox import OutboxMixin, dead_table, stage
from shared.metrics import PlumbingMetrics
from shared.settings import ServiceSettings
from tests.support.databases import DbFactory
from tests.support.poll import eventually
from tools.broker import EmbeddedBroker
from tools.ports import free_port

SERVICE = "kittest"
log = logging.getLogger(__name__)


class Base(DeclarativeBase):
    pass


class Row(OutboxMixin, Base):
    __tablename__ = "outbox"


dead_table(Row)  # in Base.metadata, so the kit creates it with the schema


class _Settings(ServiceSettings):
    service: str = SERVICE


def _event(n: int) -> CloudEvent[Any]:
    uid = f"ABSCH-IRCC-MX-{n}-1"
    data = IrccEvent(
        uid=uid, identifier=f"X-{n}", document_id=n, revision=1, government="mx", record={}
    )
    return new_event("ircc.published", source="registry", subject=uid, data=data)


def _kit(database_url: str, bootstrap: str, prefix: str, **settings: Any) -> Kit:
    config = _Settings(
        database_url=database_url,
        kafka_bootstrap=bootstrap,
        kafka_topic_prefix=prefix,
        kafka_partitions=2,
        kafka_fetch_max_wait_ms=100,
        **settings,
    )
    return Kit(config, PlumbingMetrics(CollectorRegistry(), SERVICE), Base.metadata, outbox=Row)


@asynccontextmanager
async def _running(kit: Kit) -> AsyncIterator[Kit]:
    async with kit.lifespan()(FastAPI()):
        yield kit


def _ready_gauge(kit: Kit, check: str) -> float | None:
    return kit.metrics.registry.get_sample_value(
        "absch_ready", {"service": SERVICE, "check": check}
    )


def _passes(kit: Kit, check: str) -> bool:
    return kit.readiness.snapshot().get(check, False)


async def test_the_broker_check_fails_while_the_broker_is_frozen_and_passes_after(
    topic_prefix: str, db_url: DbFactory, tmp_path: Path
) -> None:
    broker = EmbeddedBroker(log_file=tmp_path / "broker.log")
    broker.start()
    assert broker.pid is not None
    try:
        kit = _kit(await db_url("svc"), broker.bootstrap, topic_prefix)
        kit.consumer("views", [Topic.IRCC], handlers={})
        async with _running(kit):
            await eventually(
                lambda: all(kit.readiness.snapshot().values()),
                what=f"every check passes ({kit.readiness.details()})",
            )
            assert set(kit.readiness.snapshot()) == {
                "database",
                "broker",
                "outbox",
                "consumer:views",
            }
            assert _ready_gauge(kit, "broker") == 1

            os.kill(broker.pid, signal.SIGSTOP)
            frozen_at = time.monotonic()
            try:
                await eventually(
                    lambda: not _passes(kit, "broker"), timeout=20, what="the broker check fails"
                )
                took = time.monotonic() - frozen_at
                log.info("the broker check failed %.1fs after SIGSTOP", took)
                assert took < 15, f"the frozen broker was noticed after {took:.1f}s"
                assert _ready_gauge(kit, "broker") == 0
                assert "no metadata answer" in kit.readiness.details()["broker"]
                assert _passes(kit, "database")
            finally:
                os.kill(broker.pid, signal.SIGCONT)

            await eventually(
                lambda: _passes(kit, "broker"), timeout=20, what="the broker check passes again"
            )
            assert _ready_gauge(kit, "broker") == 1
    finally:
        broker.stop()


async def test_the_broker_check_asks_for_its_own_topics_and_never_creates_them(
    kafka_bootstrap: str, topic_prefix: str, db_url: DbFactory
) -> None:
    kit = _kit(await db_url("svc"), kafka_bootstrap, topic_prefix, kafka_create_topics=False)
    kit.consumer("views", [Topic.IRCC], handlers={})
    ours = all_topics(topic_prefix)
    async with _running(kit):
        await eventually(
            lambda: "missing topics" in kit.readiness.details().get("broker", ""),
            what="the broker check names the missing topics",
        )
        assert ours[0] in kit.readiness.details()["broker"]
        assert _ready_gauge(kit, "broker") == 0
        for _ in range(3):
            await kit.readiness.evaluate()
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            created = {t for t in await admin.list_topics() if t.startswith(topic_prefix)}
        finally:
            await admin.close()
        # Neither the probe nor the kit created any; a consumer's subscription asks the
        # broker to create its own topic, which the embedded broker does (Kafka clients
        # offer no way out: a managed cluster turns auto-creation off).
        assert created <= {kit.topic(Topic.IRCC)}, created

        await ensure_topics(kafka_bootstrap, ours, partitions=2)
        await eventually(lambda: _passes(kit, "broker"), what="the broker check passes")
        assert kit.readiness.details()["broker"] == "answers"


async def test_a_consumer_stuck_in_its_handler_fails_its_check(
    kafka_bootstrap: str, topic_prefix: str, db_url: DbFactory
) -> None:
    kit = _kit(await db_url("svc"), kafka_bootstrap, topic_prefix, ready_consumer_stall_seconds=2)
    assert kit.readiness.thresholds.consumer_stall == 2
    entered = asyncio.Event()
    never = asyncio.Event()  # never set: the handler hangs and the loop never polls again

    async def hang(event: CloudEvent[Any], delivery: Delivery) -> None:
        entered.set()
        await never.wait()

    consumer = kit.consumer("stuck", [Topic.IRCC], handlers={"ircc.published": hang})
    check = "consumer:stuck"
    async with _running(kit):
        # (Joining the group takes ~3 s on the embedded broker, without a completed poll.)
        await eventually(
            lambda: consumer.assignment() and consumer.last_poll is not None,
            what="the consumer joined its group and polls",
        )
        # The loop polls every few hundred ms while idle: an idle consumer is not stalled.
        await kit.readiness.evaluate()
        assert all(kit.readiness.snapshot().values()), kit.readiness.details()

        await kit.producer.send_event(kit.topic(Topic.IRCC), _event(1), key="k1")
        await eventually(entered.is_set, what="the handler runs (and hangs)")
        hung_at = time.monotonic()

        def fails_since_the_hang() -> bool:
            state = kit.readiness.state[check]
            return not state.ok and state.since >= hung_at

        await eventually(fails_since_the_hang, timeout=15, what="the check fails")
        took = time.monotonic() - hung_at
        log.info("the consumer check failed %.1fs after the handler hung", took)
        assert took < 2 + 2 * kit.readiness.thresholds.interval + 1, f"noticed after {took:.1f}s"
        assert consumer.poll_age() > 2
        assert consumer.running
        assert "last poll" in kit.readiness.details()[check]
        assert _ready_gauge(kit, check) == 0
        assert _passes(kit, "database")
        assert _passes(kit, "broker")
        await consumer.stop(timeout=0.5)  # cancels the hung handler; the kit stops the rest


async def test_the_outbox_check_fails_when_its_oldest_row_waits_too_long(
    topic_prefix: str, db_url: DbFactory
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"  # nothing listens there
    kit = _kit(await db_url("svc"), nowhere, topic_prefix, ready_outbox_age_seconds=2)
    relay = kit.relay
    assert relay is not None
    async with _running(kit):
        await eventually(lambda: "outbox" in kit.readiness.state, what="a first evaluation")
        assert _passes(kit, "outbox"), "an empty outbox is fine without a broker"
        assert not _passes(kit, "broker")
        assert _passes(kit, "database")

        async with kit.sessions() as session, session.begin():
            stage(session, Row, kit.topic(Topic.IRCC), _event(1), key="k1")
        staged_at = time.monotonic()
        relay.wake()
        await eventually(
            lambda: not _passes(kit, "outbox"), timeout=15, what="the outbox check fails"
        )
        took = time.monotonic() - staged_at
        log.info("the outbox check failed %.1fs after staging", took)
        assert 1.5 < took < 2 + 2 * kit.readiness.thresholds.interval + 1, f"after {took:.1f}s"
        detail = kit.readiness.details()["outbox"]
        assert "oldest row waits" in detail
        assert "KafkaConnectionError" in detail, detail
        assert _ready_gauge(kit, "outbox") == 0
        assert await relay.backlog() == 1

        def exported_age() -> float:
            value = kit.metrics.registry.get_sample_value(
                "absch_outbox_oldest_age_seconds", {"service": SERVICE}
            )
            return value or 0.0

        # the gauge is refreshed each relay round (rounds back off while the broker is away)
        await eventually(lambda: exported_age() > 2, timeout=10, what="the age gauge grows")
