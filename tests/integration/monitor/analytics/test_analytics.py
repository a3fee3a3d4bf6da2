"""Utilization analytics on a real broker: exact windowed counts, alerts once, restarts.

Alerts are read back from ``absch.utilization.v1`` and deduplicated by event id, as the
notifier's consumers do: a restarted worker may send an alert again, with the same id.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.types import TP

from services.monitor.analytics.__main__ import INPUTS
from services.monitor.analytics.counting import month_of
from services.monitor.analytics.transport import fetched_highwaters
from shared.events import CloudEvent, Topic, topic_name
from shared.kafka.admin import ensure_topics
from tests.integration.monitor.analytics.support import (
    AnalyticsWorker,
    Workload,
    build,
    closing,
    cpc,
    expected_reports,
    merged,
)
from tests.support.kafka import TopicReader
from tests.support.poll import eventually

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)


@asynccontextmanager
async def workers(
    kafka: str, prefix: str, tmp_path: Path, n: int = 1, store: str = "memory://"
) -> AsyncIterator[list[AnalyticsWorker]]:
    """``n`` workers of one app id of their own; stopped cleanly at the end."""
    await ensure_topics(kafka, [topic_name(t, prefix) for t in INPUTS])
    app_id = f"{prefix}analytics"
    started = [
        AnalyticsWorker(
            kafka=kafka, prefix=prefix, app_id=app_id, log=tmp_path / f"w{i}.log", store=store
        )
        for i in range(n)
    ]
    try:
        for w in started:
            await w.start()
        yield started
    finally:
        for w in started:
            w.stop()


async def counts(ws: list[AnalyticsWorker]) -> dict[str, dict[str, Any]] | None:
    """Merged month counts of every worker, None while one cannot answer."""
    locals_ = [await w.local() for w in ws]
    if any(x is None for x in locals_):
        return None
    return merged([x for x in locals_ if x is not None])


def counted(months: dict[str, dict[str, Any]] | None) -> int:
    """Citations counted so far."""
    return sum(sum(m["cells"].values()) for m in (months or {}).values())


async def until_exact(ws: list[AnalyticsWorker], w: Workload, timeout: float = 90) -> None:
    """Poll until the windowed counts equal the pure recount."""
    expected = w.months()

    async def exact() -> bool:
        return await counts(ws) == expected

    await eventually(exact, timeout=timeout, what="counts equal to the recount")


def distinct(events: list[CloudEvent[Any]], kind: str) -> dict[str, CloudEvent[Any]]:
    """Alerts of one type by event id (the notifier's deduplication)."""
    return {e.id: e for e in events if e.type == kind}


def alerts_complete(w: Workload) -> Callable[[list[CloudEvent[Any]]], bool]:
    pairs, reports = w.pairs(), expected_reports(w)

    def done(events: list[CloudEvent[Any]]) -> bool:
        firsts = distinct(events, "utilization.first_use").values()
        monthly = distinct(events, "utilization.report").values()
        return {(e.data.provider_country, e.data.user_country) for e in firsts} >= pairs and {
            (e.data.provider_country, e.data.month) for e in monthly
        } >= reports

    return done


def check_alerts(events: list[CloudEvent[Any]], w: Workload) -> None:
    """One first-use alert per pair, one report per provider and month, reports exact."""
    firsts = distinct(events, "utilization.first_use").values()
    first_pairs = [(e.data.provider_country, e.data.user_country) for e in firsts]
    assert sorted(first_pairs) == sorted(w.pairs())
    reports = distinct(events, "utilization.report").values()
    keys = [(e.data.provider_country, e.data.month) for e in reports]
    assert sorted(keys) == sorted(expected_reports(w))
    recount = w.months()
    for e in reports:
        month = recount[f"{e.data.provider_country}|{e.data.month}"]
        users: dict[str, int] = {}
        for cell, n in month["cells"].items():
            users[cell.split("|")[0]] = users.get(cell.split("|")[0], 0) + n
        assert e.data.users == users
        assert e.data.citations == sum(users.values())
        assert e.data.discrepancies == month["discrepancies"]
        assert e.data.checkpoints == month["checkpoints"]


async def test_counts_stay_exact_and_alerts_go_once_across_three_sigkills(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    w = build(seed=17)
    assert w.citations() > 300
    assert len(w.pairs()) == 30
    events = list(w.events)
    thirds = [events[: len(events) // 3], events[len(events) // 3 : 2 * len(events) // 3]]
    thirds.append(events[2 * len(events) // 3 :])
    alerts = topic_name(Topic.UTILIZATION, topic_prefix)
    async with workers(kafka_bootstrap, topic_prefix, tmp_path) as (worker,):
        recoveries = []
        for part in thirds[:2]:
            before = counted(await counts([worker]))
            await w.produce(kafka_bootstrap, topic_prefix, part)

            async def moved(before: int = before) -> bool:
                return counted(await counts([worker])) > before

            await eventually(moved, timeout=60, what="counting under way")
            worker.kill()  # mid-stream: the rest of the part is not counted yet
            recoveries.append(await worker.start())
        await w.produce(kafka_bootstrap, topic_prefix, thirds[2])
        await until_exact([worker], w)
        await w.produce(kafka_bootstrap, topic_prefix, closing(w))
        async with TopicReader(kafka_bootstrap, alerts) as reader:
            await reader.read_until(lambda evs: any(e.type == "utilization.report" for e in evs))
            worker.kill()  # while reports go out
            recoveries.append(await worker.start())
            await until_exact([worker], w)
            await reader.read_until(alerts_complete(w), timeout=60)
        log.info("restart to ready after SIGKILL, seconds: %s", recoveries)
        check_alerts(reader.events, w)
        assert await counts([worker]) == w.months()


async def test_a_rocksdb_store_keeps_counting_exactly_across_a_sigkill(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """The deployment store: the worker restarts from its local RocksDB and the offsets
    it stored, reading only the changelog's tail (whose end must be the true one)."""
    w = build(seed=31, cpcs=80, amended=5, duplicates=5)
    half = len(w.events) // 2
    store = "rocksdb://"
    async with workers(kafka_bootstrap, topic_prefix, tmp_path, store=store) as (worker,):
        await w.produce(kafka_bootstrap, topic_prefix, w.events[:half])

        async def moved() -> bool:
            return counted(await counts([worker])) > 0

        await eventually(moved, timeout=60, what="counting under way")
        await w.produce(kafka_bootstrap, topic_prefix, w.events[half:])
        worker.kill()
        await worker.start()
        await until_exact([worker], w)
        assert any((tmp_path / "data-w0").rglob("*.sst")) or any(
            (tmp_path / "data-w0").rglob("CURRENT")
        )


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
