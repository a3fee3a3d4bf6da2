"""faust's Kafka transport, with table recovery reading up to the true end of a changelog.

faust recovers a table by reading its changelog partitions up to the end offsets it gets
from ``AIOKafkaConsumerThread._highwaters`` (ListOffsets "latest"). The embedded broker
answers that short: the base offset of the newest batch + 1, not the high watermark
(``shared/BROKER.md``), so recovery stopped before the last updates and lost them. The
high watermark a Fetch response carries is right on every broker, so this transport
reads it: one short-lived consumer without a group fetches from just below the listed end
of each partition, and the larger of the two numbers is the end. On Apache Kafka both are
equal. This is the only place the project changes faust's behaviour; the app selects it
with ``TrueEndApp._new_transport``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

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
    """faust's consumer thread whose end offsets come from Fetch high watermarks."""

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
    """faust's aiokafka consumer using :class:`TrueEndConsumerThread`."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return TrueEndConsumerThread(self, loop=self.loop, beacon=self.beacon)


class TrueEndTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport with :class:`TrueEndConsumer`."""

    Consumer = TrueEndConsumer


class TrueEndApp(faust.App):
    """A faust app whose consumer transport is :class:`TrueEndTransport`."""

    def _new_transport(self) -> Any:
        return TrueEndTransport(self.conf.broker_consumer, self)
