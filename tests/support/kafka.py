"""Reading what services published, straight from the broker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer

from shared.events import CloudEvent, decode_event


class TopicReader:
    """Reads a topic from the beginning, accumulating decoded events."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.events: list[CloudEvent[Any]] = []
        self.raw: list[Any] = []
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def read_until(self, predicate: Any, *, timeout: float = 20.0) -> list[CloudEvent[Any]]:
        """Consume until ``predicate(events)`` holds; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not predicate(self.events):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.topic}: condition not met in {timeout}s; have "
                    f"{[(e.type, e.subject) for e in self.events]}"
                )
            batch = await self._consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    self.raw.append(r)
                    self.events.append(decode_event(r.value))
            await asyncio.sleep(0)
        return self.events
