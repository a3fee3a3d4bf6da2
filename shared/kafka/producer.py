"""Producer with ``acks=all``; idempotence is off because the embedded broker lacks it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from shared.events.envelope import CloudEvent
from shared.kit.failures import is_unpublishable
from shared.metrics import PlumbingMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A ready-to-send record."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class SendFailed(Exception):
    """Some messages of a batch were not acknowledged: ``errors[i]`` is None for each one
    that was, else why not; ``first`` is the first error."""

    def __init__(self, errors: list[BaseException | None]) -> None:
        failed = [e for e in errors if e is not None]
        self.errors = errors
        self.first: BaseException = failed[0]
        super().__init__(f"{len(failed)} of {len(errors)} not sent: {self.first}")


class EventProducer:
    """Thin wrapper over ``AIOKafkaProducer`` that counts acknowledged sends."""

    def __init__(self, bootstrap: str, *, client_id: str, metrics: PlumbingMetrics) -> None:
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._metrics = metrics
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    @property
    def started(self) -> bool:
        """True once connected to the broker."""
        return self._producer is not None

    async def start(self) -> None:
        """Connect; raises a ``KafkaError`` when the broker cannot be reached."""
        async with self._lock:
            if self._producer is not None:
                return
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                client_id=self._client_id,
                acks="all",
                enable_idempotence=False,
                linger_ms=2,
                request_timeout_ms=15_000,
                retry_backoff_ms=200,
            )
            try:
                await producer.start()
            except Exception:
                await producer.stop()
                raise
            self._producer = producer

    async def stop(self) -> None:
        """Flush pending sends and disconnect."""
        async with self._lock:
            if self._producer is not None:
                producer, self._producer = self._producer, None
                await producer.stop()

    async def send_many(self, messages: Sequence[OutgoingMessage]) -> None:
        """Send all messages and wait until the broker acknowledged every one; raises
        :class:`SendFailed` naming which were not acknowledged."""
        if self._producer is None:
            await self.start()
        assert self._producer is not None
        errors: list[BaseException | None] = [None] * len(messages)
        queued: list[tuple[int, asyncio.Future[Any]]] = []
        stop: BaseException | None = None
        for i, m in enumerate(messages):
            if stop is not None:  # the broker is away: don't wait on each of the rest
                errors[i] = stop
                continue
            try:
                future = await self._producer.send(
                    m.topic, m.value, key=m.key, headers=m.headers or None
                )
            except Exception as exc:
                errors[i] = exc
                if not is_unpublishable(exc):
                    stop = exc
                continue
            queued.append((i, future))
        # Wait for everything queued, even after a refusal: those messages are on their way.
        results = await asyncio.gather(*(f for _, f in queued), return_exceptions=True)
        for (i, _), result in zip(queued, results, strict=True):
            if isinstance(result, BaseException):
                errors[i] = result
        for m, error in zip(messages, errors, strict=True):
            if error is None:
                self._metrics.published.labels(self._metrics.service, m.topic).inc()
        if any(e is not None for e in errors):
            raise SendFailed(errors)

    async def send_event(self, topic: str, event: CloudEvent[Any], *, key: str) -> None:
        """Send one event directly (used where no database write accompanies it)."""
        await self.send_many([OutgoingMessage(topic, key.encode(), event.to_json_bytes())])
