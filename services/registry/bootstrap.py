"""Composition root of the registry: builds every adapter from settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.registry.adapters.keys import SigningKey
from services.registry.adapters.tables import Base, OutboxRow
from services.registry.api import install_error_mapping, router, well_known
from services.registry.context import RegistryContext, utc_now
from services.registry.handlers import users, workflow
from services.registry.metrics import RegistryMetrics
from services.registry.migrations import MIGRATIONS
from services.registry.settings import RegistrySettings
from shared.auth import TokenVerifier
from shared.kit.assemble import Kit

log = logging.getLogger(__name__)
SWEEP_SECONDS = 60.0


class Sweeper:
    """Closes expired requests and sends reminders every minute."""

    def __init__(self, ctx: RegistryContext) -> None:
        self._ctx = ctx
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Sweep in the background."""
        self._task = asyncio.create_task(self._run(), name="registry-sweeper")

    async def stop(self) -> None:
        """Stop sweeping."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await workflow.sweep(self._ctx)
            except Exception:  # the database may be away: the next round tries again
                log.exception("workflow sweep failed")
            await asyncio.sleep(SWEEP_SECONDS)


def bootstrap(settings: RegistrySettings, *, clock: Callable[[], datetime] = utc_now) -> FastAPI:
    """The registry app; its kit opens the database, producer and relay."""
    metrics = RegistryMetrics(CollectorRegistry())
    kit = Kit(settings, metrics.plumbing, Base.metadata, outbox=OutboxRow, migrations=MIGRATIONS)
    assert kit.relay is not None
    key = SigningKey.load_or_create(
        settings.jwt_private_key_path, create=settings.jwt_generate_key and settings.is_dev
    )
    admin_token = (
        settings.require_secret("ABSCH_ADMIN_TOKEN", settings.admin_token)
        if settings.admin_token is not None or not settings.is_dev
        else None
    )

    async def resolve_key(kid: str) -> object | None:
        return key.public if kid == key.kid else None

    async def deactivated(user_id: str) -> bool:
        # The registry owns the users table: it refuses a deactivated user at once, on
        # every instance, where the other services wait for the directory event.
        return await users.is_deactivated(kit.sessions, user_id)

    ctx = RegistryContext(
        settings=settings,
        sessions=kit.sessions,
        relay=kit.relay,
        key=key,
        verifier=TokenVerifier(resolve_key, admin_token=admin_token, deactivated=deactivated),
        metrics=metrics,
        clock=clock,
    )
    kit.add_worker(Sweeper(ctx))
    app = kit.create_app(
        title="absch registry",
        description=__doc__ or "",
    )
    app.state.ctx = ctx
    install_error_mapping(app)
    app.include_router(router)
    app.include_router(well_known)
    return app
