"""Reading a whole topic from the start without a consumer group (small directory views)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer

from shared.events import CloudEvent, DecodeError, decode_event

log = logging.getLogger(__name__)
FollowHandler = Callable[[CloudEvent[Any]], Awaitable[None]]


class TopicFollower:
    """Every instance reads every partition from offset 0 and keeps following.

    For views each instance must hold whole (the checkpoint directory): nothing is
    committed, the view is rebuilt from the topic on each start. Bad messages are skipped
    here; the topic's owning consumers dead-letter them.
    """

    def __init__(
        self, bootstrap: str, topic: str, handler: FollowHandler, *, fetch_max_wait_ms: int = 500
    ) -> None:
        self._bootstrap = bootstrap
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._topic = topic
        self._handler = handler
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.caught_up = False

    def start(self) -> None:
        """Follow in the background, reconnecting when the broker goes away."""
        self._task = asyncio.create_task(self._run(), name=f"follow-{self._topic}")

    async def stop(self) -> None:
        """Stop following."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        while not self._stopping.is_set():
            consumer = AIOKafkaConsumer(
                self._topic,
                bootstrap_servers=self._bootstrap,
                group_id=None,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                fetch_max_wait_ms=self._fetch_max_wait_ms,
            )
            try:
                await consumer.start()
                await self._follow(consumer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker gone: start over, the view is idempotent
                log.warning("following %s failed (%s); retrying", self._topic, exc)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while not self._stopping.is_set():
            batches = await consumer.getmany(timeout_ms=300)
            for records in batches.values():
                for record in records:
                    try:
                        event = decode_event(record.value)
                    except DecodeError:
                        continue
                    await self._handler(event)
            if not batches:
                self.caught_up = True
