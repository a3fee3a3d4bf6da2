"""The corrections of faust in ``transport.py`` that need no broker: what the worker is
built with, and what its consumer thread asks aiokafka for.

The SIGKILL test in ``test_restarts.py`` is what shows them working together.
"""

from __future__ import annotations

from typing import Any

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from services.monitor.analytics.app import build_app
from services.monitor.analytics.metrics import AnalyticsMetrics
from services.monitor.analytics.settings import AnalyticsSettings
from services.monitor.analytics.transport import (
    FlushingProducer,
    SeekFirstRecovery,
    TrueEndConsumer,
    TrueEndConsumerThread,
)


def test_the_worker_is_built_with_the_corrected_pieces() -> None:
    app: Any = build_app(AnalyticsSettings())
    assert isinstance(app.tables.recovery, SeekFirstRecovery)
    assert app.transport.Consumer is TrueEndConsumer
    assert isinstance(app.producer, FlushingProducer)


async def test_the_consumer_thread_fetches_a_copy_of_the_active_partitions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[Any] = []

    async def getmany(self: Any, active: Any, timeout: float) -> dict[TP, list[Any]]:
        asked.append(active)
        return {}

    monkeypatch.setattr(faust_aiokafka.AIOKafkaConsumerThread, "getmany", getmany)
    thread = object.__new__(TrueEndConsumerThread)
    live = {TP("t", 0)}
    await thread.getmany(live, 1.0)
    live.clear()  # faust pausing partitions while aiokafka waits
    assert asked == [{TP("t", 0)}]
    assert asked[0] is not live
    # Nothing active: no fetch at all (aiokafka would take it for every partition).
    assert await thread.getmany(set(), 1.0) == {}
    assert len(asked) == 1


async def test_a_gap_in_a_stream_partition_is_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = AnalyticsMetrics()
    app: Any = build_app(AnalyticsSettings(), metrics)
    # Every input topic's series exists at 0 from the start, or the alert's increase()
    # would miss the first gap.
    for topic in ("absch.ircc.v1", "absch.cpc.v1", "absch.discrepancy.v1"):
        zero = metrics.registry.get_sample_value(
            "monitor_analytics_offset_gaps_total", {"topic": topic}
        )
        assert zero == 0, topic
    consumer = app.consumer
    tp = TP("absch.cpc.v1", 1)
    await consumer._add_gap(tp, 5, 7)
    gaps = metrics.registry.get_sample_value(
        "monitor_analytics_offset_gaps_total", {"topic": "absch.cpc.v1"}
    )
    assert gaps == 3
    assert "offsets 5..7 of absch.cpc.v1[1] passed without reaching an agent" in caplog.text
    assert sorted((i.begin, i.end) for i in consumer._gap[tp]) == [(5, 8)]  # faust's own
    await consumer._add_gap(tp, 9, 8)  # nothing passed: nothing counted
    assert (
        metrics.registry.get_sample_value(
            "monitor_analytics_offset_gaps_total", {"topic": "absch.cpc.v1"}
        )
        == 3
    )
