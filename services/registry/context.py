"""What the registry's handlers need, built once by ``bootstrap``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.registry.adapters.keys import SigningKey
from services.registry.metrics import RegistryMetrics
from services.registry.settings import RegistrySettings
from shared.auth import TokenVerifier
from shared.kit.outbox import OutboxRelay


def utc_now() -> datetime:
    """The real clock."""
    return datetime.now(UTC)


@dataclass
class RegistryContext:
    """Adapters and settings of one registry instance."""

    settings: RegistrySettings
    sessions: async_sessionmaker[AsyncSession]
    relay: OutboxRelay
    key: SigningKey
    verifier: TokenVerifier
    metrics: RegistryMetrics
    clock: Callable[[], datetime] = utc_now

    def topic(self, base: str) -> str:
        """Full topic name with the deployment prefix."""
        return f"{self.settings.kafka_topic_prefix}{base}"
