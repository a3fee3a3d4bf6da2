"""Readiness that tells the truth, evaluated in the background every second.

Checks: the database answers; the broker answers a metadata request and holds the topics
the service needs; each consumer loop runs and polled recently; the outbox's oldest row is
young enough; plus any check a service adds (its directory view caught up, say). The
results feed ``/readyz`` (503 naming each failing check), the ``absch_ready{check}`` gauge
and a log line whenever a check changes state, so a stall shows in all three.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError
from aiokafka.protocol.metadata import MetadataRequest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.kafka.admin import ensure_topics
from shared.kit.consumer import SupervisedConsumer
from shared.kit.outbox import OutboxRelay
from shared.metrics import PlumbingMetrics

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[tuple[bool, str]]]
STARTUP_GRACE = 30.0  # a check failing since start is logged as an error after this


@dataclass(frozen=True)
class Thresholds:
    """When a check fails (seconds)."""

    database_timeout: float = 3.0
    broker_timeout: float = 3.0
    consumer_stall: float = 30.0
    outbox_age: float = 60.0
    interval: float = 1.0


@dataclass
class CheckState:
    """The last evaluation of one check."""

    ok: bool
    detail: str
    since: float = field(default_factory=time.monotonic)
    logged: bool = False  # the failure was logged at error level


class Readiness:
    """Runs the checks in the background; :meth:`snapshot` answers ``/readyz`` instantly."""

    def __init__(
        self,
        *,
        metrics: PlumbingMetrics,
        engine: AsyncEngine,
        bootstrap: str,
        topics: list[str],
        partitions: int,
        replication: int,
        create_topics: bool,
        thresholds: Thresholds | None = None,
    ) -> None:
        self._metrics = metrics
        self._engine = engine
        self._bootstrap = bootstrap
        self._topics = topics
        self._partitions, self._replication = partitions, replication
        self._create_topics = create_topics
        self.thresholds = thresholds or Thresholds()
        self._checks: dict[str, Check] = {
            "database": self._database,
            "broker": self._broker,
        }
        self.state: dict[str, CheckState] = {}
        self._client: AIOKafkaClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._missing_logged = False
        self._had_topics = False  # every topic seen once: a later gap means they were lost

    def add(self, name: str, check: Check) -> None:
        """Add a named check (evaluated with the others)."""
        self._checks[name] = check

    def watch_consumer(self, consumer: SupervisedConsumer) -> None:
        """Fail when the consumer loop ended or hasn't polled within the stall threshold."""
        limit = self.thresholds.consumer_stall

        async def check() -> tuple[bool, str]:
            if not consumer.running:
                return False, "consumer loop is not running"
            crashed = consumer.last_crash
            if crashed is not None and time.monotonic() - crashed < limit:
                # Polling again, but it fell over lately: a loop that keeps restarting is
                # not working, whatever its poll age says.
                return (
                    False,
                    f"restarted {time.monotonic() - crashed:.0f}s ago: {consumer.last_error}",
                )
            age = consumer.poll_age()
            if age > limit:
                reason = consumer.last_error or "no poll"
                return False, f"last poll {age:.0f}s ago (limit {limit:.0f}s): {reason}"
            paused = consumer.paused_partitions()
            return True, f"polled {age:.1f}s ago" + (f", {paused} paused" if paused else "")

        self.add(f"consumer:{consumer.name}", check)

    def watch_outbox(self, relay: OutboxRelay) -> None:
        """Fail when the oldest unpublished row is older than the threshold."""
        limit = self.thresholds.outbox_age

        async def check() -> tuple[bool, str]:
            if not relay.running:
                return False, "outbox relay is not running"
            age = relay.oldest_age()
            if age > limit:
                reason = relay.last_error or "not published yet"
                return False, f"oldest row waits {age:.0f}s (limit {limit:.0f}s): {reason}"
            return True, f"oldest row {age:.1f}s"

        self.add("outbox", check)

    # -- running ------------------------------------------------------------------------

    def start(self) -> None:
        """Evaluate every check now and then every interval."""
        self._task = asyncio.create_task(self._run(), name="readiness")

    async def stop(self) -> None:
        """Stop evaluating and close the probe's broker connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_client()

    async def _run(self) -> None:
        while True:
            await self.evaluate()
            await asyncio.sleep(self.thresholds.interval)

    async def evaluate(self) -> dict[str, CheckState]:
        """Run every check once (concurrently) and record the outcomes."""
        names = list(self._checks)
        results = await asyncio.gather(
            *(self._safe(self._checks[n]) for n in names), return_exceptions=False
        )
        m = self._metrics
        now = time.monotonic()
        for name, (ok, detail) in zip(names, results, strict=True):
            before = self.state.get(name)
            if before is None:
                self.state[name] = CheckState(ok, detail)
                if not ok:
                    log.info("readiness check %s not passing yet: %s", name, detail)
            elif before.ok != ok:
                self.state[name] = CheckState(ok, detail, logged=not ok)
                (log.info if ok else log.error)(
                    "readiness check %s %s: %s", name, "passes" if ok else "FAILS", detail
                )
            else:
                before.detail = detail
                if not ok and not before.logged and now - before.since > STARTUP_GRACE:
                    before.logged = True  # never passed since start: say so once, loudly
                    log.error(
                        "readiness check %s FAILS for %.0fs: %s", name, now - before.since, detail
                    )
            m.ready.labels(m.service, name).set(1 if ok else 0)
        return self.state

    @staticmethod
    async def _safe(check: Check) -> tuple[bool, str]:
        try:
            return await check()
        except Exception as exc:  # a check that breaks is a failing check
            return False, f"{type(exc).__name__}: {exc}"

    def snapshot(self) -> dict[str, bool]:
        """Last outcome of each check (false until evaluated once)."""
        return {name: (s.ok if (s := self.state.get(name)) else False) for name in self._checks}

    def details(self) -> dict[str, str]:
        """Last detail line of each check."""
        return {name: s.detail for name, s in self.state.items()}

    # -- built-in checks ----------------------------------------------------------------

    async def _database(self) -> tuple[bool, str]:
        async def ping() -> None:
            async with self._engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

        try:
            await asyncio.wait_for(ping(), self.thresholds.database_timeout)
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"[:300]
        return True, "answers"

    async def _broker(self) -> tuple[bool, str]:
        try:
            topics = await asyncio.wait_for(self._metadata(), self.thresholds.broker_timeout)
        except Exception as exc:
            await self._close_client()  # a frozen broker can leave the connection wedged
            name = type(exc).__name__
            return False, f"no metadata answer within {self.thresholds.broker_timeout:.0f}s: {name}"
        missing = sorted(set(self._topics) - topics)
        if not missing:
            self._missing_logged = False
            self._had_topics = True
            return True, "answers"
        if self._had_topics and not self._missing_logged:
            log.error(
                "the broker lacks %s of this service's topics (%s...): it lost its data or was "
                "replaced; %s",
                len(missing),
                ", ".join(missing[:3]),
                "creating them again"
                if self._create_topics
                else "create them (KAFKA_CREATE_TOPICS is off)",
            )
            self._missing_logged = True
        if self._create_topics:
            await ensure_topics(
                self._bootstrap,
                missing,
                partitions=self._partitions,
                replication=self._replication,
            )
        return False, f"missing topics: {', '.join(missing[:5])}"

    async def _metadata(self) -> set[str]:
        if self._client is None:
            # Bootstrap learns the brokers without listing topics; a long metadata age keeps
            # the client's background refresh (every topic) out of the probe's connection.
            client = AIOKafkaClient(
                bootstrap_servers=self._bootstrap,
                request_timeout_ms=3_000,
                metadata_max_age_ms=24 * 3600 * 1000,
            )
            await client.bootstrap()
            self._client = client
        # Only this service's topics: a cluster with thousands of topics answers a
        # request for all of them slowly, and the probe's deadline is short.
        node = self._client.get_random_node()
        if node is None:
            raise KafkaConnectionError("no broker known")
        request = MetadataRequest(self._topics, allow_auto_topic_creation=False)
        response = await self._client.send(node, request)
        # Every version's topic entry begins (error_code, name, ...).
        return {entry[1] for entry in response.topics if entry[0] == 0}

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 2.0)
