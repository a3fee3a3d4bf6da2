"""What the notifier's handlers need, built once by ``bootstrap``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notifier.adapters.smtp import SmtpMailer
from services.notifier.metrics import NotifierMetrics
from services.notifier.projection import Projection
from services.notifier.settings import NotifierSettings
from shared.outbox import OutboxRelay


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
    mailer: SmtpMailer
    metrics: NotifierMetrics
    clock: Callable[[], datetime] = utc_now
    # Waits until the directory view has read everything published before a moment.
    view_caught_up: Callable[[float, float], Awaitable[bool]] | None = None

    def topic(self, base: str) -> str:
        """Full topic name with the deployment prefix."""
        return f"{self.settings.kafka_topic_prefix}{base}"
