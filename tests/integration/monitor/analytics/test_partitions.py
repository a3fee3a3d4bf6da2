"""Utilization analytics on a real broker: two workers, late IRCCs, true changelog ends.

Alerts are read back from ``absch.utilization.v1`` and deduplicated by event id, as the
notifier's consumers do: a restarted worker may send an alert again, with the same id.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.types import TP

from services.monitor.analytics.counting import month_of
from services.monitor.analytics.transport import fetched_highwaters
from shared.events import Topic
from shared.kafka.admin import ensure_topics
from tests.integration.monitor.analytics.harness import (
    counts,
    until_exact,
    workers,
)
from tests.integration.monitor.analytics.support import Workload, build, cpc
from tests.support.poll import eventually

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)


async def test_two_workers_own_disjoint_partitions_and_give_the_same_totals(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    w = build(seed=23)
    async with workers(kafka_bootstrap, topic_prefix, tmp_path, n=2) as ws:

        async def split() -> bool:
            locals_ = [await x.local() for x in ws]
            parts = [set(x["partitions"]) if x else set() for x in locals_]
            return all(parts) and not parts[0] & parts[1] and parts[0] | parts[1] == set(range(4))

        await eventually(split, timeout=60, what="partitions split between two workers")
        await w.produce(kafka_bootstrap, topic_prefix, w.events)
        await until_exact(ws, w)
        locals_ = [await x.local() for x in ws]
        providers = [set(x["providers"]) for x in locals_ if x]
        assert all(providers)
        assert not providers[0] & providers[1]
        assert providers[0] | providers[1] == {k.split("|")[0] for k in w.months()}


async def test_an_ircc_arriving_after_its_citations_gets_them(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    w = Workload()
    late = [e for e in build(seed=5, cpcs=0, amended=0, duplicates=0).events if e[0] == Topic.IRCC]
    ircc = next(e for e in late if e[2].type == "ircc.published")
    ident, provider = ircc[2].data.identifier, ircc[2].data.government
    w.provider_of[ident] = provider
    at = w_time = ircc[2].time.replace(month=4, day=10, year=2026)
    cpcs = [cpc(w, n, 1, user, [ident], at) for n, user in enumerate(["de", "fr", "de"], 1)]
    async with workers(kafka_bootstrap, topic_prefix, tmp_path) as (worker,):
        await w.produce(kafka_bootstrap, topic_prefix, cpcs)
        parked = f"{topic_prefix}analytics-parked-changelog"
        await eventually(
            lambda: _has_key(kafka_bootstrap, parked, ident, 3),
            timeout=60,
            what="the citations parked",
        )
        assert await counts([worker]) == {}
        assert "monitor_analytics_parked_total 3.0" in await worker.metrics()
        await w.produce(kafka_bootstrap, topic_prefix, [ircc])
        await until_exact([worker], w)
        text = await worker.metrics()
        assert 'monitor_analytics_counted_total{kind="citation"} 3.0' in text
        assert 'monitor_analytics_alerts_sent_total{type="utilization.first_use"} 2.0' in text
        assert f"{provider}|{month_of(w_time)}" in w.months()


async def _has_key(kafka: str, topic: str, key: str, citations: int) -> bool:
    """The changelog's latest value for ``key`` parks ``citations`` citations."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka, auto_offset_reset="earliest")
    await consumer.start()
    latest: Any = None
    try:
        batches = await consumer.getmany(timeout_ms=1000)
        for records in batches.values():
            for r in records:
                if r.key == f'"{key}"'.encode():
                    latest = r.value
    finally:
        await consumer.stop()
    return latest is not None and latest.count(b'"cpc_uid"') == citations


async def test_changelog_ends_come_from_fetch_high_watermarks(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """On the embedded broker ListOffsets answers short after a batched produce; the
    probe's answer is the true end there and the same number where ListOffsets is right."""
    topic = f"{topic_prefix}ends"
    await ensure_topics(kafka_bootstrap, [topic], partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=50)
    await producer.start()
    try:
        for _n in range(25):
            await producer.send(topic, b"x", partition=0)
        await producer.flush()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
        listed = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    ends = await fetched_highwaters(
        [kafka_bootstrap], {TP(tp.topic, tp.partition): listed[tp] for tp in tps}
    )
    assert ends == {TP(topic, 0): 25, TP(topic, 1): 0}
