"""Serving a service app with uvicorn, logging configured, graceful on SIGTERM."""

from __future__ import annotations

from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from shared.logging import configure_logging
from shared.settings import ServiceSettings


def serve(factory: Callable[[], FastAPI], settings: ServiceSettings) -> None:
    """Run until SIGINT/SIGTERM; uvicorn finishes in-flight requests, then the lifespan
    stops consumers (committing offsets) and flushes the outbox."""
    configure_logging(settings.service, level=settings.log_level, fmt=settings.log_format)
    uvicorn.run(
        factory(),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=20,
    )
