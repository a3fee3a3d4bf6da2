"""The read side of the analytics: the ``months`` table, replayed from its changelog.

The monitor's HTTP process keeps this view; it never calls the analytics workers. Each
update of a table entry is one changelog message carrying the whole entry, so the latest
message per key is the table (what a worker's recovery rebuilds too), whichever workers
own which partitions at the moment. The view lags the workers by their commit interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Literal

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.monitor.analytics.counting import MonthCounts

log = logging.getLogger(__name__)


def changelog_topic(app_id: str, table: str = "months") -> str:
    """faust's name of a table's changelog topic."""
    return f"{app_id}-{table}-changelog"


@dataclass(frozen=True, slots=True)
class Row:
    """Citations of one IRCC by one user country in one month."""

    provider: str
    month: str
    user: str
    ircc: str
    citations: int


class UtilizationView:
    """Provider country x month -> counts, kept from the ``months`` changelog."""

    def __init__(self, bootstrap: str, topic: str, *, fetch_max_wait_ms: int = 100) -> None:
        self._bootstrap = bootstrap
        self.topic = topic
        self._wait = fetch_max_wait_ms
        self.months: dict[tuple[str, str], MonthCounts] = {}
        self._task: asyncio.Task[None] | None = None
        # What the API says with its rows, so that an empty answer is never mistaken for
        # no utilization when the changelog is missing or unreadable.
        self.state: Literal["starting", "waiting", "following", "failing"] = "starting"
        self.applied = 0
        self.last_error: str | None = None

    def start(self) -> None:
        """Follow the changelog in the background."""
        self._task = asyncio.create_task(self._follow(), name="utilization-view")

    async def stop(self) -> None:
        """Stop following."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Fold one changelog message (JSON key and value; a null value deletes)."""
        if key is None:
            return
        self.applied += 1
        provider, _, month = str(json.loads(key)).partition("|")
        if value is None:
            self.months.pop((provider, month), None)
        else:
            self.months[(provider, month)] = MonthCounts.load(json.loads(value))

    def rows(
        self,
        *,
        provider: str | None = None,
        user: str | None = None,
        ircc: str | None = None,
        start: str | None = None,
        end: str | None = None,
    ) -> list[Row]:
        """Rows matching every filter given (months ``start``..``end`` inclusive)."""
        out = []
        for (p, month), counts in self.months.items():
            if provider and p != provider:
                continue
            if (start and month < start) or (end and month > end):
                continue
            for cell, n in counts.cells.items():
                u, _, i = cell.partition("|")
                if (user and u != user) or (ircc and i != ircc):
                    continue
                out.append(Row(p, month, u, i, n))
        return sorted(out, key=lambda r: (r.provider, r.month, r.user, r.ircc))

    async def _follow(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=None,
                enable_auto_commit=False,
                fetch_max_wait_ms=self._wait,
            )
            try:
                await consumer.start()
                await self._read(consumer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker away: start over from the beginning
                log.warning("utilization view: %s; reading again", exc)
                self.state, self.last_error = "failing", f"{type(exc).__name__}: {exc}"
                self.months.clear()
                self.applied = 0
                await asyncio.sleep(1.0)
            finally:
                await consumer.stop()

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        # Assigned by hand once faust has created the topic: subscribing to a missing
        # topic could make a broker auto-create it with other partitions.
        self.state, since, told = "waiting", time.monotonic(), 0.0
        while True:
            if self.topic in await consumer.topics():
                break
            waited = time.monotonic() - since
            if waited - told >= 60:  # say so, once a minute: is the analytics worker running?
                told = waited
                log.warning(
                    "utilization view: no topic %s after %.0fs; /v1/utilization stays empty "
                    "until an analytics worker (python -m services.monitor.analytics) creates it",
                    self.topic,
                    waited,
                )
            await asyncio.sleep(1.0)
        parts = consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        self.state, self.last_error = "following", None
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for r in records:
                    self.apply(r.key, r.value)
