"""Messages and bytes written to every topic since a point in time (by record timestamp)."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


async def topic_traffic(
    bootstrap: str, since_ms: int, until_ms: int, *, limit_s: float = 60.0
) -> dict[str, Any]:
    """Read every topic from the start; count records whose CreateTime is in the window.

    The end is found from the Fetch high watermark (``end_offsets`` is short on Tansu, see
    docs/broker.md): reading stops after three empty polls in a row, or after ``limit_s``.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    msgs: dict[str, int] = defaultdict(int)
    nbytes: dict[str, int] = defaultdict(int)
    complete = True
    try:
        topics = sorted(t for t in await consumer.topics() if not t.startswith("__"))
        parts = []
        for topic in topics:
            for p in consumer.partitions_for_topic(topic) or {0}:
                parts.append(TopicPartition(topic, p))
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + limit_s
        empty = 0
        while empty < 3:
            if time.monotonic() > deadline:
                complete = False
                break
            batches = await consumer.getmany(timeout_ms=300, max_records=10_000)
            if not batches:
                empty += 1
                continue
            empty = 0
            for tp, records in batches.items():
                for rec in records:
                    if since_ms <= rec.timestamp <= until_ms:
                        msgs[tp.topic] += 1
                        nbytes[tp.topic] += len(rec.value or b"") + len(rec.key or b"")
    finally:
        await consumer.stop()
    return {"messages": dict(msgs), "bytes": dict(nbytes), "complete": complete}
