"""Composition root of the checkpoint service."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.checkpoint import handlers
from services.checkpoint.adapters.tables import Base, OutboxRow
from services.checkpoint.api import install_error_mapping, router
from services.checkpoint.context import CheckpointContext, CheckpointMetrics, utc_now
from services.checkpoint.settings import CheckpointSettings
from shared.auth import JwksClient, TokenVerifier
from shared.events import CloudEvent, Topic
from shared.kit.assemble import Kit
from shared.kit.consumer import Delivery, Tx


async def _on_directory(tx: Tx, event: CloudEvent[Any], _delivery: Delivery) -> None:
    await handlers.on_directory(tx.session, event)


DIRECTORY_HANDLERS = {
    "directory.record.published": _on_directory,
    "directory.record.withdrawn": _on_directory,
}


def bootstrap(settings: CheckpointSettings, *, clock: Callable[[], datetime] = utc_now) -> FastAPI:
    """The checkpoint app; its kit runs the directory consumer and the outbox relay."""
    metrics = CheckpointMetrics(CollectorRegistry())
    kit = Kit(settings, metrics.plumbing, Base.metadata, outbox=OutboxRow)
    assert kit.relay is not None
    ctx = CheckpointContext(
        settings=settings, sessions=kit.sessions, relay=kit.relay, metrics=metrics, clock=clock
    )
    # Every instance needs every checkpoint, hence a consumer group of its own.
    kit.consumer("view", [Topic.DIRECTORY], tx_handlers=DIRECTORY_HANDLERS, per_instance=True)
    app = kit.create_app(
        title="absch checkpoint",
        description=__doc__ or "",
    )
    app.state.ctx = ctx
    app.state.verifier = TokenVerifier(JwksClient(settings.jwks_url).key)
    install_error_mapping(app)
    app.include_router(router)
    return app
