"""What the checkpoint service's handlers need, built once by ``bootstrap``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.checkpoint.settings import CheckpointSettings
from shared.kit.directory import DirectoryView
from shared.kit.outbox import OutboxRelay
from shared.metrics import PlumbingMetrics


def utc_now() -> datetime:
    """The real clock."""
    return datetime.now(UTC)


class CheckpointMetrics:
    """Series of one checkpoint instance (``checkpoint_*``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.plumbing = PlumbingMetrics(registry, "checkpoint")
        self.submitted = Counter(
            "checkpoint_communiques_published_total",
            "Communiqués accepted and published",
            registry=registry,
        )
        self.amended = Counter(
            "checkpoint_communiques_amended_total",
            "Amendments accepted (a new revision of a published communiqué)",
            registry=registry,
        )
        self.replayed = Counter(
            "checkpoint_idempotent_replays_total",
            "Submissions answered from an earlier Idempotency-Key",
            registry=registry,
        )
        self.rejected = Counter(
            "checkpoint_communiques_rejected_total",
            "Submissions refused, by reason",
            ["reason"],
            registry=registry,
        )


@dataclass
class CheckpointContext:
    """Adapters and settings of one checkpoint instance."""

    settings: CheckpointSettings
    sessions: async_sessionmaker[AsyncSession]
    relay: OutboxRelay
    directory: DirectoryView
    metrics: CheckpointMetrics
    clock: Callable[[], datetime] = utc_now

    def topic(self, base: str) -> str:
        """Full topic name with the deployment prefix."""
        return f"{self.settings.kafka_topic_prefix}{base}"
