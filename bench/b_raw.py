"""raw: aiokafka produce -> consume of 1 KB JSON on the embedded broker.

One process, one event loop: a producer task sends N messages with ``acks=all`` without
awaiting each send (batched by aiokafka), a consumer task (another task in the same loop)
reads them back from the 4 partitions and JSON-decodes each. Reported per run:

- produce rate: N / time until every send was acknowledged;
- end-to-end rate: N / time from the first send to the last message consumed;
- per-message latency (send() called -> message decoded by the consumer): p50/p99. In the
  flood run this is mostly queueing (everything is sent at once), so a paced run at a
  fixed, modest rate follows, whose latency is the broker round trip without a backlog.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.common import Outcome, Table, median, ms, pct, progress
from shared.kafka.admin import ensure_topics
from tools.broker import EmbeddedBroker

PARTITIONS = 4
SIZE = 1024
PRODUCER = {"acks": "all", "linger_ms": 5, "max_batch_size": 262144, "enable_idempotence": False}
# aiokafka's default fetch_max_wait_ms is 500; the services default to 100 (measured).
LOW_WAIT = {"fetch_max_wait_ms": 10}


def _payload(i: int, pad: str) -> bytes:
    return json.dumps({"i": i, "t": time.perf_counter(), "pad": pad}).encode()


def _pad() -> str:
    probe = json.dumps({"i": 0, "t": time.perf_counter(), "pad": ""})
    return "x" * (SIZE - len(probe) - 4)  # i and t grow by a few digits


class _Reader:
    def __init__(
        self, bootstrap: str, topic: str, expected: int, extra: dict[str, Any] | None = None
    ) -> None:
        self.bootstrap, self.topic, self.expected = bootstrap, topic, expected
        self.extra = extra or {}
        self.latencies: list[float] = []
        self.last = 0.0
        self.done = asyncio.Event()
        self.consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
            **self.extra,
        )
        await self.consumer.start()
        parts = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]
        self.consumer.assign(parts)
        await self.consumer.seek_to_beginning(*parts)

    async def run(self) -> None:
        assert self.consumer is not None
        n = 0
        while n < self.expected:
            batches = await self.consumer.getmany(timeout_ms=100, max_records=5000)
            for records in batches.values():
                for rec in records:
                    obj = json.loads(rec.value)
                    now = time.perf_counter()
                    self.latencies.append(now - obj["t"])
                    n += 1
            if batches:
                self.last = time.perf_counter()
        self.done.set()

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()


async def _topic(bootstrap: str) -> str:
    name = f"bench.raw.{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, [name], partitions=PARTITIONS)
    return name


@asynccontextmanager
async def _round_trip(
    bootstrap: str, n: int, consumer: dict[str, Any] | None = None
) -> AsyncIterator[tuple[str, AIOKafkaProducer, _Reader, asyncio.Task[None]]]:
    """A fresh topic, a producer and a reader consuming ``n`` messages in another task."""
    topic = await _topic(bootstrap)
    reader = _Reader(bootstrap, topic, n, consumer)
    await reader.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER)
    await producer.start()
    consume = asyncio.create_task(reader.run())
    try:
        yield topic, producer, reader, consume
    finally:
        await producer.stop()
        await reader.stop()


async def flood(bootstrap: str, n: int) -> dict[str, Any]:
    """Send n messages as fast as possible; consume them in another task."""
    async with _round_trip(bootstrap, n) as (topic, producer, reader, consume):
        pad = _pad()
        t0 = time.perf_counter()
        futures = []
        for i in range(n):
            futures.append(await producer.send(topic, _payload(i, pad)))
        t_enqueued = time.perf_counter()
        await asyncio.gather(*futures)
        t_acked = time.perf_counter()
        await asyncio.wait_for(consume, timeout=120)
    lat = reader.latencies
    return {
        "messages": n,
        "produce_rate": n / (t_acked - t0),
        "enqueue_rate": n / (t_enqueued - t0),
        "e2e_rate": n / (reader.last - t0),
        "p50_ms": ms(pct(lat, 50)),
        "p99_ms": ms(pct(lat, 99)),
    }


async def paced(
    bootstrap: str, rate: float, seconds: float, consumer: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Send at ``rate`` msg/s (in 2 ms ticks) and measure the per-message latency."""
    n = int(rate * seconds)
    async with _round_trip(bootstrap, n, consumer) as (topic, producer, reader, consume):
        pad = _pad()
        t0 = time.perf_counter()
        sent = 0
        futures = []
        while sent < n:
            due = min(n, int((time.perf_counter() - t0) * rate) + 1)
            while sent < due:
                futures.append(await producer.send(topic, _payload(sent, pad)))
                sent += 1
            await asyncio.sleep(0.002)
        await asyncio.gather(*futures)
        await asyncio.wait_for(consume, timeout=120)
    lat = reader.latencies
    return {
        "rate": rate,
        "consumer": consumer or {"fetch_max_wait_ms": "500 (default)"},
        "messages": n,
        "p50_ms": ms(pct(lat, 50)),
        "p99_ms": ms(pct(lat, 99)),
    }


async def measure(quick: bool, *, runs: int | None = None) -> dict[str, Any]:
    """Flood runs (and one paced run) on a broker of their own."""
    n = 30_000 if quick else 200_000
    runs = runs or (1 if quick else 3)
    broker = EmbeddedBroker()
    broker.start()
    try:
        floods = []
        for r in range(runs):
            progress(f"raw: flood run {r + 1}/{runs}, {n:,} x 1 KB")
            floods.append(await flood(broker.bootstrap, n))
        rate = 2000.0
        slow = []
        for consumer in (None, LOW_WAIT):
            progress(f"raw: paced run at {rate:.0f} msg/s, consumer {consumer or 'defaults'}")
            slow.append(await paced(broker.bootstrap, rate, 2.0 if quick else 5.0, consumer))
    finally:
        broker.stop()
    return {
        "floods": floods,
        "paced": slow,
        "produce_rate": median(f["produce_rate"] for f in floods),
        "e2e_rate": median(f["e2e_rate"] for f in floods),
    }


async def run(session: Any) -> Outcome:
    data = await measure(session.quick)
    session.raw = data
    t = Table(
        "raw: aiokafka produce -> consume, 1 KB JSON, embedded broker (Tansu), 4 partitions",
        ["run", "messages", "produce msg/s", "end-to-end msg/s", "p50 ms", "p99 ms"],
    )
    for i, f in enumerate(data["floods"], 1):
        t.add(
            f"flood {i}", f["messages"], f["produce_rate"], f["e2e_rate"], f["p50_ms"], f["p99_ms"]
        )
    t.add("flood median", None, data["produce_rate"], data["e2e_rate"], None, None)
    for p in data["paced"]:
        wait = p["consumer"]["fetch_max_wait_ms"]
        label = f"paced {p['rate']:.0f} msg/s, fetch_max_wait_ms={wait}"
        t.add(label, p["messages"], None, None, p["p50_ms"], p["p99_ms"])
    t.notes += [
        f"producer: {PRODUCER}; consumer: another task in the same event loop, JSON-decodes "
        "every message (flood: aiokafka consumer defaults)",
        "flood latency = queueing behind the whole batch (all sent at once); paced latency = "
        "round trip without backlog",
        "Tansu answers a Fetch only when fetch_max_wait_ms expires, not when data arrives: "
        "at 500 ms (aiokafka's default and KAFKA_FETCH_MAX_WAIT_MS's) every Kafka hop adds "
        "this latency",
    ]
    return Outcome("raw", [t], data)
