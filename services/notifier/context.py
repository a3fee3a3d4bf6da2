"""What the notifier's handlers need, built once by ``bootstrap``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notifier.adapters.smtp import Mailer
from services.notifier.metrics import NotifierMetrics
from services.notifier.projection import Projection
from services.notifier.settings import NotifierSettings
from shared.kit.outbox import OutboxRelay


def utc_now() -> datetime:
    """The real clock."""
    return datetime.now(UTC)


@dataclass
class NotifierContext:
    """Adapters and settings of one notifier instance."""

    settings: NotifierSettings
    sessions: async_sessionmaker[AsyncSession]
    projection: Projection
    relay: OutboxRelay
    mailer: Mailer
    metrics: NotifierMetrics
    clock: Callable[[], datetime] = utc_now
    # True while the directory view has read its topic to the end (as of a recent poll).
    view_current: Callable[[], bool] = lambda: True

    def topic(self, base: str) -> str:
        """Full topic name with the deployment prefix."""
        return f"{self.settings.kafka_topic_prefix}{base}"
