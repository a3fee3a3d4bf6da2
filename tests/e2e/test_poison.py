"""A poison message on each consumed topic goes to that topic's DLQ; consumers go on."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.events import Topic, topic_name
from tests.support.poll import eventually
from tests.support.records import authority, permit
from tests.support.registry import government_users, publish
from tests.support.stack import running_stack
from tools.smtp_sink import SmtpSink

POISON = b"\x00not an event\xff"
# Which consumers read each topic (and so dead-letter a poison message once each).
READERS = {
    Topic.DIRECTORY: {"checkpoint-directory", "notifier-directory", "monitor-directory"},
    Topic.IRCC: {"notifier-view", "notifier-mail", "monitor-checking"},
    Topic.CPC: {"notifier-mail", "monitor-checking"},
    Topic.DISCREPANCY: {"notifier-mail"},
    Topic.NOTIFICATION: {"monitor-cases"},
}


async def test_poison_messages_are_dead_lettered_by_every_consumer(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path, smtp: SmtpSink
) -> None:
    async with running_stack(
        kafka=kafka_bootstrap, prefix=topic_prefix, db_url=db_url, tmp=tmp_path, smtp=smtp
    ) as stack:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for topic in READERS:
                await producer.send_and_wait(topic_name(topic, topic_prefix), POISON, key=b"poison")
        finally:
            await producer.stop()

        dlqs = [f"{topic_name(t, topic_prefix)}.dlq" for t in READERS]
        reader = AIOKafkaConsumer(
            *dlqs, bootstrap_servers=kafka_bootstrap, group_id=None, auto_offset_reset="earliest"
        )
        await reader.start()
        seen: Counter[tuple[str, str]] = Counter()
        try:

            async def all_dead_lettered() -> bool:
                for records in (await reader.getmany(timeout_ms=200)).values():
                    for r in records:
                        headers = dict(r.headers)
                        assert r.value == POISON
                        assert headers["error_type"] == b"DecodeError"
                        seen[(r.topic, headers["service"].decode())] += 1
                return sum(seen.values()) >= sum(len(v) for v in READERS.values())

            await eventually(all_dead_lettered, timeout=60, what="every consumer dead-lettered")
        finally:
            await reader.stop()
        expected = {
            (f"{topic_name(t, topic_prefix)}.dlq", s)
            for t, services in READERS.items()
            for s in services
        }
        assert set(seen) == expected
        assert set(seen.values()) == {1}

        users = await government_users(stack.registry, "mx")
        cna = authority("mx", ["cna@mx.example"])
        await publish(stack.registry, users["pa"], cna)
        await publish(stack.registry, users["pa"], permit("mx", cna["header"]["identifier"]))
        await eventually(lambda: smtp.mails_to("cna@mx.example"), what="mail after the poison")
