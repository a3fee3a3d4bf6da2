"""Composition root of the checkpoint service."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.checkpoint.adapters.tables import Base, OutboxRow
from services.checkpoint.api import install_error_mapping, router
from services.checkpoint.context import CheckpointContext, CheckpointMetrics, utc_now
from services.checkpoint.migrations import MIGRATIONS
from services.checkpoint.settings import CheckpointSettings
from shared.kit.assemble import Kit


def bootstrap(settings: CheckpointSettings, *, clock: Callable[[], datetime] = utc_now) -> FastAPI:
    """The checkpoint app; its kit keeps the directory view and runs the outbox relay."""
    metrics = CheckpointMetrics(CollectorRegistry())
    kit = Kit(settings, metrics.plumbing, Base.metadata, outbox=OutboxRow, migrations=MIGRATIONS)
    assert kit.relay is not None
    ctx = CheckpointContext(
        settings=settings,
        sessions=kit.sessions,
        relay=kit.relay,
        directory=kit.directory(),
        metrics=metrics,
        clock=clock,
    )
    app = kit.create_app(
        title="absch checkpoint",
        description=__doc__ or "",
    )
    app.state.ctx = ctx
    # Refuses deactivated users too, from the kit's copy of the directory topic.
    app.state.verifier = kit.token_verifier(settings.jwks_url)
    install_error_mapping(app)
    app.include_router(router)
    return app
