"""A registry and a checkpoint service under test, without the notifier and the monitor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from services.checkpoint.bootstrap import bootstrap
from services.checkpoint.settings import CheckpointSettings
from shared.events import Topic, topic_name
from tests.support.mail import consumed
from tests.support.poll import eventually
from tests.support.registry import registry_settings, running_registry
from tests.support.servers import service_client, serving


@dataclass
class CheckpointPair:
    """Clients of the running registry and checkpoint service."""

    registry: httpx.AsyncClient
    checkpoint: httpx.AsyncClient
    prefix: str

    async def wait_directory(self, count: int) -> None:
        """Until the checkpoint service handled ``count`` directory events."""
        topic = topic_name(Topic.DIRECTORY, self.prefix)

        async def caught_up() -> bool:
            return await consumed(self.checkpoint, "checkpoint", topic) >= count

        await eventually(caught_up, what=f"checkpoint service saw {count} directory events")


@asynccontextmanager
async def running_checkpoint(
    *, kafka: str, prefix: str, db_url: Any, tmp: Path
) -> AsyncIterator[CheckpointPair]:
    """Start a registry (identities, directory) and a checkpoint service on one broker."""
    async with AsyncExitStack() as stack:
        reg = registry_settings(kafka=kafka, prefix=prefix, db=await db_url("registry"), tmp=tmp)
        registry = await stack.enter_async_context(running_registry(reg))
        base = str(registry.base_url).rstrip("/")
        settings = CheckpointSettings(
            kafka_bootstrap=kafka,
            kafka_topic_prefix=prefix,
            database_url=await db_url("checkpoint"),
            jwks_url=f"{base}/.well-known/jwks.json",
            environment="test",
        )
        url = await stack.enter_async_context(serving(bootstrap(settings)))
        client = await stack.enter_async_context(service_client(url))
        yield CheckpointPair(registry=registry, checkpoint=client, prefix=prefix)
