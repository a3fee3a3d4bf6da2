"""faust's Kafka transport, changed so that no fetched record can be skipped.

faust drops records it has fetched when its flow stops (a rebalance, a table recovery)
and relies on seeking back to the committed offsets to fetch them again. Two things
defeated that, and each lost communiqués after a worker was killed:

- aiokafka only seeks when a partition has a committed offset above 0, so a partition
  never committed (a worker killed before its first commit) kept its position past the
  dropped records. Such stream partitions now go back to their beginning, which is what
  ``auto_offset_reset="earliest"`` means.
- faust remembers the last offset it read per partition, drops records below it and
  counts any jump above it as a compaction gap, i.e. as processed. A seek racing with
  records fetched before it (at the end of a table recovery) left that mark too high,
  so refetched records were dropped and the commit moved past them. The input topics
  are neither compacted nor transactional, so the consumer here keeps no such mark:
  a record read twice is processed twice (evaluation is idempotent), never skipped.

And whatever drops a record, its commit cannot pass it: faust moved the commit past a
lone unacknowledged record at the committed offset; here any such hole holds the commit
and the partition is read again from it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger(__name__)


class RewindingConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Seeks never-committed stream partitions to their beginning."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # faust hard-codes 1500 ms; aiokafka reads this attribute when the consumer starts.
        consumer._fetch_max_wait_ms = cast("MonitorApp", self.app).fetch_max_wait_ms
        return consumer

    async def seek_to_committed(self) -> Mapping[Any, int]:
        return await self.call_thread(self._seek_to_committed_or_beginning)  # type: ignore[no-any-return]

    async def _seek_to_committed_or_beginning(self) -> Mapping[Any, int]:
        consumer = self._ensure_consumer()
        committed: Mapping[Any, int | None] = await consumer.seek_to_committed()
        # Only the stream topics, whose offsets are committed; table changelogs and
        # faust's leader topic are positioned by faust itself.
        acking = self.app.topics.acks_enabled_for
        rewind = [tp for tp, offset in committed.items() if not offset and acking(tp.topic)]
        if rewind:
            await consumer.seek_to_beginning(*rewind)
        return committed  # type: ignore[return-value]


class _NoReadMark(dict[Any, int | None]):
    """A read-offset map that never remembers: every record is taken, no gap is added."""

    def __getitem__(self, key: Any) -> None:
        return None

    def __setitem__(self, key: Any, value: int | None) -> None:
        return None


class RewindingConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer: no read mark, holes read again, and
    :class:`RewindingConsumerThread`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_offset = _NoReadMark()
        self._holes: set[Any] = set()

    def _new_offset(self, tp: Any) -> int | None:
        # faust commits past a lone unacknowledged record at the committed offset (it only
        # stops at a gap of two). Records are acknowledged in order, so processed records
        # above the committed offset mean the one at it never reached its agent.
        acked, committed = self._acked[tp], self._committed_offset[tp]
        if acked and committed is not None and min(acked) > committed:
            self._holes.add(tp)
            return None
        return super()._new_offset(tp)

    async def _commit_tps(self, tps: Any, start_new_transaction: bool) -> bool:
        committed = await super()._commit_tps(tps, start_new_transaction)
        holes, self._holes = self._holes, set()
        assigned = self.assignment()
        for tp in holes:
            offset = self._committed_offset[tp]
            if offset is not None and tp in assigned:
                log.warning("offset %s of %s was skipped; reading from it again", offset, tp)
                await self.seek(tp, offset)
        return committed

    def _new_consumer_thread(self) -> RewindingConsumerThread:
        return RewindingConsumerThread(self, loop=self.loop, beacon=self.beacon)


class RewindingTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport with :class:`RewindingConsumer`."""

    Consumer = RewindingConsumer


class MonitorApp(faust.App):
    """A faust app that consumes through :class:`RewindingTransport`."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int = 1500, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetch_max_wait_ms = fetch_max_wait_ms

    def _new_transport(self) -> RewindingTransport:
        return RewindingTransport(self.conf.broker_consumer, self)
