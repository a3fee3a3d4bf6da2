"""Topic creation (idempotent) for local runs and tests; deployments use an init step."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.kafka.producer import EventProducer

log = logging.getLogger(__name__)


async def ensure_topics(
    bootstrap: str, names: list[str], *, partitions: int = 4, replication: int = 1
) -> None:
    """Create the topics that do not exist yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if not missing:
            return
        new = [
            NewTopic(n, num_partitions=partitions, replication_factor=replication) for n in missing
        ]
        try:
            await admin.create_topics(new)
        except TopicAlreadyExistsError:
            log.debug("topics created concurrently: %s", missing)
        log.info("created topics %s", missing)
    finally:
        await admin.close()


async def connect_producer(
    producer: EventProducer,
    bootstrap: str,
    names: list[str],
    *,
    partitions: int,
    replication: int,
    create: bool = True,
) -> None:
    """Create topics (when ``create``) and connect, retrying in the background so an API
    never waits."""
    delay = 0.2
    while True:
        try:
            if create:
                await ensure_topics(
                    bootstrap, names, partitions=partitions, replication=replication
                )
            await producer.start()
            return
        except Exception as exc:  # broker down: outboxes keep everything meanwhile
            log.warning("broker not reachable (%s); retrying", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
