"""faust's Kafka transport, corrected where the analytics' exact counts depend on it.

*True changelog ends.* faust recovers a table by reading its changelog partitions up to
the end offsets it gets from ``AIOKafkaConsumerThread._highwaters`` (ListOffsets
"latest"). The embedded broker answers that short: the base offset of the newest batch + 1,
not the high watermark (``docs/broker.md``), so recovery stopped before the last updates
and lost them. The high watermark a Fetch response carries is right on every broker, so
this transport reads it: one short-lived consumer without a group fetches from just below
the listed end of each partition, and the larger of the two numbers is the end. On Apache
Kafka both are equal.

Three more corrections of faust-streaming 0.15.3, found tracing counts lost across
SIGKILLs (ADR 0004). Each alone still lost messages; together they hold:

- *Fetch only what is active* (:meth:`TrueEndConsumerThread.getmany`). faust hands its
  live set of active partitions to the consumer thread, and aiokafka reads it again while
  it waits for records; once recovery pauses the changelogs the set is empty, which
  aiokafka takes as "every partition". It then drained paused stream partitions, faust
  discarded those records, and the consumer's position had moved past them. The thread is
  given a copy, and an empty one fetches nothing.
- *Seek before resume* (:class:`SeekFirstRecovery`). faust ends a recovery by resuming the
  stream partitions, awaiting the seek to the committed offsets, then resuming flow
  control, which empties every agent's queue. Messages fetched while the seek was awaited
  were queued and thrown away; the read offset had moved past them, so their refetched
  copies were dropped as seen, and faust's gap tracking (``Consumer._add_gap``) counted
  them as done, so the next commit passed them. Here the stream partitions stay paused
  through the seek and are resumed with the flow, with no await in between.
- *A flush that waits* (:class:`FlushingProducer`). Before committing offsets faust flushes
  its producer, but its buffer's flush gives up after 0.1 s without a send and does not
  count the message being handed to the client, so table changelog writes could still be
  on their way when the offsets that made them were committed. This flush also waits until
  every message handed to ``send_soon`` is acknowledged.

This is the only place the project changes faust's behaviour; the app selects it with
``TrueEndApp``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiokafka
import faust
from faust.exceptions import ProducerSendError
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.tuples import FutureMessage

log = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 10.0


async def fetched_highwaters(
    servers: list[str], listed: Mapping[TP, int], *, timeout: float = PROBE_TIMEOUT_SECONDS
) -> dict[TP, int]:
    """High watermarks of ``listed``'s partitions as Fetch responses give them.

    ``listed`` holds the ends ListOffsets gave; each partition is fetched from one below
    that (an empty partition from 0), so the answer comes at once with records in it.
    """
    if not listed:
        return {}
    probe = aiokafka.AIOKafkaConsumer(
        bootstrap_servers=servers,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=1024,  # the newest batch is fetched whole anyway
    )
    tps = [aiokafka.TopicPartition(tp.topic, tp.partition) for tp in listed]
    await probe.start()
    try:
        probe.assign(tps)
        for tp, end in zip(tps, listed.values(), strict=True):
            probe.seek(tp, max(end - 1, 0))
        deadline = time.monotonic() + timeout
        while any(probe.highwater(tp) is None for tp in tps):
            if time.monotonic() > deadline:
                missing = [tp for tp in tps if probe.highwater(tp) is None]
                raise TimeoutError(f"no fetch answer for {missing}")
            await probe.getmany(timeout_ms=100)
        return {
            tp: max(listed[tp], int(probe.highwater(atp)))
            for tp, atp in zip(listed, tps, strict=True)
        }
    finally:
        await probe.stop()


class TrueEndConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's consumer thread whose end offsets come from Fetch high watermarks, and
    whose fetches ask for the partitions active when they were asked for."""

    async def getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        # faust passes its live set; aiokafka reads it again while waiting, and an empty
        # set means every partition to it: a fetch asked for with only changelogs active
        # could drain paused stream partitions, whose records faust then discards.
        if active_partitions is None:  # client-only: every partition, as faust's
            return await super().getmany(None, timeout)
        asked = set(active_partitions)
        return await super().getmany(asked, timeout) if asked else {}

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        listed = await super()._highwaters(partitions)
        if self.consumer.in_transaction:  # last stable offsets, not ends: left as they are
            return listed
        transport: Any = self.transport
        servers = faust_aiokafka.server_list(transport.url, transport.default_port)
        ends = await fetched_highwaters(servers, dict(listed))
        short = {tp: (listed[tp], ends[tp]) for tp in ends if ends[tp] != listed[tp]}
        if short:
            log.info("changelog ends corrected from ListOffsets to Fetch: %s", short)
        return ends


class TrueEndConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer using :class:`TrueEndConsumerThread`, and saying so when
    it passes offsets of a stream partition that never reached an agent."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return TrueEndConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        # faust counts a gap in a stream partition's offsets as done: the next commit
        # passes it. Our input topics are neither compacted nor transactional, so a gap is
        # a message the agents never saw (the loss the corrections above prevent).
        if offset_from <= offset_to:
            log.error(
                "offsets %d..%d of %s[%d] passed without reaching an agent",
                offset_from,
                offset_to,
                tp.topic,
                tp.partition,
            )
            listener = getattr(self.app, "on_offset_gap", None)
            if listener is not None:
                listener(tp, offset_to - offset_from + 1)
        await super()._add_gap(tp, offset_from, offset_to)


class FlushingProducer(faust_aiokafka.Producer):
    """faust's aiokafka producer whose flush waits for every buffered message."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._unsent: set[FutureMessage] = set()
        self._send_error: BaseException | None = None

    def send_soon(self, fut: FutureMessage) -> None:
        self._unsent.add(fut)
        fut.add_done_callback(self._sent)
        super().send_soon(fut)

    def _sent(self, fut: Any) -> None:
        self._unsent.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            self._send_error = fut.exception()

    async def flush(self) -> None:
        await super().flush()
        # The buffer's flush may return with messages still queued or being handed over.
        # As long as the client itself may take to deliver or fail a send.
        deadline = time.monotonic() + self.app.conf.producer_request_timeout
        while self._unsent:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProducerSendError(f"{len(self._unsent)} buffered sends still pending")
            await asyncio.wait(list(self._unsent), timeout=left)
        if self._send_error is not None:
            # Committing now would pass offsets whose table writes are lost.
            raise ProducerSendError(f"a buffered send failed: {self._send_error!r}")


class SeekFirstRecovery(Recovery):
    """faust's table recovery, ending with the seek before the stream partitions resume."""

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        """faust 0.15.3's ``Recovery.on_recovery_completed``, reordered (module docstring)."""
        app: Any = self.app
        consumer = app.consumer
        self.log.info("Restore complete!")
        await app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callbacks = [
            asyncio.ensure_future(
                table.on_recovery_completed(
                    self.actives_for_table[table], self.standbys_for_table[table]
                )
            )
            for table in self.tables.values()
        ]
        if callbacks:
            await asyncio.wait(callbacks)
        if app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again (generation %s)", generation_id)
            return
        streams = {tp for tp in consumer.assignment() if not self._is_changelog_tp(tp)}
        if streams:
            self.log.info("Seek stream partitions to committed offsets.")
            # Still paused: nothing of them is fetched before the seek lands.
            await self._wait(consumer.perform_seek(), timeout=app.conf.broker_request_timeout)
        if app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again (generation %s)", generation_id)
            return
        # No await from here to resume(): it empties the agents' queues, which must
        # still be empty of stream messages.
        consumer.resume_partitions(streams)
        self.completed.set()
        app.flow_control.resume()
        consumer.resume_flow()
        await app._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        app.on_rebalance_end()
        self.log.info("Worker ready")


class SeekFirstTableManager(TableManager):
    """faust's table manager with :class:`SeekFirstRecovery`."""

    @property
    def recovery(self) -> Recovery:
        """The recovery service (created on first use, as faust's)."""
        if self._recovery is None:
            self._recovery = SeekFirstRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


class TrueEndTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport with :class:`TrueEndConsumer` and
    :class:`FlushingProducer`."""

    Consumer = TrueEndConsumer
    Producer = FlushingProducer


class TrueEndApp(faust.App):
    """A faust app with :class:`TrueEndTransport` and :class:`SeekFirstTableManager`."""

    def __init__(self, id: str, **options: Any) -> None:
        options.setdefault("TableManager", SeekFirstTableManager)
        super().__init__(id, **options)
        # Called with the partition and the number of offsets a gap passes.
        self.on_offset_gap: Callable[[TP, int], None] | None = None

    def _new_transport(self) -> Any:
        return TrueEndTransport(self.conf.broker_consumer, self)
