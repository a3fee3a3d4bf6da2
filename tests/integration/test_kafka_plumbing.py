"""The consumer loop and the outbox relay against the real (embedded) broker."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from shared.events import CloudEvent, new_event
from shared.events.models import IrccEvent
from shared.kafka.admin import ensure_topics
from shared.kafka.consumer import Delivery, EventConsumer
from shared.kafka.producer import EventProducer
from shared.metrics import PlumbingMetrics
from tests.support.poll import eventually


def _event(n: int) -> CloudEvent[Any]:
    uid = f"ABSCH-IRCC-MX-{n}-1"
    data = IrccEvent(
        uid=uid, identifier=f"X-{n}", document_id=n, revision=1, government="mx", record={}
    )
    return new_event("ircc.published", source="registry", subject=uid, data=data)


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send_and_wait(topic, value, key=f"k{i % 3}".encode())
    finally:
        await producer.stop()


class _Recorder:
    def __init__(self, fail_for: set[str] | None = None) -> None:
        self.seen: list[str] = []
        self.calls = 0
        self.fail_for = fail_for or set()

    async def __call__(self, event: CloudEvent[Any], delivery: Delivery) -> None:
        self.calls += 1
        if event.subject in self.fail_for:
            raise RuntimeError(f"cannot handle {event.subject}")
        self.seen.append(event.subject)


def _consumer(
    bootstrap: str, topic: str, group: str, handler: Any, metrics: PlumbingMetrics
) -> tuple[EventConsumer, EventProducer]:
    producer = EventProducer(bootstrap, client_id="test", metrics=metrics)
    consumer = EventConsumer(
        bootstrap=bootstrap,
        topics=[topic],
        group_id=group,
        handler=handler,
        producer=producer,
        metrics=metrics,
        client_id="test",
        max_attempts=3,
        partitions=2,
    )
    return consumer, producer


async def test_poison_and_failing_messages_go_to_the_dlq_and_the_consumer_goes_on(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}absch.ircc.v1"
    await ensure_topics(kafka_bootstrap, [topic, f"{topic}.dlq"], partitions=2)
    good = [_event(n) for n in range(1, 6)]
    values = [e.to_json_bytes() for e in good[:2]] + [b"not json at all"]
    values += [e.to_json_bytes() for e in good[2:]]
    await _produce(kafka_bootstrap, topic, values)

    metrics = PlumbingMetrics(CollectorRegistry(), "test")
    handler = _Recorder(fail_for={good[3].subject})
    consumer, producer = _consumer(kafka_bootstrap, topic, f"{topic_prefix}g", handler, metrics)
    consumer.start()
    try:
        await eventually(lambda: len(handler.seen) == 4, what="4 good events handled")
        dlq: list[Any] = []
        from aiokafka import AIOKafkaConsumer

        reader = AIOKafkaConsumer(
            f"{topic}.dlq",
            bootstrap_servers=kafka_bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
        )
        await reader.start()
        try:

            async def two_dead() -> bool:
                batch = await reader.getmany(timeout_ms=200)
                for records in batch.values():
                    dlq.extend(records)
                return len(dlq) >= 2

            await eventually(two_dead, what="2 messages in the DLQ")
        finally:
            await reader.stop()
    finally:
        await consumer.stop()
        await producer.stop()

    assert sorted(handler.seen) == sorted(e.subject for e in good if e is not good[3])
    by_value = {r.value: dict(r.headers) for r in dlq}
    assert by_value[b"not json at all"][b"error_type".decode()] == b"DecodeError"
    failed = by_value[good[3].to_json_bytes()]
    assert failed["error"] == f"cannot handle {good[3].subject}".encode()
    assert failed["attempts"] == b"3"
    assert failed["original_topic"] == topic.encode()
    assert handler.calls == 4 + 3  # the failing event was tried max_attempts times
    assert len(dlq) == 2


async def test_committed_offsets_mean_a_restart_does_not_redeliver(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}absch.ircc.v1"
    group = f"{topic_prefix}restart"
    await ensure_topics(kafka_bootstrap, [topic, f"{topic}.dlq"], partitions=2)
    await _produce(kafka_bootstrap, topic, [_event(n).to_json_bytes() for n in range(1, 4)])
    metrics = PlumbingMetrics(CollectorRegistry(), "test")

    first = _Recorder()
    consumer, producer = _consumer(kafka_bootstrap, topic, group, first, metrics)
    consumer.start()
    await eventually(lambda: len(first.seen) == 3, what="first run handled 3")
    await consumer.stop()
    await producer.stop()

    await _produce(kafka_bootstrap, topic, [_event(n).to_json_bytes() for n in range(4, 6)])
    second = _Recorder()
    consumer, producer = _consumer(kafka_bootstrap, topic, group, second, metrics)
    consumer.start()
    try:
        await eventually(lambda: len(second.seen) == 2, what="second run handled the 2 new")
        await asyncio.sleep(0)
    finally:
        await consumer.stop()
        await producer.stop()
    assert sorted(second.seen) == ["ABSCH-IRCC-MX-4-1", "ABSCH-IRCC-MX-5-1"]
