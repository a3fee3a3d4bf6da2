"""Utilization analytics on a real broker: exact counts and alerts sent once across SIGKILLs.

Alerts are read back from ``absch.utilization.v1`` and deduplicated by event id, as the
notifier's consumers do: a restarted worker may send an alert again, with the same id.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from shared.events import Topic, topic_name
from tests.integration.monitor.analytics.harness import (
    alerts_complete,
    check_alerts,
    counted,
    counts,
    until_exact,
    workers,
)
from tests.integration.monitor.analytics.support import build, closing
from tests.support.kafka import TopicReader
from tests.support.poll import eventually

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)


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
        # No input passed uncounted (the worker logs and counts any such gap).
        assert "passed without reaching an agent" not in worker.log.read_text()


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
