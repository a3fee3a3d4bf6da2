"""At-least-once consumer loop: decode, handle with retries, dead-letter, commit after effect."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from tenacity import AsyncRetrying, stop_after_attempt, wait_exponential

from shared.events.codec import DecodeError, UnknownEventType, decode_event
from shared.events.envelope import CloudEvent
from shared.events.topics import dlq_name
from shared.kafka.admin import ensure_topics
from shared.kafka.producer import EventProducer, OutgoingMessage
from shared.logging import correlation_id
from shared.metrics import PlumbingMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where a consumed event came from."""

    topic: str
    partition: int
    offset: int
    key: str | None


Handler = Callable[[CloudEvent[Any], Delivery], Awaitable[None]]


class EventConsumer:
    """Consume ``topics`` in group ``group_id`` and pass each event to ``handler``.

    Offsets are committed only after the handler returned (or the message went to the
    DLQ), so a crash redelivers instead of losing. Undecodable messages and messages whose
    handler still fails after ``max_attempts`` go to ``<topic>.dlq`` with the error in
    headers; events of unknown types are skipped.
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        topics: Sequence[str],
        group_id: str,
        handler: Handler,
        producer: EventProducer,
        metrics: PlumbingMetrics,
        client_id: str,
        max_attempts: int = 5,
        session_timeout_ms: int = 6_000,
        partitions: int = 4,
        replication: int = 1,
        fetch_max_wait_ms: int = 500,
    ) -> None:
        self._topics = list(topics)
        self._bootstrap = bootstrap
        self._partitions, self._replication = partitions, replication
        self._handler = handler
        self._producer = producer
        self._metrics = metrics
        self._max_attempts = max_attempts
        self._client_id = client_id
        self._group_id = group_id
        self._session_timeout_ms = session_timeout_ms
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._lag_reported: set[TopicPartition] = set()
        # Per topic: wall-clock start of the last poll round after which it had no lag.
        self.caught_up_at: dict[str, float] = {}
        self._consumer: AIOKafkaConsumer | None = None
        for topic in self._topics:  # series exist from the start, so increase() sees the first
            metrics.dlq.labels(metrics.service, topic)
        self.connected = False

    def start(self) -> None:
        """Run in the background; connecting is retried until the broker answers."""
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self._topics}")

    async def stop(self, timeout: float = 10.0) -> None:
        """Finish the message in hand, commit, leave the group."""
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout)
            if not self._task.done():
                self._task.cancel()

    def assignment(self) -> set[tuple[str, int]]:
        """The (topic, partition) pairs this member of the group holds now."""
        consumer = self._consumer
        return {(tp.topic, tp.partition) for tp in consumer.assignment()} if consumer else set()

    def _new_consumer(self) -> AIOKafkaConsumer:
        # aiokafka binds to the running loop, so the client is built when connecting.
        return AIOKafkaConsumer(
            *self._topics,
            bootstrap_servers=self._bootstrap,
            group_id=self._group_id,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=1_000,
            rebalance_timeout_ms=self._session_timeout_ms,
            max_poll_records=200,
            fetch_max_wait_ms=self._fetch_max_wait_ms,
        )

    async def _connect(self) -> AIOKafkaConsumer | None:
        backoff = 0.2
        while not self._stopping.is_set():
            consumer = self._new_consumer()
            try:
                await ensure_topics(
                    self._bootstrap,
                    self._topics + [dlq_name(t) for t in self._topics],
                    partitions=self._partitions,
                    replication=self._replication,
                )
                await consumer.start()
                self.connected = True
                return consumer
            except Exception as exc:  # broker not reachable yet
                with contextlib.suppress(Exception):
                    await consumer.stop()
                log.warning("consumer cannot reach broker (%s); retrying", exc)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, 5.0)
        return None

    async def _run(self) -> None:
        consumer = self._consumer = await self._connect()
        if consumer is None:
            return
        try:
            while not self._stopping.is_set():
                round_start = time.time()
                batches = await consumer.getmany(timeout_ms=300, max_records=200)
                for tp, records in batches.items():
                    await self._process_partition(consumer, tp, records)
                    if self._stopping.is_set():
                        break
                for topic in await self._update_lag(consumer):
                    self.caught_up_at[topic] = round_start
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
            self.connected = False
            self._consumer = None

    async def _process_partition(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[ConsumerRecord]
    ) -> None:
        done: int | None = None
        for record in records:
            try:
                await self._process(record)
            except Exception as exc:  # DLQ unreachable: retry this record on the next poll
                log.error("cannot settle %s:%s@%s: %s", tp.topic, tp.partition, record.offset, exc)
                consumer.seek(tp, record.offset)
                await asyncio.sleep(1.0)
                break
            done = record.offset
            if self._stopping.is_set():
                break
        if done is not None:
            await consumer.commit({tp: done + 1})

    async def _process(self, record: ConsumerRecord) -> None:
        topic = record.topic
        try:
            event = decode_event(record.value)
        except UnknownEventType as exc:
            log.info("skipping %s@%s: %s", topic, record.offset, exc)
            self._metrics.consumed.labels(self._metrics.service, topic, "skipped").inc()
            return
        except DecodeError as exc:
            await self._dead_letter(record, exc, attempts=0)
            return
        delivery = Delivery(
            topic, record.partition, record.offset, record.key.decode() if record.key else None
        )
        token = correlation_id.set(event.correlationid)
        start = time.perf_counter()
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self._max_attempts),
                wait=wait_exponential(multiplier=0.1, max=2.0),
                reraise=True,
            ):
                with attempt:
                    await self._handler(event, delivery)
        except Exception as exc:
            log.exception("handler failed for %s %s", event.type, event.id)
            await self._dead_letter(record, exc, attempts=self._max_attempts)
            return
        finally:
            correlation_id.reset(token)
        self._metrics.handle_seconds.labels(self._metrics.service, topic).observe(
            time.perf_counter() - start
        )
        self._metrics.consumed.labels(self._metrics.service, topic, "ok").inc()

    async def _dead_letter(self, record: ConsumerRecord, exc: Exception, *, attempts: int) -> None:
        headers = [
            *(record.headers or []),
            ("error", str(exc)[:1000].encode()),
            ("error_type", type(exc).__name__.encode()),
            ("original_topic", record.topic.encode()),
            ("original_partition", str(record.partition).encode()),
            ("original_offset", str(record.offset).encode()),
            ("attempts", str(attempts).encode()),
            ("service", self._client_id.encode()),
            ("consumer_group", self._group_id.encode()),
        ]
        await self._producer.send_many(
            [OutgoingMessage(dlq_name(record.topic), record.key, record.value or b"", headers)]
        )
        self._metrics.dlq.labels(self._metrics.service, record.topic).inc()
        self._metrics.consumed.labels(self._metrics.service, record.topic, "dlq").inc()
        log.warning("sent %s@%s to DLQ: %s", record.topic, record.offset, exc)

    async def caught_up(self, topic: str, since: float, timeout: float) -> bool:
        """Wait until a poll round that started at or after ``since`` (epoch seconds) found
        nothing left to read on ``topic``; False when ``timeout`` runs out first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.caught_up_at.get(topic, 0.0) < since:
            if loop.time() > deadline or self._stopping.is_set():
                return False
            await asyncio.sleep(0.05)
        return True

    async def _update_lag(self, consumer: AIOKafkaConsumer) -> set[str]:
        """Report lag per partition; return the topics fully read (every highwater known)."""
        # highwater comes from Fetch responses, which the embedded broker reports correctly
        lag = self._metrics.lag
        assigned = consumer.assignment()
        for tp in self._lag_reported - assigned:  # moved to another instance: not ours now
            with contextlib.suppress(KeyError):
                lag.remove(self._metrics.service, self._group_id, tp.topic, str(tp.partition))
        self._lag_reported = set(assigned)
        behind_topics: set[str] = set()
        for tp in assigned:
            high = consumer.highwater(tp)
            if high is None:
                behind_topics.add(tp.topic)
                continue
            behind = max(0, high - await consumer.position(tp))
            lag.labels(self._metrics.service, self._group_id, tp.topic, str(tp.partition)).set(
                behind
            )
            if behind:
                behind_topics.add(tp.topic)
        return {tp.topic for tp in assigned} - behind_topics
