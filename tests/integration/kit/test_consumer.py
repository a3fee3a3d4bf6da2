"""The kit's supervised consumer against the real (embedded) broker and real databases.

Faults are injected, never simulated: a handler that raises, or one aiokafka method
(``getmany``, ``commit``) patched to raise for this test's consumer group only.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CommitFailedError
from prometheus_client import CollectorRegistry
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    func,
    insert,
    select,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.db import create_engine, session_factory
from shared.events import CloudEvent, new_event
from shared.events.models import IrccEvent
from shared.events.topics import dlq_name
from shared.kafka.admin import ensure_topics
from shared.kafka.producer import EventProducer
from shared.kit.consumer import Delivery, Handler, SupervisedConsumer, Tx, TxHandler
from shared.kit.offsets import offsets_table, read_offsets
from shared.metrics import PlumbingMetrics
from tests.support.databases import DbFactory
from tests.support.poll import eventually

SERVICE = "kittest"
PARTITIONS = 2


# -- helpers --------------------------------------------------------------------------


def _event(n: int) -> CloudEvent[Any]:
    uid = f"ABSCH-IRCC-MX-{n}-1"
    data = IrccEvent(
        uid=uid, identifier=f"X-{n}", document_id=n, revision=1, government="mx", record={}
    )
    return new_event("ircc.published", source="registry", subject=uid, data=data)


async def _produce(bootstrap: str, topic: str, messages: list[tuple[int, bytes]]) -> None:
    """Send ``(partition, value)`` pairs in order and wait for every acknowledgement."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=f"k{i % 10}".encode(), partition=partition)
            for i, (partition, value) in enumerate(messages)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _produce_events(
    bootstrap: str, topic: str, events: list[tuple[int, CloudEvent[Any]]]
) -> None:
    await _produce(bootstrap, topic, [(p, e.to_json_bytes()) for p, e in events])


async def _read_all(bootstrap: str, topic: str, *, timeout: float = 20.0) -> list[Any]:
    """Every record of ``topic``: read until each partition's position reaches the high
    watermark of a Fetch response (ListOffsets "latest" is unreliable on the embedded broker)."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        fetch_max_wait_ms=100,
    )
    await reader.start()
    records: list[Any] = []
    try:
        reader.subscribe([topic])

        async def read_to_end() -> bool:
            batch = await reader.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
            assigned = reader.assignment()
            if len(assigned) < PARTITIONS:
                return False
            for tp in assigned:
                high = reader.highwater(tp)
                if high is None or await reader.position(tp) < high:
                    return False
            return True

        await eventually(read_to_end, timeout=timeout, what=f"{topic} read to its end")
    finally:
        await reader.stop()
    return records


def _sample(metrics: PlumbingMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, {"service": metrics.service, **labels})
    return value or 0.0


def _metrics() -> PlumbingMetrics:
    return PlumbingMetrics(CollectorRegistry(), SERVICE)


@asynccontextmanager
async def _running(
    bootstrap: str,
    topic: str,
    group: str,
    metrics: PlumbingMetrics,
    *,
    handler: Handler | None = None,
    tx_handler: TxHandler | None = None,
    sessions: async_sessionmaker[AsyncSession] | None = None,
    offsets: Table | None = None,
    **options: Any,
) -> AsyncIterator[SupervisedConsumer]:
    """A started SupervisedConsumer (and its DLQ producer), stopped on exit."""
    producer = EventProducer(bootstrap, client_id=f"{SERVICE}-dlq", metrics=metrics)
    consumer = SupervisedConsumer(
        name="kit-test",
        bootstrap=bootstrap,
        topics=[topic],
        group_id=group,
        producer=producer,
        metrics=metrics,
        handler=handler,
        tx_handler=tx_handler,
        sessions=sessions,
        offsets=offsets,
        partitions=PARTITIONS,
        fetch_max_wait_ms=100,
        **options,
    )
    consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()
        await producer.stop()


async def _topics(bootstrap: str, topic: str) -> None:
    await ensure_topics(bootstrap, [topic, dlq_name(topic)], partitions=PARTITIONS)


def _fail_calls(
    monkeypatch: pytest.MonkeyPatch, method: str, group: str, times: int | None
) -> Counter[str]:
    """Make ``AIOKafkaConsumer.<method>`` raise for ``group`` on its first ``times`` calls
    (every call when None); other consumers (readers, other groups) are untouched."""
    original = getattr(AIOKafkaConsumer, method)
    calls: Counter[str] = Counter()

    async def patched(self: AIOKafkaConsumer, *args: Any, **kwargs: Any) -> Any:
        if self._group_id == group:
            calls["calls"] += 1
            if times is None or calls["calls"] <= times:
                calls["failed"] += 1
                if method == "commit":
                    raise CommitFailedError()
                raise RuntimeError(f"injected {method} failure")
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(AIOKafkaConsumer, method, patched)
    return calls


class _Recorder:
    """A plain handler: records each event it handled; fails on demand."""

    def __init__(
        self,
        fail_for: set[str] | None = None,
        transient: dict[str, Callable[[], Exception]] | None = None,
    ) -> None:
        self.seen: list[str] = []
        self.calls: Counter[str] = Counter()
        self.fail_for = fail_for or set()
        self.transient = transient if transient is not None else {}

    async def __call__(self, event: CloudEvent[Any], delivery: Delivery) -> None:
        assert event.subject is not None
        self.calls[event.subject] += 1
        if event.subject in self.transient:
            raise self.transient[event.subject]()
        if event.subject in self.fail_for:
            raise RuntimeError(f"cannot handle {event.subject}")
        self.seen.append(event.subject)


class _Db:
    """A database with a table of effects (one row per handled event) and kit offsets."""

    def __init__(self, url: str) -> None:
        self.metadata = MetaData()
        self.effects = Table(
            "kit_test_effects",
            self.metadata,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("event_id", String(64), nullable=False),
            Column("subject", String(255), nullable=False),
            Column("kafka_partition", Integer, nullable=False),
            Column("kafka_offset", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
        )
        self.offsets = offsets_table(self.metadata)
        self.engine: AsyncEngine = create_engine(url)
        self.sessions = session_factory(engine=self.engine)

    async def create(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(self.metadata.create_all)

    async def rows(self) -> int:
        async with self.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(self.effects)) or 0)

    async def distinct_events(self) -> int:
        async with self.sessions() as session:
            count = await session.scalar(select(func.count(func.distinct(self.effects.c.event_id))))
            return int(count or 0)

    async def subjects(self) -> Counter[str]:
        async with self.sessions() as session:
            return Counter((await session.scalars(select(self.effects.c.subject))).all())

    async def stored_offsets(self, group: str, topic: str) -> dict[tuple[str, int], int]:
        async with self.sessions() as session:
            return await read_offsets(
                session, self.offsets, group, [(topic, p) for p in range(PARTITIONS)]
            )


@asynccontextmanager
async def _database(db_url: DbFactory) -> AsyncIterator[_Db]:
    db = _Db(await db_url("kit"))
    await db.create()
    try:
        yield db
    finally:
        await db.engine.dispose()


class _TxRecorder:
    """A transactional handler inserting one effect row per event; fails on demand and
    can hold at its ``block_at``-th call until released."""

    def __init__(
        self,
        db: _Db,
        *,
        fail_for: set[str] | None = None,
        transient: dict[str, Callable[[], Exception]] | None = None,
        block_at: int | None = None,
    ) -> None:
        self.db = db
        self.calls: Counter[str] = Counter()
        self.total = 0
        self.fail_for = fail_for or set()
        self.transient = transient if transient is not None else {}
        self.block_at = block_at
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, tx: Tx, event: CloudEvent[Any], delivery: Delivery) -> None:
        assert event.subject is not None
        self.total += 1
        self.calls[event.subject] += 1
        if self.total == self.block_at:
            self.reached.set()
            await self.release.wait()
        if event.subject in self.transient:
            raise self.transient[event.subject]()
        if event.subject in self.fail_for:
            raise ValueError(f"cannot handle {event.subject}")
        await tx.session.execute(
            insert(self.db.effects).values(
                event_id=event.id,
                subject=event.subject,
                kafka_partition=delivery.partition,
                kafka_offset=delivery.offset,
            )
        )


# -- moved from tests/integration/test_kafka_plumbing.py ------------------------------


async def test_poison_and_failing_messages_go_to_the_dlq_and_the_consumer_goes_on(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}absch.ircc.v1"
    await _topics(kafka_bootstrap, topic)
    good = [_event(n) for n in range(1, 6)]
    values = [e.to_json_bytes() for e in good[:2]] + [b"not json at all"]
    values += [e.to_json_bytes() for e in good[2:]]
    await _produce(kafka_bootstrap, topic, [(i % PARTITIONS, v) for i, v in enumerate(values)])

    metrics = _metrics()
    handler = _Recorder(fail_for={str(good[3].subject)})
    async with _running(
        kafka_bootstrap, topic, f"{topic_prefix}g", metrics, handler=handler, max_attempts=3
    ):
        await eventually(lambda: len(handler.seen) == 4, what="4 good events handled")
        await eventually(
            lambda: _sample(metrics, "absch_dlq_messages_total", topic=topic) == 2,
            what="2 messages dead-lettered",
        )
    dlq = await _read_all(kafka_bootstrap, dlq_name(topic))

    assert sorted(handler.seen) == sorted(str(e.subject) for e in good if e is not good[3])
    assert len(dlq) == 2
    by_value = {r.value: {k: v for k, v in r.headers} for r in dlq}
    assert by_value[b"not json at all"]["error_type"] == b"DecodeError"
    failed = by_value[good[3].to_json_bytes()]
    assert failed["error"] == f"cannot handle {good[3].subject}".encode()
    assert failed["attempts"] == b"3"
    assert failed["original_topic"] == topic.encode()
    assert handler.calls[str(good[3].subject)] == 3  # tried max_attempts times
    assert sum(handler.calls.values()) == 4 + 3


async def test_types_not_handled_pass_by_unvalidated_and_counted_as_skipped(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """A consumer told its types validates only those: an ``ircc.amended`` it does not handle,
    even one whose payload is broken, is counted as skipped, never dead-lettered."""
    topic = f"{topic_prefix}absch.ircc.v1"
    await _topics(kafka_bootstrap, topic)
    wanted = [_event(n) for n in range(1, 4)]
    broken = json.loads(_event(9).to_json_bytes())
    broken["type"], broken["data"] = "ircc.amended", {"uid": 42}
    values = [e.to_json_bytes() for e in wanted] + [json.dumps(broken).encode()]
    await _produce(kafka_bootstrap, topic, [(0, v) for v in values])

    metrics = _metrics()
    handler = _Recorder()
    async with _running(
        kafka_bootstrap,
        topic,
        f"{topic_prefix}g",
        metrics,
        handler=handler,
        types=frozenset({"ircc.published"}),
    ):
        await eventually(lambda: len(handler.seen) == 3, what="3 wanted events handled")
        await eventually(
            lambda: (
                _sample(metrics, "absch_events_consumed_total", topic=topic, outcome="skipped") == 1
            ),
            what="the other type skipped",
        )
    assert sorted(handler.seen) == sorted(str(e.subject) for e in wanted)
    assert _sample(metrics, "absch_dlq_messages_total", topic=topic) == 0


async def test_committed_offsets_mean_a_restart_does_not_redeliver(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}absch.ircc.v1"
    group = f"{topic_prefix}restart"
    await _topics(kafka_bootstrap, topic)
    await _produce_events(kafka_bootstrap, topic, [(n % 2, _event(n)) for n in range(1, 4)])
    metrics = _metrics()

    first = _Recorder()
    async with _running(kafka_bootstrap, topic, group, metrics, handler=first):
        await eventually(lambda: len(first.seen) == 3, what="first run handled 3")

    await _produce_events(kafka_bootstrap, topic, [(n % 2, _event(n)) for n in range(4, 6)])
    second = _Recorder()
    async with _running(kafka_bootstrap, topic, group, metrics, handler=second) as consumer:
        await eventually(lambda: len(second.seen) == 2, what="second run handled the 2 new")
        assert await consumer.caught_up(topic, time.time(), timeout=20), "read to the end"
    assert sorted(first.seen) == [f"ABSCH-IRCC-MX-{n}-1" for n in (1, 2, 3)]
    assert sorted(second.seen) == ["ABSCH-IRCC-MX-4-1", "ABSCH-IRCC-MX-5-1"]


# -- transient failures ---------------------------------------------------------------


def _connection_error() -> Exception:
    return ConnectionError("the database is unreachable")


def _operational_error() -> Exception:
    return sa_exc.OperationalError(
        "INSERT INTO kit_test_effects ...", None, ConnectionRefusedError("connection refused")
    )


async def _transient_scenario(
    bootstrap: str,
    topic: str,
    group: str,
    metrics: PlumbingMetrics,
    failing: dict[str, Callable[[], Exception]],
    factory: Callable[[], Exception],
    handled: Callable[[], Counter[str] | Awaitable[Counter[str]]],
    **consumer: Any,
) -> None:
    """``stuck`` (partition 0) fails transiently while in ``failing``; ``behind`` waits
    after it on partition 0; partition 1 keeps flowing. ``handled()`` gives a Counter of
    subjects whose effects happened."""
    stuck, behind = _event(1), _event(2)
    early = [_event(n) for n in range(10, 13)]
    late = [_event(n) for n in range(20, 23)]
    s_stuck, s_behind = str(stuck.subject), str(behind.subject)
    await _topics(bootstrap, topic)
    await _produce_events(bootstrap, topic, [(0, stuck), (0, behind)] + [(1, e) for e in early])
    failing[s_stuck] = factory  # the outage begins

    def transient() -> float:
        return _sample(metrics, "absch_consumer_transient_failures_total", group=group, topic=topic)

    def paused() -> float:
        return _sample(metrics, "absch_consumer_paused_partitions", group=group)

    async with _running(bootstrap, topic, group, metrics, retry_max_seconds=1.0, **consumer) as c:

        async def early_done() -> bool:
            seen = await _counter(handled)
            return all(seen[str(e.subject)] == 1 for e in early) and transient() >= 2

        await eventually(early_done, what="partition 1 handled while partition 0 retries")
        await eventually(lambda: paused() == 1, what="the failing partition shows as paused")
        assert c.paused_partitions() == 1
        seen = await _counter(handled)
        assert seen[s_stuck] == 0
        assert seen[s_behind] == 0, "the partition's later events wait behind the failing one"

        before = transient()
        await _produce_events(bootstrap, topic, [(1, e) for e in late])

        async def late_done() -> bool:
            seen = await _counter(handled)
            return all(seen[str(e.subject)] == 1 for e in late) and transient() > before

        await eventually(late_done, what="new events on partition 1 handled during the outage")
        assert (await _counter(handled))[s_stuck] == 0

        del failing[s_stuck]  # the outage ends

        async def recovered() -> bool:
            seen = await _counter(handled)
            return seen[s_stuck] >= 1 and seen[s_behind] >= 1 and paused() == 0

        await eventually(recovered, what="the failing event handled after the outage")
        assert await c.caught_up(topic, time.time(), timeout=20), "read to the end"
        seen = await _counter(handled)

    everything = [stuck, behind, *early, *late]
    assert seen == Counter(str(e.subject) for e in everything), "each event handled once"
    assert _sample(metrics, "absch_dlq_messages_total", topic=topic) == 0
    assert _sample(metrics, "absch_events_consumed_total", topic=topic, outcome="dlq") == 0
    assert _sample(metrics, "absch_consumer_restarts_total", group=group) == 0
    assert await _read_all(bootstrap, dlq_name(topic)) == [], "the DLQ topic stays empty"
    assert len(await _read_all(bootstrap, topic)) == len(everything)  # control: reading works


async def _counter(handled: Callable[[], Counter[str] | Awaitable[Counter[str]]]) -> Counter[str]:
    result = handled()
    return await result if inspect.isawaitable(result) else result


@pytest.mark.parametrize("factory", [_connection_error, _operational_error])
async def test_a_transient_failure_pauses_only_its_partition_and_never_reaches_the_dlq(
    kafka_bootstrap: str, topic_prefix: str, factory: Callable[[], Exception]
) -> None:
    metrics = _metrics()
    failing: dict[str, Callable[[], Exception]] = {}
    handler = _Recorder(transient=failing)
    await _transient_scenario(
        kafka_bootstrap,
        f"{topic_prefix}absch.ircc.v1",
        f"{topic_prefix}transient",
        metrics,
        failing,
        factory,
        lambda: Counter(handler.seen),
        handler=handler,
    )


async def test_a_transient_failure_in_a_transactional_handler_commits_nothing_until_it_passes(
    kafka_bootstrap: str, topic_prefix: str, db_url: DbFactory
) -> None:
    metrics = _metrics()
    failing: dict[str, Callable[[], Exception]] = {}
    async with _database(db_url) as db:
        handler = _TxRecorder(db, transient=failing)
        await _transient_scenario(
            kafka_bootstrap,
            f"{topic_prefix}absch.ircc.v1",
            f"{topic_prefix}transient-tx",
            metrics,
            failing,
            _operational_error,
            db.subjects,
            tx_handler=handler,
            sessions=db.sessions,
            offsets=db.offsets,
        )
        assert await db.rows() == await db.distinct_events() == 8


# -- the loop survives ----------------------------------------------------------------


async def test_the_loop_restarts_once_when_a_poll_fails_and_handles_everything(
    kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = f"{topic_prefix}absch.ircc.v1"
    group = f"{topic_prefix}poll-fails"
    await _topics(kafka_bootstrap, topic)
    events = [_event(n) for n in range(1, 9)]
    await _produce_events(kafka_bootstrap, topic, [(n % 2, e) for n, e in enumerate(events)])
    injected = _fail_calls(monkeypatch, "getmany", group, times=1)
    metrics = _metrics()
    handler = _Recorder()
    async with _running(kafka_bootstrap, topic, group, metrics, handler=handler) as consumer:
        await eventually(lambda: len(handler.seen) == len(events), what="every event handled")
        assert await consumer.caught_up(topic, time.time(), timeout=20)
        assert consumer.running
    assert injected["failed"] == 1
    assert _sample(metrics, "absch_consumer_restarts_total", group=group) == 1
    assert Counter(handler.seen) == Counter(str(e.subject) for e in events)


async def _kafka_committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(
            group, partitions=[TopicPartition(topic, p) for p in range(PARTITIONS)]
        )
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()}


async def test_commit_failures_are_survived_and_effects_stay_exact_across_a_restart(
    kafka_bootstrap: str, topic_prefix: str, db_url: DbFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = f"{topic_prefix}absch.ircc.v1"
    group = f"{topic_prefix}commit-fails"
    await _topics(kafka_bootstrap, topic)
    first_batch = [_event(n) for n in range(1, 21)]
    second_batch = [_event(n) for n in range(21, 31)]
    await _produce_events(kafka_bootstrap, topic, [(n % 2, e) for n, e in enumerate(first_batch)])
    injected = _fail_calls(monkeypatch, "commit", group, times=3)
    metrics = _metrics()
    async with _database(db_url) as db:
        handler = _TxRecorder(db)
        options: dict[str, Any] = {"sessions": db.sessions, "offsets": db.offsets}
        async with _running(
            kafka_bootstrap, topic, group, metrics, tx_handler=handler, **options
        ) as consumer:

            async def all_rows() -> bool:
                return await db.rows() == len(first_batch)

            await eventually(all_rows, what="every event's effect committed")
            await eventually(
                lambda: _sample(metrics, "absch_consumer_commit_failures_total", group=group) >= 1,
                what="a failed commit counted",
            )
            # Kafka commits are retried after a growing pause and then show the progress.
            await eventually(lambda: injected["calls"] > 3, timeout=30, what="a commit retried")
            assert consumer.running
            assert _sample(metrics, "absch_consumer_restarts_total", group=group) == 0

        assert injected["failed"] == 3
        assert await _kafka_committed(kafka_bootstrap, group, topic) == {0: 10, 1: 10}

        await _produce_events(
            kafka_bootstrap, topic, [(n % 2, e) for n, e in enumerate(second_batch)]
        )
        async with _running(
            kafka_bootstrap, topic, group, metrics, tx_handler=handler, **options
        ) as consumer:

            async def more_rows() -> bool:
                return await db.rows() >= len(first_batch) + len(second_batch)

            await eventually(more_rows, what="the new events' effects committed")
            assert await consumer.caught_up(topic, time.time(), timeout=20)

        total = len(first_batch) + len(second_batch)
        assert await db.rows() == await db.distinct_events() == total
        assert await db.subjects() == Counter(str(e.subject) for e in first_batch + second_batch)


# -- exactly-once effects with a transactional handler --------------------------------


async def test_a_transactional_handler_has_exact_effects_when_stopped_midway_and_restarted(
    kafka_bootstrap: str, topic_prefix: str, db_url: DbFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = f"{topic_prefix}absch.ircc.v1"
    group = f"{topic_prefix}exact"
    total = 200
    await _topics(kafka_bootstrap, topic)
    events = [_event(n) for n in range(1, total + 1)]
    await _produce_events(kafka_bootstrap, topic, [(n % 2, e) for n, e in enumerate(events)])
    # Kafka never stores an offset of this group: where to resume can only come from the DB.
    injected = _fail_calls(monkeypatch, "commit", group, times=None)
    metrics = _metrics()
    async with _database(db_url) as db:
        options: dict[str, Any] = {
            "sessions": db.sessions,
            "offsets": db.offsets,
            "max_records": 10,
        }
        first = _TxRecorder(db, block_at=total // 2)
        async with _running(kafka_bootstrap, topic, group, metrics, tx_handler=first, **options):
            await eventually(first.reached.is_set, what="half the events handled")
            first.release.set()
            # (the context exit stops the consumer before the handler resumes: the batch in
            # hand commits, nothing after it)
        midway = await db.rows()
        assert total // 2 <= midway < total, "stopped mid-way"
        assert first.total == midway

        second = _TxRecorder(db)
        async with _running(
            kafka_bootstrap, topic, group, metrics, tx_handler=second, **options
        ) as consumer:

            async def all_rows() -> bool:
                return await db.rows() >= total

            await eventually(all_rows, what="every event's effect committed")
            assert await consumer.caught_up(topic, time.time(), timeout=20)

        assert await db.rows() == await db.distinct_events() == total
        assert first.total + second.total == total, "each redelivered record was skipped"
        assert second.total == total - midway
        stored = await db.stored_offsets(group, topic)
        assert stored == {(topic, 0): total // 2, (topic, 1): total // 2}
    assert injected["failed"] == injected["calls"] > 0, "Kafka commits failed throughout"
    assert _sample(metrics, "absch_consumer_commit_failures_total", group=group) >= 1


async def test_a_transactional_handler_failing_for_good_dead_letters_only_that_event(
    kafka_bootstrap: str, topic_prefix: str, db_url: DbFactory
) -> None:
    topic = f"{topic_prefix}absch.ircc.v1"
    group = f"{topic_prefix}exact-dlq"
    await _topics(kafka_bootstrap, topic)
    events = [_event(n) for n in range(1, 21)]
    bad = events[7]  # partition 1, in the middle of its batch
    await _produce_events(kafka_bootstrap, topic, [(n % 2, e) for n, e in enumerate(events)])
    metrics = _metrics()
    async with _database(db_url) as db:
        handler = _TxRecorder(db, fail_for={str(bad.subject)})
        options: dict[str, Any] = {"sessions": db.sessions, "offsets": db.offsets}
        async with _running(
            kafka_bootstrap, topic, group, metrics, tx_handler=handler, max_attempts=3, **options
        ) as consumer:

            async def settled() -> bool:
                dead = _sample(metrics, "absch_dlq_messages_total", topic=topic)
                return dead == 1 and await db.rows() == len(events) - 1

            await eventually(settled, what="19 effects and 1 dead letter")
            assert await db.stored_offsets(group, topic) == {(topic, 0): 10, (topic, 1): 10}

            later = [_event(n) for n in (21, 23)]  # the partition goes on after the bad one
            await _produce_events(kafka_bootstrap, topic, [(1, e) for e in later])

            async def later_done() -> bool:
                return await db.rows() == len(events) + 1

            await eventually(later_done, what="later events on the same partition handled")
            assert await consumer.caught_up(topic, time.time(), timeout=20)

        # A new member of the group resumes from the stored offsets: nothing is redone.
        async with _running(
            kafka_bootstrap, topic, group, metrics, tx_handler=handler, **options
        ) as consumer:
            assert await consumer.caught_up(topic, time.time(), timeout=20)

        good = [e for e in events if e is not bad] + later
        assert await db.subjects() == Counter(str(e.subject) for e in good), "exactly once"
        assert await db.stored_offsets(group, topic) == {(topic, 0): 10, (topic, 1): 12}
    assert handler.calls[str(bad.subject)] >= 3
    dlq = await _read_all(kafka_bootstrap, dlq_name(topic))
    assert [r.value for r in dlq] == [bad.to_json_bytes()]
    headers = {k: v for k, v in dlq[0].headers}
    assert headers["error_type"] == b"ValueError"
    assert headers["attempts"] == b"3"
    assert headers["original_partition"] == b"1"
    assert headers["original_offset"] == b"3"


async def test_the_partitions_of_one_poll_commit_in_one_transaction(
    kafka_bootstrap: str, topic_prefix: str, db_url: DbFactory
) -> None:
    """Statements batch across partitions: the events of both partitions, waiting before
    the consumer starts, are handled in one transaction, with both offsets stored."""
    topic = f"{topic_prefix}absch.ircc.v1"
    group = f"{topic_prefix}one-tx"
    await _topics(kafka_bootstrap, topic)
    events = [_event(n) for n in range(1, 13)]
    await _produce_events(kafka_bootstrap, topic, [(n % 2, e) for n, e in enumerate(events)])
    metrics = _metrics()
    async with _database(db_url) as db:
        recorder = _TxRecorder(db)
        partitions_of: dict[int, set[int]] = {}
        sessions = itertools.count()

        async def handler(tx: Tx, event: CloudEvent[Any], delivery: Delivery) -> None:
            session = tx.session.info.setdefault("test_session", next(sessions))
            partitions_of.setdefault(session, set()).add(delivery.partition)
            await recorder(tx, event, delivery)

        options: dict[str, Any] = {"sessions": db.sessions, "offsets": db.offsets}
        async with _running(kafka_bootstrap, topic, group, metrics, tx_handler=handler, **options):

            async def all_handled() -> bool:
                return await db.rows() == len(events)

            await eventually(all_handled, what="every event handled")
        assert any(parts == {0, 1} for parts in partitions_of.values()), partitions_of
        assert await db.stored_offsets(group, topic) == {(topic, 0): 6, (topic, 1): 6}
        assert await db.distinct_events() == len(events)
