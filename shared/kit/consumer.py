"""The supervised consumer: nothing stalls silently, nothing valid reaches the DLQ.

- **Supervised.** An error anywhere in connect, poll, handle or commit is logged with its
  context, counted (``absch_consumer_restarts_total``) and the loop starts again after a
  capped backoff. The loop only ends when the service stops.
- **Failure classes** (``failures.py``). A transient failure (database, broker, SMTP
  unreachable) pauses that partition and retries the same message with capped backoff for
  as long as it lasts; other partitions keep flowing. A permanent failure is retried a few
  times, then the message goes to ``<topic>.dlq`` with the reason in its headers.
- **Exactly-once database effects.** With a transactional handler, a poll batch of one
  partition runs in one transaction together with the partition's next offset
  (``offsets.py``); the consumer resumes from the stored offset, so a redelivery is a no-op.
  Kafka commits then only show progress (lag) to operators.
- **Visible.** The time of the last poll, paused partitions, transient failures, commit
  failures and lag are metrics; readiness reads the same facts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.events.codec import DecodeError, NotWanted, UnknownEventType, decode_event
from shared.events.envelope import CloudEvent
from shared.events.topics import dlq_name
from shared.kafka.admin import ensure_topics
from shared.kafka.producer import EventProducer, OutgoingMessage
from shared.kit import offsets as store
from shared.kit.failures import is_conflict, is_transient
from shared.logging import correlation_id
from shared.metrics import PlumbingMetrics

log = logging.getLogger(__name__)

PROGRESS_COMMIT_SECONDS = 1.0  # Kafka commits of a consumer whose offsets the database holds


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where a consumed event came from."""

    topic: str
    partition: int
    offset: int
    key: str | None


@dataclass
class Tx:
    """The transaction a transactional handler writes in; hooks run once it committed."""

    session: AsyncSession
    hooks: list[Callable[[], None]] = field(default_factory=list)

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` after the transaction committed (wake a worker, move a counter)."""
        self.hooks.append(hook)


Handler = Callable[[CloudEvent[Any], Delivery], Awaitable[None]]
TxHandler = Callable[[Tx, CloudEvent[Any], Delivery], Awaitable[None]]


class _Outcome(Enum):
    DONE = "done"  # handled, skipped or dead-lettered: the offset may pass it
    RETRY = "retry"  # transient: the partition pauses and the message is read again


@dataclass
class _Item:
    record: ConsumerRecord
    event: CloudEvent[Any] | None  # None: skipped or dead-lettered before handling


class SupervisedConsumer:
    """Consume ``topics`` in group ``group_id``; give each event to ``handler`` (committed to
    Kafka after the effect) or to ``tx_handler`` (effects and offset in one transaction)."""

    def __init__(
        self,
        *,
        name: str,
        bootstrap: str,
        topics: Sequence[str],
        group_id: str,
        producer: EventProducer,
        metrics: PlumbingMetrics,
        handler: Handler | None = None,
        tx_handler: TxHandler | None = None,
        sessions: async_sessionmaker[AsyncSession] | None = None,
        offsets: Table | None = None,
        max_attempts: int = 3,
        retry_max_seconds: float = 5.0,
        session_timeout_ms: int = 6_000,
        partitions: int = 4,
        replication: int = 1,
        create_topics: bool = True,
        fetch_max_wait_ms: int = 500,
        max_records: int = 500,
        broadcast: bool = False,
        types: frozenset[str] | None = None,
    ) -> None:
        if (handler is None) == (tx_handler is None):
            raise ValueError("give exactly one of handler and tx_handler")
        if tx_handler is not None and sessions is None:
            raise ValueError("a transactional handler needs sessions")
        if tx_handler is not None and offsets is None and not broadcast:
            raise ValueError("a transactional handler in a group needs the offsets table")
        self.name = name
        self.topics = list(topics)
        self.group_id = group_id  # also the metrics label when broadcast (no Kafka group)
        # Broadcast: no group, every partition, from the start on each start; the handler's
        # effects must be idempotent by themselves (the directory view compares with what
        # it stored), so instances need no identity of their own.
        self.broadcast = broadcast
        self._bootstrap = bootstrap
        self._producer = producer
        self._metrics = metrics
        self._handler = handler
        self._tx_handler = tx_handler
        self._sessions = sessions
        self._offsets = offsets
        self._max_attempts = max_attempts
        self._retry_max = retry_max_seconds
        self._session_timeout_ms = session_timeout_ms
        self._partitions, self._replication = partitions, replication
        self._create_topics = create_topics
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._max_records = max_records
        # The event types the handler acts on; others pass by without being validated.
        self._types = types
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._paused: dict[TopicPartition, float] = {}  # partition -> monotonic resume time
        self._backoff: dict[TopicPartition, float] = {}
        self._pending: dict[TopicPartition, int] = {}  # Kafka commits not yet done
        self._db_next: dict[TopicPartition, int | None] = {}
        self._commit_failures = 0
        self._next_commit = 0.0
        self._lag_reported: set[TopicPartition] = set()
        self._started = time.monotonic()
        self.last_poll: float | None = None  # monotonic time of the last completed poll
        self.connected = False
        self.handled = 0  # events whose effects committed (or that were handled), this run
        self.last_error: str | None = None
        self.last_crash: float | None = None  # monotonic time the loop last had to restart
        # Per topic: wall-clock start of the last poll round after which it had no lag.
        self.caught_up_at: dict[str, float] = {}
        for topic in self.topics:  # series exist from the start, so increase() sees the first
            metrics.dlq.labels(metrics.service, topic)
        metrics.consumer_restarts.labels(metrics.service, group_id)
        metrics.commit_failures.labels(metrics.service, group_id)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Run in the background; the loop restarts itself after any error."""
        self._started = time.monotonic()
        m = self._metrics
        # A loop stuck before its first poll still ages this series (and trips the alert).
        m.consumer_last_poll.labels(m.service, self.group_id).set(time.time())
        self._task = asyncio.create_task(self._supervise(), name=f"consumer-{self.name}")

    async def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in hand, commit, leave the group."""
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            if not self._task.done():
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task

    @property
    def running(self) -> bool:
        """False only when the loop task ended (which happens only on stop)."""
        return self._task is not None and not self._task.done()

    def poll_age(self) -> float:
        """Seconds since the last completed poll (since start when none yet)."""
        return time.monotonic() - (self.last_poll if self.last_poll is not None else self._started)

    def paused_partitions(self) -> int:
        """Partitions waiting out a transient failure."""
        return len(self._paused)

    def assignment(self) -> set[tuple[str, int]]:
        """The (topic, partition) pairs this member of the group holds now."""
        consumer = self._consumer
        return {(tp.topic, tp.partition) for tp in consumer.assignment()} if consumer else set()

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

    # -- the supervised loop ------------------------------------------------------------

    async def _supervise(self) -> None:
        backoff = 0.5
        m = self._metrics
        while not self._stopping.is_set():
            try:
                await self._session()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                m.consumer_restarts.labels(m.service, self.group_id).inc()
                if is_transient(exc):
                    log.warning(
                        "consumer %s (group %s) lost the broker, restarting in %.1fs: %s",
                        self.name,
                        self.group_id,
                        backoff,
                        self.last_error,
                    )
                else:
                    self.last_crash = time.monotonic()
                    log.exception(
                        "consumer %s (group %s) failed, restarting in %.1fs",
                        self.name,
                        self.group_id,
                        backoff,
                    )
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, 30.0)

    def _new_consumer(self) -> AIOKafkaConsumer:
        # aiokafka binds to the running loop, so the client is built when connecting.
        return AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None if self.broadcast else self.group_id,
            client_id=f"{self._metrics.service}-{self.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=1_000,
            rebalance_timeout_ms=self._session_timeout_ms,
            max_poll_records=self._max_records,
            fetch_max_wait_ms=self._fetch_max_wait_ms,
            request_timeout_ms=15_000,
        )

    async def _session(self) -> None:
        """Connect, then poll and handle until stopping; any error ends the session."""
        consumer = self._new_consumer()
        try:
            if self._create_topics:
                await ensure_topics(
                    self._bootstrap,
                    self.topics + [dlq_name(t) for t in self.topics],
                    partitions=self._partitions,
                    replication=self._replication,
                )
            await consumer.start()
            if self.broadcast:
                # Assigned, not subscribed: without a group, a subscription made while a
                # topic's partitions are not in the metadata yet stays empty for minutes.
                partitions = await self._all_partitions(consumer)
                consumer.assign(partitions)
                await consumer.seek_to_beginning(*partitions)
            else:
                consumer.subscribe(self.topics, listener=_Rebalance(self))
            self._consumer = consumer
            self.connected = True
            self.last_error = None
            while not self._stopping.is_set():
                await self._round(consumer)
        finally:
            self.connected = False
            self._consumer = None
            with contextlib.suppress(Exception):
                await self._commit(consumer, force=True)
            with contextlib.suppress(Exception):
                await consumer.stop()
            self._paused.clear()
            self._db_next.clear()
            self._set_paused_gauge()

    async def _all_partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        """Every partition of every topic, once the metadata lists them."""
        for _ in range(100):
            await consumer.topics()  # a metadata request
            found = {t: consumer.partitions_for_topic(t) for t in self.topics}
            if all(found.values()):
                return [TopicPartition(t, p) for t, ps in found.items() for p in sorted(ps or ())]
            await asyncio.sleep(0.1)
        raise RuntimeError(f"no partitions known for {self.topics}")

    async def _round(self, consumer: AIOKafkaConsumer) -> None:
        self._resume_due(consumer)
        round_start = time.time()
        batches = await consumer.getmany(timeout_ms=300, max_records=self._max_records)
        self.last_poll = time.monotonic()
        m = self._metrics
        m.consumer_last_poll.labels(m.service, self.group_id).set(round_start)
        if self._tx_handler is not None:
            await self._process_tx_round(consumer, batches)
        else:
            for tp, records in batches.items():
                if tp in self._paused or not records:
                    continue
                await self._process_plain(consumer, tp, records)
                if self._stopping.is_set():
                    break
        await self._commit(consumer)
        for topic in await self._update_lag(consumer):
            self.caught_up_at[topic] = round_start

    # -- transient pauses ---------------------------------------------------------------

    def _pause(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
        """Read ``offset`` again after a backoff; the partition's other messages wait."""
        delay = min(self._backoff.get(tp, 0.1) * 2, self._retry_max)
        delay *= random.uniform(0.8, 1.2)  # instances that crossed don't meet again in step
        self._backoff[tp] = delay
        consumer.seek(tp, offset)
        consumer.pause(tp)
        self._paused[tp] = time.monotonic() + delay
        self._set_paused_gauge()

    def _resume_due(self, consumer: AIOKafkaConsumer) -> None:
        now = time.monotonic()
        assigned = consumer.assignment()
        for tp, until in list(self._paused.items()):
            if tp not in assigned:
                del self._paused[tp]
            elif now >= until:
                del self._paused[tp]
                consumer.resume(tp)
        self._set_paused_gauge()

    def _set_paused_gauge(self) -> None:
        m = self._metrics
        m.consumer_paused.labels(m.service, self.group_id).set(len(self._paused))

    def _transient(self, tp: TopicPartition, record: ConsumerRecord, exc: BaseException) -> None:
        m = self._metrics
        m.consumer_transient.labels(m.service, self.group_id, tp.topic).inc()
        self.last_error = f"{type(exc).__name__}: {exc}"
        # One line per backoff step, not per message: the step grows to retry_max.
        log.warning(
            "transient failure on %s[%s]@%s (group %s), pausing %.1fs: %s",
            tp.topic,
            tp.partition,
            record.offset,
            self.group_id,
            min(self._backoff.get(tp, 0.1) * 2, self._retry_max),
            self.last_error,
        )

    # -- decoding and dead letters ------------------------------------------------------

    async def _decode(self, record: ConsumerRecord) -> tuple[_Outcome, CloudEvent[Any] | None]:
        m = self._metrics
        try:
            return _Outcome.DONE, decode_event(record.value, only=self._types)
        except NotWanted:
            m.consumed.labels(m.service, record.topic, "skipped").inc()
            return _Outcome.DONE, None
        except UnknownEventType as exc:
            log.info("skipping %s@%s: %s", record.topic, record.offset, exc)
            m.consumed.labels(m.service, record.topic, "skipped").inc()
            return _Outcome.DONE, None
        except DecodeError as exc:
            return await self._dead_letter(record, exc, attempts=0), None

    async def _dead_letter(
        self, record: ConsumerRecord, exc: BaseException, *, attempts: int
    ) -> _Outcome:
        headers = [
            *(record.headers or []),
            ("error", str(exc)[:1000].encode()),
            ("error_type", type(exc).__name__.encode()),
            ("original_topic", record.topic.encode()),
            ("original_partition", str(record.partition).encode()),
            ("original_offset", str(record.offset).encode()),
            ("attempts", str(attempts).encode()),
            ("service", f"{self._metrics.service}-{self.name}".encode()),  # who gave up
            ("consumer_group", self.group_id.encode()),
        ]
        try:
            await self._producer.send_many(
                [OutgoingMessage(dlq_name(record.topic), record.key, record.value or b"", headers)]
            )
        except Exception as send_exc:  # the DLQ itself is unreachable: try the message again
            log.warning("cannot dead-letter %s@%s: %s", record.topic, record.offset, send_exc)
            return _Outcome.RETRY
        m = self._metrics
        m.dlq.labels(m.service, record.topic).inc()
        m.consumed.labels(m.service, record.topic, "dlq").inc()
        log.error(
            "sent %s[%s]@%s to %s after %s attempts: %s",
            record.topic,
            record.partition,
            record.offset,
            dlq_name(record.topic),
            attempts,
            exc,
        )
        return _Outcome.DONE

    @staticmethod
    def _delivery(record: ConsumerRecord) -> Delivery:
        key = record.key.decode(errors="replace") if record.key else None
        return Delivery(record.topic, record.partition, record.offset, key)

    def _ok(self, topic: str, seconds: float, count: int = 1) -> None:
        m = self._metrics
        m.consumed.labels(m.service, topic, "ok").inc(count)
        m.handle_seconds.labels(m.service, topic).observe(seconds / max(count, 1))
        self.handled += count

    # -- plain (at-least-once) handling -------------------------------------------------

    async def _process_plain(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[ConsumerRecord]
    ) -> None:
        assert self._handler is not None
        handler = self._handler
        for record in records:
            outcome, event = await self._decode(record)
            if outcome is _Outcome.DONE and event is not None:

                async def run(ev: CloudEvent[Any] = event, rec: ConsumerRecord = record) -> None:
                    await handler(ev, self._delivery(rec))

                outcome = await self._attempts(tp, record, event, run)
            if outcome is _Outcome.RETRY:
                self._pause(consumer, tp, record.offset)
                return
            self._pending[tp] = record.offset + 1
            self._backoff.pop(tp, None)
            if self._stopping.is_set():
                return

    async def _attempts(
        self,
        tp: TopicPartition,
        record: ConsumerRecord,
        event: CloudEvent[Any],
        run: Callable[[], Awaitable[None]],
    ) -> _Outcome:
        """Run one event's handling; transient → RETRY, permanent N times → DLQ."""
        token = correlation_id.set(event.correlationid)
        try:
            for attempt in range(1, self._max_attempts + 1):
                start = time.perf_counter()
                try:
                    await run()
                except store.StaleOffset:
                    self._db_next.pop(tp, None)  # another member moved on; _align re-reads
                    return _Outcome.RETRY
                except Exception as exc:
                    if is_transient(exc):
                        self._transient(tp, record, exc)
                        return _Outcome.RETRY
                    log.warning(
                        "handling %s %s failed (attempt %s of %s)",
                        event.type,
                        event.id,
                        attempt,
                        self._max_attempts,
                        exc_info=True,
                    )
                    if attempt == self._max_attempts:
                        return await self._dead_letter(record, exc, attempts=attempt)
                    await asyncio.sleep(min(0.1 * 2**attempt, 1.0))
                    continue
                self._ok(tp.topic, time.perf_counter() - start)
                return _Outcome.DONE
        finally:
            correlation_id.reset(token)
        return _Outcome.DONE  # unreachable: the last attempt returns

    # -- transactional (exactly-once effects) handling ----------------------------------

    async def _process_tx_round(
        self, consumer: AIOKafkaConsumer, batches: dict[TopicPartition, list[ConsumerRecord]]
    ) -> None:
        """One poll's partitions in one transaction (statements batch across them); if
        that fails, partition by partition, each with its own failure handling."""
        ready: list[tuple[TopicPartition, list[ConsumerRecord], list[_Item]]] = []
        # Partition order, not the poll's: instances reading the same partitions (broadcast)
        # then take row locks in the same order instead of deadlocking each other.
        for tp in sorted(batches):  # a TopicPartition sorts as (topic, partition)
            records = batches[tp]
            if tp in self._paused or not records:
                continue
            prepared = await self._prepare_tx(consumer, tp, records)
            if prepared is not None:
                ready.append((tp, prepared[0], prepared[1]))
        if len(ready) > 1 and not self._stopping.is_set():
            start = time.perf_counter()
            try:
                await self._commit_many([(tp, items) for tp, _, items in ready])
            except Exception as exc:
                log.info(
                    "poll batch over %s partitions failed as one, now partition by "
                    "partition: %s: %s",
                    len(ready),
                    type(exc).__name__,
                    exc,
                )
            else:
                elapsed = time.perf_counter() - start
                total = sum(len(items) for _, _, items in ready)
                for tp, records, items in ready:
                    self._committed_tx(consumer, tp, records, items, elapsed * len(items) / total)
                return
        for tp, records, items in ready:
            await self._finish_tx(consumer, tp, records, items)
            if self._stopping.is_set():
                break

    async def _prepare_tx(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[ConsumerRecord]
    ) -> tuple[list[ConsumerRecord], list[_Item]] | None:
        """The records still to handle and their decoded items; None when there are none
        (the partition may have been paused)."""
        assert self._sessions is not None
        try:
            records = await self._align(consumer, tp, records)
        except Exception as exc:
            if not is_transient(exc):
                raise
            self._transient(tp, records[0], exc)
            self._pause(consumer, tp, records[0].offset)
            return None
        if not records:
            return None
        items: list[_Item] = []
        for record in records:
            outcome, event = await self._decode(record)
            if outcome is _Outcome.RETRY:
                break
            items.append(_Item(record, event))
        if not items:
            self._pause(consumer, tp, records[0].offset)
            return None
        return records, items

    async def _finish_tx(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        records: list[ConsumerRecord],
        items: list[_Item],
    ) -> None:
        """Commit one partition's items, handling a failure as that partition's alone."""
        start = time.perf_counter()
        try:
            await self._commit_items(tp, items)
        except store.StaleOffset as exc:
            log.info("partition %s[%s] moved on elsewhere: %s", tp.topic, tp.partition, exc)
            self._db_next.pop(tp, None)
            consumer.seek(tp, items[0].record.offset)  # _align reads the stored offset
            return
        except Exception as exc:
            if is_conflict(exc):
                # Crossed another transaction (another instance's batch): smaller ones lock
                # fewer rows, each in a fixed order, so they go through.
                log.info("batch on %s[%s] crossed another: one by one", tp.topic, tp.partition)
                await self._one_by_one(consumer, tp, items)
                return
            if is_transient(exc):
                self._transient(tp, items[0].record, exc)
                self._pause(consumer, tp, items[0].record.offset)
                return
            log.warning(
                "batch of %s on %s[%s] failed, handling it one by one: %s",
                len(items),
                tp.topic,
                tp.partition,
                exc,
            )
            await self._one_by_one(consumer, tp, items)
            return
        self._committed_tx(consumer, tp, records, items, time.perf_counter() - start)

    def _committed_tx(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        records: list[ConsumerRecord],
        items: list[_Item],
        seconds: float,
    ) -> None:
        handled = sum(1 for i in items if i.event is not None)
        if handled:
            self._ok(tp.topic, seconds, handled)
        self._backoff.pop(tp, None)
        if len(items) < len(records):  # the DLQ was unreachable for the next one
            self._pause(consumer, tp, records[len(items)].offset)

    async def _align(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[ConsumerRecord]
    ) -> list[ConsumerRecord]:
        """Drop what the database already holds; seek when the stored offset is elsewhere."""
        assert self._sessions is not None
        if self._offsets is None:
            return records  # broadcast: nothing stored, the handler is idempotent
        if tp not in self._db_next:
            async with self._sessions() as session:
                stored = await store.read_offsets(
                    session, self._offsets, self.group_id, [(tp.topic, tp.partition)]
                )
            self._db_next[tp] = stored.get((tp.topic, tp.partition))
        expected = self._db_next[tp]
        first = records[0].offset
        if expected is None or expected == first:
            return records
        high = consumer.highwater(tp)
        if high is not None and high < expected:
            log.error(
                "%s[%s] ends at offset %s, below the stored offset %s of group %s: the topic "
                "was recreated (an empty broker?); reading it again from offset %s",
                tp.topic,
                tp.partition,
                high,
                expected,
                self.group_id,
                first,
            )
            async with self._sessions() as session, session.begin():
                await store.reset_offset(
                    session, self._offsets, self.group_id, tp.topic, tp.partition, first
                )
            self._db_next[tp] = first
            return records
        if first < expected:
            kept = [r for r in records if r.offset >= expected]
            if kept and kept[0].offset == expected:
                return kept
        consumer.seek(tp, expected)  # the database is the truth (e.g. after a restore)
        return []

    async def _commit_items(self, tp: TopicPartition, items: list[_Item]) -> None:
        await self._commit_many([(tp, items)])

    async def _commit_many(self, parts: list[tuple[TopicPartition, list[_Item]]]) -> None:
        """Handle the items of one or more partitions and store their next offsets, in one
        transaction."""
        assert self._sessions is not None
        assert self._tx_handler is not None
        tx_handler = self._tx_handler
        nexts = {tp: items[-1].record.offset + 1 for tp, items in parts}
        async with self._sessions() as session, session.begin():
            # The offsets first: a write, so SQLite takes its write lock before any read (no
            # stale snapshot to upgrade later), and on PostgreSQL a second member of the
            # group waits here instead of doing the work twice. In partition order, so
            # two transactions lock them in the same order.
            if self._offsets is not None:
                for tp in sorted(nexts):
                    await store.store_offset(
                        session,
                        self._offsets,
                        self.group_id,
                        tp.topic,
                        tp.partition,
                        expected=self._db_next.get(tp),
                        next_offset=nexts[tp],
                    )
            tx = Tx(session)
            for _, items in parts:
                for item in items:
                    if item.event is None:
                        continue
                    token = correlation_id.set(item.event.correlationid)
                    try:
                        await tx_handler(tx, item.event, self._delivery(item.record))
                    finally:
                        correlation_id.reset(token)
        for tp, next_offset in nexts.items():
            self._db_next[tp] = next_offset
            self._pending[tp] = next_offset
        for hook in tx.hooks:
            try:
                hook()
            except Exception:  # a hook is a nudge (wake, count): never undo the commit
                log.exception("after-commit hook failed")

    async def _one_by_one(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, items: list[_Item]
    ) -> None:
        """Isolate the failing message: each in its own transaction, with attempts."""
        for item in items:
            record, event = item.record, item.event
            if event is None:
                outcome = _Outcome.DONE
                try:
                    await self._commit_items(tp, [item])
                except Exception as exc:
                    outcome = self._classify_tx_error(consumer, tp, record, exc)
            else:

                async def run(one: _Item = item) -> None:
                    await self._commit_items(tp, [one])

                outcome = await self._attempts(tp, record, event, run)
                if outcome is _Outcome.DONE and self._pending.get(tp) != record.offset + 1:
                    # dead-lettered: move the stored offset past it in a transaction of its own
                    try:
                        await self._commit_items(tp, [_Item(record, None)])
                    except Exception as exc:
                        outcome = self._classify_tx_error(consumer, tp, record, exc)
            if outcome is _Outcome.RETRY:
                self._pause(consumer, tp, record.offset)
                return
            if self._stopping.is_set():
                return

    def _classify_tx_error(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, record: ConsumerRecord, exc: Exception
    ) -> _Outcome:
        if isinstance(exc, store.StaleOffset):
            self._db_next.pop(tp, None)
            return _Outcome.RETRY
        if is_transient(exc):
            self._transient(tp, record, exc)
            return _Outcome.RETRY
        raise exc

    # -- Kafka commits, revocation, lag -------------------------------------------------

    async def _commit(self, consumer: AIOKafkaConsumer, *, force: bool = False) -> None:
        """Commit handled offsets to Kafka; failures are counted and retried later, with a
        growing pause so a broker without the topic can't cause a log storm."""
        if self.broadcast:
            self._pending.clear()
            return
        assigned = consumer.assignment()
        offsets = {tp: n for tp, n in self._pending.items() if tp in assigned}
        self._pending = dict(offsets)
        if not offsets or (not force and time.monotonic() < self._next_commit):
            return
        try:
            await consumer.commit(offsets)
        except Exception as exc:
            m = self._metrics
            m.commit_failures.labels(m.service, self.group_id).inc()
            self._commit_failures += 1
            delay = min(0.5 * 2 ** min(self._commit_failures, 6), 30.0)
            self._next_commit = time.monotonic() + delay
            if self._commit_failures == 1 or self._commit_failures % 20 == 0:
                log.warning(
                    "offset commit of group %s failed (%s in a row, next try in %.0fs): %s",
                    self.group_id,
                    self._commit_failures,
                    delay,
                    exc,
                )
            return
        if self._commit_failures:
            log.info("offset commits of group %s work again", self.group_id)
        self._commit_failures = 0
        # With the offsets in the database, a Kafka commit only shows progress: one a second
        # is enough (a poll round each time cost an OffsetCommit round trip).
        stored = self._tx_handler is not None and self._offsets is not None
        self._next_commit = time.monotonic() + PROGRESS_COMMIT_SECONDS if stored else 0.0
        for tp, n in offsets.items():
            if self._pending.get(tp) == n:
                del self._pending[tp]

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        consumer = self._consumer
        if consumer is not None:
            offsets = {tp: n for tp, n in self._pending.items() if tp in revoked}
            if offsets:
                try:
                    await consumer.commit(offsets)
                except Exception as exc:  # the next owner redoes them (idempotent effects)
                    m = self._metrics
                    m.commit_failures.labels(m.service, self.group_id).inc()
                    log.warning("commit on revocation failed (group %s): %s", self.group_id, exc)
        for tp in revoked:
            self._pending.pop(tp, None)
            self._paused.pop(tp, None)
            self._backoff.pop(tp, None)
            self._db_next.pop(tp, None)
        self._set_paused_gauge()

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:  # read the stored offset again before handling anything
            self._db_next.pop(tp, None)

    async def _update_lag(self, consumer: AIOKafkaConsumer) -> set[str]:
        """Report lag per partition; return the topics fully read (every highwater known)."""
        # highwater comes from Fetch responses, which the embedded broker reports correctly
        m = self._metrics
        assigned = consumer.assignment()
        for tp in self._lag_reported - assigned:  # moved to another instance: not ours now
            with contextlib.suppress(KeyError):
                m.lag.remove(m.service, self.group_id, tp.topic, str(tp.partition))
        self._lag_reported = set(assigned)
        behind_topics: set[str] = set()
        for tp in assigned:
            high = consumer.highwater(tp)
            if high is None:
                behind_topics.add(tp.topic)
                continue
            behind = max(0, high - await consumer.position(tp))
            m.lag.labels(m.service, self.group_id, tp.topic, str(tp.partition)).set(behind)
            if behind:
                behind_topics.add(tp.topic)
        return {tp.topic for tp in assigned} - behind_topics


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commit what was handled before partitions move; re-read stored offsets after."""

    def __init__(self, owner: SupervisedConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._owner._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._owner._on_assigned(set(assigned))
