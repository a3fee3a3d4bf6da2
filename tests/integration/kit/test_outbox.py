"""The kit's outbox relay over a real database and the real (embedded) broker."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase

from shared.db import create_engine, create_schema, session_factory
from shared.events import CloudEvent, decode_event, new_event
from shared.events.models import IrccEvent
from shared.kafka.admin import ensure_topics
from shared.kafka.producer import EventProducer
from shared.kit.outbox import OutboxMixin, OutboxRelay, dead_table, stage
from shared.metrics import PlumbingMetrics
from tests.support.databases import DbFactory, databases, skip_unless_backend
from tests.support.poll import eventually
from tools.ports import free_port

SERVICE = "kittest"
PARTITIONS = 2


class Base(DeclarativeBase):
    pass


class Row(OutboxMixin, Base):
    __tablename__ = "outbox"


DEAD = dead_table(Row)  # in Base.metadata, so create_schema makes it too


def _event(n: int, *, record: dict[str, Any] | None = None) -> CloudEvent[Any]:
    uid = f"ABSCH-IRCC-MX-{n}-1"
    data = IrccEvent(
        uid=uid,
        identifier=f"X-{n}",
        document_id=n,
        revision=1,
        government="mx",
        record=record or {},
    )
    return new_event("ircc.published", source="registry", subject=uid, data=data)


def _sample(metrics: PlumbingMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, {"service": metrics.service, **labels})
    return value or 0.0


@asynccontextmanager
async def _outbox_db(
    url: str,
) -> AsyncIterator[tuple[AsyncEngine, async_sessionmaker[AsyncSession]]]:
    engine = create_engine(url)
    await create_schema(engine, Base.metadata)
    try:
        yield engine, session_factory(engine=engine)
    finally:
        await engine.dispose()


async def _stage(
    sessions: async_sessionmaker[AsyncSession],
    topic: str,
    events: list[tuple[str, CloudEvent[Any]]],
) -> None:
    """Stage ``(key, event)`` pairs in one transaction, in order."""
    async with sessions() as session, session.begin():
        for key, event in events:
            stage(session, Row, topic, event, key=key)


@asynccontextmanager
async def _relay(
    sessions: async_sessionmaker[AsyncSession], bootstrap: str, metrics: PlumbingMetrics, **kw: Any
) -> AsyncIterator[OutboxRelay]:
    producer = EventProducer(bootstrap, client_id=f"{SERVICE}-outbox", metrics=metrics)
    relay = OutboxRelay(sessions, Row, producer, metrics, **kw)
    relay.start()
    try:
        yield relay
    finally:
        await relay.stop()
        await producer.stop()


class _Reader:
    """Reads a topic from the beginning, keeping every record."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.records: list[Any] = []
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=100,
        )

    async def __aenter__(self) -> _Reader:
        await self._consumer.start()
        self._consumer.subscribe([self.topic])
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def _poll(self) -> None:
        batch = await self._consumer.getmany(timeout_ms=200)
        for part in batch.values():
            self.records.extend(part)

    async def at_least(self, count: int, *, timeout: float = 20.0) -> list[CloudEvent[Any]]:
        async def enough() -> bool:
            await self._poll()
            return len(self.records) >= count

        await eventually(enough, timeout=timeout, what=f"{count} records on {self.topic}")
        return self.events()

    async def to_end(self, *, timeout: float = 20.0) -> list[CloudEvent[Any]]:
        """Everything up to each partition's high watermark (as a Fetch reports it)."""

        async def at_end() -> bool:
            await self._poll()
            assigned = self._consumer.assignment()
            if not assigned:
                return False
            for tp in assigned:
                high = self._consumer.highwater(tp)
                if high is None or await self._consumer.position(tp) < high:
                    return False
            return True

        await eventually(at_end, timeout=timeout, what=f"{self.topic} read to its end")
        return self.events()

    def events(self) -> list[CloudEvent[Any]]:
        return [decode_event(r.value) for r in self.records]


def _distinct(events: list[CloudEvent[Any]]) -> list[str]:
    """Event ids in order of first arrival (a redelivery is tolerated here)."""
    return list(dict.fromkeys(e.id for e in events))


async def _publish_beside_a_too_large_row(
    bootstrap: str, topic: str, url: str, *, before: int, exactly_once: bool
) -> None:
    """Stage ``before`` rows, a 2 MB one, and one more, all with one key: the relay
    publishes all but the big one, sets that aside with its reason, and a row staged later
    goes out within seconds."""
    await ensure_topics(bootstrap, [topic], partitions=PARTITIONS)
    metrics = PlumbingMetrics(CollectorRegistry(), SERVICE)
    small = [_event(n) for n in range(1, before + 1)] + [_event(before + 2)]
    big = _event(before + 1, record={"blob": "x" * 2_000_000})  # twice the 1 MB limit
    staged = [*small[:before], big, small[-1]]
    good = [e.id for e in small]
    async with _outbox_db(url) as (_, sessions):
        await _stage(sessions, topic, [("k1", e) for e in staged])
        async with (
            _relay(sessions, bootstrap, metrics, idle_seconds=0.2) as relay,
            _Reader(bootstrap, topic) as reader,
        ):

            def settled() -> bool:
                dead = _sample(metrics, "absch_outbox_dead_letters_total", topic=topic)
                backlog = metrics.registry.get_sample_value(
                    "absch_outbox_backlog_events", {"service": SERVICE}
                )
                return dead == 1 and backlog == 0

            await eventually(settled, what="one dead letter, nothing pending")
            published = await reader.to_end()
            if exactly_once:
                assert [e.id for e in published] == good, "each row once, in staging order"
            assert _distinct(published) == good

            dead = await relay.dead_letters()
            assert [d["event_id"] for d in dead] == [big.id]
            assert dead[0]["topic"] == topic
            assert dead[0]["reason"].startswith("MessageSizeTooLargeError")
            assert "max_request_size" in dead[0]["reason"]
            assert dead[0]["payload"] == big.model_dump_json()
            assert await relay.backlog() == 0
            async with sessions() as session:
                rows = (await session.scalars(select(Row).order_by(Row.id))).all()
            assert [r.event_id for r in rows] == good
            assert all(r.sent_at is not None for r in rows)

            later = _event(before + 3)
            staged_at = time.monotonic()
            await _stage(sessions, topic, [("k1", later)])
            relay.wake()
            events = await reader.at_least(len(published) + 1, timeout=10)
            took = time.monotonic() - staged_at
            assert events[-1].id == later.id
            assert took < 5, f"a later row took {took:.1f}s"
            assert _distinct(await reader.to_end()) == [*good, later.id]
            assert await relay.backlog() == 0
    assert _sample(metrics, "absch_outbox_dead_letters_total", topic=topic) == 1


async def test_an_unpublishable_row_is_set_aside_and_the_rows_around_it_go_out(
    kafka_bootstrap: str, topic_prefix: str, db_url: DbFactory
) -> None:
    await _publish_beside_a_too_large_row(
        kafka_bootstrap,
        f"{topic_prefix}absch.ircc.v1",
        await db_url("outbox"),
        before=1,
        exactly_once=False,
    )


async def test_rows_beside_an_unpublishable_one_are_published_once_each(
    kafka_bootstrap: str, topic_prefix: str, db_url: DbFactory
) -> None:
    await _publish_beside_a_too_large_row(
        kafka_bootstrap,
        f"{topic_prefix}absch.ircc.v1",
        await db_url("outbox"),
        before=2,
        exactly_once=True,
    )


async def test_with_the_broker_unreachable_the_backlog_and_its_age_are_reported(
    topic_prefix: str, db_url: DbFactory
) -> None:
    topic = f"{topic_prefix}absch.ircc.v1"
    nowhere = f"127.0.0.1:{free_port()}"  # nothing listens there
    metrics = PlumbingMetrics(CollectorRegistry(), SERVICE)

    def gauge(name: str) -> float:
        return _sample(metrics, name)

    async with _outbox_db(await db_url("outbox")) as (_, sessions):
        await _stage(sessions, topic, [(f"k{n}", _event(n)) for n in range(1, 4)])
        async with _relay(sessions, nowhere, metrics, max_backoff=0.5) as relay:
            await eventually(
                lambda: gauge("absch_outbox_backlog_events") == 3, what="the backlog of 3 shown"
            )
            age = gauge("absch_outbox_oldest_age_seconds")
            await eventually(
                lambda: gauge("absch_outbox_oldest_age_seconds") >= age + 1.0,
                what="the oldest row's age grows",
            )
            assert relay.last_error is not None
            assert _sample(metrics, "absch_outbox_publish_failures_total") >= 1

            await _stage(sessions, topic, [(f"k{n}", _event(n)) for n in range(4, 6)])
            await eventually(
                lambda: gauge("absch_outbox_backlog_events") == 5,
                what="the backlog follows the table",
            )
            assert await relay.backlog() == 5
            assert relay.oldest_age() >= age + 1.0
            assert relay.running


@pytest.mark.postgres
async def test_two_relays_on_one_database_keep_each_keys_order(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    skip_unless_backend("postgres")
    topic = f"{topic_prefix}absch.ircc.v1"
    await ensure_topics(kafka_bootstrap, [topic], partitions=4)
    total, keys = 300, 10
    staged = [(f"k{n % keys}", _event(n)) for n in range(1, total + 1)]
    metrics = [PlumbingMetrics(CollectorRegistry(), SERVICE) for _ in range(2)]
    async with (
        databases("postgres", tmp_path) as make,
        _outbox_db(await make("outbox")) as (_, sessions),
        _relay(sessions, kafka_bootstrap, metrics[0], batch_size=7, idle_seconds=0.1) as one,
        _relay(sessions, kafka_bootstrap, metrics[1], batch_size=7, idle_seconds=0.1) as two,
        _Reader(kafka_bootstrap, topic) as reader,
    ):
        # Staged while both relays run, a few rows per transaction, in order.
        for start in range(0, total, 6):
            await _stage(sessions, topic, staged[start : start + 6])
            one.wake()
            two.wake()
        await reader.at_least(total, timeout=30)

        async def drained() -> bool:
            return await one.backlog() == 0

        await eventually(drained, what="every row marked sent")
        events = await reader.to_end()

    by_key: dict[str, list[str]] = {}
    for record, event in zip(reader.records, events, strict=True):
        by_key.setdefault(record.key.decode(), []).append(event.id)
    expected: dict[str, list[str]] = {}
    for key, event in staged:
        expected.setdefault(key, []).append(event.id)
    assert len(events) == total, "nothing lost, nothing sent twice"
    assert by_key == expected, "each key's events arrive in staging order"
    sent = [_sample(m, "absch_events_published_total", topic=topic) for m in metrics]
    assert sum(sent) == total
